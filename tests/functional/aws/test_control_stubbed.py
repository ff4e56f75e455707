"""The task controls' Step Functions requests, checked with botocore's Stubber against the real
service model, through the real create function (its app, TaskService, TaskControl) on moto's DynamoDB.

moto runs these calls end to end elsewhere (test_control_*.py), but it ignores some of what they
send and cannot produce some of what Step Functions answers. Here each request is checked exactly
(operation, every parameter, validated against botocore's model of the Step Functions API) and the
answers moto never gives are returned to the handler:

- StopExecution's ``error`` and ``cause`` (moto drops them), on a retried task's current execution
  ``<id>-retry-<n>``; ``ExecutionDoesNotExist`` (nothing to stop) is a no-op.
- SendTaskSuccess / SendTaskFailure with the stored token, SendTaskFailure's ``cause`` (moto drops
  it); ``TaskTimedOut`` and ``TaskDoesNotExist`` (the wait is over) are no-ops.
- StartExecution of a retry: name, input; ``ExecutionAlreadyExists`` (a repeated retry) is a no-op.
- Any other error (e.g. ``AccessDeniedException``: a role without the grant) is not swallowed: the
  API answers 500 and the store keeps the control's change (the README says what to do then).

Not exercised here or anywhere without AWS: IAM evaluation of these calls, the real token format,
Step Functions' own timing of StopExecution versus an in-flight Lambda.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from agentic.aws import http_handlers
from agentic.aws.wiring import AwsSystem, build_aws_system
from agentic.models import TaskStatus
from agentic.settings import get_settings
from tests.functional.aws.control_support import answer, control, event_types, task
from tests.functional.aws.support import OWNER, REGION, cold_start

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline"
EXECUTIONS = "arn:aws:states:us-east-1:123456789012:execution:pipeline"
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAcFWB1ltkaVXyMmhNCwjCfrKTNE0fpaz2o3AWMO4L5fAEXAMPLE"


@pytest.fixture
def stubbed(moto_table: Any, aws_env: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, AwsSystem]]:
    """The create function on a system whose Step Functions client is stubbed (DynamoDB: moto)."""
    aws_env.setenv("STATE_MACHINE_ARN", STATE_MACHINE_ARN)
    get_settings.cache_clear()
    sfn = boto3.client("stepfunctions", region_name=REGION)
    stubber = Stubber(sfn)
    system = build_aws_system(get_settings(), sfn_client=sfn)
    aws_env.setattr(http_handlers, "get_system", lambda: system)
    cold_start("CreateTaskFunction")  # its app is built on this system
    with stubber:
        yield stubber, system
        stubber.assert_no_pending_responses()  # every expected request was made
    cold_start("CreateTaskFunction")


def awaiting_approval(system: AwsSystem, *, retries: int = 0) -> str:
    """A task past its analyzer, waiting for approval with TOKEN (as the finalize function leaves it)."""
    import asyncio

    created, _ = asyncio.run(system.service.create(OWNER, "Explain stubs", approval=True))
    system.ops.plan(created.task_id)
    for step_id in ("step_001", "step_002"):
        spec = system.ops.definition.step(step_id)
        assert asyncio.run(system.ops.run_step(created.task_id, step_id, 0, spec.retry_delay)).ok
    if retries:
        system.store.update(created.task_id, {TaskStatus.EXECUTING}, retries=retries)
    system.ops.request_approval(created.task_id, TOKEN)
    return created.task_id


def test_approve_sends_task_success_with_the_stored_token(stubbed):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stubber.add_response("send_task_success", {}, {"taskToken": TOKEN, "output": json.dumps({"approved": True})})

    response = control("approve", task_id, {"comment": "fine"})

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "executing"
    # a second approval answers the same and sends nothing (the stub would fail on a second call)
    assert control("approve", task_id)["statusCode"] == 200


@pytest.mark.parametrize("gone", ["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"])
def test_an_approval_whose_wait_is_over_is_recorded_and_sends_nothing_more(stubbed, gone):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stubber.add_client_error("send_task_success", service_error_code=gone, http_status_code=400)

    response = control("approve", task_id)

    # the wait is over (timed out: its Catch fails the task; stopped: the task was cancelled)
    assert response["statusCode"] == 200, response["body"]
    assert event_types(task_id)[-1] == "approval_granted"


def test_reject_sends_task_failure_with_the_reason_as_its_cause(stubbed):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stubber.add_response(
        "send_task_failure",
        {},
        {"taskToken": TOKEN, "error": "ApprovalRejected", "cause": "the sources are out of date"},
    )

    response = control("reject", task_id, {"reason": "the sources are out of date"})

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "failed"
    assert task(task_id).status is TaskStatus.FAILED


def test_cancel_stops_the_current_execution_of_a_retried_task(stubbed):
    stubber, system = stubbed
    task_id = awaiting_approval(system, retries=2)  # its run is the execution <id>-retry-2
    stubber.add_response(
        "stop_execution",
        {"stopDate": "2025-01-01T12:00:00Z"},
        {
            "executionArn": f"{EXECUTIONS}:{task_id}-retry-2",
            "error": "TaskCancelled",
            "cause": "cancelled by a user",
        },
    )

    response = control("cancel", task_id, {"reason": "no longer needed"})

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"
    assert task(task_id).approval_token is None
    # cancelled already: a second cancel answers the same and stops nothing again
    assert control("cancel", task_id)["statusCode"] == 200


def test_cancel_with_no_execution_to_stop_is_a_no_op(stubbed):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stubber.add_client_error("stop_execution", service_error_code="ExecutionDoesNotExist", http_status_code=400)

    response = control("cancel", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"


def failed_task(system: AwsSystem) -> str:
    task_id = awaiting_approval(system)
    system.service.control.reject(task(task_id), "no", OWNER)  # the store side only: nothing to answer
    return task_id


def test_retry_starts_an_execution_named_by_the_retry_entering_at_the_failed_step(stubbed):
    stubber, system = stubbed
    task_id = failed_task(system)
    expected_input = {"task_id": task_id, "start_at": "step_003", "planned": {"approval": True}}
    stubber.add_response(
        "start_execution",
        {"executionArn": f"{EXECUTIONS}:{task_id}-retry-1", "startDate": "2025-01-01T12:00:00Z"},
        {
            "stateMachineArn": STATE_MACHINE_ARN,
            "name": f"{task_id}-retry-1",
            "input": json.dumps(expected_input, separators=(",", ":")),
        },
    )

    response = control("retry", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert (answer(response)["status"], answer(response)["retries"]) == ("executing", 1)


def test_a_retry_whose_execution_exists_already_starts_nothing(stubbed):
    stubber, system = stubbed
    task_id = failed_task(system)
    stubber.add_client_error("start_execution", service_error_code="ExecutionAlreadyExists", http_status_code=400)

    response = control("retry", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["retries"] == 1


@pytest.mark.parametrize(
    ("action", "operation"),
    [("cancel", "stop_execution"), ("approve", "send_task_success"), ("reject", "send_task_failure")],
)
def test_any_other_step_functions_error_is_not_swallowed(stubbed, action, operation):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stubber.add_client_error(operation, service_error_code="AccessDeniedException", http_status_code=400)

    response = control(action, task_id)

    # a 500: the caller learns that the execution was not told, though the store recorded the change
    assert response["statusCode"] == 500, response["body"]
    assert answer(response)["error"] == "internal_error"
    assert task(task_id).status is not TaskStatus.AWAITING_APPROVAL
