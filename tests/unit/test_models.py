import pytest
from pydantic import ValidationError

from agentic.models import ALLOWED_TRANSITIONS, EventType, TaskCreate, TaskStatus, sources_of

pytestmark = pytest.mark.unit


def test_lifecycle_allows_only_forward_moves():
    # Given the transition table
    # Then the happy path is pending -> analyzing -> executing -> completed
    assert TaskStatus.ANALYZING in ALLOWED_TRANSITIONS[TaskStatus.PENDING]
    assert TaskStatus.EXECUTING in ALLOWED_TRANSITIONS[TaskStatus.ANALYZING]
    assert TaskStatus.COMPLETED in ALLOWED_TRANSITIONS[TaskStatus.EXECUTING]
    # And nothing leaves a terminal state, nothing skips or goes back
    assert not ALLOWED_TRANSITIONS[TaskStatus.COMPLETED]
    assert not ALLOWED_TRANSITIONS[TaskStatus.FAILED]
    assert TaskStatus.COMPLETED not in ALLOWED_TRANSITIONS[TaskStatus.PENDING]
    assert TaskStatus.PENDING not in ALLOWED_TRANSITIONS[TaskStatus.EXECUTING]


def test_failed_is_reachable_from_every_live_state():
    assert sources_of(TaskStatus.FAILED) == {TaskStatus.PENDING, TaskStatus.ANALYZING, TaskStatus.EXECUTING}


def test_only_completion_and_failure_end_a_stream():
    assert {e for e in EventType if e.is_terminal} == {EventType.TASK_COMPLETED, EventType.TASK_FAILED}


@pytest.mark.parametrize("bad", ["", "   \n\t", "x" * 4001])
def test_task_create_rejects_blank_and_oversized_descriptions(bad):
    with pytest.raises(ValidationError):
        TaskCreate(description=bad)


def test_task_create_strips_and_forbids_unknown_fields():
    assert TaskCreate(description="  hello  ").description == "hello"
    with pytest.raises(ValidationError):
        TaskCreate.model_validate({"description": "x", "priority": 1})
