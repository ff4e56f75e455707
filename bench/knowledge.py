"""Knowledge base benchmarks. Prints figures; asserts nothing.

    make bench            (or: python -m bench.knowledge [--docs N] [--queries N])

1. Indexing a folder: ``--docs`` Markdown documents (10 sections of ~100 words each, ~10 KB, so
   ~10 MB and ~10,000 passages at the default 1,000) indexed from scratch by ``FolderKnowledge.sync``;
   then a pass with nothing changed (stat only), then a pass after 10 files changed.
2. Query latency at that size: ``--queries`` questions of 3-6 words, ``search(k=3)`` each (p50, p99).
3. The retriever's cold load of the index object on AWS: the index is put into moto's S3 (in-process,
   so the transfer is a memory copy: on Lambda add the S3 download, ~50-100 MB/s), then a fresh
   ``S3Knowledge`` answers its first question (list for the ETag, download to the cache folder, open,
   query) and a second one (warm: no S3 call within KNOWLEDGE_REFRESH_SECONDS).
4. The S3 indexer applying a batch of 100 changed objects to that index (download, re-index, put).
"""

from __future__ import annotations

import os

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from agentic.knowledge.folder import FolderKnowledge

SECTIONS = 10
WORDS_PER_SECTION = 100
BUCKET = "agentic-bench-knowledge"


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "dan", "tor", "lin", "sa", "qu", "ex", "ber"]
    words = {"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(size * 2)}
    return sorted(words)[:size]


def zipf_words(rng: random.Random, vocab: list[str], n: int) -> list[str]:
    # A Zipf-like draw: a few words are everywhere, most are rare, as in real text.
    return [vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] for _ in range(n)]


def make_folder(root: Path, docs: int, rng: random.Random, shuffled: list[str]) -> int:
    total = 0
    for i in range(docs):
        parts = [f"# Document {i}\n"]
        for s in range(SECTIONS):
            words = zipf_words(rng, shuffled, WORDS_PER_SECTION)
            half = WORDS_PER_SECTION // 2
            parts.append(f"## Section {s} {words[0]}\n\n{' '.join(words[:half])}.\n\n{' '.join(words[half:])}.\n")
        path = root / f"team{i % 20:02}" / f"doc{i:04}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(parts)
        path.write_text(text)
        total += len(text.encode())
    return total


def bench_folder(args: argparse.Namespace, work: Path) -> tuple[FolderKnowledge, list[str]]:
    rng = random.Random(15)
    vocab = vocabulary(rng)
    rng.shuffle(vocab)  # so that the frequent words differ from the alphabet's first
    folder = work / "docs"
    size = make_folder(folder, args.docs, rng, vocab)
    kb = FolderKnowledge(folder, work / "knowledge.db", max_file_bytes=10 * 1024 * 1024, min_score=0.1)
    t0 = time.perf_counter()
    report = kb.sync()
    first = time.perf_counter() - t0
    passages = kb.index.passage_count()
    print(
        f"indexed {len(report.indexed)} documents ({size / 1e6:.1f} MB, {passages} passages) in {first:.2f} s "
        f"({size / 1e6 / first:.1f} MB/s); index file {(work / 'knowledge.db').stat().st_size / 1e6:.1f} MB"
    )
    t0 = time.perf_counter()
    again = kb.sync()
    print(f"a pass with nothing changed: {(time.perf_counter() - t0) * 1000:.0f} ms ({again.read} files read)")
    for path in sorted(folder.rglob("*.md"))[:10]:
        path.write_text(path.read_text() + "\n\nAn added paragraph about zebras.\n")
    t0 = time.perf_counter()
    changed = kb.sync()
    print(f"a pass after 10 files changed: {(time.perf_counter() - t0) * 1000:.0f} ms ({changed.read} files read)")

    # Questions of content words (ranks 20-3,000 of the text's frequency), and a worst case of the
    # 20 most frequent words only (each in a large share of the passages: bm25 scores every match).
    queries = [" ".join(rng.choice(vocab[20:3000]) for _ in range(rng.randint(3, 6))) for _ in range(args.queries)]
    common = [" ".join(rng.choice(vocab[:20]) for _ in range(3)) for _ in range(max(10, args.queries // 10))]
    for label, batch in (("content words", queries), ("frequent words only", common)):
        times, found = [], 0
        for q in batch:
            t0 = time.perf_counter()
            hits = kb.search(q, 3)
            times.append((time.perf_counter() - t0) * 1000)
            found += bool(hits)
        print(
            f"query latency at {passages} passages, {len(batch)} questions of {label} (k=3): "
            f"p50 {pct(times, 50):.2f} ms, p99 {pct(times, 99):.2f} ms ({found} answered)"
        )
    return kb, queries


def bench_s3(kb: FolderKnowledge, queries: list[str], work: Path) -> None:
    import sqlite3

    import boto3
    from moto import mock_aws

    from agentic.adapters.s3_knowledge import S3Knowledge, S3KnowledgeIndexer, S3Objects

    # The object the indexer would have written: the same index as one standalone file.
    standalone = work / "index.sqlite"
    with sqlite3.connect(kb.index.path) as src, sqlite3.connect(standalone) as dst:  # type: ignore[arg-type]
        src.backup(dst)
    with sqlite3.connect(standalone) as db:
        db.execute("PRAGMA journal_mode=DELETE")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(standalone), BUCKET, "knowledge-index/index.sqlite")
        size = standalone.stat().st_size
        cold, warm = [], []
        for run in range(5):
            remote = S3Knowledge(
                S3Objects(BUCKET, s3),
                index_key="knowledge-index/index.sqlite",
                cache_dir=work / f"cache{run}",
                refresh_seconds=30,
            )
            t0 = time.perf_counter()
            remote.search(queries[run], 3)
            cold.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            remote.search(queries[run + 1], 3)
            warm.append((time.perf_counter() - t0) * 1000)
        print(
            f"retriever cold load of a {size / 1e6:.1f} MB index object (moto S3, 5 fresh containers): "
            f"median {statistics.median(cold):.0f} ms, then a warm question {statistics.median(warm):.2f} ms"
        )

        for path in sorted((work / "docs").rglob("*.md"))[:100]:
            key = "knowledge/" + path.relative_to(work / "docs").as_posix()
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes() + b"\n\nChanged for the indexer bench.\n")
        indexer = S3KnowledgeIndexer(
            S3Objects(BUCKET, s3), prefix="knowledge/", index_key="knowledge-index/index.sqlite", max_file_bytes=10**7
        )
        keys = [
            "knowledge/" + p.relative_to(work / "docs").as_posix() for p in sorted((work / "docs").rglob("*.md"))[:100]
        ]
        t0 = time.perf_counter()
        report = indexer.apply(keys)
        print(
            f"S3 indexer: a batch of 100 changed objects applied to that index in "
            f"{time.perf_counter() - t0:.2f} s ({len(report.indexed)} re-indexed, {report.attempts} put)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as tmp:
        work = Path(tmp)
        print(f"== knowledge: a folder of {args.docs} documents, then the same index as an S3 object")
        kb, queries = bench_folder(args, work)
        bench_s3(kb, queries, work)
        kb.close()


if __name__ == "__main__":
    main()
