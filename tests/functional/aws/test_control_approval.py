"""Approval before the final step on the AWS path, in moto's Step Functions interpreter.

The real ``statemachine/pipeline.asl.json`` runs: ``NeedsApproval`` sends a task created with
``"approval": true`` to ``AwaitApproval``, a ``lambda:invoke.waitForTaskToken`` state whose Payload
gives the finalize function ``$$.Task.Token``. The real finalize handler stores the token on the task
(``awaiting_approval``, ``approval_requested``); POST /approve and /reject through the real create
function answer the wait with ``SendTaskSuccess`` / ``SendTaskFailure``, and moto's interpreter goes
on to ``Write`` or to the Catch (``MarkFailed``) exactly as the file says.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import boto3
import pytest

from agentic.adapters.sfn_executor import StepFunctionsExecutor
from agentic.models import TaskStatus
from tests.functional.aws.control_support import (
    answer,
    control,
    create,
    describe,
    entered_states,
    event_types,
    events_of,
    history,
    task,
    wait_for_status,
)
from tests.functional.aws.support import ASL, OTHER_OWNER, OWNER, REGION, SUBSTITUTIONS, Pipeline, http_event, invoke
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

#: The log of a task approved before its final step: the seed's sequence with the wait before the writer.
APPROVED_SEQUENCE = [*SEED_SEQUENCE[:8], "approval_requested", "approval_granted", *SEED_SEQUENCE[8:]]


def test_a_task_asking_for_approval_waits_for_a_token_then_completes_once_approved(pipeline: Pipeline):
    # Given a task created with approval: true and executed
    task_id = create(approval=True)

    # When the execution reaches the wait
    waiting = wait_for_status(task_id, TaskStatus.AWAITING_APPROVAL)

    # Then the task holds the wait's token, the log asks a person, and the execution waits
    assert describe(pipeline, task_id)["status"] == "RUNNING"
    scheduled = [e for e in history(pipeline, task_id) if e["type"] == "TaskScheduled"]
    assert len(scheduled) == 1
    details = scheduled[0]["taskScheduledEventDetails"]
    assert (details["resourceType"], details["resource"]) == ("lambda", "invoke.waitForTaskToken")
    assert json.loads(details["parameters"])["Payload"]["token"] == waiting.approval_token
    assert waiting.approval_token
    assert event_types(task_id) == APPROVED_SEQUENCE[:9]
    [requested] = events_of(task_id, "approval_requested")
    assert requested["step_id"] == "step_003"
    assert requested["summary"]  # the analysis a person decides on
    assert requested["sources"]
    assert requested["timeout_seconds"] == 86400  # AwaitApproval's TimeoutSeconds
    assert requested["approve"] == f"/tasks/{task_id}/approve"
    # and the status route shows it (the read-only function)
    shown = invoke("QueryTasksFunction", http_event("query_tasks_status.json", task_id=task_id))
    assert answer(shown)["status"] == "awaiting_approval"
    assert "approval_token" not in answer(shown)  # the token is never shown to callers

    # When a person approves through the API
    response = control("approve", task_id, {"comment": "go ahead"})

    # Then SendTaskSuccess resumes the execution, which writes the report and completes the task
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "executing"
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    assert entered_states(pipeline, task_id) == [
        "Route",
        "Plan",
        "Retrieve",
        "Analyze",
        "NeedsApproval",
        "AwaitApproval",
        "Write",
        "Complete",
    ]
    succeeded = [e for e in history(pipeline, task_id) if e["type"] == "TaskSucceeded"]
    assert json.loads(succeeded[0]["taskSucceededEventDetails"]["output"]) == {"approved": True}
    done = task(task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.final_output is not None
    assert done.final_output.startswith("# Report")
    assert done.approval_granted
    assert event_types(task_id) == APPROVED_SEQUENCE
    [granted] = events_of(task_id, "approval_granted")
    assert (granted["comment"], granted["by"], granted["step_id"]) == ("go ahead", OWNER, "step_003")

    # And approving again answers the same; rejecting an approved task is a 409
    again = control("approve", task_id)
    assert again["statusCode"] == 200
    assert answer(again)["status"] == "completed"
    rejected = control("reject", task_id)
    assert rejected["statusCode"] == 409
    assert answer(rejected)["error"] == "invalid_transition"
    assert event_types(task_id) == APPROVED_SEQUENCE


def test_a_rejected_task_fails_through_the_catch_without_duplicate_events(pipeline: Pipeline):
    # Given a task waiting for approval
    task_id = create(approval=True)
    wait_for_status(task_id, TaskStatus.AWAITING_APPROVAL)

    # When a person rejects it
    response = control("reject", task_id, {"reason": "the sources are out of date"})

    # Then the task is failed at once with ApprovalRejected
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "failed"
    assert answer(response)["error_message"].startswith("ApprovalRejected: rejected by")
    # and SendTaskFailure fails the wait: its Catch runs MarkFailed, then the Fail state
    execution = pipeline.wait(task_id)
    assert (execution["status"], execution["error"]) == ("FAILED", "TaskFailed")
    failed = [e for e in history(pipeline, task_id) if e["type"] == "TaskFailed"]
    assert [e["taskFailedEventDetails"]["error"] for e in failed] == ["ApprovalRejected"]
    assert entered_states(pipeline, task_id)[-3:] == ["AwaitApproval", "MarkFailed", "Failed"]
    # MarkFailed found the task failed already and wrote nothing twice (same event keys)
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

    # Then its execution went from NeedsApproval straight to Write
    states = entered_states(pipeline, task_id)
    assert "AwaitApproval" not in states
    assert states[states.index("NeedsApproval") + 1] == "Write"
    assert event_types(task_id) == SEED_SEQUENCE

    # And approve / reject answer 409; another owner's task is a 404
    for action in ("approve", "reject"):
        response = control(action, task_id)
        assert response["statusCode"] == 409, action
        assert answer(response)["error"] == "invalid_transition"
    other = control("approve", task_id, owner=OTHER_OWNER)
    assert other["statusCode"] == 404


def short_wait_pipeline(pipeline: Pipeline, timeout_seconds: int, folder: Path) -> Pipeline:
    """A second state machine in the same moto: the real file with AwaitApproval's TimeoutSeconds
    changed, deployed as one file is: the state machine runs it and the functions read it."""
    definition = json.loads(ASL.read_text(encoding="utf-8"))
    assert definition["States"]["AwaitApproval"]["TimeoutSeconds"] == 86400
    definition["States"]["AwaitApproval"]["TimeoutSeconds"] = timeout_seconds
    changed = folder / "pipeline.asl.json"
    changed.write_text(json.dumps(definition), encoding="utf-8")
    pipeline.configure(PIPELINE_DEFINITION=str(changed))
    lambda_client = boto3.client("lambda", region_name=REGION)
    text = re.sub(
        r"\$\{(\w+)\}",
        lambda m: lambda_client.get_function(FunctionName=SUBSTITUTIONS[m.group(1)])["Configuration"]["FunctionArn"],
        json.dumps(definition),
    )
    role = pipeline.sfn.describe_state_machine(stateMachineArn=pipeline.state_machine_arn)["roleArn"]
    arn = pipeline.sfn.create_state_machine(name="pipeline-short-wait", definition=text, roleArn=role)[
        "stateMachineArn"
    ]
    return dataclasses.replace(pipeline, state_machine_arn=arn)


def test_an_approval_nobody_gives_times_out_and_fails_the_task(pipeline: Pipeline, tmp_path: Path):
    # Given the pipeline with a 1 s approval wait (the file's TimeoutSeconds, substituted), running
    # a task created with approval (started as the executor starts it: named by the id, the id as input)
    short = short_wait_pipeline(pipeline, 1, tmp_path)
    task_id = create(approval=True, execute=False)
    executor = StepFunctionsExecutor(short.state_machine_arn, short.sfn)
    executor.start_sync(task_id)
    wait_for_status(task_id, TaskStatus.AWAITING_APPROVAL)

    # When nobody answers within it
    execution = short.wait(task_id)

    # Then the wait times out (States.Timeout), the Catch marks the task failed with a clear error
    assert (execution["status"], execution["error"]) == ("FAILED", "TaskFailed")
    timed_out = [e for e in short.history(task_id) if e["type"] == "TaskTimedOut"]
    assert [e["taskTimedOutEventDetails"]["error"] for e in timed_out] == ["States.Timeout"]
    final = task(task_id)
    assert final.status is TaskStatus.FAILED
    assert final.error_message == "States.Timeout: nobody approved the task within 1 s"
    assert event_types(task_id)[-3:] == ["approval_requested", "error", "task_failed"]
    assert events_of(task_id, "approval_requested")[0]["timeout_seconds"] == 1
    assert events_of(task_id, "error")[0]["error"] == "States.Timeout"
    # and an approval after the fact is a 409
    assert control("approve", task_id)["statusCode"] == 409
