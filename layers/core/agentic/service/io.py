"""Calling the synchronous store from async code without stalling the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from agentic.ports import TaskStore

P = ParamSpec("P")
T = TypeVar("T")


async def call_store(store: TaskStore, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run network stores (DynamoDB) in a thread; the local SQLite file answers faster than a hop."""
    if store.blocking:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)
