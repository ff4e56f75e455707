"""Runs pipelines in-process on asyncio, with backpressure: N at once, a bounded waiting line."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from agentic.errors import Backpressure
from agentic.models import EventType, NewEvent
from agentic.ports import TaskStore


class LocalExecutor:
    """At most ``max_concurrent`` pipelines run; up to ``max_queue`` more wait in order.

    A waiting task gets a ``task_queued`` event with its position. Beyond the queue, ``start``
    raises ``Backpressure`` and the task simply stays pending. Starting a task that is running or
    waiting is a no-op, which makes execute idempotent.
    """

    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        store: TaskStore,
        *,
        max_concurrent: int = 100,
        max_queue: int = 100,
        retry_after_seconds: int = 1,
    ) -> None:
        self._run = run
        self._store = store
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.retry_after_seconds = retry_after_seconds
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: deque[str] = deque()
        self._admitted: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def start(self, task_id: str) -> None:
        if task_id in self._admitted:
            return
        if len(self._running) < self.max_concurrent:
            self._admitted.add(task_id)
            self._launch(task_id)
            return
        if len(self._waiting) >= self.max_queue:
            raise Backpressure(
                f"{len(self._running)} tasks are running and {len(self._waiting)} are waiting (the limit); "
                "the task stays pending: execute it again later",
                self.retry_after_seconds,
            )
        self._admitted.add(task_id)
        self._waiting.append(task_id)
        self._store.append_event(
            NewEvent(
                task_id=task_id,
                event_type=EventType.TASK_QUEUED,
                data={"position": len(self._waiting), "running": len(self._running)},
            )
        )

    def _launch(self, task_id: str) -> None:
        self._idle.clear()
        self._running[task_id] = asyncio.create_task(self._run_and_release(task_id), name=f"task-{task_id}")

    async def _run_and_release(self, task_id: str) -> None:
        try:
            await self._run(task_id)
        finally:
            self._running.pop(task_id, None)
            self._admitted.discard(task_id)
            while self._waiting and len(self._running) < self.max_concurrent:
                self._launch(self._waiting.popleft())
            if not self._running:
                self._idle.set()

    async def drain(self) -> None:
        """Wait until nothing runs or waits (benchmarks and tests)."""
        await self._idle.wait()

    async def shutdown(self) -> None:
        """Cancel what runs; the next start's recovery marks interrupted tasks failed."""
        self._waiting.clear()
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
