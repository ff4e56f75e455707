"""Calling the synchronous store from async code without stalling the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
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

    A call that went to a thread is waited for even when the caller is cancelled, so whatever
    follows the cancellation (a run handing its lease back) happens after its last write.
    """
    if not store.blocking:
        return fn(*args, **kwargs)
    attempt = getattr(store, "attempt", None)
    if attempt is not None:
        try:
            return attempt(fn, functools.partial(fn, *args, **kwargs))  # type: ignore[no-any-return]
        except StoreBusy:
            pass
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
