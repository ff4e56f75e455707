"""At-least-once delivery (Express runs a state at least once, and nothing stops a task's execution
from being started twice there): the real state machine in moto, Standard and Express, with every
agent invocation delivered twice, and a whole execution run twice. The store and the stream hold
exactly one run's effects: the seed's events once each, one attempt per step, one completion.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest
from moto.awslambda.models import LambdaFunction

from agentic.aws.wiring import get_system
from agentic.models import StepStatus, TaskStatus
from tests.functional.aws import support
from tests.functional.aws.control_support import control, create, event_types, task
from tests.functional.aws.support import OWNER, Pipeline
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


def streamed(task_id: str) -> list[str]:
    """What a client streaming the task from the start reads (events only, in order)."""

    async def read() -> list[str]:
        lines = await get_system().service.stream(OWNER, task_id)
        return [json.loads(line)["event_type"] async for chunk in lines for line in chunk.splitlines()]

    return asyncio.run(read())


def assert_one_run(task_id: str, sequence: list[str]) -> None:
    done = task(task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.execution_plan is not None
    assert [(s.status, s.attempts) for s in done.execution_plan.steps] == [(StepStatus.COMPLETED, 1)] * 3
    assert done.final_output is not None
    assert done.final_output == done.execution_plan.steps[-1].output
    assert event_types(task_id) == sequence
    assert streamed(task_id) == sequence


@pytest.fixture
def delivered_twice(pipeline: Pipeline) -> list[str]:
    """Every Lambda invocation of the state machine runs twice (the second answer is the state's)."""
    invoked: list[str] = []

    def twice(function: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
        invoked.append(function.function_name)
        support.fake_invoke_lambda(function, event)
        return support.fake_invoke_lambda(function, event)

    with mock.patch.object(LambdaFunction, "_invoke_lambda", twice):
        yield invoked


def test_every_agent_invocation_delivered_twice_leaves_one_run(pipeline: Pipeline, delivered_twice: list[str]):
    # Given a task whose every state's Lambda runs twice
    task_id = create()

    # When its execution ends
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"

    # Then each state was delivered twice, and the store and the stream hold one run's effects
    assert delivered_twice == ["AnalyzerFunction", "RetrieverFunction", "AnalyzerFunction", "WriterFunction"]
    assert_one_run(task_id, SEED_SEQUENCE)


def test_an_approved_task_delivered_twice_asks_once_and_completes_once(pipeline: Pipeline, delivered_twice: list[str]):
    # Given a task asking for approval, every invocation (the gate's too) delivered twice
    task_id = create(approval=True)
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    assert task(task_id).status is TaskStatus.AWAITING_APPROVAL

    # When it is approved, and the approval repeated
    assert control("approve", task_id)["statusCode"] == 200
    assert pipeline.wait(f"{task_id}-approved")["status"] == "SUCCEEDED"
    assert control("approve", task_id)["statusCode"] == 200

    # Then one request, one grant, one report
    approved = [*SEED_SEQUENCE[:8], "approval_requested", "approval_granted", *SEED_SEQUENCE[8:]]
    assert_one_run(task_id, approved)


def test_a_whole_execution_run_twice_leaves_one_run(pipeline: Pipeline):
    # Given a task that ran to its end
    task_id = create()
    first = pipeline.wait(task_id)
    assert first["status"] == "SUCCEEDED"

    # When its execution is started again (Express names are not unique: a second start runs; moto
    # keeps names unique, so the second run gets another name and the same input)
    again = pipeline.sfn.start_execution(
        stateMachineArn=pipeline.state_machine_arn, name=f"{task_id}-again", input=first["input"]
    )
    assert pipeline.wait_arn(again["executionArn"])["status"] == "SUCCEEDED"

    # Then nothing changed: one run's effects in the store and the stream
    assert_one_run(task_id, SEED_SEQUENCE)


def test_two_executions_of_one_task_at_once_leave_one_run(pipeline: Pipeline):
    # Given a task created without executing it
    task_id = create(execute=False)
    payload = json.dumps({"task_id": task_id}, separators=(",", ":"))

    # When two executions of it start together
    arns = [
        pipeline.sfn.start_execution(stateMachineArn=pipeline.state_machine_arn, name=name, input=payload)[
            "executionArn"
        ]
        for name in (task_id, f"{task_id}-twin")
    ]
    statuses = [pipeline.wait_arn(arn)["status"] for arn in arns]

    # Then both end, and the task holds one run
    assert statuses == ["SUCCEEDED", "SUCCEEDED"]
    assert_one_run(task_id, SEED_SEQUENCE)
