"""Every Lambda handler, invoked in-process with every file in events/ (what `sam local invoke -e` takes).

The files describe one task: the create event's Idempotency-Key names it (uuid5 of the caller and
the key), and the Step Functions inputs carry that same id, so the files can be invoked in order
against a deployed table. Here each case brings the task to the state its event expects first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from agentic.errors import InvalidInput, PermanentAgentError, TransientAgentError
from agentic.models import TaskStatus
from agentic.service.tasks import task_id_for
from tests.functional.aws.support import (
    EVENTS,
    FUNCTIONS,
    OTHER_OWNER,
    OWNER,
    REGION,
    create_trivial_state_machine,
    http_event,
    invoke,
    load_event,
    system,
)

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

CREATE_EVENT = load_event("create_task_post.json")
TASK_ID = task_id_for("api", OWNER, CREATE_EVENT["headers"]["idempotency-key"])
DESCRIPTION = json.loads(CREATE_EVENT["body"])["description"]
STEPS = [("step_001", "retriever"), ("step_002", "analyzer"), ("step_003", "writer")]


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_").removesuffix("_function")


def event_types(task_id: str = TASK_ID) -> list[str]:
    return [e.event_type.value for e in system().store.read_events(task_id)]


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


# --- bringing the task to the state an event expects ----------------------------------------------


def created() -> str:
    task, _ = asyncio.run(system().service.create(OWNER, DESCRIPTION, idempotency_key="events-demo-1"))
    assert task.task_id == TASK_ID  # the id every Step Functions event file carries
    return task.task_id


def planned() -> str:
    task_id = created()
    system().ops.plan(task_id)
    return task_id


def after_steps(count: int) -> Callable[[], str]:
    def prepare() -> str:
        task_id = planned()
        for step_id, agent_type in STEPS[:count]:
            spec = system().ops.definition.step(step_id)
            outcome = asyncio.run(system().ops.run_step(task_id, step_id, 0, spec.retry_delay))
            assert outcome.ok, (agent_type, outcome.error)
        return task_id

    return prepare


def nothing() -> str:
    return TASK_ID


# --- the cases: one per file -----------------------------------------------------------------------


def check_create(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 201
    task = body(response)
    assert task["task_id"] == TASK_ID
    assert task["status"] == "pending"
    assert response["headers"]["location"] == f"/tasks/{TASK_ID}/status"
    # "execute": true started the execution, named by the task id, with the id as its only input
    sfn = boto3.client("stepfunctions", region_name=REGION)
    executions = sfn.list_executions(stateMachineArn=moto["state_machine_arn"])["executions"]
    assert [e["name"] for e in executions] == [TASK_ID]
    started = sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert json.loads(started["input"]) == {"task_id": TASK_ID}
    # a replay of the same request is the same task, and the start stays a no-op
    again = invoke("CreateTaskFunction", load_event("create_task_post.json"))
    assert again["statusCode"] == 200
    assert again["headers"]["idempotent-replayed"] == "true"
    assert len(sfn.list_executions(stateMachineArn=moto["state_machine_arn"])["executions"]) == 1


def check_list(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 200
    assert [t["task_id"] for t in body(response)["items"]] == [TASK_ID]


def check_status(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 200
    task = body(response)
    assert (task["task_id"], task["status"], task["user_input"]) == (TASK_ID, "pending", DESCRIPTION)
    # another IAM caller cannot see it: 404, exactly like a missing task
    other = invoke("QueryTasksFunction", http_event("query_tasks_status.json", owner=OTHER_OWNER))
    assert other["statusCode"] == 404
    assert body(other)["error"] == "task_not_found"


def check_health(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 200
    assert body(response) == {"status": "ok"}


def check_plan(response: dict[str, Any], moto: Any) -> None:
    assert response == {"task_id": TASK_ID, "status": "executing"}
    task = system().store.get(TASK_ID)
    assert task is not None
    assert task.execution_plan is not None
    assert [(s.step_id, s.agent_type) for s in task.execution_plan.steps] == STEPS
    assert event_types() == ["task_started", "plan_created"]


def check_step(index: int) -> Callable[[dict[str, Any], Any], None]:
    def check(response: dict[str, Any], moto: Any) -> None:
        step_id, _ = STEPS[index]
        assert response == {"task_id": TASK_ID, "step_id": step_id, "status": "completed"}
        last = index == len(STEPS) - 1  # the last step's invocation completes the task as well
        expected = ["step_started", "partial_output", "step_completed", *(["task_completed"] if last else [])]
        assert event_types()[-len(expected) :] == expected
        task = system().store.get(TASK_ID)
        assert task is not None
        assert task.execution_plan is not None
        assert task.execution_plan.steps[index].output
        if last:
            assert task.status is TaskStatus.COMPLETED
            assert task.final_output == task.execution_plan.steps[index].output

    return check


def check_complete(response: dict[str, Any], moto: Any) -> None:
    assert response == {"task_id": TASK_ID, "status": "completed"}
    task = system().store.get(TASK_ID)
    assert task is not None
    assert task.final_output is not None
    assert task.final_output.startswith("# Report")
    assert event_types()[-1] == "task_completed"


def check_fail(response: dict[str, Any], moto: Any) -> None:
    assert response == {"task_id": TASK_ID, "status": "failed"}
    task = system().store.get(TASK_ID)
    assert task is not None
    assert task.status is TaskStatus.FAILED
    assert task.error_message == "PermanentAgentError: injected permanent fault in writer"
    events = system().store.read_events(TASK_ID)
    assert [e.event_type.value for e in events][-2:] == ["error", "task_failed"]
    assert events[-2].data["error"] == "PermanentAgentError"


def awaiting_approval() -> str:
    """After the analyzer, the writer's function stopped the run at the gate."""
    task_id = after_steps(2)()
    system().ops.request_approval(task_id)
    return task_id


def approval_overdue() -> str:
    """Awaiting approval, its deadline passed (the gate's wait began a day and a minute ago)."""
    import time

    task_id = after_steps(2)()
    system().ops.request_approval(task_id, now=time.time() - 86460)
    return task_id


def failed_at_the_writer() -> str:
    task_id = after_steps(2)()
    system().ops.fail(task_id, "PermanentAgentError", "PermanentAgentError: injected permanent fault in writer")
    return task_id


def check_approval_timeout(response: dict[str, Any], moto: Any) -> None:
    # the approval's schedule fired: the task fails with States.Timeout
    assert response == {"task_id": TASK_ID, "status": "failed"}
    task = system().store.get(TASK_ID)
    assert task is not None
    assert task.error_message == "States.Timeout: nobody approved the task within 86400 s"
    assert event_types()[-3:] == ["approval_requested", "error", "task_failed"]
    # a repeat (Scheduler delivers at least once) changes nothing
    assert invoke("FinalizeFunction", load_event("finalize_approval_timeout.json")) == response
    assert event_types().count("task_failed") == 1


def check_dead_execution(response: dict[str, Any], moto: Any) -> None:
    # the task's current run ended without finishing it: the task fails with the execution's error
    assert response == {"task_id": TASK_ID, "status": "failed"}
    task = system().store.get(TASK_ID)
    assert task is not None
    assert task.error_message is not None
    assert task.error_message.startswith(("MarkFailedFailed: ", "States.Timeout: "))
    assert event_types()[-2:] == ["error", "task_failed"]


def check_cancel(response: dict[str, Any], moto: Any) -> None:
    # a pending task that never ran: cancelled at once (StopExecution finds no execution: nothing to stop)
    assert response["statusCode"] == 200, response["body"]
    assert body(response)["status"] == "cancelled"
    assert event_types() == ["task_cancelled"]
    cancelled = system().store.read_events(TASK_ID)[-1].data
    assert (cancelled["reason"], cancelled["by"]) == ("no longer needed", OWNER)
    # another IAM caller's cancel is a 404, like a missing task
    other = invoke("CreateTaskFunction", http_event("create_task_cancel.json", owner=OTHER_OWNER))
    assert other["statusCode"] == 404


def check_approve(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 200, response["body"]
    assert body(response)["status"] == "executing"
    assert event_types()[-2:] == ["approval_requested", "approval_granted"]
    assert system().store.read_events(TASK_ID)[-1].data["comment"] == "the analysis looks right; write the report"
    # the rest runs as a new execution entering at the gated step
    sfn = boto3.client("stepfunctions", region_name=REGION)
    executions = sfn.list_executions(stateMachineArn=moto["state_machine_arn"])["executions"]
    assert [e["name"] for e in executions] == [f"{TASK_ID}-approved"]
    started = sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert json.loads(started["input"]) == {"task_id": TASK_ID, "start_at": "step_003"}


def check_reject(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 200, response["body"]
    assert body(response)["status"] == "failed"
    assert body(response)["error_message"].startswith("ApprovalRejected: rejected by")
    assert event_types()[-4:] == ["approval_requested", "approval_rejected", "error", "task_failed"]


def check_retry(response: dict[str, Any], moto: Any) -> None:
    assert response["statusCode"] == 200, response["body"]
    assert body(response)["status"] == "executing"
    assert body(response)["retries"] == 1
    assert event_types()[-1] == "task_retried"
    # a new execution, named by the task and the retry, entering the pipeline at the failed step
    sfn = boto3.client("stepfunctions", region_name=REGION)
    executions = sfn.list_executions(stateMachineArn=moto["state_machine_arn"])["executions"]
    assert [e["name"] for e in executions] == [f"{TASK_ID}-retry-1"]
    started = sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert json.loads(started["input"]) == {"task_id": TASK_ID, "start_at": "step_003"}


CASES: dict[str, tuple[str, Callable[[], str], Callable[[dict[str, Any], Any], None]]] = {
    "create_task_post.json": ("CreateTaskFunction", nothing, check_create),
    "query_tasks_list.json": ("QueryTasksFunction", created, check_list),
    "query_tasks_status.json": ("QueryTasksFunction", created, check_status),
    "query_tasks_health.json": ("QueryTasksFunction", nothing, check_health),
    "analyzer_plan.json": ("AnalyzerFunction", created, check_plan),
    "retriever_step.json": ("RetrieverFunction", after_steps(0), check_step(0)),
    "analyzer_step.json": ("AnalyzerFunction", after_steps(1), check_step(1)),
    "writer_step.json": ("WriterFunction", after_steps(2), check_step(2)),
    "finalize_complete.json": ("FinalizeFunction", after_steps(3), check_complete),
    "finalize_fail.json": ("FinalizeFunction", planned, check_fail),
    "finalize_approval_timeout.json": ("FinalizeFunction", approval_overdue, check_approval_timeout),
    "finalize_execution_status_change.json": ("FinalizeFunction", after_steps(1), check_dead_execution),
    "finalize_execution_watchdog.json": ("FinalizeFunction", after_steps(1), check_dead_execution),
    "create_task_cancel.json": ("CreateTaskFunction", created, check_cancel),
    "create_task_approve.json": ("CreateTaskFunction", awaiting_approval, check_approve),
    "create_task_reject.json": ("CreateTaskFunction", awaiting_approval, check_reject),
    "create_task_retry.json": ("CreateTaskFunction", failed_at_the_writer, check_retry),
}


@pytest.fixture
def moto(moto_table: Any, aws_env: pytest.MonkeyPatch) -> dict[str, Any]:
    """The table, plus a state machine for the create function to start (not run: plain moto)."""
    arn = create_trivial_state_machine("pipeline")
    aws_env.setenv("STATE_MACHINE_ARN", arn)
    return {"dynamodb": moto_table, "state_machine_arn": arn}


def test_every_event_file_has_a_case_and_names_its_function():
    # events/stream_*.json go to the Web Adapter function: test_stream_function.py replays them;
    # events/s3_trigger_*.json and sqs_trigger_*.json go to the trigger functions: test_triggers.py;
    # events/knowledge_indexer_*.json to the knowledge indexer: test_knowledge_s3.py.
    files = sorted(
        p.name
        for p in EVENTS.glob("*.json")
        if not p.name.startswith(("stream_", "s3_trigger_", "sqs_trigger_", "knowledge_indexer_"))
    )
    assert files == sorted(CASES)
    for name, (function, _, _) in CASES.items():
        assert name.startswith(snake(function) + "_"), (name, function)
    triggers = {"S3TriggerFunction", "SqsTriggerFunction", "KnowledgeIndexerFunction"}
    assert {function for function, _, _ in CASES.values()} == set(FUNCTIONS) - triggers


@pytest.mark.parametrize("name", sorted(CASES))
def test_handler_with_event_file(name: str, moto: dict[str, Any]):
    function, prepare, check = CASES[name]
    prepare()
    response = invoke(function, load_event(name))
    check(response, moto)


# --- error paths ---------------------------------------------------------------------------------


def test_a_transient_failure_is_recorded_then_raised_by_its_class_name(moto, aws_env):
    aws_env.setenv("FAULTS", "retriever:transient:1")
    from agentic.aws.wiring import reset_system

    reset_system()
    after_steps(0)()
    with pytest.raises(TransientAgentError):
        invoke("RetrieverFunction", load_event("retriever_step.json"))
    events = system().store.read_events(TASK_ID)
    assert events[-1].event_type.value == "step_retrying"
    # the wait Step Functions applies before the retry, un-jittered (IntervalSeconds 1)
    assert events[-1].data["delay_seconds"] == 1.0
    assert events[-1].data["attempt"] == 2
    # the retry ($$.State.RetryCount = 1) succeeds and does not repeat the step_retrying event
    retry = {**load_event("retriever_step.json"), "attempt": 1}
    assert invoke("RetrieverFunction", retry)["status"] == "completed"
    assert event_types()[-4:] == ["step_started", "step_retrying", "partial_output", "step_completed"]


def test_an_agent_function_runs_only_its_own_steps(moto):
    after_steps(0)()
    with pytest.raises(PermanentAgentError):
        invoke("WriterFunction", load_event("retriever_step.json"))
    with pytest.raises(PermanentAgentError):
        invoke("RetrieverFunction", load_event("analyzer_plan.json"))


def test_a_malformed_step_event_is_rejected(moto):
    with pytest.raises(InvalidInput):
        invoke("RetrieverFunction", {"action": "step", "step_id": "step_001"})
    with pytest.raises(InvalidInput):
        invoke("RetrieverFunction", {**load_event("retriever_step.json"), "attempt": -1})


def test_the_read_only_function_serves_no_write_route(moto):
    event = http_event("create_task_post.json")
    response = invoke("QueryTasksFunction", event)
    assert response["statusCode"] == 405
    assert system().store.get(TASK_ID) is None


@pytest.mark.parametrize("action", ["cancel", "approve", "reject", "retry"])
def test_the_read_only_function_serves_no_control_route(moto, action):
    created()
    response = invoke("QueryTasksFunction", http_event(f"create_task_{action}.json"))
    assert response["statusCode"] in (404, 405)
    assert body(response)["error"] != "task_not_found"  # no such route, not a missing task
    task = system().store.get(TASK_ID)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    assert event_types() == []


def test_the_create_function_serves_no_read_route(moto):
    response = invoke("CreateTaskFunction", http_event("query_tasks_list.json"))
    assert response["statusCode"] == 405


def test_a_request_without_an_iam_caller_is_unauthorized(moto):
    event = http_event("query_tasks_list.json")
    del event["requestContext"]["authorizer"]
    response = invoke("QueryTasksFunction", event)
    assert response["statusCode"] == 401
    assert body(response)["error"] == "unauthorized"


def test_create_validates_its_body(moto):
    event = http_event("create_task_post.json", body=json.dumps({"description": "   "}))
    response = invoke("CreateTaskFunction", event)
    assert response["statusCode"] == 422
