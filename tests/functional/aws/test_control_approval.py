"""Approval before the final step on the AWS path, in moto's Step Functions interpreter (Standard
and Express).

The real ``statemachine/pipeline.asl.json`` runs: the ``Write`` state's Lambda finds a task created
with ``"approval": true`` not yet approved, records it ``awaiting_approval`` (``approval_requested``),
creates a one-time EventBridge Scheduler schedule at the wait's deadline and ends the execution
there: no execution waits for a person (Express cannot wait for a task token). POST /approve through
the real create function starts the rest as a new execution ``<id>-approved`` that the ``Route``
sends to ``Write``; /reject fails the task; both delete the schedule. The schedule's firing is its
target input delivered to the real finalize function.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from agentic.models import TaskStatus
from tests.functional.aws.control_support import (
    answer,
    control,
    create,
    entered_states,
    event_types,
    events_of,
    execution_names,
    history,
    task,
    wait_for_status,
    wait_until,
)
from tests.functional.aws.support import ASL, OTHER_OWNER, OWNER, REGION, Pipeline, http_event, invoke
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

#: The log of a task approved before its final step: the seed's sequence with the wait before the writer.
APPROVED_SEQUENCE = [*SEED_SEQUENCE[:8], "approval_requested", "approval_granted", *SEED_SEQUENCE[8:]]
#: The states of a run that plans and goes through every step (or stops at the gate before Write).
FULL_RUN = ["Route", "Plan", "Retrieve", "Analyze", "Write"]


def scheduler() -> Any:
    return boto3.client("scheduler", region_name=REGION)


def schedule(task_id: str, retries: int = 0) -> dict[str, Any] | None:
    """The approval timeout's schedule of the task's wait, or None."""
    try:
        found: dict[str, Any] = scheduler().get_schedule(Name=f"approval-{task_id}-{retries}", GroupName="default")
    except scheduler().exceptions.ResourceNotFoundException:
        return None
    return found


def at_gate(pipeline: Pipeline, task_id: str) -> Any:
    """The task once its run has ended at the gate (awaiting approval, its timer scheduled)."""
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    waiting = task(task_id)
    assert waiting.status is TaskStatus.AWAITING_APPROVAL
    return waiting


def fire(found: dict[str, Any]) -> dict[str, Any]:
    """What EventBridge Scheduler does at the schedule's time: invoke its target with its input."""
    assert found["Target"]["Arn"].endswith(":function:FinalizeFunction")
    result: dict[str, Any] = invoke("FinalizeFunction", json.loads(found["Target"]["Input"]))
    return result


def test_a_task_asking_for_approval_ends_its_run_at_the_gate_then_completes_once_approved(pipeline: Pipeline):
    # Given a task created with approval: true and executed
    task_id = create(approval=True)

    # When the execution reaches the gate
    waiting = wait_for_status(task_id, TaskStatus.AWAITING_APPROVAL)

    # Then the execution ended there: nothing waits inside Step Functions
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    assert entered_states(pipeline, task_id) == FULL_RUN
    assert event_types(task_id) == APPROVED_SEQUENCE[:9]
    [requested] = events_of(task_id, "approval_requested")
    assert requested["step_id"] == "step_003"
    assert requested["summary"]  # the analysis a person decides on
    assert requested["sources"]
    assert requested["timeout_seconds"] == 86400  # the gate's approval_timeout_seconds
    assert requested["approve"] == f"/tasks/{task_id}/approve"
    # and a one-time schedule fails it at the deadline unless someone decides first
    timer = schedule(task_id)
    assert timer is not None
    assert waiting.approval_deadline is not None
    assert timer["ScheduleExpression"] == "at({})".format(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(waiting.approval_deadline))
    )
    assert timer["ActionAfterCompletion"] == "DELETE"
    assert json.loads(timer["Target"]["Input"]) == {"action": "approval_timeout", "task_id": task_id, "retries": 0}
    # and the status route shows it (the read-only function)
    shown = invoke("QueryTasksFunction", http_event("query_tasks_status.json", task_id=task_id))
    assert answer(shown)["status"] == "awaiting_approval"

    # When a person approves through the API
    response = control("approve", task_id, {"comment": "go ahead"})

    # Then the rest runs as a new execution entering at the gated step, and the task completes
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "executing"
    assert pipeline.wait(f"{task_id}-approved")["status"] == "SUCCEEDED"
    assert entered_states(pipeline, f"{task_id}-approved") == ["Route", "Write"]
    done = task(task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.final_output is not None
    assert done.final_output.startswith("# Report")
    assert done.approval_granted
    assert event_types(task_id) == APPROVED_SEQUENCE
    [granted] = events_of(task_id, "approval_granted")
    assert (granted["comment"], granted["by"], granted["step_id"]) == ("go ahead", OWNER, "step_003")
    assert schedule(task_id) is None  # the timer is gone

    # And approving again answers the same and starts nothing; rejecting an approved task is a 409
    again = control("approve", task_id)
    assert again["statusCode"] == 200
    assert answer(again)["status"] == "completed"
    rejected = control("reject", task_id)
    assert rejected["statusCode"] == 409
    assert answer(rejected)["error"] == "invalid_transition"
    assert event_types(task_id) == APPROVED_SEQUENCE
    assert execution_names(pipeline) == sorted([task_id, f"{task_id}-approved"])


def test_a_rejected_task_fails_through_the_catch_without_duplicate_events(pipeline: Pipeline):
    # Given a task waiting for approval
    task_id = create(approval=True)
    at_gate(pipeline, task_id)

    # When a person rejects it
    response = control("reject", task_id, {"reason": "the sources are out of date"})

    # Then the task is failed at once with ApprovalRejected, its timer deleted, and nothing runs
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "failed"
    assert answer(response)["error_message"].startswith("ApprovalRejected: rejected by")
    assert schedule(task_id) is None
    assert execution_names(pipeline) == [task_id]
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"  # it had ended at the gate
    types = event_types(task_id)
    assert types == [*SEED_SEQUENCE[:8], "approval_requested", "approval_rejected", "error", "task_failed"]
    assert "step_started" not in types[8:]  # the writer never ran
    [rejection] = events_of(task_id, "approval_rejected")
    assert (rejection["reason"], rejection["step_id"]) == ("the sources are out of date", "step_003")
    [error] = events_of(task_id, "error")
    assert error["error"] == "ApprovalRejected"
    final = task(task_id)
    assert final.status is TaskStatus.FAILED
    assert final.error_message == answer(response)["error_message"]

    # And rejecting again answers the same; approving a rejected task is a 409
    again = control("reject", task_id)
    assert again["statusCode"] == 200
    assert answer(again)["error_message"] == final.error_message
    assert control("approve", task_id)["statusCode"] == 409
    assert len(event_types(task_id)) == len(types)


def test_a_task_without_approval_skips_the_wait_and_cannot_be_approved(pipeline: Pipeline):
    # Given a task created without approval, run to its end
    task_id = create(approval=False)
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"

    # Then its execution went through the five states: on Standard, 5 billed state transitions
    assert entered_states(pipeline, task_id) == FULL_RUN
    if not pipeline.express:
        assert sum(1 for e in history(pipeline, task_id) if e["type"].endswith("StateEntered")) == 5
    assert event_types(task_id) == SEED_SEQUENCE
    assert schedule(task_id) is None

    # And approve / reject answer 409; another owner's task is a 404
    for action in ("approve", "reject"):
        response = control(action, task_id)
        assert response["statusCode"] == 409, action
        assert answer(response)["error"] == "invalid_transition"
    other = control("approve", task_id, owner=OTHER_OWNER)
    assert other["statusCode"] == 404


def short_gate(pipeline: Pipeline, timeout_seconds: int, folder: Path) -> None:
    """The functions read a copy of the real file whose gate has a ``timeout_seconds`` limit."""
    definition = json.loads(ASL.read_text(encoding="utf-8"))
    assert definition["States"]["Write"]["Parameters"]["approval_timeout_seconds"] == 86400
    definition["States"]["Write"]["Parameters"]["approval_timeout_seconds"] = timeout_seconds
    changed = folder / "pipeline.asl.json"
    changed.write_text(json.dumps(definition), encoding="utf-8")
    pipeline.configure(PIPELINE_DEFINITION=str(changed))


def test_an_approval_nobody_gives_times_out_and_fails_the_task(pipeline: Pipeline, tmp_path: Path):
    # Given a task waiting at a gate of 1 s
    short_gate(pipeline, 1, tmp_path)
    task_id = create(approval=True)
    waiting = at_gate(pipeline, task_id)
    timer = schedule(task_id)
    assert timer is not None

    # When its schedule fires after the deadline (EventBridge Scheduler invokes finalize)
    assert waiting.approval_deadline is not None
    deadline = waiting.approval_deadline
    wait_until(lambda: time.time() >= deadline, "past the deadline", timeout=5)
    assert fire(timer)["status"] == "failed"

    # Then the task failed with States.Timeout and a clear error
    final = task(task_id)
    assert final.status is TaskStatus.FAILED
    assert final.error_message == "States.Timeout: nobody approved the task within 1 s"
    assert event_types(task_id)[-3:] == ["approval_requested", "error", "task_failed"]
    assert events_of(task_id, "approval_requested")[0]["timeout_seconds"] == 1
    assert events_of(task_id, "error")[0]["error"] == "States.Timeout"
    # and an approval after the fact is a 409; firing again changes nothing
    assert control("approve", task_id)["statusCode"] == 409
    count = len(event_types(task_id))
    assert fire(timer)["status"] == "failed"
    assert len(event_types(task_id)) == count


def test_a_schedule_that_fires_for_a_wait_that_is_over_changes_nothing(pipeline: Pipeline):
    # Given a task waiting for approval, and its schedule as it stands
    task_id = create(approval=True)
    at_gate(pipeline, task_id)
    timer = schedule(task_id)
    assert timer is not None

    # When it fires before the deadline (a clock skew), nothing changes
    assert fire(timer)["status"] == "awaiting_approval"

    # And when it fires after an approval (its delete failed), the task runs on to its end
    assert control("approve", task_id)["statusCode"] == 200
    fire(timer)
    assert pipeline.wait(f"{task_id}-approved")["status"] == "SUCCEEDED"
    assert task(task_id).status is TaskStatus.COMPLETED
    assert event_types(task_id) == APPROVED_SEQUENCE


def test_cancel_while_waiting_deletes_the_timer(pipeline: Pipeline):
    task_id = create(approval=True)
    at_gate(pipeline, task_id)
    assert schedule(task_id) is not None

    response = control("cancel", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"
    assert schedule(task_id) is None
