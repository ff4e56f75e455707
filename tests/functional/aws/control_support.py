"""Helpers for the task-control tests on the AWS path: the control routes through the create
function (API Gateway events from events/), the task and its log in moto's DynamoDB, and waits for
a state of the store or of an execution (polling a condition, never sleeping for a guessed time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentic.aws.wiring import get_system
from agentic.models import TaskState, TaskStatus
from tests.functional.aws.support import FakeLambdaContext, Pipeline, function_handler, http_event, invoke

ACTIONS = ("cancel", "approve", "reject", "retry")


def create(
    *,
    approval: bool = False,
    execute: bool = True,
    description: str = "Explain circuit breakers",
    key: str | None = None,
    replay: bool = False,
) -> str:
    """POST /tasks through the create function; its id. Without ``key`` a new task each time; with
    ``replay`` the request repeats an earlier one with the same key (which executes it again)."""
    body = {"description": description, "execute": execute, "approval": approval}
    event = http_event("create_task_post.json", body=json.dumps(body))
    if key is None:
        del event["headers"]["idempotency-key"]
    else:
        event["headers"]["idempotency-key"] = key
    response = invoke("CreateTaskFunction", event)
    assert response["statusCode"] == (200 if replay else 201), response["body"]
    task_id: str = json.loads(response["body"])["task_id"]
    return task_id


def control(
    action: str, task_id: str, body: dict[str, Any] | None = None, *, owner: str | None = None
) -> dict[str, Any]:
    """POST /tasks/{task_id}/<action> through the create function, with events/create_task_<action>.json."""
    assert action in ACTIONS
    event = http_event(f"create_task_{action}.json", task_id=task_id, owner=owner)
    if body is not None:
        event["body"] = json.dumps(body)
    response: dict[str, Any] = invoke("CreateTaskFunction", event)
    return response


def answer(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def task(task_id: str) -> TaskState:
    found = get_system().store.get(task_id)
    assert found is not None
    return found


def event_types(task_id: str) -> list[str]:
    return [e.event_type.value for e in get_system().store.read_events(task_id)]


def events_of(task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in get_system().store.read_events(task_id) if e.event_type.value == kind]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` (the store, an execution) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not {what} after {timeout} s")
        time.sleep(0.02)


def wait_for_status(task_id: str, status: TaskStatus) -> TaskState:
    wait_until(lambda: task(task_id).status is status, f"{status.value}")
    return task(task_id)


def execution_names(pipeline: Pipeline) -> list[str]:
    executions = pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)["executions"]
    return sorted(e["name"] for e in executions)


def describe(pipeline: Pipeline, name: str) -> dict[str, Any]:
    description: dict[str, Any] = pipeline.sfn.describe_execution(executionArn=pipeline.execution_arn(name))
    return description


def history(pipeline: Pipeline, name: str) -> list[dict[str, Any]]:
    return pipeline.history(name)


def entered_states(pipeline: Pipeline, name: str) -> list[str]:
    """The states an execution entered, in order (its history's StateEntered events)."""
    return [
        e["stateEnteredEventDetails"]["name"] for e in history(pipeline, name) if e["type"].endswith("StateEntered")
    ]


def invoke_beside(function: str, event: dict[str, Any]) -> Any:
    """Invoke ``function`` while another Lambda invocation is in flight, as a second Lambda instance.

    ``invoke`` serialises invocations (``INVOCATION_LOCK``: moto's DynamoDB is not thread-safe). A
    test that parks an agent mid-step holds that lock in the execution's thread; this call goes
    around it, which is safe exactly because the lock's holder is parked and touches nothing.
    """
    return function_handler(function)(event, FakeLambdaContext(function))


def control_beside(action: str, task_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``control`` while an agent Lambda is parked in flight (see ``invoke_beside``)."""
    event = http_event(f"create_task_{action}.json", task_id=task_id)
    if body is not None:
        event["body"] = json.dumps(body)
    response: dict[str, Any] = invoke_beside("CreateTaskFunction", event)
    return response


class StepFunctionsCalls:
    """The Step Functions requests any boto3 client makes (operation, parameters), in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]


def record_step_functions_calls(monkeypatch: pytest.MonkeyPatch) -> StepFunctionsCalls:
    from botocore.client import BaseClient

    recorded = StepFunctionsCalls()
    real_call = BaseClient._make_api_call

    def recording_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "stepfunctions":
            recorded.calls.append((operation, dict(params)))
        return real_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    return recorded
