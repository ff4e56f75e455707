"""Calling the synchronous store from async code without stalling the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import ParamSpec, TypeVar

from agentic.errors import StoreBusy
from agentic.ports import TaskStore

P = ParamSpec("P")
T = TypeVar("T")

#: Pauses (seconds) between the attempts on the loop of a write that found the lock taken, before
#: it goes to the writer thread. Why not the thread at once: there, the write waits in SQLite's busy
#: handler, which sleeps 1, 2, 5, 10 ms... between looks and so misses the lock's many short free
#: moments while another process writes; and a thread that got the lock still needs the GIL back for
#: each statement, so it holds the file's lock for as long as the loop keeps the GIL (up to 5 ms a
#: statement): two servers on one file took turns to stall (see the README's *Speed*, eighth pass).
BUSY_RETRIES = (0.001, 0.001, 0.002, 0.004, 0.008)


async def call_store(store: TaskStore, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Make a call of the store (or an operation built on it) without the loop ever waiting on it.

    A store that can make calls without waiting (``attempt``: the SQLite file) makes it here first.
    A write that would have to wait for the lock (``StoreBusy``, nothing kept) is made again here a
    few times over ~16 ms (``BUSY_RETRIES``): another process's transaction lasts a fraction of a
    millisecond, so it nearly always gets in. Only a lock held longer (a long or frozen transaction)
    sends the call to a thread, the store's own (``route``: reads beside writes, see ``sqlite_file``),
    which waits for it until the write's deadline. Most calls so cost no thread hop at all. A
    blocking store without either (DynamoDB) runs in the loop's default pool; a non-blocking store's
    call runs inline.

    A call made here may share its commit with the other writes of the loop's turn (group commit,
    see ``adapters.sqlite_group``): it returns (or raises) only once that commit is done, and raises
    its failure if it failed. A call that went to a thread, or waits for a commit, is waited for
    even when the caller is cancelled, so whatever follows the cancellation (a run handing its
    lease back) happens after its last write.
    """
    if not store.blocking:
        return fn(*args, **kwargs)
    attempt = getattr(store, "attempt", None)
    if attempt is not None:
        for pause in (*BUSY_RETRIES, None):
            try:
                result: T = attempt(fn, functools.partial(fn, *args, **kwargs))
            except StoreBusy as busy:
                if pause is None or not busy.may_retry_here:
                    break
                await asyncio.sleep(pause)  # the loop goes on meanwhile; nothing of the call was kept
                continue
            except BaseException:
                if (pending := _pending_commit(store)) is not None:
                    await pending  # what it wrote before it failed, or what it decided on
                raise
            if (pending := _pending_commit(store)) is not None:
                await pending
            return result
    route = getattr(store, "route", None)
    # The caller's context (the task id logged with each record) goes along, as with to_thread.
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    loop = asyncio.get_running_loop()
    if route is None:
        return await loop.run_in_executor(None, call)
    executor, job = route(fn, call)
    done = loop.run_in_executor(executor, job)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        with suppress(BaseException):
            await done
        raise


def _pending_commit(store: TaskStore) -> Awaitable[None] | None:
    """The group commit the store's last ``attempt`` must wait for (None, as without group commit:
    no coroutine to make and await on every call)."""
    pending_commit = getattr(store, "pending_commit", None)
    return pending_commit() if pending_commit is not None else None
