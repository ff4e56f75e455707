"""A local stream takes committed events from the event bus, and the log wherever memory has a gap."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.models import EventType, NewEvent, StreamEvent, TaskState, TaskStatus
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

        def counted(task_id: str, after: int = 0, limit: int = 500, *, consistent: bool = True):
            reads.append(after)
            return read_events(task_id, after, limit, consistent=consistent)

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


async def test_a_claimed_task_streams_its_earlier_log_and_its_run_without_a_first_read(tmp_path):
    # Given a task with three events in its log from an earlier run, claimed by process A
    a, b = SQLiteTaskStore(tmp_path / "tasks.db"), SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        a.create(TaskState(task_id="t", owner="o", user_input="Explain backoff"))
        for i in range(3):
            b.append_event(event(EventType.STEP_STARTED, f"old-{i}"))
        assert a.claim("t", "runner-a", 30) is not None
        reads: list[int] = []
        read_events = a.read_events

        def counted(task_id: str, after: int = 0, limit: int = 500, *, consistent: bool = True):
            reads.append(after)
            return read_events(task_id, after, limit, consistent=consistent)

        a.read_events = counted  # type: ignore[method-assign]

        async def stream(after: int, cursors: list[int]) -> None:
            # Re-reads of the log only at a commit or a minute of quiet: the first read is the test's
            async for chunk in tail_events(a, a.bus, "t", after, max_wait_seconds=60, keepalive_seconds=60):
                cursors.extend(json.loads(line)["cursor"] for line in chunk.splitlines())

        # When one stream starts at the start of the log and another at the claim's end of it
        early: list[int] = []
        late: list[int] = []
        from_start = asyncio.create_task(stream(0, early))
        from_end = asyncio.create_task(stream(3, late))
        # Then the first sends the earlier events at once (nothing was committed since the claim)
        await asyncio.wait_for(until(lambda: early == [1, 2, 3]), 5)
        # And when A's run commits its events, each stream sees every event after its cursor once,
        # the second without reading the log at all
        a.append_event(event(EventType.TASK_STARTED, "1"))
        a.append_event(event(EventType.TASK_COMPLETED, "2"))
        await asyncio.wait_for(asyncio.gather(from_start, from_end), 5)
        assert early == [1, 2, 3, 4, 5]
        assert late == [4, 5]
        assert reads == [0, 3]  # both the first stream's (at the start, then once past what it read)
    finally:
        a.close()
        b.close()


async def test_a_stream_that_starts_after_a_restart_reads_the_claimed_tasks_log(tmp_path):
    # Given a task that process A claimed and ran part of before it stopped
    a = SQLiteTaskStore(tmp_path / "tasks.db")
    a.create(TaskState(task_id="t", owner="o", user_input="Explain backoff"))
    assert a.claim("t", "runner-a", 0.0) is not None
    a.append_event(event(EventType.TASK_STARTED, "1"))
    a.append_event(event(EventType.STEP_STARTED, "2"))
    a.close()
    # When a restarted process claims it (the lease expired) and streams it from the start, and its
    # run finishes the task
    restarted = SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        assert restarted.claim("t", "runner-b", 30) is not None
        cursors: list[int] = []

        async def consume() -> None:
            async for chunk in tail_events(restarted, restarted.bus, "t", 0):
                cursors.extend(json.loads(line)["cursor"] for line in chunk.splitlines())

        stream = asyncio.create_task(consume())
        await asyncio.sleep(0)
        restarted.append_event(event(EventType.STEP_COMPLETED, "3"))
        restarted.append_event(event(EventType.TASK_COMPLETED, "4"))
        await asyncio.wait_for(stream, 5)
        # Then it sees every event once: those of the run before the restart and those after
        assert cursors == [1, 2, 3, 4]
    finally:
        restarted.close()


DATA_CASES = [
    {},
    {"text": "plain ascii", "n": 3, "ok": True, "none": None},
    {"unicode": "Grüße, 東京, emoji 🚀, right-to-left שלום", "quote": 'say "hi"\\ back\\slash'},
    {"control": "tab\tnew\nline\rcr\x00nul\x1funit\x7fdel\u2028sep"},
    {"floats": [0.1, 1e16, 1e-7, -0.0, 3.0, 123456789.123456789], "big": 10**20, "neg": -5},
    {"nested": {"a": [1, {"b": [None, "x"]}], "empty": {}, "list": []}},
]


@pytest.mark.parametrize("data", DATA_CASES)
def test_a_committed_events_line_is_the_line_the_event_encodes_to(tmp_path, data):
    # Given events of every kind of data, committed by the store
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        store.create(TaskState(task_id='t-ü/"x', owner="o", user_input="Explain backoff"))
        written = store.append_event(NewEvent(task_id='t-ü/"x', event_type=EventType.STEP_STARTED, data=data))
        assert written is not None
        # When its line is taken from memory (encoded once, at commit) and from the log
        (_, from_memory) = store.bus.recent_lines('t-ü/"x', 0)[0]
        from_log = store.read_events('t-ü/"x')[0].to_line()
        # Then both are exactly what the event encodes to as a model, and parse back to the data
        encoded = StreamEvent.model_validate(written.model_dump()).model_dump_json() + "\n"
        assert from_memory == encoded
        assert from_log == encoded
        assert json.loads(from_memory)["data"] == json.loads(json.dumps(data))
    finally:
        store.close()


def test_a_task_completed_line_carries_the_final_output_that_the_log_stores_once(tmp_path):
    # Given a task completed with its report in one write
    store = SQLiteTaskStore(tmp_path / "tasks.db")
    try:
        store.create(TaskState(task_id="t", owner="o", user_input="Explain backoff", status="executing"))
        report = 'the report: Ünïcödé and "quotes"'
        done = NewEvent(
            task_id="t",
            event_type=EventType.TASK_COMPLETED,
            data={"status": "completed", "final_output": report},
            key="task:task_completed",
        )
        store.update("t", {TaskStatus.EXECUTING}, events=[done], status=TaskStatus.COMPLETED, final_output=report)
        # When its line is taken from memory and from the log (which stores the report once, in the task)
        (_, from_memory) = store.bus.recent_lines("t", 0)[0]
        from_log = store.read_events("t")[0].to_line()
        # Then both lines are the same, with the report
        assert from_memory == from_log
        assert json.loads(from_memory)["data"] == {"status": "completed", "final_output": report}
    finally:
        store.close()
