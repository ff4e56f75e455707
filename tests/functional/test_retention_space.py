"""Retention gives disk space back: the pages its purge frees are returned to the file system."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.models import EventType, Lease, NewEvent, TaskState, TaskStatus

pytestmark = pytest.mark.functional


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_the_retention_pass_shrinks_the_file(tmp_path):
    # Given a store holding 300 finished tasks with 20 KB of events each (about 6 MB)
    clock = Clock()
    path = tmp_path / "t.db"
    store = SQLiteTaskStore(path, clock=clock)
    for i in range(300):
        task_id = f"t{i}"
        store.create(TaskState(task_id=task_id, owner="o", user_input="x"))
        events = [
            NewEvent(task_id=task_id, event_type=EventType.PARTIAL_OUTPUT, data={"output": "x" * 2000}, key=f"k{n}")
            for n in range(10)
        ]
        store.update(task_id, {TaskStatus.PENDING}, status=TaskStatus.CANCELLED, events=events)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = path.stat().st_size
    # When a server's maintenance pass runs past their retention
    store = SQLiteTaskStore(path, clock=clock)
    executor = LocalExecutor(run_nothing, store, retention_seconds=1)
    clock.now += 10
    await executor.maintain_once()
    store.close()
    with sqlite3.connect(path) as db:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        tasks = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    # Then the tasks are gone, no free page is left in the file, and the file is a small part of what it was
    assert busy == 0
    assert tasks == 0
    assert free == 0
    assert path.stat().st_size < full / 10


async def run_nothing(task_id: str, lease: Lease) -> None:
    raise AssertionError("nothing runs in this test")


def test_freeing_pages_goes_in_bounded_batches_to_the_end(tmp_path):
    # Given a file with many free pages
    path = tmp_path / "t.db"
    store = SQLiteTaskStore(path)
    with store._write() as db:
        db.execute("CREATE TABLE filler (x BLOB)")
        db.executemany("INSERT INTO filler VALUES (?)", [(b"\0" * 4000,) for _ in range(1000)])
    with store._write() as db:
        db.execute("DROP TABLE filler")
    with store._read() as db:
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    assert free >= 1000
    # When the store frees one batch of 100 pages
    assert store.free_pages(batch_pages=100, max_batches=1) == 100
    # Then exactly those were freed, and the rest, in batches of 100, when asked for all
    assert store.free_pages(batch_pages=100) == free - 100
    with store._read() as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    store.close()


def test_close_waits_for_a_checkpoint_under_way(tmp_path, monkeypatch):
    # Given a store whose background checkpoint is under way (held there until the test lets it go)
    under_way, let_go = threading.Event(), threading.Event()

    class HeldConnection(sqlite3.Connection):
        def execute(self, sql, *args):
            if "wal_checkpoint" in sql:
                under_way.set()
                let_go.wait(10)
            return super().execute(sql, *args)

    connect = sqlite3.connect

    def connect_checkpointer_held(*args, **kwargs):
        if threading.current_thread().name == "sqlite-checkpoint":
            kwargs["factory"] = HeldConnection
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect_checkpointer_held)
    path = tmp_path / "t.db"
    store = SQLiteTaskStore(path)
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    assert under_way.wait(10)
    # When the store is closed
    closer = threading.Thread(target=store.close)
    closer.start()
    closer.join(0.5)
    returned_mid_checkpoint = not closer.is_alive()
    let_go.set()
    closer.join(10)
    # Then close returned only once the checkpoint was over, and the next opener's truncating checkpoint completes
    assert not returned_mid_checkpoint
    monkeypatch.undo()
    with sqlite3.connect(path) as db:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
