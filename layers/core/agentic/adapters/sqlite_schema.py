"""The SQLite file's schema: tables, indexes, the migration from version 1, and the pragmas."""

from __future__ import annotations

import sqlite3

from agentic.models import TaskStatus

SCHEMA_VERSION = 2
#: The log's length (pages of 4 KB) at which a commit checkpoints by itself: a safety net for when the
#: checkpoint thread falls behind (see open_schema).
WAL_CHECKPOINT_PAGES = 4096
WAL_SIZE_LIMIT_BYTES = 1024 * 1024

_TABLES = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id       TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    doc           TEXT NOT NULL,
    lease_owner   TEXT,
    lease_epoch   INTEGER NOT NULL DEFAULT 0,
    lease_expires REAL,
    finished_at   REAL
);
CREATE TABLE IF NOT EXISTS events (
    task_id    TEXT NOT NULL,
    cursor     INTEGER NOT NULL,
    event_key  TEXT,
    event_type TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (task_id, cursor)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Events live in a rowid table: rows are appended in the order they are written, and the primary
# key is an index of small entries. Files made before kept them WITHOUT ROWID, clustered by
# (task_id, cursor): each event then went into the middle of the table (task ids are random) next
# to rows of ~1 KB, so a commit dirtied and split more pages (an insert took ~2.5x as long and a
# commit ~2x, per SQLite alone; a task's events took 12.6 KB on disk against 8.2 KB). Every
# statement reads and writes both layouts alike, so such files are used as they are.

# Version 1 files lack the lease and retention columns.
_MIGRATION_1_TO_2 = [
    "ALTER TABLE tasks ADD COLUMN lease_owner TEXT",
    "ALTER TABLE tasks ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE tasks ADD COLUMN lease_expires REAL",
    "ALTER TABLE tasks ADD COLUMN finished_at REAL",
]

_INDEXES = """
DROP INDEX IF EXISTS tasks_by_status;
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks(owner, created_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_owner_status ON tasks(owner, status, created_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_lease ON tasks(lease_expires) WHERE lease_expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_by_finish ON tasks(finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_key ON events(task_id, event_key) WHERE event_key IS NOT NULL;
"""

_TERMINAL = tuple(s.value for s in TaskStatus if s.is_terminal)


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Statements one by one (``executescript`` would commit the caller's transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def open_schema(db: sqlite3.Connection, synchronous: str, now: float) -> None:
    """Make or migrate the file's tables and indexes, and set the connection's pragmas."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tasks'").fetchone():
        # A new file: pages freed by the retention purge are given back to the file system.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives the process (kill -9, a crash); FULL also the machine (power loss),
    # at the cost of an fsync per commit.
    db.execute(f"PRAGMA synchronous={synchronous}")
    # Checkpoints (which fsync) run on a thread of their own, not in the commits of the writer
    # (see SQLiteFile._checkpoint_in_background). Under a steady stream of writes that thread can lose the
    # race to restart the log, so a commit that finds the log past 16 MB checkpoints too. At
    # SQLite's 1,000 pages (or 256) busy servers' commits checkpointed every second or so, each
    # copying pages the thread was about to copy: ~7% of the CPU per task over HTTP, and the slow
    # tail of commits (2-5 ms). The log file is cut back to 1 MB when it restarts. Bounding it
    # matters on a nearly full disk.
    db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
    # A savepoint (each write in the loop's shared transaction, see sqlite_group) keeps the pages it
    # changes in a sub-journal: in memory, not a temporary file per transaction.
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute("BEGIN IMMEDIATE")
    try:
        _run_script(db, _TABLES)
        columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
        if "lease_owner" not in columns:
            for statement in _MIGRATION_1_TO_2:
                db.execute(statement)
            # Tasks a version-1 server left mid-run are resumed by the next live process.
            db.execute("UPDATE tasks SET lease_expires = 0 WHERE status IN ('analyzing', 'executing')")
            db.execute(
                f"UPDATE tasks SET finished_at = ? WHERE status IN ({','.join('?' * len(_TERMINAL))})",
                (now, *_TERMINAL),
            )
        _run_script(db, _INDEXES)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
