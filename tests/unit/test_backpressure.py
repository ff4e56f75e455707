"""LocalExecutor: N run at once, a bounded queue waits in order, beyond it 429 (Backpressure)."""

import asyncio

import pytest

from agentic.adapters.local_executor import LocalExecutor
from agentic.errors import Backpressure
from agentic.models import EventType, Lease, NewEvent, TaskState

pytestmark = pytest.mark.unit


class RecordingStore:
    """Grants every claim (one process, no competitor) and records queue events."""

    blocking = False

    def __init__(self):
        self.events: list[NewEvent] = []
        self.claims: list[str] = []
        self.released: list[str] = []

    def append_event(self, event):
        self.events.append(event)

    def claim(self, task_id, runner, ttl_seconds):
        self.claims.append(task_id)
        return Lease(runner=runner, epoch=1)

    def release(self, runner, task_ids):
        self.released.extend(task_ids)


class GatedRunner:
    """Each run waits until the test releases its task id."""

    def __init__(self):
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, task_id, lease):
        self.started.append(task_id)
        gate = self.gates.setdefault(task_id, asyncio.Event())
        await gate.wait()

    def release(self, task_id):
        self.gates.setdefault(task_id, asyncio.Event()).set()


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_runs_up_to_the_limit_queues_the_rest_then_rejects():
    # Given 2 slots and a queue of 2
    store, runner = RecordingStore(), GatedRunner()
    ex = LocalExecutor(runner, store, max_concurrent=2, max_queue=2, retry_after_seconds=3)
    # When 4 tasks start
    for t in ("a", "b", "c", "d"):
        await ex.start(t)
    await settle()
    # Then 2 run, 2 wait with task_queued events giving their positions
    assert runner.started == ["a", "b"]
    assert (ex.running, ex.waiting) == (2, 2)
    assert [(e.task_id, e.event_type, e.data["position"]) for e in store.events] == [
        ("c", EventType.TASK_QUEUED, 1),
        ("d", EventType.TASK_QUEUED, 2),
    ]
    # And a 5th is refused with a retry hint, not lost and not queued
    with pytest.raises(Backpressure) as refused:
        await ex.start("e")
    assert refused.value.retry_after_seconds == 3
    assert ex.waiting == 2
    # When a running task finishes, the oldest waiting one starts (FIFO)
    runner.release("a")
    await settle()
    assert runner.started == ["a", "b", "c"]
    # And the refused task can be started once there is room
    await ex.start("e")
    assert ex.waiting == 2
    for t in ("b", "c", "d", "e"):
        runner.release(t)
    await asyncio.wait_for(ex.drain(), 1)
    assert runner.started == ["a", "b", "c", "d", "e"]


async def test_starting_a_running_or_waiting_task_again_is_a_no_op():
    store, runner = RecordingStore(), GatedRunner()
    ex = LocalExecutor(runner, store, max_concurrent=1, max_queue=5)
    await ex.start("a")
    await ex.start("b")
    await ex.start("a")
    await ex.start("b")
    await settle()
    assert runner.started == ["a"]
    assert ex.waiting == 1
    assert len(store.events) == 1
    runner.release("a")
    runner.release("b")
    await asyncio.wait_for(ex.drain(), 1)
    assert runner.started == ["a", "b"]


async def test_shutdown_cancels_running_pipelines():
    store, runner = RecordingStore(), GatedRunner()
    ex = LocalExecutor(runner, store, max_concurrent=1, max_queue=1)
    await ex.start("a")
    await ex.start("b")
    await settle()
    await asyncio.wait_for(ex.shutdown(), 1)
    assert ex.running == 0
    assert ex.waiting == 0
    assert runner.started == ["a"]
    # And both leases are handed back so that any live process resumes the tasks at once
    assert sorted(store.released) == ["a", "b"]


async def test_a_run_whose_last_event_is_committed_frees_its_slot_before_it_returns():
    # Given one slot, no waiting line, and a run that has committed its task's end (the bus told
    # the executor) but has not returned yet
    store, runner = RecordingStore(), GatedRunner()
    ex = LocalExecutor(runner, store, max_concurrent=1, max_queue=0)
    await ex.start("a")
    await settle()
    with pytest.raises(Backpressure):
        await ex.start("b")
    ex.run_ending("a")
    # When a client that saw the end executes the next task at once
    await ex.start("b")
    await settle()
    # Then it runs (no 429 for a slot whose run has nothing left to do)
    assert runner.started == ["a", "b"]
    # and when the ended run returns, the count is exact again: one slot, held by b
    runner.release("a")
    await settle()
    with pytest.raises(Backpressure):
        await ex.start("c")
    runner.release("b")
    await settle()
    await ex.start("c")


async def test_an_ending_run_lets_waiting_tasks_go_first():
    # Given one slot, a waiting line of two with one task in it, and the running task ending
    store, runner = RecordingStore(), GatedRunner()
    ex = LocalExecutor(runner, store, max_concurrent=1, max_queue=2)
    await ex.start("a")
    await ex.start("b")
    await settle()
    ex.run_ending("a")
    # When another task is executed before the ended run has returned
    await ex.start("c")
    await settle()
    # Then it waits behind the task that was waiting already
    assert runner.started == ["a"]
    runner.release("a")
    await settle()
    assert runner.started == ["a", "b"]
    runner.release("b")
    await settle()
    assert runner.started == ["a", "b", "c"]


def test_the_event_bus_tells_of_each_commit_that_ends_a_run():
    from datetime import UTC, datetime

    from agentic.adapters.local_events import LocalEventBus
    from agentic.models import StreamEvent

    bus = LocalEventBus()
    told: list[str] = []
    bus.on_run_end = told.append

    def event(kind: EventType, cursor: int) -> tuple[StreamEvent, str]:
        return StreamEvent(event_type=kind, task_id="t", timestamp=datetime.now(UTC), cursor=cursor), "{}\n"

    bus.publish_events([event(EventType.STEP_STARTED, 1)])
    assert told == []
    bus.publish_events([event(EventType.APPROVAL_REQUESTED, 2)])
    bus.publish_events([event(EventType.TASK_COMPLETED, 3)])
    assert told == ["t", "t"]


async def test_a_queued_run_cancelled_before_its_first_step_frees_its_slot():
    # Given one slot, a running task and a queued one
    store, runner = RecordingStore(), GatedRunner()
    ex = LocalExecutor(runner, store, max_concurrent=1, max_queue=1)
    await ex.start("a")
    await ex.start("b")
    await settle()
    # When the first run ends (which launches the queued one) and the queued one is cancelled
    # before its run had a turn of the loop
    runner.release("a")
    await asyncio.sleep(0)  # the first run ends and launches "b"; "b" has not started yet
    assert "b" not in runner.started
    await ex.cancel(TaskState(task_id="b", owner="o", user_input="x"))
    # Then its slot is free: nothing counts as running, the executor is idle, a new task runs
    assert ex.running == 0
    await asyncio.wait_for(ex.drain(), 1)
    await ex.start("c")
    await settle()
    assert runner.started == ["a", "c"]
    runner.release("c")
    await asyncio.wait_for(ex.drain(), 1)
