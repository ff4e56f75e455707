"""The test helper's virtual clock: timers fire at once, yet their length reads true."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.virtual_time import run_virtual

pytestmark = pytest.mark.unit


def test_waits_take_no_real_time_and_read_their_virtual_length():
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        t1 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 30)
        return t1 - t0, loop.time() - t1

    slept, timed_out = run_virtual(main(), limit_seconds=10_000)
    assert slept == pytest.approx(3600)
    assert timed_out == pytest.approx(30)


def test_a_timer_never_overtakes_work_running_in_a_thread():
    # Given 0.1 s of real work in a thread, under a 5 s timeout (an idle loop would jump to it at once)
    async def main() -> str:
        return await asyncio.wait_for(asyncio.to_thread(lambda: time.sleep(0.1) or "done"), 5)

    # When it runs, then the thread's result arrives before the timeout fires
    assert run_virtual(main()) == "done"


def test_a_coroutine_that_never_wakes_fails_at_the_limit():
    with pytest.raises(TimeoutError):
        run_virtual(asyncio.Event().wait(), limit_seconds=60)
