"""A run admitted by a request starts eagerly: its first part (up to its first wait)
runs inside the request, not after everything already queued on the loop. The executor's count of
running tasks holds whether a run waits or ends while it is being started."""

import asyncio
import contextvars

import pytest

from agentic.adapters.local_executor import LocalExecutor
from tests.unit.test_backpressure import GatedRunner, RecordingStore

pytestmark = pytest.mark.unit


def run_at_once(coro, name):
    """An eager start whose run had nothing to wait for: it ended before its start returned."""
    try:
        coro.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - the test's run never waits
        raise AssertionError("the run waited")
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def test_a_run_that_ends_while_it_starts_leaves_no_slot_taken():
    # Given an executor of one slot whose runs end within their eager start
    ended: list[str] = []

    async def run(task_id, lease):
        ended.append(task_id)

    ex = LocalExecutor(run, RecordingStore(), max_concurrent=1, max_queue=0, start_task=run_at_once)
    # When two tasks are executed one after the other, with no turn of the loop between them
    await ex.start("a")
    await ex.start("b")
    # Then both ran, nothing counts as running, and the executor is idle
    assert ended == ["a", "b"]
    assert ex.running == 0
    await asyncio.wait_for(ex.drain(), 1)


async def test_a_run_that_waits_while_it_starts_counts_as_running_until_it_ends():
    # Given an executor whose run waits on a gate from its start
    runner = GatedRunner()
    ex = LocalExecutor(runner, RecordingStore(), max_concurrent=1, max_queue=0)
    # When a task is executed
    await ex.start("a")
    await asyncio.sleep(0)
    # Then it holds the slot until it ends
    assert ex.running == 1
    runner.release("a")
    await asyncio.wait_for(ex.drain(), 1)
    assert ex.running == 0


async def test_the_run_s_first_part_is_done_before_the_request_goes_on():
    # Given a run that records its start before its first wait
    runner = GatedRunner()
    ex = LocalExecutor(runner, RecordingStore())
    # When a request executes the task
    await ex.start("a")
    # Then the run has started before the request goes on (no turn of the loop in between)
    assert runner.started == ["a"]
    runner.release("a")
    await asyncio.wait_for(ex.drain(), 1)


class LeaseGoneStore(RecordingStore):
    """Every lease renewal finds the lease gone (the task ended: its last write dropped the lease)."""

    def renew(self, runner, leases, ttl_seconds):
        return set(leases)

    def expired(self, limit):
        return []


async def test_a_run_that_ends_its_task_while_it_starts_is_not_stopped_as_one_that_lost_its_lease():
    # Given a run whose last event is committed within its eager start, and which then still waits
    finished: list[str] = []
    gate = asyncio.Event()

    async def run(task_id, lease):
        await gate.wait()
        finished.append(task_id)

    def ending_while_starting(coro, name):
        ex.run_ending("a")  # what the event bus says at the commit of the task's last event
        return asyncio.create_task(coro, name=name)

    ex = LocalExecutor(run, LeaseGoneStore(), start_task=ending_while_starting)
    await ex.start("a")
    # When the lease maintenance runs and finds its lease gone
    await ex.maintain_once()
    # Then the run is not stopped: it goes on to its end
    gate.set()
    await asyncio.wait_for(ex.drain(), 1)
    assert finished == ["a"]


# --- start_eagerly itself (asyncio's eager start on 3.12+, this project's on 3.11) -----------------

from agentic.adapters.eager_start import start_eagerly  # noqa: E402

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="outer")


async def test_the_first_part_runs_as_the_new_task_in_its_own_context():
    # Given a coroutine that notes the current task and sets a context variable before it waits
    seen: dict[str, object] = {}
    gate = asyncio.Event()

    async def run():
        seen["task"] = asyncio.current_task()
        marker.set("inner")
        await gate.wait()
        seen["after"] = marker.get()
        seen["task_after"] = asyncio.current_task()

    outer = asyncio.current_task()
    # When it is started eagerly
    task = start_eagerly(run(), "t")
    # Then its first part ran before start_eagerly returned, as that task, without touching ours
    assert seen["task"] is task
    assert asyncio.current_task() is outer
    assert marker.get() == "outer"
    gate.set()
    await task
    # And the rest of it runs as the same task, in the context its first part set
    assert seen["after"] == "inner"
    assert seen["task_after"] is task


async def test_a_timeout_entered_in_the_first_part_cancels_the_run_not_its_starter():
    # Given a run that enters asyncio.timeout in its first part and then waits past it
    async def run():
        async with asyncio.timeout(0.01):
            await asyncio.Event().wait()

    # When it is started eagerly and the starter goes on waiting
    task = start_eagerly(run(), "t")
    await asyncio.sleep(0.05)
    # Then the run timed out, and the starter (this test) was not cancelled
    assert task.done()
    with pytest.raises(TimeoutError):
        task.result()


async def test_a_run_cancelled_before_its_task_first_steps_is_cancelled_where_it_waits():
    # Given a run started eagerly, waiting on a future, with cleanup in a finally
    waited = asyncio.get_running_loop().create_future()
    cleaned: list[str] = []

    async def run():
        try:
            await waited
        finally:
            cleaned.append("finally")

    task = start_eagerly(run(), "t")
    # When it is cancelled before the loop has turned
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Then its finally ran inside the task, and the future it waited on was cancelled with it
    assert cleaned == ["finally"]
    assert task.cancelled()
    assert waited.cancelled()


async def test_a_run_that_ends_in_its_first_part_gives_its_task_its_result_or_exception():
    async def returns():
        return 7

    async def raises():
        raise ValueError("boom")

    # When runs that never wait are started eagerly
    ok, failed = start_eagerly(returns(), "ok"), start_eagerly(raises(), "failed")
    # Then their tasks hold what they returned or raised
    assert await ok == 7
    with pytest.raises(ValueError, match="boom"):
        await failed
