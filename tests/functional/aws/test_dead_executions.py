"""Dead executions found without a user (issue 16): on Express, each start schedules a watchdog a
minute past the 5 minutes an Express execution may run; and executing a task whose Express run went
silent for longer than that fails it (Express executions cannot be described)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any
from unittest import mock

import boto3
import pytest

from agentic.aws import service as aws_service
from agentic.aws.wiring import get_system
from agentic.models import TaskStatus, utcnow
from tests.functional.aws.control_support import create, event_types, task
from tests.functional.aws.support import OWNER, REGION, Pipeline, invoke
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


def schedules() -> dict[str, dict[str, Any]]:
    scheduler = boto3.client("scheduler", region_name=REGION)
    return {
        s["Name"]: scheduler.get_schedule(Name=s["Name"], GroupName=s["GroupName"])
        for s in scheduler.list_schedules()["Schedules"]
    }


def test_an_express_start_schedules_its_watchdog_which_leaves_a_finished_task_alone(pipeline: Pipeline):
    # Given a task started (and run to its end)
    before = time.time()
    task_id = create()
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"

    found = schedules()
    if not pipeline.express:
        # Standard executions report their own end (DeadExecutionRule): no watchdog
        assert not any(name.startswith("run-") for name in found)
        return
    # Then its watchdog looks at it 6 minutes after the start
    watchdog = found[f"run-{task_id}"]
    assert json.loads(watchdog["Target"]["Input"]) == {
        "action": "execution_watchdog",
        "task_id": task_id,
        "execution": task_id,
    }
    at = watchdog["ScheduleExpression"].removeprefix("at(").removesuffix(")")
    fires = time.mktime(time.strptime(at, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before + 360 - 2 <= fires <= time.time() + 360 + 1
    assert watchdog["ActionAfterCompletion"] == "DELETE"

    # When it fires, the completed task is left as it is
    assert invoke("FinalizeFunction", json.loads(watchdog["Target"]["Input"]))["status"] == "completed"
    assert event_types(task_id) == SEED_SEQUENCE


def test_executing_a_task_whose_express_run_went_silent_fails_it(moto_table: Any, aws_env: pytest.MonkeyPatch):
    # Given an Express deployment and a task whose run planned it, then wrote nothing more
    from tests.functional.aws.support import create_trivial_state_machine

    aws_env.setenv("STATE_MACHINE_ARN", create_trivial_state_machine("express"))
    aws_env.setenv("WORKFLOW_TYPE", "EXPRESS")
    from agentic.aws.wiring import reset_system

    reset_system()
    system = get_system()
    created, _ = asyncio.run(system.service.create(OWNER, "Explain silence"))
    system.ops.plan(created.task_id)

    # When its owner executes it within an Express execution's lifetime, it attaches
    assert asyncio.run(system.service.execute(OWNER, created.task_id)).status is TaskStatus.EXECUTING

    # And past it (6 minutes without a write), the task is failed: no execution can still run it
    later = utcnow() + timedelta(seconds=361)
    with mock.patch.object(aws_service, "utcnow", return_value=later):
        failed = asyncio.run(system.service.execute(OWNER, created.task_id))
    assert failed.status is TaskStatus.FAILED
    assert failed.error_message is not None
    assert failed.error_message.startswith("States.Timeout: the task's execution ended (TIMED_OUT)")
    assert task(created.task_id).status is TaskStatus.FAILED
    assert event_types(created.task_id)[-2:] == ["error", "task_failed"]
