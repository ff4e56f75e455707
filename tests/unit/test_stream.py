"""tail_events: replay after a cursor, follow until a terminal event, keep-alives, time limit."""

import asyncio
import json
from datetime import UTC, datetime

import pytest

from agentic.models import EventType, StreamEvent
from agentic.service.stream import tail_events

pytestmark = pytest.mark.unit


class ListStore:
    blocking = False

    def __init__(self, types):
        self.events = [
            StreamEvent(event_type=t, task_id="t", timestamp=datetime.now(UTC), cursor=i + 1)
            for i, t in enumerate(types)
        ]

    def read_events(self, task_id, after=0, limit=500):
        return [e for e in self.events if e.cursor > after][:limit]


class ManualWaiter:
    """Wakes streams when the test appends; records how long they asked to wait."""

    def __init__(self, store):
        self.store = store
        self.timeouts = []
        self.on_wait = None

    async def wait(self, task_id, after, timeout):
        self.timeouts.append(timeout)
        if self.on_wait:
            self.on_wait()
        await asyncio.sleep(0)


async def collect(it):
    return [json.loads(line) async for chunk in it for line in chunk.splitlines()]


async def test_replays_after_cursor_and_stops_at_terminal_event():
    store = ListStore(
        [EventType.TASK_STARTED, EventType.PLAN_CREATED, EventType.TASK_COMPLETED, EventType.STEP_STARTED]
    )
    lines = await collect(tail_events(store, ManualWaiter(store), "t", after=1))
    assert [(line["cursor"], line["event_type"]) for line in lines] == [
        (2, "plan_created"),
        (3, "task_completed"),
    ]


async def test_follows_new_events_until_the_task_ends():
    store = ListStore([EventType.TASK_STARTED])
    waiter = ManualWaiter(store)
    pending = [EventType.PLAN_CREATED, EventType.TASK_FAILED]

    def append():
        if pending:
            t = pending.pop(0)
            store.events.append(
                StreamEvent(event_type=t, task_id="t", timestamp=datetime.now(UTC), cursor=len(store.events) + 1)
            )

    waiter.on_wait = append
    lines = await collect(tail_events(store, waiter, "t"))
    assert [line["event_type"] for line in lines] == ["task_started", "plan_created", "task_failed"]


async def test_idle_stream_sends_keepalives_and_ends_at_its_time_limit_with_a_resume_hint():
    store = ListStore([EventType.TASK_STARTED])

    class SleepingWaiter:
        async def wait(self, task_id, after, timeout):
            await asyncio.sleep(timeout)

    lines = await collect(tail_events(store, SleepingWaiter(), "t", keepalive_seconds=0.02, max_seconds=0.15))
    kinds = [line["event_type"] for line in lines]
    assert kinds[0] == "task_started"
    assert "keepalive" in kinds
    assert kinds[-1] == "stream_timeout"
    assert "cursor" not in lines[-1]
    assert lines[-1]["data"]["cursor"] == 1
    assert lines[-1]["data"]["resume"] == "/tasks/t/events?after=1"
