"""Group commit (``SQLITE_GROUP_COMMIT=true``): the writes an event loop makes in one turn share
one SQLite transaction.

A commit costs more than the statements before it: ``BEGIN IMMEDIATE`` takes the file's locks
(system calls), and ``COMMIT`` appends every page the transaction changed to the write-ahead log,
~8 pages (32 KB) for a step's state change and its events, several of them pages the next write
changes again (the events table's last page, the file's header, the free-page map). Shared by the
writes of a turn, that is ~20% of the CPU of a task in-process with 50 tasks at a time.

The promise each write keeps is unchanged: its caller goes on only once it is durable. A write made
on the loop's thread (``SQLiteFile.attempt``) opens the loop's transaction or joins it, inside a
savepoint of its own (a write that fails, say on its condition, is undone alone), and the
transaction commits once the loop has run what was ready (``call_soon``). Each caller awaits that
commit (``service.io.call_store``); if it fails, every write in it failed, and every caller hears it.
The price is latency: every write waits for the end of its turn, which is long under a burst (see
the README), so it is off by default.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class OpenTransaction:
    """The event loop's transaction: the writes in it, what to announce after its commit, and the
    callers waiting for that commit."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.after_commit: list[Callable[[], None]] = []
        self.open = True
        self.error: BaseException | None = None
        #: What commits it (held by its thread until it ends: see ``hold``).
        self.commit: Callable[[], None] | None = None
        # One future per caller (awaited directly: a caller's cancellation cancels its own future
        # only), and one for whoever must see the end without being one of them.
        self._waiters: list[asyncio.Future[None]] = []
        self._ended: asyncio.Future[None] | None = None

    def waiter(self) -> asyncio.Future[None]:
        """A future of this caller's own, done when the transaction is committed (or failed)."""
        waiter = self.loop.create_future()
        if self.open:
            self._waiters.append(waiter)
        elif self.error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(self.error)
        return waiter

    def ended(self) -> asyncio.Future[None]:
        """Done when the transaction has ended (its outcome is not raised here)."""
        if self._ended is None:
            self._ended = self.loop.create_future()
            if not self.open:
                self._ended.set_result(None)
        return self._ended

    def succeed(self) -> None:
        """Committed: its callers go on (they are scheduled now, before the streams its announcements
        wake, so the runs start their next agents first)."""
        self._end(None)

    def fail(self, exc: BaseException) -> None:
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if not self.open:
            return
        self.open = False
        self.error = exc
        for waiter in self._waiters:
            if waiter.done():  # its caller was cancelled
                continue
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        self._waiters.clear()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)


#: Per thread: the commits of the loop transactions it holds open (of any file).
_held = threading.local()


def hold(commit: Callable[[], None]) -> None:
    """This thread holds a loop transaction open; ``commit`` commits it."""
    commits: list[Callable[[], None]] | None = getattr(_held, "commits", None)
    if commits is None:
        commits = _held.commits = []
    commits.append(commit)


def let_go(commit: Callable[[], None]) -> None:
    commits: list[Callable[[], None]] = getattr(_held, "commits", [])
    if commit in commits:
        commits.remove(commit)


def commit_held() -> None:
    """Commit every loop transaction this thread holds, before it makes a write that may wait for
    a lock: one it holds itself (another connection to the same file, as tests that run two
    "processes" on one loop do) would never be let go while it waits."""
    commits: list[Callable[[], None]] | None = getattr(_held, "commits", None)
    while commits:
        commits[0]()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def until_committed(group: OpenTransaction, waiter: asyncio.Future[None]) -> None:
    """Wait for the transaction a call's writes are in to commit (raises what made it fail).

    Waited for even when the caller is cancelled: whatever follows the cancellation (a run handing
    its lease back) comes after the commit, as after a write made on the writer thread.
    """
    try:
        await waiter
    except asyncio.CancelledError:
        if group.open:
            await asyncio.wait([group.ended()])
        raise
