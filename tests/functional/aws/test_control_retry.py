"""Retry from the failed step on the AWS path: a new execution per retry, in moto's interpreter.

POST /tasks/{id}/retry records the retry in the store (the steps from the failed one reset, their
attempt numbers continuing) and starts ``<task_id>-retry-<n>`` with ``{"task_id", "start_at",
"planned"}``: the ASL's ``Route`` Choice sends it straight to the step to run again, so completed
steps are not run again. Not RedriveExecution: every failure is caught into MarkFailed and ends in
the ``Failed`` state, which is where a redrive would restart.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from agentic.aws.wiring import get_system
from agentic.models import TaskStatus
from tests.functional.aws.control_support import (
    answer,
    control,
    create,
    describe,
    entered_states,
    event_types,
    events_of,
    execution_names,
    task,
)
from tests.functional.aws.support import Pipeline, cold_start
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

FAILED_AT_THE_WRITER = [*SEED_SEQUENCE[:8], "step_started", "error", "task_failed"]


def failed_at_the_writer(pipeline: Pipeline) -> str:
    """A task the writer failed permanently (FAULTS), its execution ended after MarkFailed (handled)."""
    pipeline.configure(FAULTS="writer:permanent")
    task_id = create()
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    assert event_types(task_id) == FAILED_AT_THE_WRITER
    pipeline.configure(FAULTS="")  # the fault is gone: a retry can succeed
    return task_id


def test_a_retry_runs_a_new_execution_from_the_failed_step_to_completion(pipeline: Pipeline):
    # Given a task failed at its third step (the first two completed)
    task_id = failed_at_the_writer(pipeline)
    before = task(task_id)
    assert before.execution_plan is not None
    outputs = [s.output for s in before.execution_plan.steps[:2]]

    # When its owner retries it
    response = control("retry", task_id)

    # Then the answer is the task executing again at the failed step
    assert response["statusCode"] == 200, response["body"]
    body = answer(response)
    assert (body["status"], body["retries"], body["error_message"]) == ("executing", 1, None)
    # and a new execution, named by the task and the retry, enters the pipeline at that step
    retry = f"{task_id}-retry-1"
    assert execution_names(pipeline) == sorted([task_id, retry])
    assert json.loads(describe(pipeline, retry)["input"]) == {"task_id": task_id, "start_at": "step_003"}
    assert pipeline.wait(retry)["status"] == "SUCCEEDED"
    assert entered_states(pipeline, retry) == ["Route", "Write"]
    invoked = [
        e["lambdaFunctionScheduledEventDetails"]["resource"].rsplit(":", 1)[-1]
        for e in pipeline.history(retry)
        if e["type"] == "LambdaFunctionScheduled"
    ]
    assert invoked == ["WriterFunction"]  # no plan, no retriever, no analyzer
    # and the task completes, the earlier steps' outputs kept, the writer's attempts continuing
    done = task(task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.execution_plan is not None
    assert [s.output for s in done.execution_plan.steps[:2]] == outputs
    assert [s.attempts for s in done.execution_plan.steps] == [1, 1, 2]
    assert done.final_output is not None
    assert done.final_output.startswith("# Report")
    assert event_types(task_id) == [
        *FAILED_AT_THE_WRITER,
        "task_retried",
        "step_started",
        "partial_output",
        "step_completed",
        "task_completed",
    ]
    [retried] = events_of(task_id, "task_retried")
    assert (retried["retry"], retried["from_step"], retried["step_id"], retried["agent_type"]) == (
        1,
        "step_003",
        "step_003",
        "writer",
    )
    assert [e["attempt"] for e in events_of(task_id, "step_started")] == [1, 1, 1, 2]


def test_a_retry_from_an_earlier_step_runs_it_and_the_steps_after_it(pipeline: Pipeline):
    # Given a task failed at the writer
    task_id = failed_at_the_writer(pipeline)
    # (a step that is not the task's is a 422, and starts nothing)
    assert control("retry", task_id, {"from_step": "step_009"})["statusCode"] == 422
    assert execution_names(pipeline) == [task_id]

    # When it is retried from the analyzer
    response = control("retry", task_id, {"from_step": "step_002"})

    # Then the retry execution enters at Analyze; the retriever is not run again
    assert response["statusCode"] == 200, response["body"]
    retry = f"{task_id}-retry-1"
    assert pipeline.wait(retry)["status"] == "SUCCEEDED"
    assert entered_states(pipeline, retry) == ["Route", "Analyze", "Write"]
    done = task(task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.execution_plan is not None
    assert [s.attempts for s in done.execution_plan.steps] == [1, 2, 2]


def test_a_duplicate_retry_starts_nothing_twice(pipeline: Pipeline):
    # Given a task failed at the writer, retried once
    task_id = failed_at_the_writer(pipeline)
    assert control("retry", task_id)["statusCode"] == 200
    retried = task(task_id)

    # When the same retry request comes again (a client's retry of its request)
    again = control("retry", task_id)

    # Then it is refused (the task is no longer failed), and no execution was started for it
    assert again["statusCode"] == 409
    assert answer(again)["error"] == "invalid_transition"
    # And when the retry's StartExecution itself is repeated (a Lambda retried after the store write)
    asyncio.run(get_system().executor.retry(retried, "step_003"))

    # Then the execution name <task>-retry-1 is taken: still one retry execution
    assert execution_names(pipeline) == sorted([task_id, f"{task_id}-retry-1"])
    assert pipeline.wait(f"{task_id}-retry-1")["status"] == "SUCCEEDED"
    asyncio.run(get_system().executor.retry(retried, "step_003"))  # after it ended: ExecutionAlreadyExists
    assert execution_names(pipeline) == sorted([task_id, f"{task_id}-retry-1"])
    assert event_types(task_id).count("task_retried") == 1
    assert event_types(task_id).count("task_completed") == 1


def test_the_retry_bound_is_a_409(pipeline: Pipeline):
    # Given a deployment allowing one retry, and a task that keeps failing at the writer
    pipeline.configure(MAX_TASK_RETRIES="1")
    cold_start("CreateTaskFunction")  # a container started with that setting
    task_id = failed_at_the_writer(pipeline)
    pipeline.configure(FAULTS="writer:permanent")
    assert control("retry", task_id)["statusCode"] == 200
    assert pipeline.wait(f"{task_id}-retry-1")["status"] == "SUCCEEDED"  # the task failed, handled
    assert task(task_id).status is TaskStatus.FAILED
    assert task(task_id).retries == 1

    # When it is retried once more
    response = control("retry", task_id)

    # Then it is refused, and no execution starts
    assert response["statusCode"] == 409
    assert answer(response)["error"] == "invalid_transition"
    assert "retried 1 times" in answer(response)["message"]
    assert execution_names(pipeline) == sorted([task_id, f"{task_id}-retry-1"])
    cold_start("CreateTaskFunction")  # the next test's container has the default setting


def test_a_retry_that_is_not_allowed_is_a_409(pipeline: Pipeline):
    # Given a completed task
    task_id = create()
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"

    # When it is retried, then it is refused and nothing starts
    response = control("retry", task_id)
    assert response["statusCode"] == 409
    assert execution_names(pipeline) == [task_id]


def test_a_rejected_task_retried_waits_for_approval_again_in_its_retry_execution(pipeline: Pipeline):
    # Given a task rejected at its approval gate
    task_id = create(approval=True, key="retry-after-reject")
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"  # its run ended at the gate
    assert control("reject", task_id)["statusCode"] == 200

    # When it is retried
    assert control("retry", task_id)["statusCode"] == 200

    # Then the retry execution enters at the writer and, the rejection having withdrawn nothing
    # approved, stops at the gate again, asking a person
    retry = f"{task_id}-retry-1"
    assert pipeline.wait(retry)["status"] == "SUCCEEDED"
    assert task(task_id).status is TaskStatus.AWAITING_APPROVAL
    assert json.loads(describe(pipeline, retry)["input"]) == {"task_id": task_id, "start_at": "step_003"}
    assert entered_states(pipeline, retry) == ["Route", "Write"]
    assert event_types(task_id).count("approval_requested") == 2
    # and executing it again (its create replayed with execute: true) attaches to the waiting task
    # rather than failing it for an execution's end
    assert create(approval=True, key="retry-after-reject", replay=True) == task_id
    assert task(task_id).status is TaskStatus.AWAITING_APPROVAL

    # When it is approved, then the rest of the retry runs as its continuation and writes the report
    assert control("approve", task_id)["statusCode"] == 200
    assert pipeline.wait(f"{retry}-approved")["status"] == "SUCCEEDED"
    assert task(task_id).status is TaskStatus.COMPLETED
    assert entered_states(pipeline, f"{retry}-approved") == ["Route", "Write"]
