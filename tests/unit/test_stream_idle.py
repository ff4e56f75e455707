"""An idle stream on a polling waiter (the AWS wiring): it backs off to one read every 2 s after 10 s
without events, and a stream whose task waits for a person can end with ``stream_paused``."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from agentic.adapters.dynamodb_waiter import DynamoDBPollingWaiter
from agentic.models import EventType, StreamEvent, TaskStatus
from agentic.service.stream import tail_events
from tests.virtual_time import run_virtual

pytestmark = pytest.mark.unit


class IdleStore:
    """A log that never grows; records when it is read (on the loop's virtual clock)."""

    blocking = False

    def __init__(self, types: list[EventType], status: TaskStatus = TaskStatus.EXECUTING) -> None:
        self.events = [
            StreamEvent(event_type=t, task_id="t", timestamp=datetime.now(UTC), cursor=i + 1)
            for i, t in enumerate(types)
        ]
        self.status = status
        self.queries: list[float] = []
        self.gets: list[float] = []

    def read_events(self, task_id: str, after: int = 0, limit: int = 500, consistent: bool = True) -> list[StreamEvent]:
        self.queries.append(asyncio.get_running_loop().time())
        return [e for e in self.events if e.cursor > after][:limit]

    def get(self, task_id: str) -> SimpleNamespace:
        self.gets.append(asyncio.get_running_loop().time())
        return SimpleNamespace(status=self.status)


async def lines_of(stream) -> list[dict]:
    return [json.loads(line) async for chunk in stream for line in chunk.splitlines()]


def test_an_idle_stream_reads_at_most_every_two_seconds_after_ten_idle_seconds():
    # Given a task that writes nothing more, watched for 60 s through the AWS wiring's waiter
    store = IdleStore([EventType.TASK_STARTED])

    async def watch() -> list[dict]:
        loop = asyncio.get_running_loop()
        waiter = DynamoDBPollingWaiter(0.02, 0.2, idle_after=10, idle_interval=2, clock=loop.time)
        stream = tail_events(
            store, waiter, "t", keepalive_seconds=15, max_seconds=60, max_wait_seconds=waiter.max_wait_seconds
        )
        return await lines_of(stream)

    lines = run_virtual(watch())

    # Then, from 10 s on, consecutive Queries are at least 2 s apart (one every 2 s at most; the
    # last look at the time limit aside)
    assert lines[-1]["event_type"] == "stream_timeout"
    late = [t for t in store.queries if 10 <= t < 60]
    gaps = [b - a for a, b in itertools.pairwise(late)]
    assert gaps
    assert min(gaps) >= 2 - 1e-6, gaps
    assert len(late) <= 26
    # and the task's status is read rarely (every ending writes an event the Queries see)
    assert len([t for t in store.gets if t >= 12]) <= 5


def test_a_stream_of_a_task_waiting_for_a_person_pauses_and_names_where_to_come_back():
    # Given a task whose last event asks for approval, streamed by a wiring that pauses for 30 s
    store = IdleStore([EventType.TASK_STARTED, EventType.APPROVAL_REQUESTED], TaskStatus.AWAITING_APPROVAL)

    async def watch(after: int, awaiting: bool = False) -> list[dict]:
        waiter = DynamoDBPollingWaiter(0.02, 0.2)
        return await lines_of(tail_events(store, waiter, "t", after, pause_seconds=30, awaiting=awaiting))

    first = run_virtual(watch(0))
    store.queries.clear()
    store.gets.clear()
    # (the caller read the task awaiting approval just before, as TaskService.stream does)
    again = run_virtual(watch(2, awaiting=True))

    # Then the stream sends the request and ends with stream_paused (cursor, when to come back)
    assert [line["event_type"] for line in first] == ["task_started", "approval_requested", "stream_paused"]
    paused = first[-1]["data"]
    assert (paused["cursor"], paused["retry_after_seconds"], paused["reason"]) == (2, 30, "awaiting_approval")
    assert paused["resume"] == "/tasks/t/events?after=2"
    # and a client coming back while the task still waits is told the same at once
    assert [line["event_type"] for line in again] == ["stream_paused"]
    assert again[0]["data"]["cursor"] == 2
    # after one read of the log, with no status round (a re-attach holds its Lambda for no wait)
    assert len(store.queries) == 1
    assert store.queries[0] == pytest.approx(0, abs=1e-3)
    assert store.gets == []


def test_without_a_pause_a_stream_stays_open_while_a_person_decides():
    store = IdleStore([EventType.TASK_STARTED, EventType.APPROVAL_REQUESTED], TaskStatus.AWAITING_APPROVAL)

    async def watch() -> list[dict]:
        waiter = DynamoDBPollingWaiter(0.02, 0.2)
        return await lines_of(tail_events(store, waiter, "t", keepalive_seconds=15, max_seconds=40))

    lines = run_virtual(watch())

    assert [line["event_type"] for line in lines] == [
        "task_started",
        "approval_requested",
        "keepalive",
        "keepalive",
        "stream_timeout",
    ]
