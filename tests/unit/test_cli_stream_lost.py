"""``agentic watch`` giving up on a lost stream: its exit code. Names the bug it guards (issue 19).

The command runs in-process against a fake server (``httpx.MockTransport``); its re-attach waits are
recorded instead of slept.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import agentic.cli.main as cli
from agentic.cli.client import AgenticClient
from agentic.cli.watch import MAX_REATTACH, Watcher

TASK = "5d0f3c1e-0000-4000-8000-000000000001"


def server_streaming(*events: dict[str, Any]):
    """A server whose stream of the task sends ``events`` and then ends (early, unless one is terminal)."""
    streams: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        streams.append(request)
        after = int(request.headers.get("Last-Event-ID", "0"))
        body = "".join(json.dumps(e) + "\n" for e in events if e["cursor"] > after)
        return httpx.Response(200, text=body, headers={"content-type": "application/x-ndjson"})

    return handle, streams


def event(cursor: int, event_type: str, **data: Any) -> dict[str, Any]:
    stamp = "2026-01-01T00:00:00Z"
    return {"event_type": event_type, "task_id": TASK, "cursor": cursor, "timestamp": stamp, "data": data}


@pytest.fixture
def watch(monkeypatch):
    """``agentic watch TASK --json`` against a fake server; its re-attach waits are recorded, not slept."""
    waits: list[float] = []
    monkeypatch.setattr(cli, "Watcher", functools.partial(Watcher, sleep=waits.append))

    def invoke(handle):
        transport = httpx.MockTransport(handle)
        monkeypatch.setattr(
            cli.Target, "client", lambda self: AgenticClient("http://agentic.test", transport=transport)
        )
        return CliRunner().invoke(cli.app, ["--url", "http://agentic.test", "watch", TASK, "--json"])

    return invoke, waits


def test_giving_up_on_a_lost_stream_exits_5_not_1(watch):
    """Bug guarded: the CLI exiting 1 ("task failed") instead of 5 when it gives up re-attaching.

    A script reads the exit code: 1 says the task failed, 5 that the server or stream was lost (the
    task may well be running still). The two must stay apart.
    """
    invoke, waits = watch
    # Given a server whose stream of a running task always ends early
    handle, streams = server_streaming(event(1, "task_started"), event(2, "plan_created", steps=[]))
    # When the task is watched
    result = invoke(handle)
    # Then the command gives up after its re-attach attempts, with exit code 5
    assert len(streams) == MAX_REATTACH + 1
    assert len(waits) == MAX_REATTACH
    assert result.exit_code == cli.EXIT_UNREACHABLE == 5, result.output
    # And a task that really failed still exits 1
    handle, _ = server_streaming(event(1, "task_started"), event(2, "task_failed", error_message="boom"))
    assert invoke(handle).exit_code == cli.EXIT_FAILED == 1
