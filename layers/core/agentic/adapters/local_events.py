"""In-process notification of new events, so a local stream wakes at once instead of polling."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class LocalEventBus:
    """Tracks the newest cursor per task and wakes streams waiting on it.

    ``publish`` may be called from any thread; waiters live on their own event loops. The newest
    cursor is checked before sleeping, so an event written between a stream's read and its wait is
    never missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        #: Set when the server stops: every wait returns at once, and streams end (``tail_events``).
        self.stopping = False

    def stop(self) -> None:
        """Wake every waiting stream for good: the server is stopping and its streams end now."""
        with self._lock:
            self.stopping = True
            waiters = [fut for futures in self._waiters.values() for fut in futures]
            self._waiters.clear()
        for fut in waiters:
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    def publish(self, task_id: str, cursor: int) -> None:
        with self._lock:
            if cursor > self._latest.get(task_id, 0):
                self._latest[task_id] = cursor
            waiters = self._waiters.pop(task_id, set())
        for fut in waiters:
            loop = fut.get_loop()
            if loop.is_closed():
                continue
            loop.call_soon_threadsafe(_wake, fut)

    async def wait(self, task_id: str, after: int, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self.stopping or self._latest.get(task_id, 0) > after:
                return
            self._waiters[task_id].add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(task_id)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[task_id]

    def forget(self, task_id: str) -> None:
        """Drop a finished task's cursor (its terminal event is in the store for late readers)."""
        with self._lock:
            self._latest.pop(task_id, None)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
