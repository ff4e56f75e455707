"""tail_events: replay after a cursor, follow until a terminal event, keep-alives, time limit."""

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from agentic.models import EventType, StreamEvent, TaskStatus
from agentic.service.stream import tail_events

pytestmark = pytest.mark.unit


class ListStore:
    blocking = False

    def __init__(self, types):
        self.reads = 0
        self.events = [
            StreamEvent(event_type=t, task_id="t", timestamp=datetime.now(UTC), cursor=i + 1)
            for i, t in enumerate(types)
        ]

    def read_events(self, task_id, after=0, limit=500, consistent=True):
        self.reads += 1
        return [e for e in self.events if e.cursor > after][:limit]

    def get(self, task_id):
        ended = any(e.event_type.is_terminal for e in self.events)
        return SimpleNamespace(status=TaskStatus.COMPLETED if ended else TaskStatus.EXECUTING)


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


async def test_a_stream_resumed_past_the_terminal_event_ends_with_the_task():
    # Given a stream resumed at the cursor of a running task's last event
    store = ListStore([EventType.TASK_STARTED, EventType.PLAN_CREATED])

    class FinishingWaiter:
        async def wait(self, task_id, after, timeout):
            # When the task ends with an event at or before the client's cursor (here: the
            # client asked for after=3 and the terminal event is cursor 3)
            if len(store.events) == 2:
                store.events.append(
                    StreamEvent(event_type=EventType.TASK_COMPLETED, task_id="t", timestamp=datetime.now(UTC), cursor=3)
                )
            await asyncio.sleep(0)

    lines = await asyncio.wait_for(collect(tail_events(store, FinishingWaiter(), "t", after=3)), 5)
    # Then the stream ends (it does not wait forever for a cursor that will never come)
    assert lines == []


async def test_a_stream_of_a_task_nobody_started_says_so_first():
    store = ListStore([])

    class StartingWaiter:
        async def wait(self, task_id, after, timeout):
            if not store.events:  # someone executes the task
                for i, t in enumerate([EventType.TASK_STARTED, EventType.TASK_FAILED]):
                    store.events.append(
                        StreamEvent(event_type=t, task_id="t", timestamp=datetime.now(UTC), cursor=i + 1)
                    )
            await asyncio.sleep(0)

    lines = await collect(tail_events(store, StartingWaiter(), "t", not_started=True))
    assert [line["event_type"] for line in lines] == ["task_pending", "task_started", "task_failed"]
    assert lines[0]["data"]["execute"] == "/tasks/t/execute"
    assert "cursor" not in lines[0]


async def test_a_wake_up_with_nothing_to_read_never_spins():
    # Given a waiter that always claims there is news (a notification for a write that never landed)
    store = ListStore([EventType.TASK_STARTED])

    class LyingWaiter:
        async def wait(self, task_id, after, timeout):
            return None  # returns at once, without even yielding

    stream = tail_events(store, LyingWaiter(), "t", max_seconds=0.5, keepalive_seconds=10)
    lines = await collect(stream)
    # Then the stream still ends at its limit, having paused between empty reads instead of
    # reading the log as fast as the CPU allows (tens of thousands of reads in 0.5 s)
    assert lines[-1]["event_type"] == "stream_timeout"
    assert store.reads < 50


class EndlessStore(ListStore):
    """A log that always has one more event (another server's run writing as fast as it reads)."""

    def read_events(self, task_id, after=0, limit=500, consistent=True):
        self.reads += 1
        return [
            StreamEvent(
                event_type=EventType.PARTIAL_OUTPUT, task_id=task_id, timestamp=datetime.now(UTC), cursor=after + 1
            )
        ]


async def test_a_stopping_server_ends_even_a_busy_stream_with_where_to_re_attach():
    store = EndlessStore([])
    waiter = SimpleNamespace(stopping=False)
    lines = []
    async for chunk in tail_events(store, waiter, "t"):
        lines += [json.loads(line) for line in chunk.splitlines()]
        if len(lines) == 3:  # When the server starts stopping while events keep coming
            waiter.stopping = True
        assert len(lines) < 10, "the stream went on after the stop"
    # Then the stream ends at once with server_stopping, naming the last cursor it sent
    assert [line["event_type"] for line in lines] == ["partial_output"] * 3 + ["server_stopping"]
    assert lines[-1]["data"]["cursor"] == 3
    assert lines[-1]["data"]["resume"] == "/tasks/t/events?after=3"
    assert lines[-1]["data"]["retry_after"] >= 1
