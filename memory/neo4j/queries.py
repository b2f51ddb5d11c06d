"""Every Cypher statement mnemoflow sends, as named functions.

Values are always ``$parameters``. The only text spliced in is a label, a relationship type or an index
name, and each passes :func:`label` first: it must be a plain identifier, and the callers take it from
the :class:`~mnemoflow.memory.names.NameRegistry`, never from raw input.
"""

from __future__ import annotations

from collections.abc import Sequence

from mnemoflow.memory.names import validate_identifier

__all__ = [
    "BASE_LABEL",
    "META_LABEL",
    "TEXT_INDEX",
    "count_nodes",
    "count_nodes_by_kind",
    "count_relationships",
    "delete_expired",
    "delete_nodes",
    "existing_ids",
    "expand",
    "find_kind_conflicts",
    "find_missing_endpoints",
    "get_nodes",
    "keyword_search",
    "label",
    "list_nodes",
    "namespaces",
    "neighbours",
    "neighbours_of",
    "node_fields",
    "property_condition",
    "read_meta",
    "relationship_constraint",
    "schema_statements",
    "upsert_nodes",
    "upsert_relationships",
    "vector_index",
    "vector_index_name",
    "vector_search",
    "write_meta",
]

BASE_LABEL = "MfNode"
"""Label every memory node carries besides its kind; the (namespace, id) key and the text index live on it."""
META_LABEL = "MfMeta"
TEXT_INDEX = "mf_node_text"
_NODE_KEYS = ".id, .namespace, .kind, .properties, .text, .created_at, .updated_at"


def label(name: str) -> str:
    """A label or type, checked and back-quoted for splicing into Cypher."""
    return f"`{validate_identifier(name)}`"


def node_fields(*, embedding: bool) -> str:
    """Map projection of a node as the store reads it back, its vector only if ``embedding`` (the ``p_`` copies
    and the content hash are write-side bookkeeping, left on the server)."""
    return "{" + _NODE_KEYS + (", .embedding}" if embedding else "}")


def property_condition(variable: str, parameter: str) -> str:
    """A condition to append to a ``WHERE``: node ``variable``'s top-level properties equal every value of the map
    ``$parameter``. It reads their ``p_`` copies, which only filterable properties have, so a node without one never
    matches; Cypher's equality tells a string, a number and a boolean apart, and an integer equals the same float."""
    variable, parameter = validate_identifier(variable), validate_identifier(parameter)
    return f" AND all(key IN keys(${parameter}) WHERE {variable}['p_' + key] = ${parameter}[key])"


def schema_statements() -> list[str]:
    """Constraints and indexes of schema version 1, each idempotent."""
    return [
        f"CREATE CONSTRAINT mf_node_key IF NOT EXISTS FOR (n:{BASE_LABEL}) REQUIRE (n.namespace, n.id) IS UNIQUE",
        f"CREATE CONSTRAINT mf_meta_key IF NOT EXISTS FOR (m:{META_LABEL}) REQUIRE m.key IS UNIQUE",
        f"CREATE INDEX mf_node_kind IF NOT EXISTS FOR (n:{BASE_LABEL}) ON (n.namespace, n.kind)",
        f"CREATE FULLTEXT INDEX {TEXT_INDEX} IF NOT EXISTS FOR (n:{BASE_LABEL}) ON EACH [n.text]",
    ]


def vector_index_name(kind: str) -> str:
    return f"mf_vector_{validate_identifier(kind)}"


def vector_index(kind: str, dimension: int) -> str:
    """The vector index of one embedded kind (cosine similarity)."""
    return (
        f"CREATE VECTOR INDEX {vector_index_name(kind)} IF NOT EXISTS FOR (n:{label(kind)}) ON (n.embedding) "
        f"OPTIONS {{indexConfig: {{`vector.dimensions`: {int(dimension)}, `vector.similarity_function`: 'cosine'}}}}"
    )


def relationship_constraint(type_: str) -> str:
    """Uniqueness of (namespace, id) for one relationship type."""
    return (
        f"CREATE CONSTRAINT mf_rel_key_{validate_identifier(type_)} IF NOT EXISTS "
        f"FOR ()-[r:{label(type_)}]-() REQUIRE (r.namespace, r.id) IS UNIQUE"
    )


def read_meta() -> str:
    return f"MATCH (m:{META_LABEL} {{key: 'schema'}}) RETURN m {{.*}} AS meta"


def write_meta() -> str:
    return f"MERGE (m:{META_LABEL} {{key: 'schema'}}) SET m += $values"


def upsert_nodes(kind: str) -> str:
    """MERGE a batch of one kind by (namespace, id); a row whose id has another kind is skipped, not written.

    ``created_at`` is kept, ``updated_at`` moves only when ``content_hash`` changes; the caller compares the
    returned count with the row count to detect skipped rows and roll back.
    """
    return f"""
    UNWIND $rows AS row
    MERGE (n:{BASE_LABEL} {{namespace: row.values.namespace, id: row.values.id}})
    ON CREATE SET n.kind = row.values.kind, n.created_at = $now
    WITH n, row WHERE n.kind = row.values.kind
    WITH n, row, n.created_at AS created,
         CASE WHEN n.content_hash = row.values.content_hash THEN n.updated_at ELSE $now END AS updated
    SET n = row.values
    SET n.created_at = created, n.updated_at = updated, n:{label(kind)}
    RETURN count(n) AS written
    """


def claim_nodes() -> str:
    """CREATE nodes that must be new (the uniqueness constraint refuses an existing one); the upsert then fills them."""
    return f"""
    UNWIND $rows AS row
    CREATE (n:{BASE_LABEL} {{namespace: row.namespace, id: row.id, kind: row.kind, created_at: $now}})
    """


def find_kind_conflicts() -> str:
    return f"""
    UNWIND $rows AS row
    MATCH (n:{BASE_LABEL} {{namespace: row.values.namespace, id: row.values.id}})
    WHERE n.kind <> row.values.kind
    RETURN n.id AS id, n.kind AS kind, row.values.kind AS wanted ORDER BY id LIMIT 10
    """


def upsert_relationships(type_: str) -> str:
    """MERGE a batch of one relationship type between existing nodes; rows with a missing end are skipped."""
    return f"""
    UNWIND $rows AS row
    MATCH (a:{BASE_LABEL} {{namespace: row.values.namespace, id: row.source_id}})
    MATCH (b:{BASE_LABEL} {{namespace: row.values.namespace, id: row.target_id}})
    MERGE (a)-[r:{label(type_)} {{namespace: row.values.namespace, id: row.values.id}}]->(b)
    ON CREATE SET r.created_at = $now
    WITH r, row, r.created_at AS created,
         CASE WHEN r.content_hash = row.values.content_hash THEN r.updated_at ELSE $now END AS updated
    SET r = row.values
    SET r.created_at = created, r.updated_at = updated
    RETURN count(r) AS written
    """


def find_missing_endpoints() -> str:
    return f"""
    UNWIND $ends AS end
    OPTIONAL MATCH (n:{BASE_LABEL} {{namespace: end.namespace, id: end.id}})
    WITH end WHERE n IS NULL
    RETURN end.namespace AS namespace, end.id AS id ORDER BY namespace, id
    """


def get_nodes() -> str:
    return f"""
    UNWIND $ids AS node_id
    MATCH (n:{BASE_LABEL} {{namespace: $namespace, id: node_id}})
    RETURN n {{.*}} AS node
    """


def expand(direction: str, types: Sequence[str] | None, *, include_embeddings: bool = True) -> str:
    """One breadth-first hop from the frontier, along the given types and direction."""
    node = "n {.*}" if include_embeddings else "n {.*, embedding: null}"
    type_filter = "" if types is None else ":" + "|".join(label(type_) for type_ in types)
    arrows = {"out": ("-", "->"), "in": ("<-", "-"), "both": ("-", "-")}[direction]
    return f"""
    UNWIND $frontier AS node_id
    MATCH (s:{BASE_LABEL} {{namespace: $namespace, id: node_id}}){arrows[0]}[r{type_filter}]{arrows[1]}(n:{BASE_LABEL})
    WHERE n.namespace = $namespace
    RETURN r {{.*, type: type(r), source_id: startNode(r).id, target_id: endNode(r).id}} AS relationship,
           {node} AS node
    """


def vector_search(kind: str, *, filtered: bool, include_embeddings: bool) -> str:
    """Approximate candidates from the kind's vector index, kept if in the namespace (and, when ``filtered``, equal
    to every ``$filters`` value), then re-scored with the exact cosine (the index quantizes vectors) and cut to ``$k``.

    Returns how many candidates the index gave (``seen``), how many survived the filters (``kept``) and how many
    nodes the kind's index holds (``population``, from the label's count store), so the caller can size the next
    pool, and the hits best first, with their vectors only if ``include_embeddings``.
    ``vector.similarity.cosine`` gives (1 + cosine) / 2; hits carry the cosine itself.
    """
    condition = f"node:{BASE_LABEL} AND node.namespace = $namespace"
    if filtered:
        condition += property_condition("node", "filters")
    fields = node_fields(embedding=include_embeddings)
    return f"""
    CALL db.index.vector.queryNodes($index, $candidates, $vector) YIELD node
    WITH collect(node) AS found
    WITH found, [node IN found WHERE {condition}] AS kept
    CALL (kept) {{
        UNWIND kept AS node
        WITH node, 2 * vector.similarity.cosine(node.embedding, $vector) - 1 AS score
        ORDER BY score DESC, node.id
        LIMIT $k
        RETURN collect({{node: node {fields}, score: score}}) AS hits
    }}
    CALL () {{
        MATCH (counted:{label(kind)})
        RETURN count(counted) AS population
    }}
    RETURN size(found) AS seen, size(kept) AS kept, population, hits
    """


def keyword_search() -> str:
    """Top candidates from the text index (BM25), kept if in the namespace and kinds; shaped like vector_search."""
    return """
    CALL db.index.fulltext.queryNodes($index, $query, {limit: $candidates}) YIELD node, score
    WITH count(*) AS seen, collect(
        CASE WHEN node.namespace = $namespace AND ($kinds IS NULL OR node.kind IN $kinds)
             THEN {node: node {.*}, score: score} END
    ) AS hits
    RETURN seen, hits[0..$k] AS hits
    """


def delete_nodes() -> str:
    return f"""
    MATCH (n:{BASE_LABEL}) WHERE n.namespace = $namespace AND n.id IN $ids
    DETACH DELETE n
    RETURN count(*) AS deleted
    """


def delete_expired() -> str:
    """Nodes of every namespace whose ``expires_at`` (a filterable property, stored as ``p_expires_at``) is a
    number <= ``$now``, with their relationships."""
    return f"""
    MATCH (n:{BASE_LABEL})
    WHERE n.p_expires_at IS :: INTEGER | FLOAT AND n.p_expires_at <= $now
    DETACH DELETE n
    RETURN count(*) AS deleted
    """


def count_nodes(*, by_kind: bool) -> str:
    """A namespace's node count, counted in the (namespace, kind) index when a kind is given, else in the
    (namespace, id) key index: two statements, since ``($kind IS NULL OR ...)`` would defeat both seeks."""
    second = "n.kind = $kind" if by_kind else "n.id IS NOT NULL"
    return f"""
    MATCH (n:{BASE_LABEL}) WHERE n.namespace = $namespace AND {second}
    RETURN count(n) AS total
    """


def count_nodes_by_kind() -> str:
    """A namespace's node count per kind, by kind; read from the (namespace, kind) index."""
    return f"""
    MATCH (n:{BASE_LABEL}) WHERE n.namespace = $namespace AND n.kind IS NOT NULL
    RETURN n.kind AS kind, count(*) AS nodes ORDER BY kind
    """


def count_relationships(type_: str | None) -> str:
    type_filter = "" if type_ is None else ":" + label(type_)
    return f"""
    MATCH (:{BASE_LABEL} {{namespace: $namespace}})-[r{type_filter}]->(:{BASE_LABEL})
    WHERE r.namespace = $namespace
    RETURN count(r) AS total
    """


def namespaces() -> str:
    """Each namespace with its node count, by name; read from the (namespace, id) key index alone."""
    return f"""
    MATCH (n:{BASE_LABEL}) WHERE n.namespace IS NOT NULL AND n.id IS NOT NULL
    RETURN n.namespace AS name, count(*) AS nodes ORDER BY name
    """


def list_nodes(*, by_kind: bool, filtered: bool = False) -> str:
    """One page of a namespace's nodes without embeddings, newest first, sought through the (namespace, kind)
    index when a kind is given, else the (namespace, id) key index; when ``filtered``, only those whose
    properties equal every ``$filters`` value, tested on the nodes the index gives."""
    second = "n.kind = $kind" if by_kind else "n.id IS NOT NULL"
    if filtered:
        second += property_condition("n", "filters")
    return f"""
    MATCH (n:{BASE_LABEL}) WHERE n.namespace = $namespace AND {second}
    RETURN n {{.*, embedding: null}} AS node
    ORDER BY n.updated_at DESC, n.created_at DESC, n.id DESC
    SKIP $offset LIMIT $limit
    """


def neighbours() -> str:
    """The centre node (found by its key), how many relationships touch it, and one page of them with their
    other ends, ordered by (type, other end's id, relationship id); no row when the centre does not exist.

    From a bound node an undirected pattern meets a self-loop once, as both ends are the same node.
    """
    return f"""
    MATCH (c:{BASE_LABEL} {{namespace: $namespace, id: $node_id}})
    CALL (c) {{
        MATCH (c)-[r]-(o:{BASE_LABEL}) WHERE o.namespace = $namespace
        RETURN count(r) AS total
    }}
    CALL (c) {{
        MATCH (c)-[r]-(o:{BASE_LABEL}) WHERE o.namespace = $namespace
        WITH r, o ORDER BY type(r), o.id, r.id SKIP $offset LIMIT $limit
        RETURN collect({{
            relationship: r {{.*, type: type(r), source_id: startNode(r).id, target_id: endNode(r).id}},
            node: o {{.*, embedding: null}}
        }}) AS page
    }}
    RETURN c {{.*, embedding: null}} AS node, total, page
    """


def neighbours_of(direction: str, types: Sequence[str] | None, *, by_kind: bool) -> str:
    """The links of every node of ``$ids`` that exists, one row per node: its relationships of ``types`` (all if
    ``None``) in ``direction`` whose other end is in the namespace (and, when ``by_kind``, of a kind in ``$kinds``),
    ordered by (type, other end's id, relationship id), at most ``$limit`` per node, other ends without embeddings.

    Each centre is found by its key; the ordering and the limit are per centre, inside the subquery. From a bound
    node an undirected pattern meets a self-loop once.
    """
    type_filter = "" if types is None else ":" + "|".join(label(type_) for type_ in types)
    arrows = {"out": ("-", "->"), "in": ("<-", "-"), "both": ("-", "-")}[direction]
    kind_filter = " AND o.kind IN $kinds" if by_kind else ""
    return f"""
    UNWIND $ids AS node_id
    MATCH (c:{BASE_LABEL} {{namespace: $namespace, id: node_id}})
    CALL (c) {{
        MATCH (c){arrows[0]}[r{type_filter}]{arrows[1]}(o:{BASE_LABEL}) WHERE o.namespace = $namespace{kind_filter}
        WITH r, o ORDER BY type(r), o.id, r.id LIMIT $limit
        RETURN collect({{
            relationship: r {{.*, type: type(r), source_id: startNode(r).id, target_id: endNode(r).id}},
            node: o {node_fields(embedding=False)}
        }}) AS links
    }}
    RETURN c.id AS id, links
    """


def existing_ids() -> str:
    """Which of ``$ids`` exist in the namespace (for a ``neighbours_of`` that can match no link)."""
    return f"""
    UNWIND $ids AS node_id
    MATCH (c:{BASE_LABEL} {{namespace: $namespace, id: node_id}})
    RETURN c.id AS id
    """
