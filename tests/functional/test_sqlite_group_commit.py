"""SQLite group commit: writes in one loop iteration share a commit, yet nothing uncommitted leaks out."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.errors import InvalidTransition
from agentic.models import EventType, NewEvent, TaskState, TaskStatus

pytestmark = pytest.mark.functional


def committed_statuses(path):
    with sqlite3.connect(path) as other:  # another connection sees only committed data
        return [row[0] for row in other.execute("SELECT status FROM tasks")]


def committed_events(path):
    with sqlite3.connect(path) as other:
        return other.execute("SELECT COUNT(*) FROM events").fetchone()[0]


async def test_streams_are_woken_and_fed_only_with_committed_events(tmp_path):
    path = tmp_path / "t.db"
    store = SQLiteTaskStore(path)
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    # Given a stream waiting for the task's first event
    waiter = asyncio.create_task(store.bus.wait("t", 0, timeout=5))
    await asyncio.sleep(0)  # the waiter registers; the create's batch commits
    assert committed_statuses(path) == ["pending"]
    # When a state change and its event are written on the loop (a batch opens)
    event = NewEvent(task_id="t", event_type=EventType.TASK_STARTED, key="k")
    store.update("t", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[event])
    # Then, within this iteration, nothing is durable and no stream is woken
    assert committed_events(path) == 0
    assert committed_statuses(path) == ["pending"]
    assert not waiter.done()
    # When the iteration ends, the batch commits and only then are streams woken
    await asyncio.wait_for(waiter, 1)
    assert committed_statuses(path) == ["analyzing"]
    assert committed_events(path) == 1
    store.close()


async def test_a_read_commits_what_is_in_flight_before_returning_it(tmp_path):
    path = tmp_path / "t.db"
    store = SQLiteTaskStore(path)
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    store.append_event(NewEvent(task_id="t", event_type=EventType.TASK_STARTED))
    # The read happens in the same iteration as the write, before the batch would commit
    events = store.read_events("t")
    assert [e.cursor for e in events] == [1]
    assert committed_events(path) == 1
    store.close()


async def test_a_failed_operation_rolls_back_alone_inside_a_batch(tmp_path):
    store = SQLiteTaskStore(tmp_path / "t.db")
    store.create(TaskState(task_id="a", owner="o", user_input="x"))
    store.create(TaskState(task_id="b", owner="o", user_input="x"))
    with pytest.raises(InvalidTransition):
        store.update("a", {TaskStatus.EXECUTING}, status=TaskStatus.COMPLETED)
    store.update("b", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    await asyncio.sleep(0)
    assert store.get("a").status is TaskStatus.PENDING
    assert store.get("b").status is TaskStatus.ANALYZING
    store.close()
