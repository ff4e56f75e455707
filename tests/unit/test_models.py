import pytest
from pydantic import ValidationError

from agentic.models import ALLOWED_TRANSITIONS, EventType, TaskCreate, TaskStatus, sources_of

pytestmark = pytest.mark.unit


def test_lifecycle_allows_only_forward_moves():
    # Given the transition table
    # Then the happy path is pending -> analyzing -> executing -> completed, the first two moves in
    # one write (pending -> executing: the start and the plan commit together)
    assert TaskStatus.ANALYZING in ALLOWED_TRANSITIONS[TaskStatus.PENDING]
    assert TaskStatus.EXECUTING in ALLOWED_TRANSITIONS[TaskStatus.PENDING]
    assert TaskStatus.EXECUTING in ALLOWED_TRANSITIONS[TaskStatus.ANALYZING]
    assert TaskStatus.COMPLETED in ALLOWED_TRANSITIONS[TaskStatus.EXECUTING]
    # And nothing leaves a completed task; a failed or cancelled one only through a retry
    assert not ALLOWED_TRANSITIONS[TaskStatus.COMPLETED]
    for ended in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        assert ALLOWED_TRANSITIONS[ended] == {TaskStatus.PENDING, TaskStatus.EXECUTING}
    assert TaskStatus.COMPLETED not in ALLOWED_TRANSITIONS[TaskStatus.PENDING]
    assert TaskStatus.PENDING not in ALLOWED_TRANSITIONS[TaskStatus.EXECUTING]


def test_failed_and_cancelled_are_reachable_from_every_live_state():
    live = {TaskStatus.PENDING, TaskStatus.ANALYZING, TaskStatus.EXECUTING, TaskStatus.AWAITING_APPROVAL}
    assert sources_of(TaskStatus.FAILED) == live
    assert sources_of(TaskStatus.CANCELLED) == live
    assert sources_of(TaskStatus.AWAITING_APPROVAL) == {TaskStatus.EXECUTING}


def test_only_completion_failure_and_cancellation_end_a_stream():
    assert {e for e in EventType if e.is_terminal} == {
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.TASK_CANCELLED,
    }


@pytest.mark.parametrize("bad", ["", "   \n\t", "x" * 4001])
def test_task_create_rejects_blank_and_oversized_descriptions(bad):
    with pytest.raises(ValidationError):
        TaskCreate(description=bad)


def test_task_create_strips_and_forbids_unknown_fields():
    assert TaskCreate(description="  hello  ").description == "hello"
    with pytest.raises(ValidationError):
        TaskCreate.model_validate({"description": "x", "priority": 1})
