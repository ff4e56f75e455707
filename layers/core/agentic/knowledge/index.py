"""The passage index: SQLite FTS5 with bm25, in a file (shared by processes) or in memory.

A source's passages are replaced in one transaction (``BEGIN IMMEDIATE``, so two processes that
both saw a file change take turns, and the second finds the work done). Each source keeps a version
(size and mtime locally, the ETag on S3) that lets a scan skip unchanged files without reading them,
and the SHA-256 of its content that lets a touched-but-unchanged file skip re-indexing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentic.knowledge.base import HEADING_WEIGHT, Hit, Skipped, SourceInfo, query_terms
from agentic.knowledge.split import Chunk

#: bm25's IDF is log((N - n + 0.5) / (n + 0.5)), floored near 0: in an index of a handful of passages
#: every word looks common and every score is ~0. The score threshold applies from this size on.
THRESHOLD_MIN_PASSAGES = 20
#: Pages of the full-text index one merge step writes (4 MB: tens of milliseconds of its write lock).
MERGE_PAGES = 1000
#: A bound on ``merge_all_segments`` (4 GB of index merged), should FTS5 ever keep reporting work.
MAX_MERGE_STEPS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS source (
    source TEXT PRIMARY KEY, version TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    passages INTEGER NOT NULL, indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    source TEXT PRIMARY KEY, version TEXT NOT NULL, reason TEXT NOT NULL, size INTEGER NOT NULL,
    seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS passage (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS passage_by_source ON passage(source);
CREATE VIRTUAL TABLE IF NOT EXISTS passage_fts USING fts5(
    heading, text, content='passage', content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS passage_ai AFTER INSERT ON passage BEGIN
    INSERT INTO passage_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;
CREATE TRIGGER IF NOT EXISTS passage_ad AFTER DELETE ON passage BEGIN
    INSERT INTO passage_fts(passage_fts, rowid, heading, text) VALUES ('delete', old.id, old.heading, old.text);
END;
"""


@dataclass(frozen=True)
class Known:
    """What the index holds about one source (indexed or skipped)."""

    version: str
    sha256: str | None
    skipped: bool


class PassageIndex:
    """``path`` None: in memory. ``read_only``: a downloaded copy nobody writes (opened immutable)."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        min_score: float = 0.0,
        busy_timeout_seconds: float = 10.0,
        wal: bool = True,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.min_score = min_score
        self._lock = threading.Lock()
        if path is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        elif read_only:
            uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=busy_timeout_seconds, check_same_thread=False, isolation_level=None
            )
            if wal:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        if not read_only:
            with self._lock:  # in one write transaction: processes that start together take turns
                self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")

    # --- writes ------------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def known(self) -> dict[str, Known]:
        """Every source the index has seen, indexed or skipped, with its version."""
        with self._lock:
            rows = self._db.execute("SELECT source, version, sha256, 0 FROM source").fetchall()
            rows += self._db.execute("SELECT source, version, NULL, 1 FROM skipped").fetchall()
        return {s: Known(v, h, bool(k)) for s, v, h, k in rows}

    def replace(self, source: str, *, version: str, sha256: str, size: int, chunks: Sequence[Chunk]) -> bool:
        """Index ``source`` as ``chunks``; False (only the version recorded) if its content is unchanged."""
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT sha256 FROM source WHERE source = ?", (source,)).fetchone()
            db.execute("DELETE FROM skipped WHERE source = ?", (source,))
            if row is not None and row[0] == sha256:
                db.execute("UPDATE source SET version = ?, size = ? WHERE source = ?", (version, size, source))
                return False
            db.execute("DELETE FROM passage WHERE source = ?", (source,))
            db.executemany(
                "INSERT INTO passage(source, heading, text) VALUES (?, ?, ?)",
                [(source, c.heading, c.text) for c in chunks],
            )
            db.execute(
                "INSERT OR REPLACE INTO source(source, version, sha256, size, passages, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (source, version, sha256, size, len(chunks), now),
            )
        return True

    def skip(self, source: str, *, version: str, reason: str, size: int) -> bool:
        """Record that ``source`` is not searched (its passages go); True if this is news (warn once)."""
        with self._write() as db:
            row = db.execute("SELECT version, reason FROM skipped WHERE source = ?", (source,)).fetchone()
            if row is not None and tuple(row) == (version, reason):
                return False
            db.execute("DELETE FROM passage WHERE source = ?", (source,))
            db.execute("DELETE FROM source WHERE source = ?", (source,))
            db.execute(
                "INSERT OR REPLACE INTO skipped(source, version, reason, size, seen_at) VALUES (?, ?, ?, ?, ?)",
                (source, version, reason, size, time.time()),
            )
        return True

    def remove(self, source: str) -> bool:
        """Forget ``source`` (its file or object is gone); True if the index held it."""
        with self._write() as db:
            gone = db.execute("DELETE FROM passage WHERE source = ?", (source,)).rowcount
            gone += db.execute("DELETE FROM source WHERE source = ?", (source,)).rowcount
            gone += db.execute("DELETE FROM skipped WHERE source = ?", (source,)).rowcount
        return gone > 0

    def merge_segments(self, pages: int = MERGE_PAGES) -> bool:
        """Merge the full-text index's segments, writing at most ``pages`` pages; True if more remain.

        Each write adds segments to FTS5's index and every search reads each one in turn: merged,
        a search of the bundled documents took 37 instead of 66 µs, and the search was one of the
        larger parts of a task's CPU. A negative ``merge`` merges across levels as ``optimize`` does,
        but in bounded steps, so that a large index never holds its write lock for long.
        """
        with self._write() as db:
            before = db.total_changes
            db.execute("INSERT INTO passage_fts(passage_fts, rank) VALUES ('merge', ?)", (-pages,))
            # FTS5 counts one change for a merge that found nothing left to do.
            return db.total_changes - before > 1

    def merge_all_segments(self) -> None:
        """``merge_segments`` until one segment is left (an index built at once, before its first search)."""
        for _ in range(MAX_MERGE_STEPS):
            if not self.merge_segments():
                return

    # --- reads -------------------------------------------------------------------------------------

    def search(self, query: str, k: int) -> list[Hit]:
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        with self._lock:
            rows = self._db.execute(
                "SELECT p.source, p.heading, p.text, bm25(passage_fts, ?, 1.0) AS rank"
                " FROM passage_fts JOIN passage p ON p.id = passage_fts.rowid"
                " WHERE passage_fts MATCH ? ORDER BY rank LIMIT ?",
                (HEADING_WEIGHT, match, k),
            ).fetchall()
        # bm25() is lower-is-better and negative; report a positive, higher-is-better score.
        hits = [Hit(source, heading, text, round(-rank, 4)) for source, heading, text, rank in rows]
        if self.min_score <= 0 or self.passage_count() < THRESHOLD_MIN_PASSAGES:
            return hits
        return [h for h in hits if h.score >= self.min_score]

    def sources(self) -> list[SourceInfo]:
        with self._lock:
            rows = self._db.execute("SELECT source, passages, size, indexed_at FROM source ORDER BY source").fetchall()
        return [SourceInfo(*row) for row in rows]

    def skipped(self) -> list[Skipped]:
        with self._lock:
            rows = self._db.execute("SELECT source, reason, size FROM skipped ORDER BY source").fetchall()
        return [Skipped(*row) for row in rows]

    def passage_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM passage").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
