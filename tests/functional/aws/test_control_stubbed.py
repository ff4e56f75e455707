"""The task controls' Step Functions requests, checked with botocore's Stubber against the real
service model, through the real create function (its app, TaskService, TaskControl) on moto's DynamoDB.

moto runs these calls end to end elsewhere (test_control_*.py), but it ignores some of what they
send and cannot produce some of what Step Functions answers. Here each request is checked exactly
(operation, every parameter, validated against botocore's model of the Step Functions API) and the
answers moto never gives are returned to the handler:

- StopExecution's ``error`` and ``cause`` (moto drops them), on a retried task's current execution
  ``<id>-retry-<n>`` (and an approved task's ``<run>-approved``), only when DescribeExecution says it
  runs; ``ExecutionDoesNotExist`` (nothing to stop) is a no-op; an Express workflow is never asked
  (it can be neither described nor stopped).
- StartExecution of an approved task's rest (``<run>-approved`` at the gated step) and of a retry:
  name, input; ``ExecutionAlreadyExists`` (a repeat) is a no-op.
- A repeated approve or cancel makes the request a failed one did not (the store's change is not
  made twice).
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
    """A task past its analyzer, waiting for approval (as the writer's function leaves it at the gate)."""
    import asyncio

    created, _ = asyncio.run(system.service.create(OWNER, "Explain stubs", approval=True))
    system.ops.plan(created.task_id)
    for step_id in ("step_001", "step_002"):
        spec = system.ops.definition.step(step_id)
        assert asyncio.run(system.ops.run_step(created.task_id, step_id, 0, spec.retry_delay)).ok
    if retries:
        system.store.update(created.task_id, {TaskStatus.EXECUTING}, retries=retries)
    system.ops.request_approval(created.task_id)
    return created.task_id


def approved_start(stubber: Stubber, task_id: str, *, error: str | None = None) -> None:
    """The StartExecution of an approved task's rest: ``<run>-approved``, entering at the gated step."""
    params = {
        "stateMachineArn": STATE_MACHINE_ARN,
        "name": f"{task_id}-approved",
        "input": json.dumps({"task_id": task_id, "start_at": "step_003"}, separators=(",", ":")),
    }
    if error is None:
        response = {"executionArn": f"{EXECUTIONS}:{task_id}-approved", "startDate": "2025-01-01T12:00:00Z"}
        stubber.add_response("start_execution", response, params)
    else:
        stubber.add_client_error(
            "start_execution", service_error_code=error, http_status_code=400, expected_params=params
        )


def test_approve_starts_the_rest_as_an_execution_named_by_the_run_entering_at_the_gated_step(stubbed):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    approved_start(stubber, task_id)
    # a second approval finds the gated step not started yet: it starts the rest again, which the
    # execution's name makes a no-op on Standard
    approved_start(stubber, task_id, error="ExecutionAlreadyExists")

    response = control("approve", task_id, {"comment": "fine"})
    again = control("approve", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "executing"
    assert again["statusCode"] == 200, again["body"]
    assert event_types(task_id).count("approval_granted") == 1


def test_a_repeated_approve_finishes_what_a_failed_one_left(stubbed):
    # Given an approval whose StartExecution failed after the store recorded it (a 500)
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    approved_start(stubber, task_id, error="ServiceUnavailable")
    failed = control("approve", task_id)
    assert failed["statusCode"] == 500, failed["body"]
    assert task(task_id).approval_granted

    # When the person approves again
    approved_start(stubber, task_id)
    response = control("approve", task_id)

    # Then the rest is started now, and the approval was recorded once
    assert response["statusCode"] == 200, response["body"]
    assert event_types(task_id).count("approval_granted") == 1


def test_reject_sends_nothing_to_step_functions(stubbed):
    # Given a task awaiting approval: no execution runs it (the stub fails on any request)
    _stubber, system = stubbed
    task_id = awaiting_approval(system)

    response = control("reject", task_id, {"reason": "the sources are out of date"})

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "failed"
    assert task(task_id).status is TaskStatus.FAILED


def stop(stubber: Stubber, name: str, *, error: str | None = None, status: str = "RUNNING") -> None:
    """DescribeExecution of ``name`` (``status``), then its StopExecution if it runs."""
    arn = f"{EXECUTIONS}:{name}"
    if error == "ExecutionDoesNotExist":
        stubber.add_client_error(
            "describe_execution", service_error_code=error, http_status_code=400, expected_params={"executionArn": arn}
        )
        return
    described = {
        "executionArn": arn,
        "stateMachineArn": STATE_MACHINE_ARN,
        "status": status,
        "startDate": "2025-01-01T12:00:00Z",
    }
    stubber.add_response("describe_execution", described, {"executionArn": arn})
    if status != "RUNNING":
        return
    params = {"executionArn": arn, "error": "TaskCancelled", "cause": "cancelled by a user"}
    if error is None:
        stubber.add_response("stop_execution", {"stopDate": "2025-01-01T12:00:00Z"}, params)
    else:
        stubber.add_client_error(
            "stop_execution", service_error_code=error, http_status_code=400, expected_params=params
        )


def test_cancel_stops_the_current_execution_of_a_retried_task(stubbed):
    stubber, system = stubbed
    task_id = executing(system, retries=2)  # its run is the execution <id>-retry-2
    stop(stubber, f"{task_id}-retry-2")
    # cancelled already: a second cancel answers the same, and stops it only if it still runs
    stop(stubber, f"{task_id}-retry-2", status="ABORTED")

    response = control("cancel", task_id, {"reason": "no longer needed"})

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"
    assert control("cancel", task_id)["statusCode"] == 200


def test_a_repeated_cancel_finishes_what_a_failed_one_left(stubbed):
    # Given a cancel whose StopExecution failed after the store recorded it (a 500)
    stubber, system = stubbed
    task_id = executing(system)
    stop(stubber, task_id, error="ServiceUnavailable")
    assert control("cancel", task_id)["statusCode"] == 500
    assert task(task_id).status is TaskStatus.CANCELLED

    # When the person cancels again, the execution is stopped now
    stop(stubber, task_id)
    response = control("cancel", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert event_types(task_id).count("task_cancelled") == 1


def test_cancel_of_an_approved_task_stops_the_rest_and_the_run_before_it(stubbed):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    approved_start(stubber, task_id)
    assert control("approve", task_id)["statusCode"] == 200
    stop(stubber, f"{task_id}-approved")
    stop(stubber, task_id, error="ExecutionDoesNotExist")

    response = control("cancel", task_id)

    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"


def test_an_express_workflow_is_never_asked_to_stop(stubbed, aws_env):
    # Given an Express workflow (StopExecution is not supported there: the stub fails on any request)
    _stubber, system = stubbed
    system.executor.express = True  # type: ignore[attr-defined]
    task_id = executing(system)

    response = control("cancel", task_id)

    # Then the task is cancelled in the store, whose fencing refuses the run's further writes
    assert response["statusCode"] == 200, response["body"]
    assert task(task_id).status is TaskStatus.CANCELLED


def executing(system: AwsSystem, *, retries: int = 0) -> str:
    """A task whose execution (named by its id, or by its retry) is at its retriever."""
    import asyncio

    created, _ = asyncio.run(system.service.create(OWNER, "Explain stubs"))
    system.ops.plan(created.task_id)
    if retries:
        system.store.update(created.task_id, {TaskStatus.EXECUTING}, retries=retries)
    return created.task_id


def test_cancel_of_a_task_awaiting_approval_stops_nothing(stubbed):
    # Given a task whose run ended at the approval gate
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stop(stubber, task_id, status="SUCCEEDED")

    response = control("cancel", task_id)

    # Then it is cancelled, and the ended execution is left as it ended (no StopExecution)
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"


def test_cancel_with_no_execution_to_stop_is_a_no_op(stubbed):
    stubber, system = stubbed
    task_id = executing(system)
    stop(stubber, task_id, error="ExecutionDoesNotExist")

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
    expected_input = {"task_id": task_id, "start_at": "step_003"}
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


@pytest.mark.parametrize(("action", "operation"), [("cancel", "describe_execution"), ("approve", "start_execution")])
def test_any_other_step_functions_error_is_not_swallowed(stubbed, action, operation):
    stubber, system = stubbed
    task_id = awaiting_approval(system)
    stubber.add_client_error(operation, service_error_code="AccessDeniedException", http_status_code=400)

    response = control(action, task_id)

    # a 500: the caller learns that the execution was not told, though the store recorded the change
    assert response["statusCode"] == 500, response["body"]
    assert answer(response)["error"] == "internal_error"
    assert task(task_id).status is not TaskStatus.AWAITING_APPROVAL
