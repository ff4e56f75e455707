"""A local stream takes committed events from the event bus, and the log wherever memory has a gap."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.models import EventType, NewEvent, TaskState
from agentic.service.stream import tail_events
from tests.virtual_time import until

pytestmark = pytest.mark.functional


def event(event_type: EventType, key: str) -> NewEvent:
    return NewEvent(task_id="t", event_type=event_type, key=key)


async def test_a_stream_fed_from_memory_reads_what_another_process_wrote_from_the_log(tmp_path):
    # Given two processes on one file; a stream on process A's server
    a, b = SQLiteTaskStore(tmp_path / "tasks.db"), SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        a.create(TaskState(task_id="t", owner="o", user_input="Explain backoff"))
        reads: list[int] = []
        read_events = a.read_events

        def counted(task_id: str, after: int = 0, limit: int = 500):
            reads.append(after)
            return read_events(task_id, after, limit)

        a.read_events = counted  # type: ignore[method-assign]
        lines: list[dict] = []

        async def consume() -> None:
            async for chunk in tail_events(a, a.bus, "t", 0):
                lines.extend(json.loads(line) for line in chunk.splitlines())

        stream = asyncio.create_task(consume())
        await until(lambda: len(reads) == 1)  # the first round reads the log
        # When A commits an event, B (another process: A's bus never hears of it) the next, then A two more
        a.append_event(event(EventType.TASK_STARTED, "1"))
        await until(lambda: len(lines) == 1)
        b.append_event(event(EventType.STEP_STARTED, "2"))
        a.append_event(event(EventType.STEP_COMPLETED, "3"))
        a.append_event(event(EventType.TASK_COMPLETED, "4"))
        await asyncio.wait_for(stream, 5)
        # Then the stream shows every event once, in order: A's first from memory (no read), and the
        # log read once at the gap that B's event left in memory
        assert [line["cursor"] for line in lines] == [1, 2, 3, 4]
        assert reads == [0, 1]
    finally:
        a.close()
        b.close()
