"""Store calls made on the event loop's own thread (``call_store``): a write whose lock is free
commits there, one whose lock is taken is made again there a few times over ~16 ms and only then
goes to the writer thread (which waits for the lock), and a run whose
writes meet a lock held by another connection goes on once it is free, without a step counted twice
or the loop held up meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.catalog import default_registry
from agentic.errors import StoreBusy
from agentic.models import EventType, NewEvent, StepStatus, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.io import BUSY_RETRIES, call_store
from agentic.service.pipeline_ops import PipelineOps
from agentic.service.runner import LocalRunner

pytestmark = pytest.mark.functional


class LockHolder:
    """Another connection holding the file's write lock, as another process inside a transaction."""

    def __init__(self, path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.db.execute("COMMIT")
        self.db.close()


@pytest.fixture
def store(tmp_path):
    store = SQLiteTaskStore(tmp_path / "t.db", busy_timeout_seconds=30)
    yield store
    store.close()


def wired(store: SQLiteTaskStore) -> tuple[PipelineOps, LocalExecutor]:
    ops = PipelineOps(
        store, default_registry(0), load_pipeline(), io=lambda fn, *a, **k: call_store(store, fn, *a, **k)
    )
    executor = LocalExecutor(LocalRunner(ops, time_scale=0).run, store, lease_seconds=30, runner_id="me")
    store.bus.on_run_end = executor.run_ending
    return ops, executor


async def test_a_write_whose_lock_is_free_commits_on_the_loops_thread(store):
    # Given a task
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    seen: list[int] = []
    append = store.append_event

    def recording(event):
        seen.append(threading.get_ident())
        return append(event)

    # When an event is appended through call_store with nobody else writing
    written = await call_store(
        store, recording, NewEvent(task_id="t", event_type=EventType.TASK_QUEUED, data={"position": 1})
    )
    # Then it was committed on this thread, once
    assert seen == [threading.get_ident()]
    assert written is not None
    assert [e.cursor for e in store.read_events("t")] == [written.cursor]


async def test_a_write_that_would_wait_goes_to_the_writer_thread_and_the_loop_goes_on(store, tmp_path):
    # Given a task and another connection holding the write lock
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    holder = LockHolder(tmp_path / "t.db")
    threads: list[int] = []
    append = store.append_event

    def recording(event):
        threads.append(threading.get_ident())
        return append(event)

    # When an event is appended through call_store
    write = asyncio.create_task(
        call_store(store, recording, NewEvent(task_id="t", event_type=EventType.TASK_QUEUED, data={"position": 1}))
    )
    # Then the loop keeps serving reads while the write waits
    for _ in range(3):
        assert (await call_store(store, store.get, "t")) is not None
        await asyncio.sleep(0.05)
    assert not write.done()
    # And once the lock is free, the write commits, on another thread, exactly once
    holder.release()
    written = await asyncio.wait_for(write, 10)
    assert threads[0] == threading.get_ident()
    assert threads[-1] != threading.get_ident()
    assert [e.cursor for e in store.read_events("t")] == [written.cursor]


async def test_a_run_meeting_a_held_lock_goes_on_after_it_without_counting_anything_twice(store, tmp_path):
    # Given a running task whose writes will meet another connection's transaction
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    _ops, executor = wired(store)
    holder = LockHolder(tmp_path / "t.db")
    # When it is started (its claim and its run's writes must wait for the lock)
    start = asyncio.create_task(executor.start("t"))
    # Then the loop goes on serving reads meanwhile
    for _ in range(3):
        task = await call_store(store, store.get, "t")
        assert task is not None
        assert task.status is TaskStatus.PENDING
        await asyncio.sleep(0.05)
    # And once the lock is free the run ends with each step attempted once and each event written once
    holder.release()
    await asyncio.wait_for(start, 10)
    await asyncio.wait_for(executor.drain(), 10)
    task = store.get("t")
    assert task is not None
    assert task.status is TaskStatus.COMPLETED
    assert task.execution_plan is not None
    assert [(s.status, s.attempts) for s in task.execution_plan.steps] == [(StepStatus.COMPLETED, 1)] * 3
    keys = [e.event_type for e in store.read_events("t")]
    assert keys.count(EventType.STEP_STARTED) == 3
    assert keys.count(EventType.TASK_COMPLETED) == 1


def planned_with_the_lock_busy(store: SQLiteTaskStore, busy_while) -> list[tuple[str, int]]:
    """A task whose start was committed on its own (by an earlier version), so that planning it is
    two writes (the task_started event again, skipped by its key, then the plan); the plan's write
    on the loop's thread finds the lock taken while ``busy_while(loop attempts so far)`` is true, as
    if another process held it. Returns the calls made, with their threads."""
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    store.update(
        "t",
        {TaskStatus.PENDING},
        status=TaskStatus.ANALYZING,
        events=[NewEvent(task_id="t", event_type=EventType.TASK_STARTED, data={}, key="task:task_started")],
    )
    update, append = store.update, store.append_event
    calls: list[tuple[str, int]] = []
    loop = threading.get_ident()

    def appending(event):
        calls.append(("append", threading.get_ident()))
        return append(event)

    def busy_at_the_plan(task_id, expect, **kwargs):
        calls.append(("update", threading.get_ident()))
        on_loop = [c for c in calls if c == ("update", loop)]
        if threading.get_ident() == loop and busy_while(len(on_loop)):
            raise StoreBusy("another process holds the write lock")
        return update(task_id, expect, **kwargs)

    store.append_event = appending  # type: ignore[method-assign]
    store.update = busy_at_the_plan  # type: ignore[method-assign]
    return calls


def planned_once(store: SQLiteTaskStore) -> None:
    task = store.get("t")
    assert task is not None
    assert task.status is TaskStatus.EXECUTING
    types = [e.event_type for e in store.read_events("t")]
    assert types.count(EventType.TASK_STARTED) == 1
    assert types.count(EventType.PLAN_CREATED) == 1
    assert types.count(EventType.STEP_STARTED) == 1


async def test_an_operation_refused_midway_is_made_again_from_the_start_on_the_loop(store):
    # Given a task whose plan write finds the lock taken once (another process's short transaction)
    calls = planned_with_the_lock_busy(store, lambda attempts: attempts == 1)
    ops, _ = wired(store)
    # When the operation is made through the ops' store caller
    _task, started = await ops.io(ops.plan_and_start, "t")
    # Then it was made again from its start, on the loop's thread (no thread hop), after a short pause,
    # and the task was planned once, its first step started
    loop = threading.get_ident()
    assert calls == [("append", loop), ("update", loop), ("append", loop), ("update", loop)]
    assert started
    planned_once(store)


async def test_an_operation_refused_on_every_retry_is_made_again_on_the_writer_thread(store):
    # Given a task whose plan write finds the lock taken on every attempt on the loop (a long transaction)
    calls = planned_with_the_lock_busy(store, lambda attempts: True)
    ops, _ = wired(store)
    # When the operation is made through the ops' store caller
    _task, started = await ops.io(ops.plan_and_start, "t")
    # Then after its retries on the loop it was made again from its start on the writer thread, and
    # the task was planned once, its first step started
    loop = threading.get_ident()
    on_loop = [c for c in calls if c[1] == loop]
    elsewhere = [c for c in calls if c[1] != loop]
    assert on_loop == [("append", loop), ("update", loop)] * (len(BUSY_RETRIES) + 1)
    assert [kind for kind, _ in elsewhere] == ["append", "update"]
    assert calls[-2:] == elsewhere
    assert started
    planned_once(store)


async def test_a_write_meeting_a_short_transaction_of_another_connection_commits_on_the_loop(store, tmp_path):
    # Given a task and another connection holding the write lock for a moment (a few milliseconds)
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    holder = LockHolder(tmp_path / "t.db")
    asyncio.get_running_loop().call_later(0.003, holder.release)
    threads: list[int] = []
    append = store.append_event

    def recording(event):
        threads.append(threading.get_ident())
        return append(event)

    # When an event is appended through call_store
    written = await call_store(
        store, recording, NewEvent(task_id="t", event_type=EventType.TASK_QUEUED, data={"position": 1})
    )
    # Then it waited on the loop (never on a thread) and committed there once the lock was free
    assert len(threads) >= 2
    assert set(threads) == {threading.get_ident()}
    assert [e.cursor for e in store.read_events("t")] == [written.cursor]


async def test_a_renewal_right_after_a_run_ended_its_task_does_not_stop_that_run(store, caplog):
    # Given a run that has written its task's completion but has not returned yet
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    ops, _ = wired(store)
    release = asyncio.Event()
    ended: list[str] = []

    async def run(task_id, lease):
        await ops.io(ops.plan_and_start, task_id, lease=lease)
        await ops.io(ops.fail, task_id, "Boom", "it ended", lease=lease)  # the task's last write
        await release.wait()  # still on its way out
        ended.append(task_id)

    executor = LocalExecutor(run, store, lease_seconds=30, runner_id="me")
    store.bus.on_run_end = executor.run_ending
    await executor.start("t")
    for _ in range(50):
        if store.get("t").status is TaskStatus.FAILED:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    # When the lease maintenance runs now (the task holds no lease any more)
    await executor.maintain_once()
    # Then the run is not taken for one that lost its lease: it is not cancelled and returns
    release.set()
    await asyncio.wait_for(executor.drain(), 10)
    assert ended == ["t"]
    assert "lease lost" not in caplog.text
