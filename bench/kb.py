"""The knowledge base: ``python -m bench.kb [--smoke] [--postgres URL] [--sizes 1000,10000]``.

1. **Ingestion** with the offline embedder (all-MiniLM-L6-v2 int8 on onnxruntime, every
   core): chunks per second over the chunks of 700 to 800 characters of the corpus (the
   default ``KB_CHUNK_CHARS`` is 800), then the rest. Target: at least 25 chunks/s.
2. **Recall@5** on 30 questions with known answers over a real public corpus that a package
   ships: Python's language reference topics (``pydoc_data.topics``, see
   :mod:`bench.kb_corpus`), stored in a :class:`SqlKnowledgeStore` on SQLite and searched as
   a user message is (query embedding, vectors, keywords, fusion). Target: at least 0.9.
3. **Query latency** at 1k, 10k and 100k chunks in one scope, on SQLite (a migrated file)
   and on PostgreSQL when ``CHINWAG_TEST_POSTGRES_URL`` or ``--postgres`` is given (a
   database created for the run and dropped afterwards): the corpus plus filler chunks
   (texts of corpus words drawn with their frequencies, random unit vectors), each query
   timed from its text to its hits: the query's embedding, the vector search, the keyword
   search and the fusion, with the vectors already loaded (after warm-up queries); at most
   a minute of timed queries per size. Target at 100k on SQLite: p50 under 30 ms, p99
   under 80 ms.

Exits with status 1 at the end when a figure missed its target (as ``make bench`` expects).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.kb.embed_local import LocalEmbedder
from adapters.memory import migrate
from adapters.memory.knowledge import SqlKnowledgeStore
from adapters.memory.store import SqlMemoryStore
from bench._common import Result
from bench.kb_corpus import QUESTIONS, Document, answered, check_questions, corpus
from core.knowledge import ChunkDraft, KbScope, KnowledgeStore, NewDocument

TARGET_CHUNKS_PER_S = 25.0
TARGET_RECALL = 0.9
TARGET_P50_MS = 30.0
TARGET_P99_MS = 80.0
TARGET_SIZE = 100_000
SCOPE = KbScope.of_bot("bench")
FILLER_BATCH = 2000
BUDGET_S = 60.0  # of timed queries per size and database


def verdict(met: bool) -> str:
    return "ok" if met else "BELOW TARGET"


@dataclass
class Embedded:
    """The corpus with its vectors, and how fast they were made."""

    documents: list[Document]
    vectors: list[list[list[float]]]  # per document, per chunk
    lines: list[str]
    rate: float


async def ingest(embedder: LocalEmbedder, documents: list[Document]) -> Embedded:
    """Embed every chunk, the full-size ones first (timed apart: the target's figure)."""
    texts = [(d, c.position, c.text) for d, doc in enumerate(documents) for c in doc.chunks]
    full = [t for t in texts if len(t[2]) >= 700]
    rest = [t for t in texts if len(t[2]) < 700]
    found: dict[tuple[int, int], list[float]] = {}
    timings = []
    await embedder.embed([t[2] for t in texts[:4]])  # onnxruntime's first-run allocations
    load = os.getloadavg()[0]
    cpu = time.process_time()
    for part in (full, rest):
        started = time.perf_counter()
        vectors = await embedder.embed([t[2] for t in part])
        timings.append(time.perf_counter() - started)
        if len(timings) == 1:
            cpu = time.process_time() - cpu
        found.update({(t[0], t[1]): v for t, v in zip(part, vectors, strict=True)})
    rate = len(full) / timings[0] if full else 0.0
    mean_full = sum(len(t[2]) for t in full) / max(1, len(full))
    every = len(texts) / sum(timings)
    lines = [
        f"ingestion: {len(full)} chunks of 700-800 chars (mean {mean_full:.0f}) in "
        f"{timings[0]:.1f} s: {rate:.1f} chunks/s with {embedder.id} on {os.cpu_count()} CPUs "
        f"(target >= {TARGET_CHUNKS_PER_S:.0f}: {verdict(rate >= TARGET_CHUNKS_PER_S)})",
        f"ingestion: {1000 * cpu / max(1, len(full)):.0f} ms of CPU per chunk (all threads); "
        f"load average {load:.1f} when it started (other processes share the CPUs)",
        f"ingestion: all {len(texts)} chunks of the corpus in {sum(timings):.1f} s: "
        f"{every:.1f} chunks/s (no target)",
    ]
    vectors_by_doc = [
        [found[(d, c.position)] for c in doc.chunks] for d, doc in enumerate(documents)
    ]
    return Embedded(documents, vectors_by_doc, lines, rate)


def new_document(
    title: str, chunks: Sequence[ChunkDraft], vectors: Sequence[Sequence[float]]
) -> NewDocument:
    return NewDocument(
        scope=SCOPE,
        title=title,
        source=f"bench:{title}",
        content_hash=secrets.token_hex(16),
        chunks=chunks,
        vectors=vectors,
        embedder="minilm-l6-int8",
        dimension=384,
        added_by="cli",
    )


async def store_corpus(store: KnowledgeStore, embedded: Embedded) -> int:
    for document, vectors in zip(embedded.documents, embedded.vectors, strict=True):
        await store.add_document(new_document(document.title, document.chunks, vectors))
    return sum(len(d.chunks) for d in embedded.documents)


async def recall(
    store: KnowledgeStore, embedder: LocalEmbedder, questions: Sequence[tuple[str, str]]
) -> tuple[float, list[str]]:
    """Recall@5 and the questions missed."""
    missed = []
    for question, phrase in questions:
        hits = await store.search([SCOPE], question, await embedder.embed_query(question))
        if not answered(phrase, [h.text for h in hits[:5]]):
            missed.append(question)
    return (len(questions) - len(missed)) / len(questions), missed


def filler_texts(documents: list[Document], count: int, rng: random.Random) -> list[str]:
    """``count`` texts of about 110 corpus words drawn with their frequencies."""
    words = [w for d in documents for c in d.chunks for w in re.findall(r"[A-Za-z_]+", c.text)]
    return [" ".join(rng.choices(words, k=110)) for _ in range(count)]


async def fill(store: KnowledgeStore, documents: list[Document], have: int, size: int) -> None:
    """Add filler chunks until the scope holds ``size``."""
    rng = random.Random(size)
    generator = np.random.default_rng(size)
    while have < size:
        count = min(FILLER_BATCH, size - have)
        texts = filler_texts(documents, count, rng)
        matrix = generator.standard_normal((count, 384), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        chunks = [ChunkDraft(t, i) for i, t in enumerate(texts)]
        await store.add_document(new_document(f"filler {have}", chunks, matrix.tolist()))
        have += count


async def latency(
    store: KnowledgeStore, embedder: LocalEmbedder, queries: int, warmup: int
) -> tuple[Result, list[float]]:
    """Query timings (embedding + search) and the query embedding's share alone.

    The query is searched as ``KnowledgeBase.retrieve`` does: the store is given the
    embedding still running, and searches by keywords meanwhile. A size whose queries are
    slow stops after ``BUDGET_S`` seconds of timed queries (the line says how many were
    timed), so ``make bench`` stays bounded.
    """
    asked = [QUESTIONS[i % len(QUESTIONS)][0] for i in range(queries + warmup)]
    spent: list[float] = []
    embeddings: list[float] = []

    async def embed(question: str) -> list[float]:
        started = time.perf_counter()
        vector = await embedder.embed_query(question)
        embeddings.append(time.perf_counter() - started)
        return vector

    for i, question in enumerate(asked):
        if sum(spent) > BUDGET_S and len(spent) >= 10:
            break
        started = time.perf_counter()
        hits = await store.search([SCOPE], question, embed(question))
        done = time.perf_counter()
        if not hits:
            raise RuntimeError(f"no hits for {question!r}")
        if i >= warmup:
            spent.append(done - started)
        else:
            embeddings.pop()
    return Result("kb", 1, len(spent), sum(spent), spent), embeddings


def latency_line(db: str, size: int, result: Result, embeddings: list[float]) -> tuple[str, bool]:
    p50, p99 = result.percentile(0.5), result.percentile(0.99)
    embedding = Result("embedding", 1, len(embeddings), sum(embeddings), embeddings)
    line = (
        f"{db} {size} chunks: query p50 {p50:.1f} ms, p99 {p99:.1f} ms over {result.messages} "
        f"queries (query embedding alone p50 {embedding.percentile(0.5):.1f} ms, p99 "
        f"{embedding.percentile(0.99):.1f} ms)"
    )
    if db != "sqlite" or size != TARGET_SIZE:
        return f"{line} (no target)", True
    met = p50 < TARGET_P50_MS and p99 < TARGET_P99_MS
    return (
        f"{line} (target p50 < {TARGET_P50_MS:.0f} ms, p99 < {TARGET_P99_MS:.0f} ms: "
        f"{verdict(met)})",
        met,
    )


@asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A migrated database created for the run, dropped afterwards."""
    import asyncpg

    name = f"chinwag_bench_kb_{secrets.token_hex(4)}"
    plain = admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    admin = await asyncpg.connect(plain)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{plain.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+asyncpg://")
        await migrate.upgrade(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclass
class Plan:
    sizes: list[int]
    queries: int
    warmup: int
    questions: Sequence[tuple[str, str]]


async def measure_db(
    db: str, url: str, embedder: LocalEmbedder, embedded: Embedded, plan: Plan
) -> tuple[list[str], list[str]]:
    """Recall (SQLite only) and latency lines for one database, and the targets missed."""
    lines: list[str] = []
    missed: list[str] = []
    async with SqlMemoryStore(url) as memory:
        store = SqlKnowledgeStore(memory)
        have = await store_corpus(store, embedded)
        if db == "sqlite":
            score, wrong = await recall(store, embedder, plan.questions)
            met = score >= TARGET_RECALL
            lines.append(
                f"recall@5: {score:.2f} on {len(plan.questions)} questions over "
                f"{len(embedded.documents)} documents, {have} chunks of Python's language "
                f"reference (pydoc_data.topics) (target >= {TARGET_RECALL}: {verdict(met)})"
            )
            lines += [f"  missed: {question}" for question in wrong]
            if not met:
                missed.append("recall@5")
            print("\n".join(lines), flush=True)
            lines = []
        for size in plan.sizes:
            started = time.perf_counter()
            await fill(store, embedded.documents, have, size)
            have = max(have, size)
            took = time.perf_counter() - started
            result, embeddings = await latency(store, embedder, plan.queries, plan.warmup)
            line, met = latency_line(db, size, result, embeddings)
            print(f"{line}; filled in {took:.0f} s", flush=True)
            if not met:
                missed.append(f"{db} query latency at {size}")
        await store.aclose()
    return lines, missed


def plan_of(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan([1000], 20, 5, QUESTIONS[:6])
    return Plan(args.sizes, args.queries, 20, QUESTIONS)


def smoke_corpus(documents: list[Document]) -> list[Document]:
    """The documents that answer the smoke run's questions, and a few more."""
    phrases = [phrase for _, phrase in QUESTIONS[:6]]
    keep = [d for d in documents if any(answered(p, [c.text for c in d.chunks]) for p in phrases)]
    return keep + [d for d in documents if d not in keep][:4]


async def main(args: argparse.Namespace) -> int:
    plan = plan_of(args)
    print(
        f"bench.kb ({'smoke' if args.smoke else 'full'} size), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs",
        flush=True,
    )
    documents = corpus()
    if unfair := check_questions(documents):
        raise SystemExit(f"bench.kb: no chunk contains {unfair}: fix bench/kb_corpus.py")
    if args.smoke:
        documents = smoke_corpus(documents)
    missed: list[str] = []
    embedder = LocalEmbedder()
    await embedder.start()
    try:
        embedded = await ingest(embedder, documents)
        print("\n".join(embedded.lines), flush=True)
        if embedded.rate < TARGET_CHUNKS_PER_S:
            missed.append("ingestion chunks/s")
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'kb.db'}"
            await migrate.upgrade(url)
            missed += (await measure_db("sqlite", url, embedder, embedded, plan))[1]
        pg = (args.postgres or os.environ.get("CHINWAG_TEST_POSTGRES_URL", "")).strip()
        if pg:
            async with postgres_database(pg) as pg_url:
                missed += (await measure_db("postgresql", pg_url, embedder, embedded, plan))[1]
        else:
            print("postgresql skipped: set CHINWAG_TEST_POSTGRES_URL or pass --postgres URL")
    finally:
        await embedder.aclose()
    if missed:
        print(f"bench.kb: below target: {', '.join(missed)}")
        return 1
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kb", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny size, for the test suite")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1000, 10_000, 100_000],
        help="chunks in the scope, comma-separated (1000,10000,100000)",
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (200)")
    parser.add_argument("--postgres", help="an admin URL (else CHINWAG_TEST_POSTGRES_URL)")
    return parser.parse_args(argv)


def run_main(argv: list[str] | None = None) -> int:
    return asyncio.run(main(parse(argv)))


if __name__ == "__main__":
    sys.exit(run_main())
