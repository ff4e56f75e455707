"""End to end on the AWS path, without AWS.

create handler (HTTP API v2 event) -> StepFunctionsExecutor.StartExecution -> moto's Step Functions
interpreter running the real statemachine/pipeline.asl.json -> the real agent and finalize handlers
(in-process, behind moto's Lambda ARNs) on moto's DynamoDB -> the query handler and the event log.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentic.aws.wiring import get_system
from tests.functional.aws.support import Pipeline, http_event, invoke
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

DESCRIPTION = "Explain how exponential backoff with jitter prevents retry storms"


def run_task(pipeline: Pipeline, description: str = DESCRIPTION) -> tuple[str, dict[str, Any]]:
    """POST /tasks with execute=true through the create handler; wait for the execution to end."""
    event = http_event("create_task_post.json", body=json.dumps({"description": description, "execute": True}))
    del event["headers"]["idempotency-key"]  # a new task each time
    response = invoke("CreateTaskFunction", event)
    assert response["statusCode"] == 201, response["body"]
    task_id: str = json.loads(response["body"])["task_id"]
    return task_id, pipeline.wait(task_id)


def status(task_id: str) -> dict[str, Any]:
    response = invoke("QueryTasksFunction", http_event("query_tasks_status.json", task_id=task_id))
    assert response["statusCode"] == 200, response["body"]
    body: dict[str, Any] = json.loads(response["body"])
    return body


def event_types(task_id: str) -> list[str]:
    return [e.event_type.value for e in get_system().store.read_events(task_id)]


def history_types(pipeline: Pipeline, task_id: str) -> list[str]:
    return [e["type"] for e in pipeline.history(task_id)]


def test_a_task_runs_through_the_state_machine_to_completion(pipeline):
    task_id, execution = run_task(pipeline)

    assert execution["status"] == "SUCCEEDED"
    assert execution["name"] == task_id
    assert json.loads(execution["input"]) == {"task_id": task_id}  # ids only, never documents
    task = status(task_id)
    assert task["status"] == "completed"
    assert [s["status"] for s in task["steps"]] == ["completed"] * 3
    assert [s["attempts"] for s in task["steps"]] == [1, 1, 1]
    assert task["final_output"].startswith("# Report")
    assert event_types(task_id) == SEED_SEQUENCE
    events = get_system().store.read_events(task_id)
    assert [e.cursor for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data["final_output"] == task["final_output"]
    # one Lambda call per state: Plan, Retrieve, Analyze, Write (which completes the task)
    history = history_types(pipeline, task_id)
    assert history.count("LambdaFunctionSucceeded") == 4
    assert "LambdaFunctionFailed" not in history
    # five states entered: on Standard, 5 billed state transitions (Route, Plan and the three steps)
    assert history.count("ChoiceStateEntered") + history.count("TaskStateEntered") == 5


def test_a_transient_failure_is_retried_by_the_state_machine(pipeline):
    pipeline.configure(FAULTS="retriever:transient:2")
    task_id, execution = run_task(pipeline)

    assert execution["status"] == "SUCCEEDED"
    # the history shows the two failed attempts and the retries
    history = pipeline.history(task_id)
    failed = [e for e in history if e["type"] == "LambdaFunctionFailed"]
    assert [e["lambdaFunctionFailedEventDetails"]["error"] for e in failed] == ["TransientAgentError"] * 2
    assert len(pipeline.retry_sleeps) == 2
    assert 0 <= pipeline.retry_sleeps[0] <= 1
    assert 0 <= pipeline.retry_sleeps[1] <= 2  # FULL jitter under IntervalSeconds * BackoffRate
    # the log shows them as step_retrying, with the attempt that follows and the un-jittered bound
    events = get_system().store.read_events(task_id)
    retrying = [e.data for e in events if e.event_type.value == "step_retrying"]
    assert [(r["step_id"], r["attempt"], r["delay_seconds"]) for r in retrying] == [
        ("step_001", 2, 1.0),
        ("step_001", 3, 2.0),
    ]
    assert all(r["error"].startswith("TransientAgentError: injected transient fault") for r in retrying)
    expected = [*SEED_SEQUENCE[:3], "step_retrying", "step_retrying", *SEED_SEQUENCE[3:]]
    assert event_types(task_id) == expected
    task = status(task_id)
    assert task["status"] == "completed"
    assert task["steps"][0]["attempts"] == 3


def test_a_permanent_failure_is_caught_and_fails_the_task(pipeline):
    pipeline.configure(FAULTS="writer:permanent")
    task_id, execution = run_task(pipeline)

    # a handled failure: MarkFailed records it and the execution ends successfully (no alarm)
    assert execution["status"] == "SUCCEEDED"
    history = history_types(pipeline, task_id)
    assert history.count("LambdaFunctionFailed") == 1  # PermanentAgentError is not retried
    assert [
        e["stateEnteredEventDetails"]["name"] for e in pipeline.history(task_id) if "stateEnteredEventDetails" in e
    ][-1] == "MarkFailed"
    task = status(task_id)
    assert task["status"] == "failed"
    assert task["error_message"] == "PermanentAgentError: injected permanent fault in writer"
    assert [s["status"] for s in task["steps"]] == ["completed", "completed", "failed"]
    types = event_types(task_id)
    assert types == [*SEED_SEQUENCE[:8], "step_started", "error", "task_failed"]
    error = get_system().store.read_events(task_id)[-2]
    assert error.data["error"] == "PermanentAgentError"
    assert error.data["step_id"] == "step_003"


def test_retries_running_out_fail_the_task(pipeline):
    pipeline.configure(FAULTS="analyzer:transient:9")
    task_id, execution = run_task(pipeline)

    assert execution["status"] == "SUCCEEDED"  # handled: the task failed, the execution did not
    assert history_types(pipeline, task_id).count("LambdaFunctionFailed") == 4  # 1 call + MaxAttempts 3
    task = status(task_id)
    assert task["status"] == "failed"
    assert task["error_message"].startswith("TransientAgentError: injected transient fault in analyzer")
    types = event_types(task_id)
    assert types.count("step_retrying") == 3
    assert types[-2:] == ["error", "task_failed"]


def test_executing_a_started_task_again_is_a_no_op(pipeline):
    task_id, execution = run_task(pipeline)
    assert execution["status"] == "SUCCEEDED"
    # the executor names the execution by the task id: a second start is ExecutionAlreadyExists
    # (on Standard; Express names are not unique, and a second run changes nothing: see below)
    import asyncio

    asyncio.run(get_system().executor.start(task_id))
    assert len(pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)["executions"]) == 1
    assert event_types(task_id) == SEED_SEQUENCE
