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

from agentic.aws.wiring import get_system
from agentic.local.wiring import build_local_system
from tests.functional.aws.support import OWNER, Pipeline, http_event, invoke
from tests.support import local_settings

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
        return [e.event_type.value for e in system.store.read_events(task_id)], task.model_dump()
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
    return [e.event_type.value for e in store.read_events(task_id)], task.model_dump()


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
