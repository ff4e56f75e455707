"""How a stream waits for new events in a remote store (DynamoDB): poll, backing off while idle.

The interval adapts per task: it starts at ``min_interval`` and grows by ``growth`` each time the
stream comes back with nothing new (same ``after``), up to ``max_interval``; a new ``after`` (the
stream saw events) starts again from ``min_interval``. So an active task is followed closely. Once
a task has shown nothing new for ``idle_after`` seconds (a person deciding, a slow model), the
interval becomes ``idle_interval``: an idle watched stream costs one Query per ``idle_interval``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable


class DynamoDBPollingWaiter:
    def __init__(
        self,
        min_interval: float = 0.02,
        max_interval: float = 0.2,
        *,
        growth: float = 1.5,
        idle_after: float = 10.0,
        idle_interval: float = 2.0,
        max_tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if growth < 1:
            raise ValueError("growth must be at least 1")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.growth = growth
        self.idle_after = idle_after
        self.idle_interval = max(idle_interval, max_interval)
        self.max_tracked = max_tracked
        self.clock = clock
        # task_id -> (the cursor the last wait was after, the interval for the next wait, since when
        # that cursor has been the last one)
        self._state: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    @property
    def max_wait_seconds(self) -> float:
        """The longest wait a stream should ask of this waiter (it polls: nothing wakes it early)."""
        return self.idle_interval

    def next_interval(self, task_id: str, after: int) -> float:
        """The interval for this wait, and remember the (grown) one for the next."""
        now = self.clock()
        known = self._state.get(task_id)
        if known is not None and known[0] == after:
            interval, since = known[1], known[2]
        else:
            interval, since = self.min_interval, now
        if now - since >= self.idle_after:
            interval = self.idle_interval
        self._state[task_id] = (after, min(interval * self.growth, max(interval, self.max_interval)), since)
        self._state.move_to_end(task_id)
        while len(self._state) > self.max_tracked:
            self._state.popitem(last=False)
        return interval

    async def wait(self, task_id: str, after: int, timeout: float) -> None:
        await asyncio.sleep(max(0.0, min(self.next_interval(task_id, after), timeout)))

    def forget(self, task_id: str) -> None:
        """Drop a finished task's interval."""
        self._state.pop(task_id, None)
