"""``neighbours_of``: the links of many nodes in one call, filtered by type, direction and the other end's kind.

Every expectation is computed by ``expected`` from the records written, as the contract in ``memory/protocol.py``
reads, never from what a backend returned; so a faster implementation is held to the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from mnemoflow.errors import InvalidNameError, InvalidNamespaceError, InvalidQueryError
from mnemoflow.memory import Link, NodeRecord, RelationshipRecord
from mnemoflow.memory.names import REGISTRY
from mnemoflow.memory.protocol import GraphStore
from tests.conformance.helpers import chunk, link

SIMILAR = REGISTRY.register_relationship("SIMILAR")
"""A third type beside NEXT and PART_OF (the mechanisms register it too; registering again is a no-op)."""

KINDS = {"a": "Chunk", "b": "Chunk", "c": "Chunk", "e": "Chunk", "lone": "Chunk", "doc": "Document", "run": "Run"}


def web(namespace: str) -> list[RelationshipRecord]:
    """Links around ``a``: out to b, two keyed PART_OF to doc, SIMILAR to run, a self-loop; in from e and c."""
    return [
        link(namespace, "a", "b", weight=2, note="first"),
        link(namespace, "b", "c"),
        link(namespace, "e", "a"),
        link(namespace, "a", "a"),
        RelationshipRecord(namespace=namespace, type="PART_OF", source_id="a", target_id="doc", key="k0", properties={"page": 1}),
        RelationshipRecord(namespace=namespace, type="PART_OF", source_id="a", target_id="doc", key="k1", properties={"page": 2}),
        link(namespace, "b", "doc", "PART_OF"),
        link(namespace, "c", "a", SIMILAR, score=0.5),
        link(namespace, "a", "run", SIMILAR),
    ]


async def build_web(store: GraphStore, namespace: str) -> list[RelationshipRecord]:
    nodes = [
        NodeRecord(id=node_id, namespace=namespace, kind=kind, properties={"name": node_id})
        if kind != "Chunk"
        else chunk(namespace, node_id, flavour=node_id.upper())
        for node_id, kind in KINDS.items()
    ]
    relationships = web(namespace)
    await store.upsert_nodes(nodes)
    await store.upsert_relationships(relationships)
    return relationships


def expected(
    relationships: Sequence[RelationshipRecord],
    kinds_of: dict[str, str],
    seed: str,
    *,
    direction: str = "both",
    types: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[tuple[str, str]]:
    """(relationship id, other end's id) of ``seed``'s links as the contract orders and cuts them."""
    found = []
    for relationship in relationships:
        outgoing, incoming = relationship.source_id == seed, relationship.target_id == seed
        if types is not None and relationship.type not in types:
            continue
        if not (outgoing if direction == "out" else incoming if direction == "in" else outgoing or incoming):
            continue
        other = relationship.target_id if outgoing and direction != "in" else relationship.source_id
        if kinds is None or kinds_of[other] in kinds:
            found.append((relationship.type, other, relationship.id))
    return [(relationship_id, other) for _, other, relationship_id in sorted(found)[:limit]]


def shape(links: dict[str, list[Link]]) -> dict[str, list[tuple[str, str]]]:
    return {seed: [(item.relationship.id, item.node.id) for item in items] for seed, items in links.items()}


async def test_keys_are_the_existing_ids_once_each_in_input_order(store: GraphStore, namespace: str) -> None:
    await build_web(store, namespace)
    await store.upsert_nodes([chunk(f"{namespace}-other", "only-there")])

    found = await store.neighbours_of(namespace, ["lone", "missing", "b", "a", "b", "only-there", "lone"])
    assert list(found) == ["lone", "b", "a"]
    assert found["lone"] == []
    assert await store.neighbours_of(namespace, []) == {}
    assert await store.neighbours_of(namespace, ["missing"]) == {}
    assert list(await store.neighbours_of(namespace, ["run", "e", "doc"])) == ["run", "e", "doc"]


@pytest.mark.parametrize("direction", ["out", "in", "both"])
async def test_direction_is_relative_to_each_seed(store: GraphStore, namespace: str, direction: str) -> None:
    relationships = await build_web(store, namespace)
    seeds = ["a", "b", "c", "doc", "e", "run", "lone"]

    found = await store.neighbours_of(namespace, seeds, direction=direction)  # type: ignore[arg-type]
    assert shape(found) == {seed: expected(relationships, KINDS, seed, direction=direction) for seed in seeds}
    for seed, links in found.items():
        for item in links:
            ends = (item.relationship.source_id, item.relationship.target_id)
            assert ends[0] == seed if direction == "out" else ends[1] == seed if direction == "in" else seed in ends


async def test_directions_spelled_out_for_one_node(store: GraphStore, namespace: str) -> None:
    """The same as above, written by hand for ``a``, so the model ``expected`` is itself checked."""
    await build_web(store, namespace)

    def ends(links: list[Link]) -> list[tuple[str, str, str, str]]:
        return [
            (item.relationship.type, item.relationship.source_id, item.relationship.target_id, item.node.id) for item in links
        ]

    out = (await store.neighbours_of(namespace, ["a"], direction="out"))["a"]
    assert ends(out) == [
        ("NEXT", "a", "a", "a"),  # the self-loop, once; its other end is the node itself
        ("NEXT", "a", "b", "b"),
        ("PART_OF", "a", "doc", "doc"),
        ("PART_OF", "a", "doc", "doc"),
        ("SIMILAR", "a", "run", "run"),
    ]
    assert sorted(item.relationship.key for item in out[2:4]) == ["k0", "k1"]
    assert out[2].relationship.id < out[3].relationship.id  # same type and other end: by relationship id
    into = (await store.neighbours_of(namespace, ["a"], direction="in"))["a"]
    assert ends(into) == [("NEXT", "a", "a", "a"), ("NEXT", "e", "a", "e"), ("SIMILAR", "c", "a", "c")]
    both = (await store.neighbours_of(namespace, ["a"]))["a"]
    assert len(both) == 7 and len({item.relationship.id for item in both}) == 7
    assert ends(both)[:3] == [("NEXT", "a", "a", "a"), ("NEXT", "a", "b", "b"), ("NEXT", "e", "a", "e")]
    assert (await store.neighbours_of(namespace, ["doc"], direction="out"))["doc"] == []


async def test_types_filter_keeps_only_the_named_types(store: GraphStore, namespace: str) -> None:
    relationships = await build_web(store, namespace)
    seeds = ["a", "b", "c", "doc"]
    for types in (["NEXT"], ["PART_OF"], ["NEXT", SIMILAR], [SIMILAR, "PART_OF", "NEXT"], ["NEXT", "NEXT"]):
        for direction in ("out", "in", "both"):
            found = await store.neighbours_of(namespace, seeds, relationship_types=types, direction=direction)
            want = {seed: expected(relationships, KINDS, seed, direction=direction, types=types) for seed in seeds}
            assert shape(found) == want, (types, direction)
            assert all(item.relationship.type in types for links in found.values() for item in links)
    nothing = await store.neighbours_of(namespace, seeds, relationship_types=[])
    assert nothing == {seed: [] for seed in seeds}
    every = await store.neighbours_of(namespace, seeds, relationship_types=["NEXT", "PART_OF", SIMILAR])
    assert every == await store.neighbours_of(namespace, seeds)


async def test_kinds_filter_applies_to_the_other_end(store: GraphStore, namespace: str) -> None:
    relationships = await build_web(store, namespace)
    seeds = ["a", "b", "c", "doc", "run"]
    for kinds in (["Document"], ["Run"], ["Chunk"], ["Document", "Run"], ["Chunk", "Document", "Run"]):
        found = await store.neighbours_of(namespace, seeds, kinds=kinds)
        assert shape(found) == {seed: expected(relationships, KINDS, seed, kinds=kinds) for seed in seeds}, kinds
        assert all(item.node.kind in kinds for links in found.values() for item in links)
    documents = await store.neighbours_of(namespace, ["a", "doc"], kinds=["Document"])
    part_of_a = sorted(r.id for r in relationships if (r.source_id, r.type) == ("a", "PART_OF"))
    assert [item.relationship.id for item in documents["a"]] == part_of_a
    assert documents["doc"] == []  # doc's links all end at chunks; the seed's own kind does not matter
    assert await store.neighbours_of(namespace, ["a", "lone"], kinds=[]) == {"a": [], "lone": []}
    combined = await store.neighbours_of(namespace, ["a"], relationship_types=["NEXT"], direction="out", kinds=["Chunk"])
    assert shape(combined) == {"a": expected(relationships, KINDS, "a", direction="out", types=["NEXT"], kinds=["Chunk"])}


async def build_hub(store: GraphStore, namespace: str) -> tuple[list[RelationshipRecord], dict[str, str]]:
    """``hub`` with 14 links whose other ends sort lexically, not numerically or by insertion; ``rim`` with 4."""
    others = ["m9", "m10", "Z1", "m1", "a-b", "a_b", "m100"]
    kinds_of = {"hub": "Chunk", "rim": "Chunk", **{other: "Chunk" for other in others}, "doc": "Document"}
    await store.upsert_nodes([chunk(namespace, node_id) for node_id in kinds_of if node_id != "doc"])
    await store.upsert_nodes([NodeRecord(id="doc", namespace=namespace, kind="Document")])
    relationships = (
        [link(namespace, "hub", other) for other in others]
        + [link(namespace, other, "hub", SIMILAR) for other in others[:3]]
        + [
            RelationshipRecord(namespace=namespace, type="PART_OF", source_id="hub", target_id="doc", key=f"p{i}")
            for i in range(4)
        ]
        + [link(namespace, "rim", other) for other in ("m9", "hub", "m1", "Z1")]
    )
    await store.upsert_relationships(relationships)
    return relationships, kinds_of


async def test_each_node_gets_its_first_links_up_to_limit(store: GraphStore, namespace: str) -> None:
    relationships, kinds_of = await build_hub(store, namespace)
    full = await store.neighbours_of(namespace, ["hub", "rim"])
    assert shape(full) == {seed: expected(relationships, kinds_of, seed) for seed in ("hub", "rim")}
    assert [item.node.id for item in full["hub"][:7]] == ["Z1", "a-b", "a_b", "m1", "m10", "m100", "m9"]
    assert len(full["hub"]) == 15 and len(full["rim"]) == 4

    for limit in (1, 3, 4, 5, 14, 15, 16, 10_000):
        cut = await store.neighbours_of(namespace, ["rim", "hub"], limit=limit)
        assert list(cut) == ["rim", "hub"]
        assert shape(cut) == {seed: shape(full)[seed][:limit] for seed in ("rim", "hub")}, limit
    # one more than wanted tells whether any were left
    wanted = 4
    page = await store.neighbours_of(namespace, ["hub", "rim"], limit=wanted + 1)
    assert len(page["hub"]) > wanted and len(page["rim"]) == wanted
    out_next = await store.neighbours_of(namespace, ["hub"], relationship_types=["NEXT"], direction="out", limit=2)
    assert shape(out_next)["hub"] == expected(relationships, kinds_of, "hub", direction="out", types=["NEXT"], limit=2)


async def test_a_link_between_two_seeds_is_listed_under_both(store: GraphStore, namespace: str) -> None:
    await build_web(store, namespace)
    ab = link(namespace, "a", "b").id

    both = await store.neighbours_of(namespace, ["a", "b"], relationship_types=["NEXT"])
    assert [item.node.id for item in both["a"] if item.relationship.id == ab] == ["b"]
    assert [item.node.id for item in both["b"] if item.relationship.id == ab] == ["a"]
    out = await store.neighbours_of(namespace, ["a", "b"], relationship_types=["NEXT"], direction="out")
    assert ab in {item.relationship.id for item in out["a"]} and ab not in {item.relationship.id for item in out["b"]}
    into = await store.neighbours_of(namespace, ["a", "b"], relationship_types=["NEXT"], direction="in")
    assert ab not in {item.relationship.id for item in into["a"]} and ab in {item.relationship.id for item in into["b"]}


async def test_other_namespaces_are_invisible(store: GraphStore, namespace: str) -> None:
    relationships = await build_web(store, namespace)
    other = f"{namespace}-other"
    await store.upsert_nodes([chunk(other, node_id, f"elsewhere {node_id}") for node_id in ("a", "b", "lone", "far")])
    await store.upsert_relationships(
        [link(other, "a", "lone"), link(other, "lone", "a"), link(other, "a", "far", SIMILAR), link(other, "b", "a")]
    )

    found = await store.neighbours_of(namespace, ["a", "b", "lone", "far"])
    assert list(found) == ["a", "b", "lone"]
    assert shape(found) == {seed: expected(relationships, KINDS, seed) for seed in found}
    assert all(
        item.relationship.namespace == namespace and item.node.namespace == namespace
        for links in found.values()
        for item in links
    )
    theirs = await store.neighbours_of(other, ["a", "doc", "far"])
    assert list(theirs) == ["a", "far"]
    assert {item.node.id for item in theirs["a"]} == {"lone", "far", "b"}
    assert all(item.node.text == f"elsewhere {item.node.id}" for item in theirs["a"])


async def test_links_are_complete_records_without_embeddings(store: GraphStore, namespace: str) -> None:
    relationships = await build_web(store, namespace)
    written = {relationship.id: relationship for relationship in relationships}
    stored_nodes = {node.id: node for node in await store.get_nodes(namespace, list(KINDS)) if node is not None}
    page = await store.neighbours(namespace, "a", limit=100)
    stored_relationships = {relationship.id: relationship for relationship in page.relationships}

    found = await store.neighbours_of(namespace, ["a", "b"])
    for links in found.values():
        for item in links:
            relationship = item.relationship
            source = written[relationship.id]
            fields = ("namespace", "type", "source_id", "target_id", "key", "properties")
            assert {f: getattr(relationship, f) for f in fields} == {f: getattr(source, f) for f in fields}
            assert relationship.created_at is not None and relationship.updated_at is not None
            if relationship.id in stored_relationships:
                assert relationship == stored_relationships[relationship.id]
            assert item.node.embedding is None
            assert item.node == stored_nodes[item.node.id].model_copy(update={"embedding": None})
    assert stored_nodes["b"].embedding is not None  # the chunks have vectors; the links leave them out
    first = found["a"][1].relationship
    assert (first.source_id, first.target_id, first.properties) == ("a", "b", {"weight": 2, "note": "first"})


@pytest.mark.parametrize("seeds", [[], ["a"]])
async def test_bad_input_is_refused(store: GraphStore, namespace: str, seeds: list[str]) -> None:
    """Refused whatever the seeds, even none: arguments are checked before anything is read."""
    await build_web(store, namespace)
    for blank in ("", "   "):
        with pytest.raises(InvalidNamespaceError):
            await store.neighbours_of(blank, seeds)
    for bad_type in ("UNKNOWN", "NEXT]->() DELETE r //", "NE XT", ""):
        with pytest.raises(InvalidNameError):
            await store.neighbours_of(namespace, seeds, relationship_types=["NEXT", bad_type])
    for bad_kind in ("Unregistered", "Chunk` OR 1=1", "MfNode", ""):
        with pytest.raises(InvalidNameError):
            await store.neighbours_of(namespace, seeds, kinds=["Chunk", bad_kind])
    for limit in (0, -1, 10_001, True, False, 2.0, "10", None):
        with pytest.raises(InvalidQueryError, match="limit"):
            await store.neighbours_of(namespace, seeds, limit=limit)  # type: ignore[arg-type]
    for direction in ("sideways", "OUT", "", None):
        with pytest.raises(InvalidQueryError, match="direction"):
            await store.neighbours_of(namespace, seeds, direction=direction)  # type: ignore[arg-type]
    assert await store.count_relationships(namespace) == len(web(namespace))


async def test_many_seeds_at_once_equal_one_call_per_seed(store: GraphStore, namespace: str) -> None:
    """300 seeds on a ring with a few links each (NEXT to the next two, PART_OF to one of 7 documents)."""
    size = 300
    ids = [f"s{index:03d}" for index in range(size)]
    kinds_of = {node_id: "Chunk" for node_id in ids} | {f"d{index}": "Document" for index in range(7)}
    await store.upsert_nodes([NodeRecord(id=node_id, namespace=namespace, kind=kind) for node_id, kind in kinds_of.items()])
    relationships = (
        [link(namespace, ids[index], ids[(index + step) % size]) for index in range(size) for step in (1, 2)]
        + [link(namespace, node_id, f"d{index % 7}", "PART_OF") for index, node_id in enumerate(ids)]
        + [link(namespace, ids[index], ids[index], SIMILAR) for index in range(0, size, 50)]
    )
    await store.upsert_relationships(relationships)
    seeds = ids[::-1] + ["missing", "d3", ids[5]]

    cases: list[dict[str, Any]] = [{}, {"types": ["NEXT"], "direction": "out", "limit": 1}, {"kinds": ["Document"]}]
    every_link = await store.neighbours_of(namespace, ["d3"])
    assert len(every_link["d3"]) == len([index for index in range(size) if index % 7 == 3]) == 43
    for case in cases:
        options = {("relationship_types" if key == "types" else key): value for key, value in case.items()}
        together = await store.neighbours_of(namespace, seeds, **options)
        assert list(together) == ids[::-1] + ["d3"]
        assert shape(together) == {seed: expected(relationships, kinds_of, seed, **case) for seed in together}
        if not case:  # full records, compared with single-seed calls (once: they are 303 queries)
            one_by_one: dict[str, list[Link]] = {}
            for seed in seeds:
                one_by_one.update(await store.neighbours_of(namespace, [seed]))
            assert together == one_by_one
