"""``agentic watch`` and a paused stream: a server that ends the stream while the task waits for a
person (``stream_paused``) is asked again after the time it named, for as long as the task waits,
without counting those ends as lost connections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from rich.console import Console

from agentic.cli.watch import MAX_REATTACH, Watcher

pytestmark = pytest.mark.unit


def line(cursor: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"event_type": kind, "task_id": "t", "cursor": cursor, "data": data}


def paused(cursor: int) -> dict[str, Any]:
    return {"event_type": "stream_paused", "task_id": "t", "data": {"cursor": cursor, "retry_after_seconds": 30}}


class PausingServer:
    """Streams: the run up to the approval request, then ``waits`` paused answers, then the rest."""

    def __init__(self, waits: int) -> None:
        self.waits = waits
        self.calls: list[int] = []

    @contextmanager
    def events(self, task_id: str, *, execute: bool = False, after: int = 0) -> Iterator[Iterator[dict[str, Any]]]:
        self.calls.append(after)
        if after == 0:
            yield iter([line(1, "task_started"), line(2, "approval_requested"), paused(2)])
        elif self.waits > 0:
            self.waits -= 1
            yield iter([paused(2)])
        else:
            yield iter([line(3, "approval_granted"), line(4, "task_completed", final_output="# Report")])


def test_the_watcher_comes_back_when_the_server_said_for_as_long_as_the_task_waits():
    # Given a server that pauses the stream more often than the watcher would retry a lost connection
    server = PausingServer(waits=MAX_REATTACH + 3)
    slept: list[float] = []
    watcher = Watcher(server, Console(file=None, quiet=True), "t", raw=True, sleep=slept.append)  # type: ignore[arg-type]

    # When it follows the task
    status = watcher.run()

    # Then it waited the server's 30 s each time, re-attached after the last cursor, and saw the end
    assert status == "completed"
    assert slept == [30.0] * (MAX_REATTACH + 4)
    assert server.calls == [0] + [2] * (MAX_REATTACH + 4)
    assert watcher.reattached == 0  # no connection was lost
