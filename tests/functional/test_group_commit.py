"""Group commit: the writes the event loop makes in one turn share one SQLite transaction, and
each caller goes on only once that transaction is committed (``adapters/sqlite_group.py``)."""

from __future__ import annotations

import asyncio

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.errors import InputTooLarge, StoreUnavailable
from agentic.models import EventType, NewEvent, TaskState, TaskStatus
from agentic.service.io import call_store
from tests.functional.test_store_failures import DISK_FULL, committed, with_failing_commits

pytestmark = pytest.mark.functional

TASKS = [f"t{i}" for i in range(8)]


@pytest.fixture
def store(tmp_path):
    store = SQLiteTaskStore(tmp_path / "t.db", group_commit=True)
    for task_id in TASKS:
        store.create(TaskState(task_id=task_id, owner="o", user_input="x"))
    yield store
    store.close()


def count_commits(store: SQLiteTaskStore) -> list[str]:
    """Every COMMIT the store's write connection runs from now on."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def started(task_id: str) -> NewEvent:
    return NewEvent(task_id=task_id, event_type=EventType.TASK_STARTED, key="task:task_started")


async def test_writes_made_in_one_turn_share_one_commit_and_each_caller_sees_it_durable(store, tmp_path):
    commits = count_commits(store)
    seen_committed: dict[str, list] = {}

    async def start(task_id: str) -> None:
        await call_store(
            store, store.update, task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[started(task_id)]
        )
        # What another process would read the moment this caller goes on
        seen_committed[task_id] = committed(tmp_path / "t.db", f"SELECT status FROM tasks WHERE task_id = '{task_id}'")

    # When eight tasks are started at once on the loop
    await asyncio.gather(*(start(t) for t in TASKS))
    # Then one commit took all eight, and no caller went on before its write was committed
    assert len(commits) == 1
    assert seen_committed == {t: [("analyzing",)] for t in TASKS}
    assert all([e.cursor for e in store.read_events(t)] == [1] for t in TASKS)


async def test_a_write_that_fails_in_a_shared_commit_is_undone_alone(store, tmp_path):
    commits = count_commits(store)

    async def start(task_id: str, **data) -> TaskState:
        event = NewEvent(task_id=task_id, event_type=EventType.TASK_STARTED, key="task:task_started", data=data)
        return await call_store(
            store, store.update, task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[event]
        )

    # When, among three writes of one turn, the middle one fails after its row was changed (its
    # event is too large to store)
    results = await asyncio.gather(start("t1"), start("t0", text="x" * 500_000), start("t2"), return_exceptions=True)
    # Then only that write is undone (row and event), and the writes around it are committed
    assert isinstance(results[1], InputTooLarge)
    assert [r.status for r in (results[0], results[2])] == [TaskStatus.ANALYZING, TaskStatus.ANALYZING]
    assert len(commits) == 1
    rows = committed(tmp_path / "t.db", "SELECT task_id, status FROM tasks WHERE task_id IN ('t0','t1','t2')")
    assert sorted(rows) == [("t0", "pending"), ("t1", "analyzing"), ("t2", "analyzing")]
    assert store.read_events("t0") == []
    assert [e.event_type for e in store.read_events("t1")] == [EventType.TASK_STARTED]
    # And the undone write can be made again
    assert (await start("t0")).status is TaskStatus.ANALYZING


async def test_a_shared_commit_that_fails_fails_every_write_in_it_and_nothing_is_remembered(store, tmp_path):
    db = with_failing_commits(store)
    db.failing = True
    waiter = asyncio.create_task(store.bus.wait("t1", 0, timeout=0.5))
    await asyncio.sleep(0)

    async def start(task_id: str) -> TaskState:
        return await call_store(
            store, store.update, task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[started(task_id)]
        )

    # When three writes share a commit that fails (a full disk)
    results = await asyncio.gather(*(start(t) for t in ("t1", "t2", "t3")), return_exceptions=True)
    # Then each caller hears it, nothing of them exists, no stream was woken
    assert all(isinstance(r, StoreUnavailable) and DISK_FULL in str(r) for r in results), results
    assert committed(tmp_path / "t.db", "SELECT DISTINCT status FROM tasks") == [("pending",)]
    await waiter  # it times out: nothing was announced
    assert store.bus._latest.get("t1", 0) == 0
    # And no run may decide on the rows as those writes left them
    assert store.get_as_written("t1") is None or store.get_as_written("t1").status is TaskStatus.PENDING
    # When commits work again, the same writes succeed
    db.failing = False
    results = await asyncio.gather(*(start(t) for t in ("t1", "t2", "t3")))
    assert {r.status for r in results} == {TaskStatus.ANALYZING}
    assert (
        sorted(committed(tmp_path / "t.db", "SELECT status FROM tasks WHERE status = 'analyzing'"))
        == [("analyzing",)] * 3
    )


async def test_a_write_that_may_wait_commits_what_the_loop_holds_first(tmp_path):
    # Given two connections to one file used from one loop (as two processes in a test), the first
    # with writes of this turn not yet committed
    a = SQLiteTaskStore(tmp_path / "t.db", busy_timeout_seconds=2, group_commit=True)
    b = SQLiteTaskStore(tmp_path / "t.db", busy_timeout_seconds=2, group_commit=True)
    a.create(TaskState(task_id="t", owner="o", user_input="x"))
    pending = asyncio.ensure_future(
        call_store(a, a.append_event, NewEvent(task_id="t", event_type=EventType.TASK_QUEUED))
    )
    await asyncio.sleep(0)
    # When the second makes a write that waits for the lock, on the loop's own thread
    b.append_event(NewEvent(task_id="t", event_type=EventType.TASK_QUEUED, data={"n": 2}))
    # Then it did not wait out its timeout behind the first: that one was committed first
    assert (await pending).cursor == 1
    assert [e.cursor for e in b.read_events("t")] == [1, 2]
    a.close()
    b.close()


def test_writes_off_the_loop_commit_one_by_one(store, tmp_path):
    # Given no event loop: a write commits before it returns
    commits = count_commits(store)
    store.update("t1", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    assert len(commits) == 1
    assert committed(tmp_path / "t.db", "SELECT status FROM tasks WHERE task_id = 't1'") == [("analyzing",)]
