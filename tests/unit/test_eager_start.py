"""A run admitted by a request starts eagerly on Python 3.12+: its first part (up to its first wait)
runs inside the request, not after everything already queued on the loop. The executor's count of
running tasks holds whether a run waits or ends while it is being started."""

import asyncio
import sys

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


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio starts tasks eagerly from Python 3.12")
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
