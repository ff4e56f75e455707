"""Calling the synchronous store from async code without stalling the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from agentic.ports import TaskStore

P = ParamSpec("P")
T = TypeVar("T")


async def call_store(store: TaskStore, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking store's call in a thread: the store's own (``route``: reads beside writes,
    see ``sqlite_file``) or the loop's default pool (DynamoDB); a non-blocking store's inline."""
    if not store.blocking:
        return fn(*args, **kwargs)
    route = getattr(store, "route", None)
    # The caller's context (the task id logged with each record) goes along, as with to_thread.
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    if route is None:
        return await asyncio.get_running_loop().run_in_executor(None, call)
    executor, job = route(fn, call)
    return await asyncio.get_running_loop().run_in_executor(executor, job)
