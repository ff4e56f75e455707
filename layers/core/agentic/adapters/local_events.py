"""In-process notification of new events, so a local stream wakes at once instead of polling.

The bus also keeps the last committed events of recent tasks, so a local stream that a write woke
takes them from memory instead of reading them back from the file on a reader thread: one wake-up
per commit and no thread hop per event batch. The log stays the source of truth: a stream takes
from memory only a run of events that continues its cursor without a gap, and reads the store
otherwise (events another process wrote, a stream far behind, a timeout).

A task this process just claimed is tracked from the end of its log at the claim (``track``): its
events from there on are all this process's own writes (or a gap, seen at once), so a stream that
starts at or past that end needs no first read of the log either.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable

from agentic.models import EventType, StreamEvent

#: Tasks whose recent events are kept (least recently written dropped first).
RECENT_TASKS = 256
#: Events kept per task: a stream further behind than this reads the store.
RECENT_EVENTS = 64


class LocalEventBus:
    """Tracks the newest cursor per task, keeps its recent events and wakes streams waiting on it.

    ``publish`` may be called from any thread; waiters live on their own event loops. The newest
    cursor is checked before sleeping, so an event written between a stream's read and its wait is
    never missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}
        #: Per task: its recent events by cursor, each with its NDJSON line (encoded once, at commit).
        self._recent: OrderedDict[str, dict[int, tuple[StreamEvent, str]]] = OrderedDict()
        #: Per tracked task: every committed event after this cursor that this process wrote is kept.
        self._kept_after: dict[str, int] = {}
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        #: Set when the server stops: every wait returns at once, and streams end (``tail_events``).
        self.stopping = False
        #: Told of each task whose run ends with a commit (a terminal event, or the approval request at
        #: which a run stops), before that task's streams are woken: the executor frees its slot then,
        #: so whoever sees the end and starts another task finds the slot free.
        self.on_run_end: Callable[[str], None] | None = None

    def stop(self) -> None:
        """Wake every waiting stream for good: the server is stopping and its streams end now."""
        with self._lock:
            self.stopping = True
            waiters = [fut for futures in self._waiters.values() for fut in futures]
            self._waiters.clear()
        _wake_all(waiters)

    def publish(self, task_id: str, cursor: int) -> None:
        """A committed event of ``task_id`` up to ``cursor`` (written by whoever): wake its streams."""
        with self._lock:
            if cursor > self._latest.get(task_id, 0):
                self._latest[task_id] = cursor
            waiters = self._waiters.pop(task_id, set())
        _wake_all(waiters)

    def publish_events(self, events: Iterable[tuple[StreamEvent, str]]) -> None:
        """Events one commit wrote (in cursor order) with their lines: keep them and wake each task's
        streams once."""
        waiters: list[asyncio.Future[None]] = []
        ended: list[str] = []
        with self._lock:
            for event, line in events:
                task_id = event.task_id
                if event.cursor > self._latest.get(task_id, 0):
                    self._latest[task_id] = event.cursor
                kept = self._recent.get(task_id)
                if kept is None:
                    kept = self._keep(task_id)
                else:
                    self._recent.move_to_end(task_id)
                kept[event.cursor] = (event, line)
                if len(kept) > RECENT_EVENTS:
                    oldest = min(kept)
                    del kept[oldest]
                    if task_id in self._kept_after:
                        self._kept_after[task_id] = max(self._kept_after[task_id], oldest)
                if event.event_type.is_terminal:  # nothing follows; late readers find it in the log
                    self._latest.pop(task_id, None)
                if event.event_type.is_terminal or event.event_type is EventType.APPROVAL_REQUESTED:
                    ended.append(task_id)
                waiters.extend(self._waiters.pop(task_id, ()))
        if ended and self.on_run_end is not None:
            for task_id in ended:
                self.on_run_end(task_id)
        _wake_all(waiters)

    def _keep(self, task_id: str) -> dict[int, tuple[StreamEvent, str]]:
        """A new (empty) record of a task's recent events; the least recently written task makes room."""
        kept: dict[int, tuple[StreamEvent, str]] = {}
        self._recent[task_id] = kept
        if len(self._recent) > RECENT_TASKS:
            dropped, _ = self._recent.popitem(last=False)
            self._kept_after.pop(dropped, None)
        return kept

    def track(self, task_id: str, log_end: int) -> None:
        """This process holds ``task_id`` now (it claimed it) and its log ended at ``log_end`` then.

        Called inside the claim's transaction, which holds the file's write lock: no event of the
        task can be committed between the read of ``log_end`` and this call.
        """
        with self._lock:
            kept = self._recent.get(task_id)
            if kept is None:
                kept = self._keep(task_id)
            else:
                self._recent.move_to_end(task_id)
            for cursor in [c for c in kept if c <= log_end]:
                del kept[cursor]
            self._kept_after[task_id] = log_end

    def holds_after(self, task_id: str, after: int) -> bool:
        """Whether every event after ``after`` that this process committed is in memory (``recent``).

        True for a task this process tracks since its claim, from the log's end at that claim on.
        Events of other processes may still be missing: a stream finds them at a gap or a timeout.
        """
        with self._lock:
            kept_after = self._kept_after.get(task_id)
            return kept_after is not None and after >= kept_after and task_id in self._recent

    def recent(self, task_id: str, after: int) -> list[StreamEvent]:
        """The kept events right after ``after``, without a gap; empty if the next one is not kept."""
        return [event for event, _ in self.recent_lines(task_id, after)]

    def recent_lines(self, task_id: str, after: int) -> list[tuple[StreamEvent, str]]:
        """``recent``, each event with its NDJSON line."""
        with self._lock:
            kept = self._recent.get(task_id)
            if not kept:
                return []
            found = []
            cursor = after + 1
            while (pair := kept.get(cursor)) is not None:
                found.append(pair)
                cursor += 1
            return found

    async def wait(self, task_id: str, after: int, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            # The newest cursor is dropped at a task's end: its kept events tell that too.
            kept = self._recent.get(task_id)
            if self.stopping or self._latest.get(task_id, 0) > after or (kept is not None and after + 1 in kept):
                return
            self._waiters[task_id].add(fut)
        # A timer on the future, not ``wait_for``: no task per wait (a stream waits once per commit).
        timer = fut.get_loop().call_later(timeout, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
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


def _wake_all(waiters: Iterable[asyncio.Future[None]]) -> None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # a thread without a loop: the store's writer thread
        running = None
    for fut in waiters:
        loop = fut.get_loop()
        if loop is running:
            _wake(fut)  # the commit was made on the waiter's own loop: no wake-up of the loop needed
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
