"""Leases, fencing and admission: each test names a small bug that once went unnoticed by the suite.

Two processes' wirings share one SQLite file (``tests/functional/test_leases.py``); the stores read a
test-controlled wall clock (leases expire when the test says) and the event loop runs on a virtual
clock (``tests/virtual_time.py``), so a run that never stops fails the test at once instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore, sort_key
from agentic.agents.catalog import default_registry
from agentic.errors import Backpressure, LeaseLost
from agentic.models import EventType, StepStatus, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.control import TaskControl
from agentic.service.pipeline_ops import PipelineOps
from tests.functional.test_leases import Process, new_task
from tests.virtual_time import run_virtual, until

pytestmark = pytest.mark.functional


@dataclass
class Watched:
    """What became of the agent calls of one process: started, finished, or interrupted."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)


def watch_agent(process: Process, agent_type: str, *, seconds: float) -> Watched:
    """The process's ``agent_type`` works for ``seconds`` (virtual) per call, and is watched doing it."""
    watched = Watched()
    agent = process.ops.registry.get(agent_type)
    inner = agent.execute

    async def execute(step, context):
        watched.started.append(context.task_id)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            watched.interrupted.append(context.task_id)
            raise
        watched.finished.append(context.task_id)
        return await inner(step, context)

    agent.execute = execute  # type: ignore[method-assign]
    return watched


def test_a_stale_run_cannot_renew_the_lease_a_newer_run_of_its_process_holds(shared):
    """Bug guarded: lease renewal matching the runner id only, not the lease's epoch.

    A run of process A stalls past its lease; A itself resumes the task (a newer lease, same runner
    id). The stale run's renewal must be told its lease is gone, or it keeps running beside the new
    one (renewing a lease it no longer holds).
    """
    clock, _, process = shared
    a = process("a")
    new_task(a.store)
    stale = a.store.claim("t", "a", 5)
    clock.now += 6
    fresh = a.store.claim("t", "a", 5)
    assert stale is not None
    assert fresh is not None
    assert fresh.epoch == stale.epoch + 1
    # When each run renews
    assert a.store.renew("a", {"t": stale}, 5) == {"t"}
    assert a.store.renew("a", {"t": fresh}, 5) == set()
    # Then the task's lease is the newer run's
    assert a.store.get("t").lease == fresh


def test_a_run_that_lost_its_task_to_a_cancel_and_a_retry_cannot_write(shared):
    """Bug guarded: the fencing check letting a run write to a task that holds no lease at all.

    A cancel and a retry take the task's lease away (the retried run claims a new one when it
    starts). Between the two, the old run, still going, must not be able to start the next step. (A
    result of the step in flight is refused anyway, as its attempt was overtaken: the gap this test
    closes is a run between two steps, which would otherwise run the next agent and write its result.)
    """
    _, calls, process = shared
    a, b = process("a"), process("b")
    new_task(a.store)
    lease = a.store.claim("t", "a", 5)
    a.ops.plan("t", lease=lease)

    async def first_two_steps() -> None:
        for step_id in ("step_001", "step_002"):
            outcome = await a.ops.run_step("t", step_id, 0, lambda name, attempt: None, lease=lease)
            assert outcome.step.status is StepStatus.COMPLETED

    asyncio.run(first_two_steps())
    # Given another process cancelled the task and retried it (its new run has not claimed it yet)
    control = TaskControl(b.store, load_pipeline())
    control.cancel(b.store.get("t"), None, "o")
    control.retry(b.store.get("t"), None, "o")
    assert b.store.get("t").lease is None
    before = b.store.read_events("t")
    calls.clear()
    # When the old run goes on to its next step
    with pytest.raises(LeaseLost):
        asyncio.run(a.ops.run_step("t", "step_003", 0, lambda name, attempt: None, lease=lease))
    # Then its agent was not called and nothing of it was written
    assert calls == []
    assert b.store.read_events("t") == before
    writer = b.store.get("t").execution_plan.steps[2]
    assert (writer.status, writer.attempts) == (StepStatus.PENDING, 0)


def test_a_run_whose_lease_was_taken_over_stops_calling_its_agent(shared):
    """Bug guarded: a run whose lease renewal failed (another process took the task) is not stopped.

    It would keep calling its agent (and, once agents call models, paying for tokens) until its next
    write is refused. The renewal that finds the lease gone must interrupt the step in flight.
    """
    clock, _, process = shared

    async def main() -> Watched:
        a, b = process("a"), process("b")
        watched = watch_agent(a, "analyzer", seconds=25)  # a long step, within its 30 s timeout
        new_task(a.store)
        await a.executor.start("t")
        await until(lambda: watched.started == ["t"])
        # Given A stalled past its lease, and B took the task over and completed it
        clock.now += 6
        assert await b.executor.maintain_once() == ["t"]
        await asyncio.wait_for(b.executor.drain(), 10)
        assert b.store.get("t").status is TaskStatus.COMPLETED
        # When A's lease maintenance runs
        await a.executor.maintain_once()
        try:
            await asyncio.wait_for(a.executor.drain(), 10)
        except TimeoutError:
            raise AssertionError("the run that lost its lease is still running") from None
        # Then A's step was interrupted there and then, and its slot is free
        assert watched.interrupted == ["t"]
        assert a.executor.running == 0
        return watched

    watched = run_virtual(main(), limit_seconds=60)
    assert watched.finished == []


def _version_1_file(path, tasks: list[TaskState]) -> None:
    """A database as a version-1 server left it: no lease or retention columns."""
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE tasks (task_id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,
                                created_at TEXT NOT NULL, doc TEXT NOT NULL);
            CREATE TABLE events (task_id TEXT NOT NULL, cursor INTEGER NOT NULL, event_key TEXT,
                                 event_type TEXT NOT NULL, timestamp TEXT NOT NULL, data TEXT NOT NULL,
                                 PRIMARY KEY (task_id, cursor)) WITHOUT ROWID;
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            PRAGMA user_version = 1;
            """
        )
        db.executemany(
            "INSERT INTO tasks(task_id, owner, status, created_at, doc) VALUES (?, ?, ?, ?, ?)",
            [(t.task_id, t.owner, t.status.value, sort_key(t.created_at), t.model_dump_json()) for t in tasks],
        )


def test_tasks_a_stopped_version_1_server_left_running_are_resumed_after_the_migration(shared, tmp_path):
    """Bug guarded: the version-1 file migration forgetting tasks left ``executing`` (or ``analyzing``).

    A version-1 server had no leases; the tasks it was running when it stopped must be picked up by
    the first live process of the new version, not left mid-run for ever.
    """
    clock, _, process = shared
    # Given a task planned (executing, its first step done) and one being planned, by a v1 server
    scratch = SQLiteTaskStore(tmp_path / "scratch.db", clock=clock)
    new_task(scratch, "mid-run")
    ops = PipelineOps(scratch, default_registry(0), load_pipeline())
    ops.plan("mid-run")
    asyncio.run(ops.run_step("mid-run", "step_001", 0, lambda name, attempt: None))
    executing = scratch.get("mid-run")
    scratch.close()
    assert executing.status is TaskStatus.EXECUTING
    analyzing = TaskState(task_id="planning", owner="o", user_input="Explain jitter", status=TaskStatus.ANALYZING)
    _version_1_file(tmp_path / "tasks.db", [executing, analyzing])

    async def main() -> None:
        # When a new-version process opens the file and does its lease maintenance
        a = process("a")
        assert sorted(await a.executor.maintain_once()) == ["mid-run", "planning"]
        await asyncio.wait_for(a.executor.drain(), 60)

    run_virtual(main(), limit_seconds=120)
    # Then both ran to the end, the mid-run task from the step it had reached
    store = process("reader").store
    for task_id in ("mid-run", "planning"):
        task = store.get(task_id)
        assert task.status is TaskStatus.COMPLETED, task_id
        assert task.final_output
    assert [s.attempts for s in store.get("mid-run").execution_plan.steps] == [1, 1, 1]


def test_a_task_refused_for_capacity_is_not_taken_and_starts_once_there_is_room(shared):
    """Bugs guarded: a task taken (its lease claimed) before the capacity check; a task answered
    429 that does not start when a later execute finds room.

    A refused task must stay free for any process with room, and run when executed again here.
    """
    _, _, process = shared

    async def main() -> None:
        a = process("a")
        a.executor.max_concurrent, a.executor.max_queue = 1, 0
        busy = watch_agent(a, "retriever", seconds=5)
        for task_id in ("busy", "later"):
            new_task(a.store, task_id)
        await a.executor.start("busy")
        await until(lambda: busy.started == ["busy"])
        # When the other task is executed while A has no room
        with pytest.raises(Backpressure):
            await a.executor.start("later")
        # Then it was not taken: it holds no lease, so any process with room may run it now
        later = a.store.get("later")
        assert later.status is TaskStatus.PENDING
        assert later.lease is None
        # When the busy task is done and the refused one is executed again on A
        await asyncio.wait_for(a.executor.drain(), 60)
        await a.executor.start("later")
        assert a.executor.running == 1
        await asyncio.wait_for(a.executor.drain(), 60)

    run_virtual(main(), limit_seconds=300)
    # Then it ran to the end, like a task that was never refused
    store = process("reader").store
    task = store.get("later")
    assert task.status is TaskStatus.COMPLETED
    assert [e.event_type for e in store.read_events("later")][-1] is EventType.TASK_COMPLETED
