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


async def call_store(store: TaskStore, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Make a call of the store (or an operation built on it) without the loop ever waiting on it.

    A store that can make calls without waiting (``attempt``: the SQLite file) makes it here first;
    only when a write would have to wait for the lock (``StoreBusy``, nothing kept) does the call go
    to a thread, the store's own (``route``: reads beside writes, see ``sqlite_file``). Most calls
    so cost no thread hop at all. A blocking store without either (DynamoDB) runs in the loop's
    default pool; a non-blocking store's call runs inline.

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
        try:
            result: T = attempt(fn, functools.partial(fn, *args, **kwargs))
        except StoreBusy:
            pass
        except BaseException:
            if (pending := _pending_commit(store)) is not None:
                await pending  # what it wrote before it failed, or what it decided on
            raise
        else:
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
