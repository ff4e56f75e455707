"""An event loop on a thread of its own, for pipeline runs.

A run's store writes are synchronous (``PipelineOps`` is shared with the Lambdas) and may wait for
the store's lock, up to its busy timeout, when another process holds it. On the server's loop that
wait would stall every request and stream; on this loop it stalls only the runs, which cannot
write then anyway.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self, name: str = "pipelines") -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on this loop and return its result here.

        Cancelling the caller cancels the coroutine there and waits until it has stopped, so that
        whatever follows (handing its lease back) happens after its last write.
        """
        caller = asyncio.get_running_loop()
        done: asyncio.Future[T] = caller.create_future()
        started: list[asyncio.Task[T]] = []

        def report(task: asyncio.Task[T]) -> None:
            if not caller.is_closed():
                caller.call_soon_threadsafe(_settle, task, done)

        def start() -> None:
            task: asyncio.Task[T] = asyncio.ensure_future(coro, loop=self.loop)
            started.append(task)
            task.add_done_callback(report)

        def cancel() -> None:  # runs after start (callbacks keep their order)
            started[0].cancel()

        self.loop.call_soon_threadsafe(start)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self.loop.call_soon_threadsafe(cancel)
            with suppress(BaseException):
                await done
            raise

    def stop(self) -> None:
        """Stop the loop (after its runs ended) and wait for its thread."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (uvicorn[standard] brings it; the server's loop is one too):
    a run's many small steps cost less there than on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no Windows build
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _settle(task: asyncio.Task[T], done: asyncio.Future[T]) -> None:
    if done.done():
        return
    if task.cancelled():
        done.cancel()
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(task.result())
