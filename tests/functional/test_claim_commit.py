"""A run admitted to run at once is claimed and started in one commit (``claim_then``): the claim, the
start, the plan and the first step's start. Nothing of it is seen, by streams or other processes,
before that commit; a first write that fails leaves the claim alone, and the run makes the write again
itself. While the claim is being made, its slot counts as taken."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.catalog import default_registry
from agentic.errors import Backpressure
from agentic.models import EventType, Lease, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.pipeline_ops import PipelineOps
from agentic.service.runner import LocalRunner

pytestmark = pytest.mark.functional


def committed(store: SQLiteTaskStore, task_id: str) -> tuple[str, str | None, list[str]]:
    """The task's status, lease owner and event types, as another connection to the file sees them."""
    db = sqlite3.connect(str(store.path))
    try:
        status, owner = db.execute("SELECT status, lease_owner FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        types = [
            r[0] for r in db.execute("SELECT event_type FROM events WHERE task_id = ? ORDER BY cursor", (task_id,))
        ]
    finally:
        db.close()
    return status, owner, types


def count_commits(store: SQLiteTaskStore) -> list[str]:
    """The COMMITs the store's write connection makes from now on."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def ops_of(store: SQLiteTaskStore, latency_scale: float = 0) -> PipelineOps:
    return PipelineOps(store, default_registry(latency_scale), load_pipeline())


def test_the_claim_and_the_runs_first_write_are_one_commit(sqlite_store):
    # Given a pending task
    sqlite_store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    ops = ops_of(sqlite_store)
    commits = count_commits(sqlite_store)
    announced: list[str] = []
    sqlite_store.bus.publish_events = lambda written: announced.extend(e.event_type.value for e, _ in written)  # type: ignore[method-assign]
    # When it is claimed with the run's first write
    claimed = sqlite_store.claim_then("t", "me", 30, lambda lease: ops.plan_and_start("t", lease=lease))
    # Then one commit holds the lease, the start, the plan and the first step's start
    assert claimed is not None
    lease, (task, started) = claimed
    assert len(commits) == 1
    assert started
    assert task.status is TaskStatus.EXECUTING
    assert task.lease == lease
    assert committed(sqlite_store, "t") == ("executing", "me", ["task_started", "plan_created", "step_started"])
    # and the streams heard of the three events once, after that commit
    assert announced == ["task_started", "plan_created", "step_started"]


def test_a_task_another_runner_holds_is_not_claimed_and_its_first_write_is_not_made(sqlite_store):
    # Given a task claimed by another runner
    sqlite_store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    assert sqlite_store.claim("t", "other", 30) is not None
    made: list[Lease] = []
    # When this runner claims it with a first write
    claimed = sqlite_store.claim_then("t", "me", 30, made.append)
    # Then it gets nothing and wrote nothing
    assert claimed is None
    assert made == []
    assert committed(sqlite_store, "t") == ("pending", "other", [])


def test_a_first_write_that_fails_is_undone_and_the_claim_is_committed_alone(sqlite_store):
    # Given a pending task and a first write that writes, then fails (a fault of the pipeline)
    sqlite_store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    ops = ops_of(sqlite_store)
    announced: list[str] = []
    sqlite_store.bus.publish_events = lambda written: announced.extend(e.event_type.value for e, _ in written)  # type: ignore[method-assign]

    def writes_then_fails(lease):
        ops.plan_and_start("t", lease=lease)
        raise RuntimeError("the analyzer broke")

    # When it is claimed with that write
    claimed = sqlite_store.claim_then("t", "me", 30, writes_then_fails)
    # Then the claim stands alone: the task is still pending, held by this runner, with no events,
    # and no stream heard of the events that were undone
    assert claimed is not None
    lease, first = claimed
    assert first is None
    assert committed(sqlite_store, "t") == ("pending", "me", [])
    assert announced == []
    # and the run, making the write again under that lease, starts the task once
    task, started = ops.plan_and_start("t", lease=lease)
    assert started
    assert task.status is TaskStatus.EXECUTING
    assert committed(sqlite_store, "t") == ("executing", "me", ["task_started", "plan_created", "step_started"])


def test_a_run_admitted_at_once_is_claimed_and_started_in_one_commit_then_completes(sqlite_store):
    # Given the local executor, wired as the server wires it, and agents that take a little time (a
    # run starts eagerly: agents that never wait would finish the task inside start())
    runner = LocalRunner(ops_of(sqlite_store, latency_scale=0.01), time_scale=0)

    async def scenario():
        executor = LocalExecutor(
            runner.run, sqlite_store, lease_seconds=30, runner_id="me", first_write=runner.first_write
        )
        sqlite_store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
        commits = count_commits(sqlite_store)
        # When the task is executed
        await executor.start("t")
        first_commits = len(commits)
        await asyncio.wait_for(executor.drain(), 10)
        return first_commits

    first_commits = asyncio.run(scenario())
    # Then its claim and its first write were one commit, and the run went on from there to the end
    assert first_commits == 1
    status, _, types = committed(sqlite_store, "t")
    assert status == "completed"
    assert types.count(EventType.TASK_STARTED.value) == 1
    assert types[-1] == EventType.TASK_COMPLETED.value


class SlowClaimStore:
    """A store whose claim (made on a thread) waits until the test lets it go."""

    blocking = True

    def __init__(self) -> None:
        self.go = threading.Event()
        self.claimed: list[str] = []

    def claim_then(self, task_id, runner, ttl_seconds, first_write):
        self.go.wait(5)
        self.claimed.append(task_id)
        lease = Lease(runner=runner, epoch=1)
        return lease, first_write(lease)

    def claim(self, task_id, runner, ttl_seconds):  # pragma: no cover - the test expects claim_then only
        raise AssertionError("claimed without the first write")


async def test_the_slot_of_a_claim_in_flight_is_taken():
    # Given one slot and no queue, and a start whose claim is still being made
    store = SlowClaimStore()
    gate = asyncio.Event()

    async def run(task_id, lease, first=None):
        await gate.wait()

    executor = LocalExecutor(run, store, max_concurrent=1, max_queue=0, first_write=lambda task_id, lease: "planned")
    first = asyncio.ensure_future(executor.start("a"))
    await asyncio.sleep(0.05)
    assert not first.done()
    # When another task is executed meanwhile
    # Then it is refused: the slot is the first one's
    with pytest.raises(Backpressure):
        await executor.start("b")
    store.go.set()
    await first
    assert store.claimed == ["a"]
    assert executor.running == 1
    gate.set()
    await asyncio.wait_for(executor.drain(), 5)


class LostClaimStore(SlowClaimStore):
    """Its slow claim with a first write is lost to another process; a plain claim is won."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[object] = []

    def claim_then(self, task_id, runner, ttl_seconds, first_write):
        self.go.wait(5)
        self.claimed.append(task_id)
        return None

    def claim(self, task_id, runner, ttl_seconds):
        return Lease(runner=runner, epoch=1)

    def append_event(self, event):
        self.events.append(event)


async def test_a_slot_kept_for_a_claim_that_is_lost_goes_to_the_task_that_queued_meanwhile():
    # Given one slot and a queue of one, and a start whose claim is being made (it will be lost)
    store = LostClaimStore()
    ran: list[str] = []

    async def run(task_id, lease, first=None):
        ran.append(task_id)

    executor = LocalExecutor(run, store, max_concurrent=1, max_queue=1, first_write=lambda task_id, lease: "planned")
    first = asyncio.ensure_future(executor.start("a"))
    await asyncio.sleep(0.05)
    # When another task is executed meanwhile (it queues: the slot is kept for the first)
    await executor.start("b")
    assert executor.waiting == 1
    # and the first claim is lost to another process
    store.go.set()
    await first
    # Then the queued task runs in the slot that was kept: nothing waits with a slot free
    await asyncio.wait_for(executor.drain(), 5)
    assert ran == ["b"]
    assert executor.waiting == 0


class FailedFirstWriteStore(LostClaimStore):
    """Its slow claim is won, but the first write made with it failed (the claim committed alone)."""

    def claim_then(self, task_id, runner, ttl_seconds, first_write):
        self.go.wait(5)
        self.claimed.append(task_id)
        return Lease(runner=runner, epoch=1), None


async def test_a_task_claimed_in_a_kept_slot_runs_in_it_even_when_its_first_write_failed():
    # Given one slot and a queue of one, and a start whose claim is being made (its first write fails)
    store = FailedFirstWriteStore()
    ran: list[tuple[str, object]] = []
    gate = asyncio.Event()

    async def run(task_id, lease, first=None):
        ran.append((task_id, first))
        await gate.wait()

    executor = LocalExecutor(run, store, max_concurrent=1, max_queue=1, first_write=lambda task_id, lease: "planned")
    first = asyncio.ensure_future(executor.start("a"))
    await asyncio.sleep(0.05)
    await executor.start("b")  # queues: the slot is kept for the first
    # When the first claim is won without its first write
    store.go.set()
    await first
    await asyncio.sleep(0)
    # Then the first task runs in its slot (its run makes the first write itself) and the other waits
    assert ran == [("a", None)]
    assert executor.waiting == 1
    gate.set()
    await asyncio.wait_for(executor.drain(), 5)
    assert [task_id for task_id, _ in ran] == ["a", "b"]
