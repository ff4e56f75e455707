"""What moto alone cannot show about the AWS path (issue 8, runtime behaviour) and the test debts of issue 7.

- A Plan attempt overtaken by its own retry still succeeds (item 1).
- A committed write whose response is lost is not failed by the SDK's retry (item 2).
- Throttling and write conflicts leave the functions as ``RetryableStoreError``, which the real ASL
  retries (item 3).
- Executing a task whose execution died fails the task instead of waiting for ever (item 4).
- A stale attempt's start is refused; a permanent failure in Retrieve or Analyze fails the task.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError

from agentic.adapters.dynamodb_codec import KEY_SET_MAX
from agentic.adapters.dynamodb_store import DynamoDBTaskStore
from agentic.adapters.dynamodb_writes import request_token as _request_token
from agentic.agents.analyzer import AnalyzerAgent
from agentic.aws.wiring import get_system
from agentic.errors import RetryableStoreError, WriteConflict
from agentic.models import EventType, NewEvent, StepStatus, TaskStatus
from tests.functional.aws.support import (
    OWNER,
    REGION,
    TABLE_NAME,
    Pipeline,
    create_trivial_state_machine,
    http_event,
    invoke,
)
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


def new_task(description: str = "Explain idempotent retries") -> str:
    task, _ = asyncio.run(get_system().service.create(OWNER, description))
    return task.task_id


def event_types(task_id: str) -> list[str]:
    return [e.event_type.value for e in get_system().store.read_events(task_id)]


def run_task(pipeline: Pipeline, description: str = "Explain how retries recover") -> tuple[str, dict[str, Any]]:
    event = http_event("create_task_post.json", body=json.dumps({"description": description, "execute": True}))
    del event["headers"]["idempotency-key"]
    response = invoke("CreateTaskFunction", event)
    assert response["statusCode"] == 201, response["body"]
    task_id: str = json.loads(response["body"])["task_id"]
    return task_id, pipeline.wait(task_id)


# --- item 1: Plan is idempotent under its own retry ---------------------------------------------------


@pytest.mark.parametrize("overtaken_at", ["analyze", "start"])
def test_a_plan_attempt_overtaken_by_its_retry_still_succeeds(moto_table, overtaken_at):
    # Given a Plan attempt that passed TimeoutSeconds: while it still runs, the retry plans the task
    task_id = new_task()
    ops = get_system().ops
    analyzer = ops.registry.get("analyzer")
    assert isinstance(analyzer, AnalyzerAgent)
    real_analyze = analyzer.analyze
    retried: list[str] = []

    def run_the_retry_once() -> None:
        if not retried:  # the first attempt is "slow": its retry runs to the end meanwhile
            retried.append("running")
            retried[0] = ops.plan(task_id).status.value

    def slow_analyze(*args: Any, **kwargs: Any) -> Any:
        run_the_retry_once()
        return real_analyze(*args, **kwargs)

    def retry_first(*args: Any, **kwargs: Any) -> Any:
        run_the_retry_once()
        return real_update(*args, **kwargs)

    store = ops.store
    real_update = store.update
    if overtaken_at == "analyze":
        patch = mock.patch.object(analyzer, "analyze", side_effect=slow_analyze)
    else:  # the retry even wins the pending -> analyzing transition
        patch = mock.patch.object(store, "update", side_effect=retry_first)
    # When the first attempt finishes second
    with patch:
        task = ops.plan(task_id)
    # Then both attempts succeed with the one plan, and the log has each event once
    assert retried == ["executing"]
    assert task.status is TaskStatus.EXECUTING
    assert task.execution_plan is not None
    assert event_types(task_id) == ["task_started", "plan_created"]


# --- item 2: a lost response of a committed transaction ---------------------------------------------


class LostResponses:
    """DynamoDB's ClientRequestToken, in front of moto (which ignores it).

    The first ``operation`` request is applied, then its response is "lost" (a read timeout), so the
    SDK retries the same request. A request whose token was applied before is answered as DynamoDB
    does for 10 minutes: success, without applying it again (an UpdateItem has no token: its retry
    meets the condition the first call changed).
    """

    def __init__(self, client: Any, operation: str = "TransactWriteItems") -> None:
        self.client = client
        self.applied: set[str] = set()
        self.lost = 0
        self.requests: list[dict[str, Any]] = []
        client.meta.events.register(f"before-send.dynamodb.{operation}", self.before_send)

    def before_send(self, request: Any, **kwargs: Any) -> Any:
        body = json.loads(request.body)
        self.requests.append(body)
        token = body.get("ClientRequestToken")
        if token is not None and token in self.applied:
            return AWSResponse(request.url, 200, {}, _RawBody(b"{}"))
        if self.lost == 0:
            from moto.core.models import botocore_stubber

            response = botocore_stubber(request=request, event_name=kwargs["event_name"])
            assert response is not None
            assert response.status_code == 200, response.content
            if token is not None:
                self.applied.add(token)
            self.lost += 1
            raise ReadTimeoutError(endpoint_url=request.url)
        return None  # moto answers


class _RawBody:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data

    def read(self, *_: Any, **__: Any) -> bytes:
        return self.data


def test_a_committed_write_whose_response_is_lost_is_not_failed_by_the_retry(moto_table):
    # Given a pending task, and a network that loses the response of the first write of the task item
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoDBTaskStore(TABLE_NAME, client)
    task_id = new_task()
    lost = LostResponses(client, "UpdateItem")
    started = NewEvent(task_id=task_id, event_type=EventType.TASK_STARTED, key="task:task_started")
    # When the task starts (a state change and its event, one UpdateItem)
    task = store.update(task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[started])
    # Then the SDK's retry fails its condition (the first call applied it), and the store, finding its
    # own write on a fresh read, reports success: applied once, not an invalid transition
    assert lost.lost == 1
    assert len(lost.requests) == 2
    assert task.status is TaskStatus.ANALYZING
    assert [e.event_type for e in store.read_events(task_id)] == [EventType.TASK_STARTED]
    assert store.get(task_id) == task


def test_an_appended_event_whose_response_is_lost_is_written_once(moto_table):
    # Given a task, and a network that loses the response of the first write of the task item
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoDBTaskStore(TABLE_NAME, client)
    task_id = new_task()
    lost = LostResponses(client, "UpdateItem")
    # When an event without a key (nothing but the write id tells a replay) is appended on its own
    written = store.append_event(NewEvent(task_id=task_id, event_type=EventType.STEP_STARTED))
    # Then the store, finding its own write on the fresh read after the retry's refusal, reports it
    # written, and the log holds it once
    assert lost.lost == 1
    assert written is not None
    assert written.cursor == 1
    assert [(e.cursor, e.event_type) for e in store.read_events(task_id)] == [(1, EventType.STEP_STARTED)]


def test_a_committed_transaction_whose_response_is_lost_is_not_failed_by_the_retry(moto_table):
    # Given a task whose key set is full, so that a keyed event is a transaction with its KEY# item,
    # and a network that loses the response of that transaction
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoDBTaskStore(TABLE_NAME, client)
    task_id = new_task()
    for n in range(KEY_SET_MAX):
        store.append_event(NewEvent(task_id=task_id, event_type=EventType.PARTIAL_OUTPUT, key=f"k{n}"))
    lost = LostResponses(client)
    started = NewEvent(task_id=task_id, event_type=EventType.TASK_STARTED, key="task:task_started")
    # When the task starts (a state change, its event and its key item: one transaction)
    task = store.update(task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[started])
    # Then the SDK's retry of the committed write succeeds: same token, applied once
    assert lost.lost == 1
    assert len(lost.requests) == 2
    assert lost.requests[0]["ClientRequestToken"] == lost.requests[1]["ClientRequestToken"]
    # and the token is the store's own, derived from the write (botocore would otherwise put a random
    # one per call: enough for its own retries, not for a write the store or a step sends again)
    assert lost.requests[0]["ClientRequestToken"] == _request_token(task_id, lost.requests[0]["TransactItems"])
    assert task.status is TaskStatus.ANALYZING
    assert [e.event_type for e in store.read_events(task_id)][-1:] == [EventType.TASK_STARTED]


def test_the_token_differs_for_any_other_write(moto_table):
    client = boto3.client("dynamodb", region_name=REGION)
    store = DynamoDBTaskStore(TABLE_NAME, client)
    task_id = new_task()
    seen: list[str] = []
    client.meta.events.register(
        "before-send.dynamodb.TransactWriteItems",
        lambda request, **_: seen.append(json.loads(request.body)["ClientRequestToken"]),
    )
    # (keyed events past the task item's key set are the writes that are transactions)
    for n in range(KEY_SET_MAX + 3):
        store.append_event(NewEvent(task_id=task_id, event_type=EventType.PARTIAL_OUTPUT, key=f"k{n}", data={"n": n}))
    assert len(seen) == len(set(seen)) == 3
    assert all(len(token) <= 36 for token in seen)  # DynamoDB's limit


# --- item 3: store errors that are safe to retry ------------------------------------------------------


def test_throttling_in_a_step_is_retried_by_the_state_machine(pipeline):
    # Given a table that throttles the first write of the retriever's step
    store = get_system().store
    assert isinstance(store, DynamoDBTaskStore)
    real = store.client.update_item
    throttled: list[str] = []

    def update(**kwargs: Any) -> Any:
        log = kwargs.get("ExpressionAttributeValues", {}).get(":log")  # the events written, deflated
        entries = zlib.decompress(log["B"]).decode() if log is not None else ""
        if not throttled and "step_001" in entries and "step_started" in entries:
            throttled.append("step_001")
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                "UpdateItem",
            )
        return real(**kwargs)

    # When a task runs
    with mock.patch.object(store.client, "update_item", side_effect=update):
        task_id, execution = run_task(pipeline)
    # Then the state machine retried the step under the one retryable name, and the task completed
    assert throttled == ["step_001"]
    assert execution["status"] == "SUCCEEDED"
    failed = [e for e in pipeline.history(task_id) if e["type"] == "LambdaFunctionFailed"]
    assert [e["lambdaFunctionFailedEventDetails"]["error"] for e in failed] == ["RetryableStoreError"]
    assert get_system().store.get(task_id).status is TaskStatus.COMPLETED


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "x"}}, "GetItem"),
        ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "GetItem"),
        WriteConflict("task t kept changing while it was updated; try again"),
    ],
    ids=["throttling", "internal-error", "write-conflict"],
)
def test_store_errors_safe_to_retry_leave_the_functions_as_one_name(moto_table, error):
    task_id = new_task()
    store = get_system().store
    with (
        mock.patch.object(type(store), "get", side_effect=error)
        if isinstance(error, WriteConflict)
        else (
            mock.patch.object(store.client, "get_item", side_effect=error)  # type: ignore[attr-defined]
        )
    ):
        with pytest.raises(RetryableStoreError):
            invoke("AnalyzerFunction", {"action": "plan", "task_id": task_id})
        with pytest.raises(RetryableStoreError):
            invoke("FinalizeFunction", {"action": "complete", "task_id": task_id})


def test_other_aws_errors_are_not_renamed(moto_table):
    task_id = new_task()
    store = get_system().store
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetItem")
    with mock.patch.object(store.client, "get_item", side_effect=denied), pytest.raises(ClientError):  # type: ignore[attr-defined]
        invoke("AnalyzerFunction", {"action": "plan", "task_id": task_id})


# --- item 4: a task whose execution died ----------------------------------------------------------------


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.EXECUTING])
def test_executing_a_task_whose_execution_died_fails_it(moto_table, aws_env, status):
    # Given a task whose execution ended without recording the task's end (MarkFailedFailed)
    machine = create_trivial_state_machine("dead")
    aws_env.setenv("STATE_MACHINE_ARN", machine)
    from agentic.aws.wiring import reset_system

    reset_system()
    system = get_system()
    task_id = new_task()
    if status is TaskStatus.EXECUTING:
        system.ops.plan(task_id)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    sfn.start_execution(stateMachineArn=machine, name=task_id, input=json.dumps({"task_id": task_id}))
    ended = {
        "status": "FAILED",
        "error": "MarkFailedFailed",
        "cause": "The task could not be marked failed after retries",
    }
    # When the owner executes it again
    with mock.patch.object(
        system.executor.client,  # type: ignore[attr-defined]
        "describe_execution",
        return_value={"executionArn": "x", "status": "FAILED", **{k: v for k, v in ended.items() if k != "status"}},
    ):
        task = asyncio.run(system.service.execute(OWNER, task_id))
    # Then the task is failed with the execution's error: an error and a task_failed event
    assert task.status is TaskStatus.FAILED
    assert task.error_message is not None
    assert task.error_message.startswith("MarkFailedFailed: the task's execution ended (FAILED)")
    types = event_types(task_id)
    assert types[-2:] == ["error", "task_failed"]
    error = get_system().store.read_events(task_id)[-2]
    assert error.data["error"] == "MarkFailedFailed"
    # and executing it once more attaches to the failed task, writing nothing more
    assert asyncio.run(system.service.execute(OWNER, task_id)).status is TaskStatus.FAILED
    assert event_types(task_id) == types


def test_executing_a_task_whose_execution_still_runs_attaches(pipeline):
    task_id, execution = run_task(pipeline)
    assert execution["status"] == "SUCCEEDED"
    system = get_system()
    with mock.patch.object(system.executor.client, "describe_execution", return_value={"status": "RUNNING"}):  # type: ignore[attr-defined]
        task = asyncio.run(system.service.execute(OWNER, task_id))
    assert task.status is TaskStatus.COMPLETED
    assert event_types(task_id) == SEED_SEQUENCE


# --- issue 7 debt: a stale attempt's start --------------------------------------------------------------


def test_a_stale_attempt_cannot_start_a_step_a_newer_attempt_owns(moto_table, aws_env):
    # Given the retriever's step, whose attempts 0 and 1 failed (the step waits for attempt 2)
    aws_env.setenv("FAULTS", "retriever:transient:2")
    from agentic.aws.wiring import reset_system

    reset_system()
    ops = get_system().ops
    task_id = new_task()
    ops.plan(task_id)

    def retry_delay(name: str, attempt: int) -> float | None:
        return 1.0

    for attempt in (0, 1):
        assert asyncio.run(ops.run_step(task_id, "step_001", attempt, retry_delay, None)).error is not None
    before = get_system().store.get(task_id)
    assert before is not None
    assert before.execution_plan is not None
    assert before.execution_plan.steps[0].attempts == 2
    events_before = event_types(task_id)
    # When the overtaken attempt 0 starts late (Step Functions timed it out, Lambda still ran it)
    stale = asyncio.run(ops.run_step(task_id, "step_001", 0, retry_delay, None))
    # Then its start is refused: the step keeps the newer attempt's state and no event is written
    after = get_system().store.get(task_id)
    assert after is not None
    assert after.execution_plan == before.execution_plan
    assert stale.error is None
    assert event_types(task_id) == events_before


def test_a_stale_start_is_refused_while_the_newer_attempt_runs(moto_table):
    # Given a step whose attempt 2 has started (running)
    ops = get_system().ops
    task_id = new_task()
    ops.plan(task_id)
    store = get_system().store
    store.update(
        task_id,
        {TaskStatus.EXECUTING},
        mutate=ops._step_change(0, 2, starting=True, status=StepStatus.RUNNING),
    )
    # When attempt 1 tries to start it / Then the store refuses the write
    from agentic.errors import InvalidTransition

    with pytest.raises(InvalidTransition, match="overtaken"):
        store.update(
            task_id,
            {TaskStatus.EXECUTING},
            mutate=ops._step_change(0, 1, starting=True, status=StepStatus.RUNNING),
        )
    task = store.get(task_id)
    assert task is not None
    assert task.execution_plan is not None
    assert task.execution_plan.steps[0].attempts == 3


# --- issue 7 debt: a permanent failure in Retrieve and in Analyze ---------------------------------------


@pytest.mark.parametrize(("agent", "step_id", "done"), [("retriever", "step_001", 0), ("analyzer", "step_002", 1)])
def test_a_permanent_failure_in_an_early_state_is_caught_and_fails_the_task(pipeline, agent, step_id, done):
    pipeline.configure(FAULTS=f"{agent}:permanent")
    task_id, execution = run_task(pipeline)

    assert execution["status"] == "SUCCEEDED"  # the task's failure is handled, not an execution fault
    history = [e["type"] for e in pipeline.history(task_id)]
    assert history.count("LambdaFunctionFailed") == 1  # not retried
    task = get_system().store.get(task_id)
    assert task is not None
    assert task.status is TaskStatus.FAILED
    assert task.error_message == f"PermanentAgentError: injected permanent fault in {agent}"
    assert task.execution_plan is not None
    assert [s.status for s in task.execution_plan.steps] == [StepStatus.COMPLETED] * done + [StepStatus.FAILED] + [
        StepStatus.PENDING
    ] * (2 - done)
    types = event_types(task_id)
    assert types == [*SEED_SEQUENCE[: 2 + 3 * done], "step_started", "error", "task_failed"]
    error = get_system().store.read_events(task_id)[-2]
    assert (error.data["error"], error.data["step_id"]) == ("PermanentAgentError", step_id)


# --- the harness: one invocation at a time ---------------------------------------------------------------


def test_in_process_lambda_invocations_hold_the_invocation_lock(pipeline):
    """moto's DynamoDB is not thread-safe: every handler the executions' threads run holds the lock."""
    from tests.functional.aws import support

    held: list[bool] = []
    real = support.function_handler

    def checking_handler(function: str) -> Any:
        handler = real(function)

        def run(event: dict[str, Any], context: Any) -> Any:
            held.append(support.INVOCATION_LOCK._is_owned())  # type: ignore[attr-defined]
            return handler(event, context)

        return run

    with mock.patch.object(support, "function_handler", checking_handler):
        _, execution = run_task(pipeline)
    assert execution["status"] == "SUCCEEDED"
    assert len(held) >= 5  # create, plan, three steps (the last completes the task)
    assert all(held)


def test_the_stream_of_a_task_whose_execution_died_ends_with_the_failure(moto_table, aws_env):
    """Before: execute was a no-op (ExecutionAlreadyExists) and the stream waited until its time limit."""
    import httpx

    from agentic.aws.wiring import reset_system
    from tests.functional.aws.stream_support import identity_headers, stream_app

    machine = create_trivial_state_machine("dead-stream")
    aws_env.setenv("STATE_MACHINE_ARN", machine)
    aws_env.setenv("STREAM_MAX_SECONDS", "5")
    reset_system()
    system = get_system()
    task_id = new_task()
    system.ops.plan(task_id)  # the execution got as far as planning, then died
    boto3.client("stepfunctions", region_name=REGION).start_execution(
        stateMachineArn=machine, name=task_id, input=json.dumps({"task_id": task_id})
    )
    aborted = {"status": "ABORTED"}

    async def execute() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=stream_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
            response = await client.post(f"/tasks/{task_id}/execute", headers=identity_headers())
            assert response.status_code == 200, response.text
            return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    with mock.patch.object(system.executor.client, "describe_execution", return_value=aborted):  # type: ignore[attr-defined]
        lines = asyncio.run(execute())
    assert [line["event_type"] for line in lines] == ["task_started", "plan_created", "error", "task_failed"]
    assert lines[-2]["data"]["error"] == "ExecutionAborted"
    assert get_system().store.get(task_id).status is TaskStatus.FAILED
