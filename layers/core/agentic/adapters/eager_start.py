"""Tasks whose first part runs at once, in the step that makes them (asyncio's eager start).

Why: a task made with ``create_task`` starts after everything already queued on the loop. When a
hundred executes arrive together, every request was handled before any of their runs began, so the
runs' first agent calls started in a bunch and reached every later step boundary in a bunch too, each
waiting for the others' commits (~40 ms at the end of the last one, measured). Started eagerly, each
run's first agent call begins as its request is handled.

Python 3.12+ does it itself (``asyncio.Task(..., eager_start=True)``). Python 3.11 has no eager
start, and its runs started in a bunch at the next turn of the loop (100 tasks at once 1.48x the
agent work against 1.42x on 3.13). There this module does what 3.12's ``Task.__eager_start`` does:
the coroutine's first step runs now, in the new task's context and as the loop's current task, and
the task is given the coroutine as it stands (``_Started``), to drive from its first wait on. It
needs one private name of 3.11's asyncio, ``tasks._current_tasks`` (the map ``current_task()``
reads; 3.12 swaps it the same way, in C).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """A task of ``coro`` whose first part (up to its first wait) has run when this returns."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):  # (spelled out for the type checker)
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)
    current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = asyncio.tasks._current_tasks  # type: ignore[attr-defined]
    started = _Started(coro)
    context = contextvars.copy_context()
    task: asyncio.Task[T] = loop.create_task(started, name=name, context=context)
    # The first step, as the task's own: ``current_task()`` (``asyncio.timeout`` cancels the task it
    # names) and the context variables it sets are the task's, as in every later step.
    outer = current_tasks.get(loop)
    current_tasks[loop] = task
    try:
        context.run(started.first_step)
    finally:
        if outer is None:
            current_tasks.pop(loop, None)
        else:
            current_tasks[loop] = outer
    return task


class _Started(Coroutine[Any, Any, Any]):
    """A coroutine whose first step ran already: the task's first ``send`` gets what that step
    ended with (the future it waits on, or its result or exception), and every call after that goes
    to the coroutine itself. A task cancelled before its first step throws into the coroutine where
    it waits, as if cancelled during that wait."""

    __slots__ = ("_coro", "_outcome")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._outcome: tuple[str, Any] | None = None

    def first_step(self) -> None:
        try:
            self._outcome = ("waits", self._coro.send(None))
        except StopIteration as done:
            self._outcome = ("returned", done.value)
        except BaseException as exc:  # (handed to the task, which records it)
            self._outcome = ("raised", exc)

    def send(self, value: Any) -> Any:
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            return self._coro.send(value)
        kind, what = outcome
        return what if kind == "waits" else _raise(kind, what)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            kind, what = outcome
            if kind != "waits":  # it ended in its first step: that is what its task records
                return _raise(kind, what)
            if isinstance(what, asyncio.Future):
                what.cancel()  # as a task cancels the future it waits on
        exc = typ if val is None else val
        return self._coro.throw(exc) if tb is None else self._coro.throw(exc.with_traceback(tb))

    def close(self) -> None:
        self._outcome = None
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("a started coroutine is driven by its task, not awaited")


def _raise(kind: str, what: Any) -> Any:
    """End a step as the coroutine's first one ended: return its value (as a coroutine does, with
    StopIteration) or raise its exception."""
    if kind == "returned":
        raise StopIteration(what)
    raise what
