"""An asyncio event loop on a virtual clock: waits take no real time, and their length is measurable.

Whenever the loop has nothing ready and is only waiting for a timer (``asyncio.sleep``,
``asyncio.wait_for``, ``loop.call_later``...), its clock jumps to that timer instead of sleeping. So a
test can let a 30 s step timeout or a backoff fire at once, and still read how long the code under test
waited, from ``loop.time()``, whatever mechanism it waited with. While work handed to a thread
(``asyncio.to_thread``, ``run_in_executor``) is in flight, or sockets are ready, the loop waits for real
(and its clock advances by the real time waited), so a timer never overtakes work still being done.

Run a coroutine on it with ``run_virtual(main())``.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

#: A virtual-time bound on a whole test: a code path that never wakes up fails instead of hanging.
DEFAULT_LIMIT_SECONDS = 24 * 3600.0


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual_now = 0.0
        self._in_threads = 0
        loop = self

        class Selector(selectors.DefaultSelector):
            def select(self, timeout: float | None = None) -> list[Any]:
                if timeout == 0 or loop._in_threads:
                    started = time.monotonic()
                    events: list[Any] = super().select(timeout)
                    loop._virtual_now += time.monotonic() - started
                    return events
                events = super().select(0)
                if events or timeout is None:  # I/O ready, or nothing but I/O to wait for
                    return events or super().select(None)
                loop._virtual_now += timeout  # only a timer to wait for: jump to it
                return []

        super().__init__(Selector())

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(self, executor: Executor | None, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1

        def done(_: asyncio.Future[T]) -> None:
            self._in_threads -= 1

        future.add_done_callback(done)
        return future


def run_virtual(main: Coroutine[Any, Any, T], *, limit_seconds: float = DEFAULT_LIMIT_SECONDS) -> T:
    """Run ``main`` on a virtual clock; fail with TimeoutError if it needs more than ``limit_seconds``."""

    async def bounded() -> T:
        return await asyncio.wait_for(main, limit_seconds)

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(bounded())


async def until(condition: Callable[[], bool], *, polls: int = 1000) -> None:
    """Return once ``condition()`` holds, checking every 10 ms of (virtual) time; fail after ``polls``."""
    for _ in range(polls):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")
