"""Retention gives disk space back: the pages its purge frees are returned to the file system."""

from __future__ import annotations

import sqlite3

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.models import EventType, NewEvent, TaskState, TaskStatus

pytestmark = pytest.mark.functional


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_purging_finished_tasks_shrinks_the_file(tmp_path):
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
    # When retention purges them (in several batches)
    store = SQLiteTaskStore(path, clock=clock)
    clock.now += 10
    assert store.purge_finished(older_than_seconds=1, batch=100) == 300
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    # Then no free page is left in the file, and the file is a small part of what it was
    assert free == 0
    assert path.stat().st_size < full / 10


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
    # When the store frees them 100 pages per transaction
    freed = store.free_pages(batch_pages=100)
    # Then every one was freed (the statement was stepped to its end, batch after batch)
    assert freed == free
    with store._read() as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    store.close()
