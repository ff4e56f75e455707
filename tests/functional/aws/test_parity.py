"""The same task through the local runner and through the AWS path gives the same event log.

Both wirings run the same ``PipelineOps`` with the step order and retry policy of the same state
machine file; only the driver differs (an asyncio loop locally, Step Functions on AWS).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentic.agents.faults import FaultPlan
from agentic.aws.wiring import get_system
from agentic.local.wiring import build_local_system
from agentic.models import TaskState, TaskStatus
from tests.fake_bedrock import Reply, analysis
from tests.functional.aws.control_support import control, create
from tests.functional.aws.support import OWNER, Pipeline, http_event, invoke
from tests.support import SEED_SEQUENCE, local_settings

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

DESCRIPTION = "Compare retries with exponential backoff and circuit breakers for a payment service"


def local_run(tmp_path: Path, faults: str) -> tuple[list[str], dict[str, Any]]:
    system = build_local_system(local_settings(tmp_path, faults=faults, retry_time_scale=0.001))
    try:

        async def run() -> str:
            task, _ = await system.service.create(OWNER, DESCRIPTION)
            await system.runner.run(task.task_id)
            return task.task_id

        task_id = asyncio.run(run())
        task = system.store.get(task_id)
        assert task is not None
        return [e.event_type.value for e in system.store.read_events(task_id)], as_dict(task)
    finally:
        system.store.close()


def aws_run(pipeline: Pipeline, faults: str) -> tuple[list[str], dict[str, Any]]:
    pipeline.configure(FAULTS=faults)
    event = http_event("create_task_post.json", body=json.dumps({"description": DESCRIPTION, "execute": True}))
    del event["headers"]["idempotency-key"]
    task_id = json.loads(invoke("CreateTaskFunction", event)["body"])["task_id"]
    pipeline.wait(task_id)
    store = get_system().store
    task = store.get(task_id)
    assert task is not None
    return [e.event_type.value for e in store.read_events(task_id)], as_dict(task)


def as_dict(task: TaskState | None) -> dict[str, Any]:
    """The task as a dict with its steps' outputs (``model_dump`` leaves them out, as the stores do)."""
    assert task is not None
    data = task.model_dump()
    if task.execution_plan is not None:
        for step, dumped in zip(task.execution_plan.steps, data["execution_plan"]["steps"], strict=True):
            dumped["output"] = step.output
    return data


def outcome(task: dict[str, Any]) -> tuple[Any, ...]:
    steps = task["execution_plan"]["steps"] if task["execution_plan"] else []
    return (
        task["status"],
        task["final_output"],
        task["error_message"],
        [(s["step_id"], s["agent_type"], s["status"], s["attempts"], s["output"]) for s in steps],
    )


@pytest.mark.parametrize("faults", ["", "retriever:transient:2", "analyzer:transient:1,writer:permanent"])
def test_local_and_aws_paths_write_the_same_events(tmp_path, pipeline, faults):
    local_types, local_task = local_run(tmp_path, faults)
    aws_types, aws_task = aws_run(pipeline, faults)

    assert aws_types == local_types
    assert outcome(aws_task) == outcome(local_task)
    if not faults:
        assert local_types[-1] == "task_completed"
    elif "permanent" in faults:
        assert local_types[-1] == "task_failed"
    else:
        assert "step_retrying" in local_types


# --- the task controls (issue 9): approval granted or rejected, retry from the failed step ----------

#: Events whose data must match too (beyond their order): what the controls write.
CONTROL_EVENTS = {"approval_requested", "approval_granted", "approval_rejected", "task_retried", "error", "task_failed"}
DECISIONS = {"approve": {"comment": "looks right"}, "reject": {"reason": "out of date"}}


def local_control_run(tmp_path: Path, scenario: str) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    faults = "writer:permanent" if scenario == "retry" else ""
    system = build_local_system(local_settings(tmp_path, faults=faults, retry_time_scale=0.001))
    service = system.service
    try:

        async def run() -> str:
            task, _ = await service.create(OWNER, DESCRIPTION, approval=scenario in DECISIONS)
            await service.execute(OWNER, task.task_id)
            await system.executor.drain()
            if scenario == "approve":
                await service.approve(OWNER, task.task_id, **DECISIONS["approve"])
            elif scenario == "reject":
                await service.reject(OWNER, task.task_id, **DECISIONS["reject"])
            else:
                system.ops.faults = FaultPlan()  # the fault is gone: the retry can succeed
                await service.retry(OWNER, task.task_id)
            await system.executor.drain()
            return task.task_id

        task_id = asyncio.run(run())
        task = system.store.get(task_id)
        assert task is not None
        return logged(task_id, system.store.read_events(task_id)), as_dict(task)
    finally:
        system.store.close()


def aws_control_run(pipeline: Pipeline, scenario: str) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    pipeline.configure(FAULTS="writer:permanent" if scenario == "retry" else "")
    task_id = create(approval=scenario in DECISIONS, description=DESCRIPTION)
    if scenario in DECISIONS:
        pipeline.wait(task_id)  # its run ends at the gate
        assert get_system().store.get(task_id).status is TaskStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
        assert control(scenario, task_id, DECISIONS[scenario])["statusCode"] == 200
        if scenario == "approve":
            pipeline.wait(f"{task_id}-approved")
    else:
        pipeline.wait(task_id)
        pipeline.configure(FAULTS="")
        assert control("retry", task_id)["statusCode"] == 200
        pipeline.wait(f"{task_id}-retry-1")
    store = get_system().store
    task = store.get(task_id)
    assert task is not None
    return logged(task_id, store.read_events(task_id)), as_dict(task)


def logged(task_id: str, events: list[Any]) -> list[tuple[str, Any]]:
    """Each event's type, with its data for the events the controls write (the task id, which
    differs between the two runs, replaced by a placeholder)."""
    return [
        (
            e.event_type.value,
            json.loads(json.dumps(e.data).replace(task_id, "<task>")) if e.event_type.value in CONTROL_EVENTS else None,
        )
        for e in events
    ]


@pytest.mark.parametrize("scenario", ["approve", "reject", "retry"])
def test_local_and_aws_paths_write_the_same_events_for_the_task_controls(tmp_path, pipeline, scenario):
    local_events, local_task = local_control_run(tmp_path, scenario)
    aws_events, aws_task = aws_control_run(pipeline, scenario)

    assert outcome(aws_task) == outcome(local_task)
    assert (aws_task["approval_granted"], aws_task["retries"]) == (
        local_task["approval_granted"],
        local_task["retries"],
    )
    aws_types = [kind for kind, _ in aws_events]
    if scenario == "retry":  # what the AWS retry writes: the retry, then the failed step's new run
        assert aws_types[-5:] == ["task_retried", *SEED_SEQUENCE[-4:]]
    assert aws_events == local_events
    types = [kind for kind, _ in local_events]
    if scenario == "approve":
        assert types[-6:] == ["approval_requested", "approval_granted", *SEED_SEQUENCE[-4:]]
    elif scenario == "reject":
        assert types[-4:] == ["approval_requested", "approval_rejected", "error", "task_failed"]


# --- the same scripted Bedrock model on both wirings (issue 13) --------------------------------------

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
#: Deltas batched by size only (the time bound is far away), so both runs batch the same way.
MODEL_SETTINGS = {
    "model_provider": "bedrock",
    "model_id": MODEL_ID,
    "model_timeout_seconds": 10.0,
    "stream_delta_seconds": 10.0,
    "stream_delta_chars": 30,
    "model_prices": {MODEL_ID: {"input": 0.25, "output": 1.25}},
}
REPORT = "Backoff spaces retries out; jitter keeps the clients from retrying in step with each other."
MODEL_SCRIPTS = {
    "answers": [Reply(tool_input=analysis(), usage=(300, 50)), Reply(text=REPORT, chunk=10, usage=(900, 120))],
    "throttled once": [
        Reply(tool_input=analysis(), usage=(300, 50)),
        Reply(error="ThrottlingException", message="slow down"),
        Reply(text=REPORT, chunk=10, usage=(900, 120)),
    ],
    "access denied": [Reply(error="AccessDeniedException", message="no access to the model")],
}
#: Events whose data must match too: what the model steps write.
MODEL_EVENTS = {"partial_output", "step_completed", "step_retrying", "error", "task_failed", "task_completed"}


def model_logged(task_id: str, events: list[Any]) -> list[tuple[str, Any]]:
    """Each event's type, with its data for what the model steps write (the retry's delay aside: the
    local runner scales the ASL's waits by RETRY_TIME_SCALE)."""
    return [
        (
            e.event_type.value,
            {
                k: v
                for k, v in json.loads(json.dumps(e.data).replace(task_id, "<task>")).items()
                if k != "delay_seconds"
            },
        )
        if e.event_type.value in MODEL_EVENTS
        else (e.event_type.value, None)
        for e in events
    ]


@pytest.mark.parametrize("script", MODEL_SCRIPTS)
def test_local_and_aws_paths_write_the_same_events_with_the_same_bedrock_model(
    tmp_path, pipeline, fake_bedrock, script
):
    # Given the same scripted Bedrock answers for a local run and an AWS run
    fake_bedrock.script(*MODEL_SCRIPTS[script])
    system = build_local_system(local_settings(tmp_path, retry_time_scale=0.001, **MODEL_SETTINGS))
    try:

        async def run() -> str:
            task, _ = await system.service.create(OWNER, DESCRIPTION)
            await system.runner.run(task.task_id)
            return task.task_id

        local_id = asyncio.run(run())
        local_events = model_logged(local_id, system.store.read_events(local_id))
        local_task = as_dict(system.store.get(local_id))
    finally:
        system.store.close()
    fake_bedrock.script(*MODEL_SCRIPTS[script])
    pipeline.configure(
        **{
            name.upper(): value if isinstance(value, str) else json.dumps(value)
            for name, value in MODEL_SETTINGS.items()
        }
    )
    # When the task runs on each wiring
    aws_events, aws_task = aws_run(pipeline, "")
    aws_logged = model_logged(aws_task["task_id"], get_system().store.read_events(aws_task["task_id"]))
    # Then both logs hold the same events, the model's deltas, tokens and errors included
    assert aws_logged == local_events
    assert outcome(aws_task) == outcome(local_task)
    assert aws_events[-1] == {"answers": "task_completed", "throttled once": "task_completed"}.get(
        script, "task_failed"
    )
    assert any(kind == "partial_output" and data and "delta" in data for kind, data in local_events) == (
        script != "access denied"
    )
