"""Cancel on the AWS path, in moto's Step Functions interpreter (Standard and Express).

The run is stopped where it stands: on Standard, StopExecution of the task's execution; an agent
Lambda already in flight (which Step Functions cannot recall) finishes its work but its write is
refused by the store's conditional update, so nothing of it reaches the task or the log. An Express
execution cannot be stopped: the store's fencing is all there is, and the states after the refused
write find the task cancelled and record nothing. A task awaiting approval has no execution to stop
(its run ended at the gate): its approval timer is deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentic.agents.retriever import RetrieverAgent
from agentic.models import StepStatus, TaskStatus
from tests.functional.aws.control_support import (
    StepFunctionsCalls,
    answer,
    control,
    control_beside,
    create,
    entered_states,
    event_types,
    events_of,
    execution_names,
    record_step_functions_calls,
    task,
)
from tests.functional.aws.support import OTHER_OWNER, OWNER, Pipeline

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


class ParkedAgent:
    """Parks the retriever inside its work (in the execution's Lambda) until the test releases it."""

    def __init__(self) -> None:
        self.in_flight = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> Iterator[ParkedAgent]:
    agent = ParkedAgent()
    real_run = RetrieverAgent.run

    def run(self: RetrieverAgent, step: Any, context: Any) -> str:
        agent.in_flight.set()
        assert agent.release.wait(20), "the test never released the parked agent"
        output = real_run(self, step, context)
        agent.finished.set()
        return output

    monkeypatch.setattr(RetrieverAgent, "run", run)
    try:
        yield agent
    finally:
        agent.release.set()  # never leave an execution thread parked


@pytest.fixture
def sfn_calls(monkeypatch: pytest.MonkeyPatch) -> StepFunctionsCalls:
    return record_step_functions_calls(monkeypatch)


def test_cancel_stops_the_execution_and_refuses_the_late_write_of_the_agent_in_flight(
    pipeline: Pipeline, parked: ParkedAgent, sfn_calls: StepFunctionsCalls
):
    # Given a task whose retriever Lambda is in flight, in the middle of its work
    task_id = create()
    assert parked.in_flight.wait(20)
    assert task(task_id).status is TaskStatus.EXECUTING

    # When its owner cancels it (a second Lambda instance, while the agent's is still working)
    response = control_beside("cancel", task_id, {"reason": "wrong question"})

    # Then the answer is the cancelled task at once, and the execution was told to stop (Standard;
    # an Express execution cannot be)
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"
    stop = {"executionArn": pipeline.execution_arn(task_id), "error": "TaskCancelled", "cause": "cancelled by a user"}
    assert sfn_calls.of("StopExecution") == ([] if pipeline.express else [stop])
    # When the agent's Lambda, which a stop cannot recall, finishes its work
    parked.release.set()
    execution = pipeline.wait(task_id)
    assert parked.finished.is_set()
    # Then its write was refused by the store's condition (the task is no longer executing) ...
    final = task(task_id)
    assert final.status is TaskStatus.CANCELLED
    assert final.execution_plan is not None
    retriever = final.execution_plan.steps[0]
    assert (retriever.status, retriever.output, retriever.error) == (StepStatus.FAILED, None, "cancelled")
    assert event_types(task_id) == ["task_started", "plan_created", "step_started", "task_cancelled"]
    [cancelled] = events_of(task_id, "task_cancelled")
    assert cancelled == {
        "status": "cancelled",
        "reason": "wrong question",
        "by": OWNER,
        "step_id": "step_001",
        "agent_type": "retriever",
    }
    assert final.error_message == f"cancelled by {OWNER}: wrong question"
    if pipeline.express:
        # ... and the Express run went on to its Catch, which found the task cancelled and wrote nothing
        assert entered_states(pipeline, task_id)[-2:] == ["Retrieve", "MarkFailed"]
        assert execution["status"] == "SUCCEEDED"
        return
    # ... and the stopped execution ran nothing after it: not the next step, not even its Catch
    # (MarkFailed), which a refused write would otherwise reach.
    assert entered_states(pipeline, task_id)[-1] == "Retrieve"
    # Step Functions ends a stopped execution ABORTED at once and discards the late result; moto's
    # interpreter (5.2.x) instead lets the in-flight Lambda's error end it FAILED. Either way it stopped.
    assert (execution["status"], execution.get("error")) in {("ABORTED", None), ("FAILED", "InvalidTransition")}


def test_cancel_answers_the_same_twice_and_a_finished_task_cannot_be_cancelled(
    pipeline: Pipeline, sfn_calls: StepFunctionsCalls
):
    # Given a task waiting for approval (its run ended at the gate)
    task_id = create(approval=True)
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    assert task(task_id).status is TaskStatus.AWAITING_APPROVAL

    # When it is cancelled
    first = control("cancel", task_id)

    # Then nothing is stopped (no execution runs it), and the stream's end is written
    assert first["statusCode"] == 200, first["body"]
    assert sfn_calls.of("StopExecution") == []
    cancelled = task(task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert event_types(task_id)[-2:] == ["approval_requested", "task_cancelled"]

    # And a second cancel answers the same, writing nothing
    second = control("cancel", task_id)
    assert second["statusCode"] == 200
    assert answer(second) == answer(first)
    assert event_types(task_id).count("task_cancelled") == 1
    # approving a cancelled task is a 409; another owner's cancel a 404
    assert control("approve", task_id)["statusCode"] == 409
    assert control("cancel", task_id, owner=OTHER_OWNER)["statusCode"] == 404
    assert execution_names(pipeline) == [task_id]

    # And a completed task cannot be cancelled: 409
    done = create()
    assert pipeline.wait(done)["status"] == "SUCCEEDED"
    refused = control("cancel", done)
    assert refused["statusCode"] == 409
    assert answer(refused)["error"] == "invalid_transition"
    assert task(done).status is TaskStatus.COMPLETED
    assert "task_cancelled" not in event_types(done)


def test_a_pending_task_is_cancelled_at_once_and_never_starts(pipeline: Pipeline):
    # Given a task created without executing it (no execution exists)
    task_id = create(key="cancel-before-start", execute=False)

    # When it is cancelled
    response = control("cancel", task_id)

    # Then it is cancelled (StopExecution found nothing to stop: a no-op, not an error)
    assert response["statusCode"] == 200, response["body"]
    assert answer(response)["status"] == "cancelled"
    assert event_types(task_id) == ["task_cancelled"]
    # and executing it afterwards (a replay of its create with execute: true) starts nothing
    assert create(key="cancel-before-start", execute=True, replay=True) == task_id
    assert execution_names(pipeline) == []
    assert task(task_id).status is TaskStatus.CANCELLED
