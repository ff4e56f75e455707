"""The TaskStore contract, written once and run on every store (SQLite, and DynamoDB over moto).

The last section holds what only the DynamoDB store has: its table layout (which template.yaml
mirrors) and its optimistic-concurrency retries.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from agentic.adapters import dynamodb_store as dynamodb_module
from agentic.adapters.dynamodb_codec import KEY_SET_MAX
from agentic.adapters.dynamodb_store import DynamoDBTaskStore
from agentic.adapters.sqlite_store import encode_cursor, sort_key
from agentic.errors import InputTooLarge, InvalidInput, InvalidTransition, TaskAlreadyExists, TaskNotFound
from agentic.models import (
    LIST_PREVIEW_CHARS,
    EventType,
    ExecutionPlan,
    ExecutionStep,
    NewEvent,
    StepStatus,
    TaskPublic,
    TaskState,
    TaskStatus,
)
from tests.functional.conftest import TABLE_NAME

pytestmark = pytest.mark.functional

BASE = datetime(2026, 11, 24, 14, 50, 24, 331495, tzinfo=UTC)
OVER_400_KB = "x" * (410 * 1024)


@pytest.fixture(params=["sqlite", "dynamodb", "dynamodb_sharded"])
def store(request):
    """Each TaskStore implementation in turn; DynamoDB also with every owner's index keys spread over
    8 shards (issue 16), which must keep the same contract."""
    if request.param == "dynamodb_sharded":
        return DynamoDBTaskStore(TABLE_NAME, request.getfixturevalue("dynamodb_store").client, index_shards=8)
    return request.getfixturevalue(f"{request.param}_store")


def make_task(
    task_id: str,
    owner: str = "alice",
    *,
    seconds: int = 0,
    status: TaskStatus = TaskStatus.PENDING,
) -> TaskState:
    created = BASE + timedelta(seconds=seconds)
    return TaskState(
        task_id=task_id,
        owner=owner,
        user_input=f"describe {task_id}",
        status=status,
        created_at=created,
        updated_at=created,
    )


def event(task_id: str, event_type: EventType = EventType.STEP_STARTED, key: str | None = None, **data: Any):
    return NewEvent(task_id=task_id, event_type=event_type, key=key, data=data)


def newest_first(tasks: list[TaskState]) -> list[str]:
    return [t.task_id for t in sorted(tasks, key=lambda t: (sort_key(t.created_at), t.task_id), reverse=True)]


def all_pages(store, owner: str, limit: int, status: TaskStatus | None = None) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.list(owner, limit=limit, cursor=cursor, status=status)
        pages.append([t.task_id for t in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 50, "pagination does not terminate"


# --- create / get ---------------------------------------------------------------------------------


def test_a_created_task_reads_back_unchanged(store):
    # Given a task with a plan-free initial state
    task = make_task("t-1")
    # When it is created and read back
    returned = store.create(task)
    read = store.get("t-1")
    # Then both are the task exactly as given
    assert returned == task
    assert read == task
    assert read.model_dump() == task.model_dump()


def test_an_unknown_task_reads_as_none(store):
    # Given an empty store / When an unknown id is read / Then there is nothing
    assert store.get("missing") is None


def test_creating_the_same_id_twice_is_rejected_and_keeps_the_first(store):
    # Given a created task
    store.create(make_task("t-1", owner="alice"))
    # When another task with the same id is created
    with pytest.raises(TaskAlreadyExists) as raised:
        store.create(make_task("t-1", owner="mallory"))
    # Then the error names the id, and the first task is untouched
    assert raised.value.task_id == "t-1"
    assert store.get("t-1").owner == "alice"


# --- list -----------------------------------------------------------------------------------------


def test_list_shows_only_the_owners_tasks_newest_first(store):
    # Given tasks of two owners created at different times
    mine = [make_task(f"a-{i}", seconds=s) for i, s in enumerate([5, 1, 9, 3])]
    for task in [*mine, make_task("b-1", owner="bob", seconds=7)]:
        store.create(task)
    # When alice lists her tasks
    page = store.list("alice", limit=10)
    # Then she sees exactly hers, newest first, with no further page
    assert [t.task_id for t in page.items] == ["a-2", "a-0", "a-3", "a-1"]
    assert page.next_cursor is None
    assert [t.task_id for t in store.list("bob", limit=10).items] == ["b-1"]
    assert store.list("nobody", limit=10).items == []


@pytest.mark.parametrize("same_instant", [False, True], ids=["distinct-times", "same-time"])
def test_pages_cover_every_task_once_in_order(store, same_instant):
    # Given 7 tasks (possibly all created in the same microsecond: the id breaks the tie)
    tasks = [make_task(f"t-{i}", seconds=0 if same_instant else i) for i in range(7)]
    for task in tasks:
        store.create(task)
    # When they are listed 3 at a time, following the cursors
    pages = all_pages(store, "alice", limit=3)
    # Then the pages are 3, 3, 1 long and together give each task once, newest first
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [task_id for page in pages for task_id in page] == newest_first(tasks)


def test_a_page_that_ends_exactly_at_the_last_task_has_no_next_cursor(store):
    # Given exactly as many tasks as the page size
    for i in range(3):
        store.create(make_task(f"t-{i}", seconds=i))
    # When listed with that page size
    page = store.list("alice", limit=3)
    # Then all are on the page and no empty next page is promised
    assert len(page.items) == 3
    assert page.next_cursor is None


def test_status_filter_fills_pages_even_when_matches_are_sparse(store):
    # Given 130 tasks of which only the 4 oldest are completed (more non-matches than one read returns)
    tasks = [make_task(f"t-{i:03d}", seconds=i, status=TaskStatus.PENDING) for i in range(130)]
    for task in tasks[:4]:
        task.status = TaskStatus.COMPLETED
    for task in tasks:
        store.create(task)
    # When completed tasks are listed 3 at a time
    pages = all_pages(store, "alice", limit=3, status=TaskStatus.COMPLETED)
    # Then the first page is full despite the 8 newer pending tasks, and nothing else appears
    assert pages == [["t-003", "t-002", "t-001"], ["t-000"]]
    assert [t.task_id for t in store.list("alice", limit=20, status=TaskStatus.FAILED).items] == []


def test_status_filter_sees_status_changes(store):
    # Given two pending tasks, one of which then starts
    store.create(make_task("t-1", seconds=1))
    store.create(make_task("t-2", seconds=2))
    store.update("t-1", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    # When listing by status / Then each task shows under its current status only
    assert [t.task_id for t in store.list("alice", limit=10, status=TaskStatus.ANALYZING).items] == ["t-1"]
    assert [t.task_id for t in store.list("alice", limit=10, status=TaskStatus.PENDING).items] == ["t-2"]


@pytest.mark.parametrize(
    "cursor",
    [
        "this is not a cursor!",
        encode_cursor({"created_at": "x"}),  # type: ignore[arg-type]
        encode_cursor(["only-one-part"]),
        encode_cursor([1, 2]),
    ],
    ids=["garbage", "not-a-list", "one-part", "not-strings"],
)
def test_a_malformed_cursor_is_invalid_input(store, cursor):
    # Given a store with a task
    store.create(make_task("t-1"))
    # When a cursor that no page produced is passed / Then it is rejected as invalid input
    with pytest.raises(InvalidInput):
        store.list("alice", limit=3, cursor=cursor)


def test_list_in_status_finds_tasks_of_every_owner(store):
    # Given tasks of two owners in various states
    store.create(make_task("a-run", owner="alice", status=TaskStatus.EXECUTING))
    store.create(make_task("b-run", owner="bob", status=TaskStatus.ANALYZING))
    store.create(make_task("a-new", owner="alice"))
    store.create(make_task("b-done", owner="bob", status=TaskStatus.COMPLETED))
    # When asked for the live states
    live = store.list_in_status({TaskStatus.ANALYZING, TaskStatus.EXECUTING})
    # Then exactly those tasks come back, whole
    assert sorted(t.task_id for t in live) == ["a-run", "b-run"]
    assert {t.task_id: t.owner for t in live} == {"a-run": "alice", "b-run": "bob"}
    assert store.list_in_status({TaskStatus.FAILED}) == []


# --- update ---------------------------------------------------------------------------------------


def test_update_applies_changes_from_an_expected_status(store):
    # Given a pending task
    task = store.create(make_task("t-1"))
    # When it moves to analyzing from pending
    updated = store.update("t-1", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, current_step_index=2)
    # Then the returned and stored task carry the changes and a newer updated_at, nothing else differs
    assert updated.status is TaskStatus.ANALYZING
    assert updated.current_step_index == 2
    assert updated.updated_at > task.updated_at
    assert store.get("t-1") == updated
    assert updated.model_dump(exclude={"status", "current_step_index", "updated_at"}) == task.model_dump(
        exclude={"status", "current_step_index", "updated_at"}
    )


def test_successive_updates_each_apply(store):
    # Given a task moved along the happy path
    store.create(make_task("t-1"))
    store.update("t-1", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    store.update("t-1", {TaskStatus.ANALYZING}, status=TaskStatus.EXECUTING)
    # When it completes
    store.update("t-1", {TaskStatus.EXECUTING}, status=TaskStatus.COMPLETED, final_output="report")
    # Then the last state is stored
    final = store.get("t-1")
    assert (final.status, final.final_output) == (TaskStatus.COMPLETED, "report")


def test_update_from_an_unexpected_status_is_rejected_and_writes_nothing(store):
    # Given a completed task
    store.create(make_task("t-1", status=TaskStatus.COMPLETED))
    before = store.get("t-1")
    # When something tries to move it from executing, with an event
    with pytest.raises(InvalidTransition) as raised:
        store.update(
            "t-1",
            {TaskStatus.EXECUTING, TaskStatus.ANALYZING},
            status=TaskStatus.FAILED,
            error_message="late",
            events=[event("t-1", EventType.TASK_FAILED, key="task:task_failed")],
        )
    # Then the error says why, and neither the task nor its log changed
    assert str(raised.value) == "task t-1 is completed; this needs it to be analyzing or executing"
    assert store.get("t-1") == before
    assert store.read_events("t-1") == []


def test_a_mutation_sees_the_stored_task_and_its_changes_are_applied(store):
    # Given a task that another writer moved on since we last read it
    store.create(make_task("t-1"))
    store.update("t-1", {TaskStatus.PENDING}, current_step_index=3)
    seen: list[int] = []

    def bump(task: TaskState) -> dict[str, Any]:
        seen.append(task.current_step_index)
        return {"current_step_index": task.current_step_index + 1}

    # When a mutation derives its change from the task as stored
    updated = store.update("t-1", {TaskStatus.PENDING}, mutate=bump, error_message="from changes")
    # Then it saw the stored state, and both its change and the plain changes were applied
    assert seen[-1] == 3
    assert (updated.current_step_index, updated.error_message) == (4, "from changes")
    assert store.get("t-1") == updated


def test_a_mutation_that_refuses_writes_nothing(store):
    # Given a task
    store.create(make_task("t-1"))
    before = store.get("t-1")

    def refuse(task: TaskState) -> dict[str, Any]:
        raise InvalidTransition("this attempt was overtaken")

    # When a mutation refuses, with an event attached
    with pytest.raises(InvalidTransition, match="overtaken"):
        store.update(
            "t-1",
            {TaskStatus.PENDING},
            status=TaskStatus.ANALYZING,
            mutate=refuse,
            events=[event("t-1", EventType.TASK_STARTED, key="task:task_started")],
        )
    # Then neither the task nor its log changed
    assert store.get("t-1") == before
    assert store.read_events("t-1") == []


def test_update_of_an_unknown_task_is_not_found(store):
    # Given no task / When it is updated / Then TaskNotFound names it
    with pytest.raises(TaskNotFound) as raised:
        store.update("missing", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    assert raised.value.task_id == "missing"


def test_update_writes_its_events_with_the_change_and_skips_keys_already_written(store):
    # Given a pending task whose "started" event was already written once
    store.create(make_task("t-1"))
    first = store.append_event(event("t-1", EventType.TASK_STARTED, key="task:task_started"))
    # When the state change is applied with that event again and a new one
    updated = store.update(
        "t-1",
        {TaskStatus.PENDING},
        status=TaskStatus.ANALYZING,
        events=[
            event("t-1", EventType.TASK_STARTED, key="task:task_started"),
            event("t-1", EventType.PLAN_CREATED, key="task:plan_created", steps=3),
        ],
    )
    # Then the state changed and the log holds each event once, in order, with rising cursors
    assert updated.status is TaskStatus.ANALYZING
    log = store.read_events("t-1")
    assert [e.event_type for e in log] == [EventType.TASK_STARTED, EventType.PLAN_CREATED]
    assert log[0].cursor == first.cursor < log[1].cursor
    assert log[1].data == {"steps": 3}


# --- events ---------------------------------------------------------------------------------------


def test_a_key_already_written_in_the_middle_of_an_update_leaves_no_gap(store):
    # Given a running task whose step_started event was written once already
    store.create(make_task("t-1"))
    store.update("t-1", {TaskStatus.PENDING}, status=TaskStatus.EXECUTING)
    first = store.append_event(event("t-1", EventType.STEP_STARTED, key="s1:0:step_started"))
    # When an update writes a new event, that one again, and two more new ones
    store.update(
        "t-1",
        {TaskStatus.EXECUTING},
        current_step_index=1,
        events=[
            event("t-1", EventType.PARTIAL_OUTPUT, key="s1:partial_output", n=1),
            event("t-1", EventType.STEP_STARTED, key="s1:0:step_started"),
            event("t-1", EventType.STEP_COMPLETED, key="s1:step_completed", n=2),
            event("t-1", EventType.STEP_STARTED, key="s2:0:step_started", n=3),
        ],
    )
    # Then each event is in the log once, in order, on the cursors right after the first one
    log = store.read_events("t-1")
    assert [(e.event_type, e.data.get("n")) for e in log] == [
        (EventType.STEP_STARTED, None),
        (EventType.PARTIAL_OUTPUT, 1),
        (EventType.STEP_COMPLETED, 2),
        (EventType.STEP_STARTED, 3),
    ]
    assert [e.cursor for e in log] == [first.cursor + n for n in range(4)]


def test_append_assigns_strictly_increasing_cursors(store):
    # Given a task
    store.create(make_task("t-1"))
    # When five events are appended
    written = [store.append_event(event("t-1", n=i)) for i in range(5)]
    # Then each got a cursor above the previous, and the log returns them as written
    cursors = [e.cursor for e in written]
    assert all(b > a for a, b in itertools.pairwise(cursors))
    assert cursors[0] >= 1
    assert [e.model_dump() for e in store.read_events("t-1")] == [e.model_dump() for e in written]


def test_the_same_key_twice_is_written_once(store):
    # Given an event written with a key
    store.create(make_task("t-1"))
    first = store.append_event(event("t-1", EventType.STEP_STARTED, key="s1:0:step_started", step="s1"))
    # When it is written again (a retried Lambda), then another event follows
    again = store.append_event(event("t-1", EventType.STEP_STARTED, key="s1:0:step_started", step="s1"))
    after = store.append_event(event("t-1", EventType.PARTIAL_OUTPUT, key="s1:partial_output"))
    # Then the replay returns None and the log holds the keyed event once
    assert first is not None
    assert again is None
    log = store.read_events("t-1")
    assert [(e.event_type, e.cursor) for e in log] == [
        (EventType.STEP_STARTED, first.cursor),
        (EventType.PARTIAL_OUTPUT, after.cursor),
    ]
    assert after.cursor > first.cursor


def test_events_without_a_key_are_never_deduplicated(store):
    # Given a task / When the same keyless event is appended twice / Then both are in the log
    store.create(make_task("t-1"))
    store.append_event(event("t-1", EventType.PARTIAL_OUTPUT, text="same"))
    store.append_event(event("t-1", EventType.PARTIAL_OUTPUT, text="same"))
    assert len(store.read_events("t-1")) == 2


def test_read_after_a_cursor_returns_exactly_the_rest_in_order(store):
    # Given a log of six events
    store.create(make_task("t-1"))
    written = [store.append_event(event("t-1", n=i)) for i in range(6)]
    # When read after the third, and with a limit
    rest = store.read_events("t-1", after=written[2].cursor)
    two = store.read_events("t-1", after=written[2].cursor, limit=2)
    # Then exactly the later events come back in cursor order, the limit is honoured
    assert [e.data["n"] for e in rest] == [3, 4, 5]
    assert [e.data["n"] for e in two] == [3, 4]
    assert store.read_events("t-1", after=written[-1].cursor) == []
    assert [e.cursor for e in store.read_events("t-1", after=0)] == [e.cursor for e in written]


def test_events_keep_their_type_time_and_data(store):
    # Given an event with nested data and a known timestamp
    store.create(make_task("t-1"))
    stamp = BASE + timedelta(milliseconds=7)
    new = NewEvent(
        task_id="t-1",
        event_type=EventType.PLAN_CREATED,
        timestamp=stamp,
        data={"steps": [{"step_id": "s1", "agent_type": "retriever"}], "count": 1, "ok": True, "none": None},
    )
    # When written and read back
    store.append_event(new)
    (read,) = store.read_events("t-1")
    # Then nothing was lost in storage
    assert (read.event_type, read.task_id, read.timestamp, read.data) == ("plan_created", "t-1", stamp, new.data)


def test_the_logs_of_two_tasks_do_not_mix(store):
    # Given two tasks with interleaved events, including the same key on both
    store.create(make_task("t-1"))
    store.create(make_task("t-2"))
    for i in range(3):
        store.append_event(event("t-1", n=i))
        store.append_event(event("t-2", n=10 + i))
    one = store.append_event(event("t-1", EventType.TASK_COMPLETED, key="task:task_completed"))
    two = store.append_event(event("t-2", EventType.TASK_COMPLETED, key="task:task_completed"))
    # When each log is read
    log1, log2 = store.read_events("t-1"), store.read_events("t-2")
    # Then each holds only its own events, and a key on one task does not suppress it on the other
    assert one is not None
    assert two is not None
    assert [e.data.get("n") for e in log1] == [0, 1, 2, None]
    assert [e.data.get("n") for e in log2] == [10, 11, 12, None]
    assert {e.task_id for e in log1} == {"t-1"}
    assert {e.task_id for e in log2} == {"t-2"}


# --- size bounds ----------------------------------------------------------------------------------


def test_an_event_over_400_kb_is_rejected_and_not_written(store):
    # Given a task with one event
    store.create(make_task("t-1"))
    store.append_event(event("t-1", n=1))
    # When an event with more data than a DynamoDB item holds is appended
    with pytest.raises(InputTooLarge, match="bytes"):
        store.append_event(event("t-1", EventType.PARTIAL_OUTPUT, output=OVER_400_KB))
    # Then the log is unchanged and still accepts events
    assert [e.data for e in store.read_events("t-1")] == [{"n": 1}]
    assert store.append_event(event("t-1", n=2)) is not None


def test_an_update_that_would_make_the_task_over_400_kb_is_rejected(store):
    # Given an executing task
    store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    before = store.get("t-1")
    # When its final output is set to more than an item holds
    with pytest.raises(InputTooLarge):
        store.update("t-1", {TaskStatus.EXECUTING}, status=TaskStatus.COMPLETED, final_output=OVER_400_KB)
    # Then the task is unchanged
    assert store.get("t-1") == before


def test_payloads_just_under_the_bound_are_accepted(store):
    # Given a task / When an event and a document of about 300 KB are written / Then both are stored
    store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    big = "y" * (300 * 1024)
    assert store.append_event(event("t-1", EventType.PARTIAL_OUTPUT, output=big)) is not None
    store.update("t-1", {TaskStatus.EXECUTING}, final_output=big)
    assert store.get("t-1").final_output == big
    assert store.read_events("t-1")[0].data["output"] == big


# --- step outputs: stored once, read back whole -----------------------------------------------------

#: 100,000 three-byte characters: 300,000 bytes, the size of a long report in a CJK language.
CJK_OUTPUT = "退避与抖动" * 20_000


def plan_of(task_id: str, *agents: str) -> ExecutionPlan:
    return ExecutionPlan(
        task_id=task_id,
        steps=[
            ExecutionStep(step_id=f"step_{n:03d}", agent_type=agent, description=f"{agent} step")
            for n, agent in enumerate(agents, 1)
        ],
    )


def complete_step(store, task_id: str, index: int, output: str) -> TaskState:
    """What the pipeline does: the step completed with its output, and its partial_output event."""

    def finish(task: TaskState) -> dict[str, Any]:
        plan = task.execution_plan
        steps = list(plan.steps)
        steps[index] = steps[index].model_copy(
            update={"status": StepStatus.COMPLETED, "output": output, "attempts": steps[index].attempts + 1}
        )
        return {"execution_plan": plan.model_copy(update={"steps": steps})}

    step_id = f"step_{index + 1:03d}"
    return store.update(
        task_id,
        {TaskStatus.EXECUTING},
        mutate=finish,
        events=[
            event(task_id, EventType.PARTIAL_OUTPUT, key=f"{step_id}:partial_output", step_id=step_id, output=output)
        ],
    )


def run_to_completion(store, task_id: str, outputs: list[str]) -> TaskState:
    store.create(make_task(task_id))
    agents = ["retriever", "analyzer", "writer"][: len(outputs)]
    store.update(task_id, {TaskStatus.PENDING}, status=TaskStatus.EXECUTING, execution_plan=plan_of(task_id, *agents))
    for index, output in enumerate(outputs):
        complete_step(store, task_id, index, output)
    return store.update(
        task_id,
        {TaskStatus.EXECUTING},
        status=TaskStatus.COMPLETED,
        final_output=outputs[-1],
        events=[event(task_id, EventType.TASK_COMPLETED, key="task:task_completed", final_output=outputs[-1])],
    )


def test_step_outputs_and_the_final_output_read_back_whole(store):
    # Given a task whose steps completed with outputs, the last a 300,000-byte CJK report
    outputs = ["passages", "analysis", CJK_OUTPUT]
    returned = run_to_completion(store, "t-1", outputs)
    # When it is read back, listed, and its log read
    read = store.get("t-1")
    listed = store.list("alice", limit=10).items[0]
    log = store.read_events("t-1")
    # Then the task has every output and the report as its final output, as the update returned it
    assert [s.output for s in read.execution_plan.steps] == outputs
    assert read.final_output == CJK_OUTPUT
    assert read == returned
    # And a listing shows the final output as a listing's preview does (a store may hold only that much)
    shown = TaskPublic.of(listed).preview()
    assert (shown.final_output, shown.final_output_truncated) == (CJK_OUTPUT[:LIST_PREVIEW_CHARS], True)
    # And the log's events carry the texts they were written with
    partials = [e.data for e in log if e.event_type is EventType.PARTIAL_OUTPUT]
    assert [(d["step_id"], d["output"]) for d in partials] == list(
        zip(["step_001", "step_002", "step_003"], outputs, strict=True)
    )
    assert log[-1].data == {"final_output": CJK_OUTPUT}


def test_a_completion_event_written_again_is_still_written_once(store):
    # Given a completed task
    run_to_completion(store, "t-1", ["passages", CJK_OUTPUT])
    before = store.read_events("t-1")
    # When its completion events are appended again (a repeated Lambda), with their whole texts
    again = [
        store.append_event(
            event("t-1", EventType.PARTIAL_OUTPUT, key="step_002:partial_output", step_id="step_002", output=CJK_OUTPUT)
        ),
        store.append_event(event("t-1", EventType.TASK_COMPLETED, key="task:task_completed", final_output=CJK_OUTPUT)),
    ]
    # Then nothing is added (and nothing is rejected as too large)
    assert again == [None, None]
    assert store.read_events("t-1") == before


# --- DynamoDB only: the table layout and concurrency ---------------------------------------------


class InterferingClient:
    """A boto3 client whose next call of ``method`` first runs ``before`` (another writer)."""

    def __init__(self, client, method: str, before):
        self._client = client
        self._method = method
        self._before = before
        self.calls: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name != self._method:
            return attr

        def call(**kwargs):
            self.calls.append(name)
            if self._before is not None:
                before, self._before = self._before, None
                before()
            return attr(**kwargs)

        return call


def test_the_table_has_the_schema_the_template_declares(dynamodb_store):
    # Given the table built by create_table
    client = dynamodb_store.client
    # When it is described
    table = client.describe_table(TableName=TABLE_NAME)["Table"]
    ttl = client.describe_time_to_live(TableName=TABLE_NAME)["TimeToLiveDescription"]
    # Then keys, index, billing and TTL are the documented ones
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert {name: {(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]} for name, i in indexes.items()} == {
        "gsi1": {("gsi1pk", "HASH"), ("gsi1sk", "RANGE")},
        "gsi2": {("gsi2pk", "HASH"), ("gsi1sk", "RANGE")},
    }
    assert {i["Projection"]["ProjectionType"] for i in indexes.values()} == {"KEYS_ONLY"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_items_are_laid_out_as_documented(dynamodb_store):
    # Given a task with a keyed event, written through the store
    task = make_task("t-1", owner="alice")
    dynamodb_store.create(task)
    dynamodb_store.append_event(event("t-1", EventType.TASK_STARTED, key="task:task_started", a=1))
    # When the raw items are read
    by_sk = raw_items(dynamodb_store, "t-1")
    # Then there is the task item only: it holds the event inline, with the documented attributes
    assert set(by_sk) == {"TASK"}
    head = by_sk["TASK"]
    assert head["gsi1pk"] == {"S": "OWNER#alice"}
    assert head["gsi1sk"] == {"S": "2026-11-24T14:50:24.331495Z#t-1"}
    assert (head["status"], head["event_seq"], head["lf"]) == ({"S": "pending"}, {"N": "1"}, {"N": "1"})
    assert TaskState.model_validate_json(zlib.decompress(head["doc"]["B"])) == task
    [entry] = json.loads(zlib.decompress(head["log"]["B"]))
    assert (entry["c"], entry["t"], entry["d"]) == (1, "task_started", {"a": 1})
    # And the event's key is a digest in the task item's key set, not an item of its own
    assert head["ek"]["BS"] == [hashlib.sha256(b"task:task_started").digest()[:8]]
    # And the task expires with its log, so no task outlives the events a stream needs
    assert abs(int(head["expires_at"]["N"]) - (time.time() + 30 * 86400)) < 60


def test_event_keys_past_the_key_set_are_items_and_stay_idempotent(dynamodb_store):
    # Given a task whose events carry more keys than the task item's key set holds
    dynamodb_store.create(make_task("t-1", owner="alice"))
    keys = [f"step:{n}" for n in range(KEY_SET_MAX + 3)]
    for key in keys:
        assert dynamodb_store.append_event(event("t-1", EventType.STEP_STARTED, key=key)) is not None
    # When every event is written again, on its own and with a state change
    for key in keys:
        assert dynamodb_store.append_event(event("t-1", EventType.STEP_STARTED, key=key)) is None
    dynamodb_store.update(
        "t-1", [TaskStatus.PENDING], events=[event("t-1", EventType.STEP_STARTED, key=k) for k in keys[-5:]]
    )
    # Then no event is written twice
    assert len(dynamodb_store.read_events("t-1")) == len(keys)
    # And the key set stopped growing at its bound: the keys past it are KEY# items
    items = raw_items(dynamodb_store, "t-1")
    assert len(items["TASK"]["ek"]["BS"]) == KEY_SET_MAX
    assert {sk for sk in items if sk.startswith("KEY#")} == {f"KEY#{k}" for k in keys[KEY_SET_MAX:]}


def test_a_task_written_before_the_key_set_keeps_its_key_items(dynamodb_store):
    # Given a task created by an earlier version (no key-set mark) with a keyed event as a KEY# item
    dynamodb_store.create(make_task("t-1", owner="alice"))
    dynamodb_store.client.update_item(
        TableName=TABLE_NAME, Key={"pk": {"S": "TASK#t-1"}, "sk": {"S": "TASK"}}, UpdateExpression="REMOVE kv"
    )
    store = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)  # one that has not seen the task yet
    assert store.append_event(event("t-1", EventType.STEP_STARTED, key="k")) is not None
    # When the same event is written again
    again = store.append_event(event("t-1", EventType.STEP_STARTED, key="k"))
    # Then it is not written twice, and the key is an item, as the earlier version wrote it
    assert again is None
    assert len(dynamodb_store.read_events("t-1")) == 1
    assert "KEY#k" in raw_items(dynamodb_store, "t-1")


def test_a_concurrent_update_is_retried_on_top_of_the_other_write(dynamodb_store):
    # Given a task, and another writer that changes it between our read and our write
    dynamodb_store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    other = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    racing = InterferingClient(
        dynamodb_store.client,
        "update_item",
        lambda: other.update("t-1", {TaskStatus.EXECUTING}, current_step_index=2),
    )
    store = DynamoDBTaskStore(TABLE_NAME, racing)
    # When our update is applied
    updated = store.update("t-1", {TaskStatus.EXECUTING}, final_output="ours")
    # Then it was retried (not lost, not overwriting the other change): both changes are stored
    assert racing.calls == ["update_item", "update_item"]
    assert (updated.current_step_index, updated.final_output) == (2, "ours")
    assert store.get("t-1") == updated


def test_an_update_after_a_read_of_the_same_store_writes_without_reading_again(dynamodb_store):
    # Given a task this store has just read
    dynamodb_store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    store = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    task = store.get("t-1")
    reads: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.GetItem", lambda **_: reads.append("GetItem"))
    # When it is updated twice (as a step's Lambda does: the step started, then completed)
    store.update("t-1", {TaskStatus.EXECUTING}, events=[event("t-1", key="s:1")], current_step_index=1)
    updated = store.update("t-1", {TaskStatus.EXECUTING}, events=[event("t-1", key="s:2")], final_output="ours")
    # Then neither update read the task item again: each wrote from the item it knew
    assert reads == []
    # And what was stored is what a fresh read finds
    assert DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client).get("t-1") == updated
    assert (updated.current_step_index, updated.final_output, task.current_step_index) == (1, "ours", 0)
    assert [e.cursor for e in store.read_events("t-1")] == [1, 2]


def test_a_stale_remembered_task_never_refuses_nor_overwrites_a_write(dynamodb_store):
    # Given a task this store read, then another writer moved on (a new status, an event)
    dynamodb_store.create(make_task("t-1"))
    store = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    store.get("t-1")
    other = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    other.update("t-1", {TaskStatus.PENDING}, events=[event("t-1", key="k")], status=TaskStatus.EXECUTING)
    # When this store updates it, expecting the status the other writer set, with the same keyed event
    updated = store.update(
        "t-1", {TaskStatus.EXECUTING}, events=[event("t-1", key="k"), event("t-1", key="k2")], current_step_index=2
    )
    # Then the write is not refused on the stale item, lands on top of the other one, and adds no duplicate
    assert (updated.status, updated.current_step_index) == (TaskStatus.EXECUTING, 2)
    assert [e.cursor for e in dynamodb_store.read_events("t-1")] == [1, 2]
    # And a status that really moved on is still refused
    other.update("t-1", {TaskStatus.EXECUTING}, status=TaskStatus.FAILED)
    with pytest.raises(InvalidTransition, match="is failed"):
        store.update("t-1", {TaskStatus.EXECUTING}, current_step_index=3)


def test_a_concurrent_status_change_turns_the_retry_into_invalid_transition(dynamodb_store):
    # Given a pending task that another writer fails between our read and our write
    dynamodb_store.create(make_task("t-1"))
    other = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    racing = InterferingClient(
        dynamodb_store.client,
        "update_item",
        lambda: other.update("t-1", {TaskStatus.PENDING}, status=TaskStatus.FAILED, error_message="cancelled"),
    )
    # When we try to start it / Then the conditional write fails as an invalid transition, not a ClientError
    with pytest.raises(InvalidTransition, match="is failed"):
        DynamoDBTaskStore(TABLE_NAME, racing).update("t-1", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    assert dynamodb_store.get("t-1").status is TaskStatus.FAILED


def test_a_task_deleted_during_an_update_is_not_found(dynamodb_store):
    # Given a task removed between our read and our write
    dynamodb_store.create(make_task("t-1"))
    client = dynamodb_store.client
    racing = InterferingClient(
        client,
        "update_item",
        lambda: client.delete_item(TableName=TABLE_NAME, Key={"pk": {"S": "TASK#t-1"}, "sk": {"S": "TASK"}}),
    )
    # When an update with an event runs / Then it reports the task missing and wrote no event
    with pytest.raises(TaskNotFound):
        DynamoDBTaskStore(TABLE_NAME, racing).update(
            "t-1", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[event("t-1", key="k")]
        )
    assert dynamodb_store.read_events("t-1") == []


def test_concurrent_appends_get_distinct_contiguous_cursors(dynamodb_store):
    # Given another writer that appends between our cursor read and our write
    dynamodb_store.create(make_task("t-1"))
    other = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    racing = InterferingClient(
        dynamodb_store.client, "update_item", lambda: other.append_event(event("t-1", who="other"))
    )
    # When we append
    ours = DynamoDBTaskStore(TABLE_NAME, racing).append_event(event("t-1", who="us"))
    # Then we retried after the other write, and the log is 1: other, 2: us
    assert ours.cursor == 2
    assert [(e.cursor, e.data["who"]) for e in dynamodb_store.read_events("t-1")] == [(1, "other"), (2, "us")]


def test_a_key_written_concurrently_makes_our_append_a_replay(dynamodb_store):
    # Given another writer that writes the same keyed event between our read and our write
    dynamodb_store.create(make_task("t-1"))
    other = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    racing = InterferingClient(
        dynamodb_store.client,
        "update_item",
        lambda: other.append_event(event("t-1", EventType.TASK_COMPLETED, key="task:task_completed")),
    )
    # When we write it / Then ours is the replay and the log holds it once
    ours = DynamoDBTaskStore(TABLE_NAME, racing).append_event(
        event("t-1", EventType.TASK_COMPLETED, key="task:task_completed")
    )
    assert ours is None
    assert [e.cursor for e in dynamodb_store.read_events("t-1")] == [1]


def test_appending_to_an_unknown_task_is_not_found_and_creates_nothing(dynamodb_store):
    # Given no task / When an event is appended to it / Then TaskNotFound, and no half task appears
    with pytest.raises(TaskNotFound):
        dynamodb_store.append_event(event("ghost"))
    assert dynamodb_store.get("ghost") is None
    assert dynamodb_store.read_events("ghost") == []


def test_other_dynamodb_errors_are_not_disguised(dynamodb_store):
    # Given a store pointed at a table that does not exist
    store = DynamoDBTaskStore("no-such-table", dynamodb_store.client)
    # When it is used / Then the real error surfaces instead of a domain error
    with pytest.raises(ClientError) as raised:
        store.create(make_task("t-1"))
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_the_client_is_built_on_first_use_not_before(monkeypatch, dynamodb_store):
    # Given boto3.client replaced by a recorder
    built: list[str] = []
    real = dynamodb_store.client

    def fake_client(service, *args, **kwargs):
        built.append(service)
        return real

    monkeypatch.setattr(boto3, "client", fake_client)
    # When a store is constructed without a client
    store = dynamodb_module.DynamoDBTaskStore(TABLE_NAME)
    # Then no client exists until the store is used, and then exactly one
    assert built == []
    assert store.get("missing") is None
    store.get("missing")
    assert built == ["dynamodb"]


def raw_items(store: DynamoDBTaskStore, task_id: str) -> dict[str, dict[str, Any]]:
    items = store.client.query(
        TableName=TABLE_NAME,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"TASK#{task_id}"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


def log_entries(items: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The event entries stored in a task's items (inline on the task item, and flushed segments)."""
    return [
        entry for item in items.values() if "log" in item for entry in json.loads(zlib.decompress(item["log"]["B"]))
    ]


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings as UTF-8, binaries as bytes)."""
    return sum(len(name.encode()) + len(_raw(next(iter(v.values())))) for name, v in item.items())


def _raw(value: str | bytes | list[str] | list[bytes]) -> bytes:
    if isinstance(value, list):  # a set
        return b"".join(_raw(v) for v in value)
    return value if isinstance(value, bytes) else value.encode()


def test_outputs_are_items_of_their_own_and_the_task_item_stays_small(dynamodb_store):
    # Given two tasks whose reports are 10 characters and 100,000 CJK characters (300,000 bytes)
    run_to_completion(dynamodb_store, "t-small", ["passages", "analysis", "short text"])
    run_to_completion(dynamodb_store, "t-large", ["passages", "analysis", CJK_OUTPUT])
    small, large = raw_items(dynamodb_store, "t-small"), raw_items(dynamodb_store, "t-large")
    # Then each output is one OUT# item holding the raw text, under DynamoDB's 400 KB
    assert large["OUT#step_003#1"]["text"]["S"] == CJK_OUTPUT
    assert {sk for sk in large if sk.startswith("OUT#")} == {"OUT#step_001#1", "OUT#step_002#1", "OUT#step_003#1"}
    assert all(item_bytes(item) < 400 * 1024 for item in large.values())
    # And the task item holds no output, nor the report: it refers to the writer's output item
    doc = json.loads(zlib.decompress(large["TASK"]["doc"]["B"]))
    assert doc.get("final_output") is None
    assert all(step.get("output") is None for step in doc["execution_plan"]["steps"])
    assert large["TASK"]["final_out"] == {"S": "OUT#step_003#1"}
    # And its size does not grow with the outputs
    assert abs(item_bytes(large["TASK"]) - item_bytes(small["TASK"])) < 64
    assert item_bytes(large["TASK"]) < 4096
    # And the events refer to the output item instead of a second copy
    entries = log_entries(large)
    partial = next(e for e in entries if e["t"] == "partial_output" and e.get("r") == ["output", "OUT#step_003#1"])
    assert "output" not in partial["d"]
    completed = next(e for e in entries if e["t"] == "task_completed")
    assert completed["r"] == ["final_output", "OUT#step_003#1"]


def test_a_retried_step_keeps_the_output_of_each_completion(dynamodb_store):
    # Given a step that completed (attempt 1), was reset by a retry and completed again (attempt 2)
    run_to_completion(dynamodb_store, "t-1", ["first report"])
    dynamodb_store.update(
        "t-1",
        {TaskStatus.COMPLETED},
        status=TaskStatus.EXECUTING,
        final_output=None,
        mutate=lambda task: {
            "execution_plan": task.execution_plan.model_copy(
                update={
                    "steps": [
                        task.execution_plan.steps[0].model_copy(update={"status": StepStatus.PENDING, "output": None})
                    ]
                }
            )
        },
    )
    complete_step(dynamodb_store, "t-1", 0, "second report")
    # Then the task reads the new output, and the log still shows what each completion wrote
    assert dynamodb_store.get("t-1").execution_plan.steps[0].output == "second report"
    assert set(raw_items(dynamodb_store, "t-1")) >= {"OUT#step_001#1", "OUT#step_001#2"}
    assert [
        e.data.get("output") for e in dynamodb_store.read_events("t-1") if e.event_type is EventType.PARTIAL_OUTPUT
    ] == ["first report"]


def test_a_tasks_outputs_are_read_once_per_store(monkeypatch, dynamodb_store):
    # Given a completed task read once
    run_to_completion(dynamodb_store, "t-1", ["passages", CJK_OUTPUT])
    fresh = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    fresh.get("t-1")
    calls: list[str] = []
    original = fresh.client.get_item
    monkeypatch.setattr(fresh.client, "get_item", lambda **kw: calls.append(kw["Key"]["sk"]["S"]) or original(**kw))
    # When it is read again
    fresh.get("t-1")
    # Then no output was read from the table again (they never change once written)
    assert calls == ["TASK"]


def test_a_task_made_again_with_the_same_id_shows_its_own_outputs(dynamodb_store):
    # Given a task whose items are gone (expired), read through a store that saw its outputs
    run_to_completion(dynamodb_store, "t-1", ["passages", "the first report"])
    assert dynamodb_store.get("t-1").final_output == "the first report"
    for sk in raw_items(dynamodb_store, "t-1"):
        dynamodb_store.client.delete_item(TableName=TABLE_NAME, Key={"pk": {"S": "TASK#t-1"}, "sk": {"S": sk}})
    # When a new task gets the same id (the same idempotency key, later) and completes
    dynamodb_store.create(make_task("t-1", seconds=60))
    dynamodb_store.update(
        "t-1", {TaskStatus.PENDING}, status=TaskStatus.EXECUTING, execution_plan=plan_of("t-1", "a", "b")
    )
    complete_step(dynamodb_store, "t-1", 0, "passages")
    complete_step(dynamodb_store, "t-1", 1, "the second report")
    # Then the store shows the new task's outputs, not the ones it saw before under the same keys
    fresh_read = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client).get("t-1")
    assert dynamodb_store.get("t-1") == fresh_read
    assert [s.output for s in fresh_read.execution_plan.steps] == ["passages", "the second report"]


def test_a_retried_task_keeps_its_outputs_as_long_as_itself(dynamodb_store):
    # Given a completed task whose output items were written long ago (they would expire soon)
    run_to_completion(dynamodb_store, "t-1", ["passages", "analysis", "report"])
    soon = int(time.time()) + 3600
    for sk in ("OUT#step_001#1", "OUT#step_002#1", "OUT#step_003#1"):
        dynamodb_store.client.update_item(
            TableName=TABLE_NAME,
            Key={"pk": {"S": "TASK#t-1"}, "sk": {"S": sk}},
            UpdateExpression="SET expires_at = :e",
            ExpressionAttributeValues={":e": {"N": str(soon)}},
        )

    # When it is retried from its last step (the first two steps and their outputs are kept)
    def reset_last(task: TaskState) -> dict[str, Any]:
        steps = list(task.execution_plan.steps)
        steps[2] = steps[2].model_copy(update={"status": StepStatus.PENDING, "output": None})
        return {"execution_plan": task.execution_plan.model_copy(update={"steps": steps})}

    dynamodb_store.update(
        "t-1", {TaskStatus.COMPLETED}, status=TaskStatus.EXECUTING, final_output=None, mutate=reset_last
    )
    # Then the kept outputs expire with the task again, the one to be replaced keeps its expiry
    items = raw_items(dynamodb_store, "t-1")
    month = int(time.time()) + 30 * 86400
    assert [abs(int(items[sk]["expires_at"]["N"]) - month) < 60 for sk in ("OUT#step_001#1", "OUT#step_002#1")] == [
        True,
        True,
    ]
    assert int(items["OUT#step_003#1"]["expires_at"]["N"]) == soon
    assert items["OUT#step_001#1"]["text"] == {"S": "passages"}
    assert dynamodb_store.get("t-1").execution_plan.steps[1].output == "analysis"
