"""Batches a streaming step's text into ``partial_output`` events: a few tens per answer, not one per token.

A piece is written at once when the last write is ``interval`` seconds old (so the first token reaches
the client without delay), otherwise it waits in the buffer until ``interval`` has passed since that
write or the buffer holds ``max_chars`` characters, whichever comes first. A timer writes what a
model left in the buffer when it pauses. Each write carries only the text added since the previous
one (``data.delta``) and its sequence number.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: Writes one batch: (the text, its 1-based sequence number within the attempt).
WriteDelta = Callable[[str, int], Awaitable[None]]


class DeltaBatcher:
    def __init__(
        self,
        write: WriteDelta,
        *,
        interval: float = 0.1,
        max_chars: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self.interval = interval
        self.max_chars = max_chars
        self._clock = clock
        self._buffer: list[str] = []
        self._size = 0
        self._last = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        # Writes may await the store (a thread, the network): one at a time keeps them in order.
        self._lock = asyncio.Lock()
        self.sent = 0
        self._failed: BaseException | None = None

    async def add(self, text: str) -> None:
        if self._failed is not None:  # a timed write was refused (the task was cancelled, the lease lost)
            raise self._failed
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if self._size >= self.max_chars or self._clock() - self._last >= self.interval:
            await self.flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        # Sleeps until the interval since the last write has passed, then writes what is buffered;
        # a write by add() meanwhile (a full buffer) moves that moment on, so look again after it.
        while self._buffer:
            wait = self._last + self.interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.flush()
            except Exception as exc:  # surfaces in the agent's next add(), which stops the model
                self._failed = exc
            return

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            self.sent += 1
            self._last = self._clock()
            await self._write(text, self.sent)

    async def close(self) -> None:
        """Write what is left and stop the timer (errors of that last write propagate)."""
        self._stop_timer()
        if self._failed is not None:
            raise self._failed
        await self.flush()

    def abandon(self) -> None:
        """Drop the buffer and the timer (the attempt failed or was cancelled)."""
        self._stop_timer()
        self._buffer.clear()
        self._size = 0

    def _stop_timer(self) -> None:
        # Cancelled, not awaited: it only sleeps before a flush, and awaiting it from a task that is
        # itself being cancelled could swallow that cancellation.
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()
