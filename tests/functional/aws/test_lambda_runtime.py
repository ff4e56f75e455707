"""What every Lambda gets from the AWS wiring: cold-start discipline, Powertools, the executor."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from agentic.adapters.sfn_executor import ExecutorNotConfigured, StepFunctionsExecutor, UnconfiguredExecutor
from agentic.aws import powertools
from agentic.aws.pipeline_handlers import describe_caught_error
from agentic.aws.wiring import ConfigurationError, get_system, reset_system
from agentic.errors import Backpressure
from agentic.observability import logger
from tests.functional.aws.support import (
    FUNCTIONS,
    REGION,
    ROOT,
    FakeLambdaContext,
    create_trivial_state_machine,
    invoke,
    load_event,
)

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# --- cold start -------------------------------------------------------------------------------------


def test_importing_the_handlers_builds_no_client_and_no_system(aws_env):
    with (
        mock.patch.object(boto3, "client", side_effect=AssertionError("a boto3 client at import time")),
        mock.patch.object(boto3.session.Session, "client", side_effect=AssertionError("a client at import")),
    ):
        for index, (relative, attribute) in enumerate(sorted(set(FUNCTIONS.values()))):
            spec = importlib.util.spec_from_file_location(f"cold_start_{index}", ROOT / "functions" / relative)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert callable(getattr(module, attribute))
    assert get_system.cache_info().currsize == 0


def test_the_system_creates_its_clients_on_first_use(moto_table):
    system = get_system()
    assert system.store._client is None  # type: ignore[attr-defined]
    assert system.store.get("nope") is None
    assert system.store._client is not None  # type: ignore[attr-defined]


def test_the_aws_wiring_refuses_another_store(aws_env):
    aws_env.setenv("STORE", "sqlite")
    reset_system()
    with pytest.raises(ConfigurationError):
        get_system()


# --- Powertools ---------------------------------------------------------------------------------------


def test_no_tracer_is_created_unless_tracing_is_enabled(moto_table):
    powertools.get_tracer.cache_clear()
    with mock.patch("aws_lambda_powertools.Tracer") as tracer_class:
        handler = powertools.instrumented(lambda event, context: {"ok": True})
        assert handler({"task_id": "t-1"}, FakeLambdaContext("RetrieverFunction")) == {"ok": True}
        tracer_class.assert_not_called()
    powertools.get_tracer.cache_clear()


def test_the_tracer_is_created_once_on_first_invocation_when_enabled(moto_table, aws_env):
    aws_env.setenv("TRACING_ENABLED", "true")
    reset_system()
    powertools.get_tracer.cache_clear()
    try:
        with mock.patch("aws_lambda_powertools.Tracer") as tracer_class:
            tracer = tracer_class.return_value
            tracer.capture_lambda_handler.side_effect = lambda fn, **_: fn

            def work(event: dict[str, Any], context: Any) -> str:
                powertools.annotate("task_id", event["task_id"])
                return "done"

            handler = powertools.instrumented(work)
            tracer_class.assert_not_called()  # not at import / decoration time
            for _ in range(2):
                assert handler({"task_id": "t-1"}, FakeLambdaContext("RetrieverFunction")) == "done"
            tracer_class.assert_called_once_with()
            tracer.capture_lambda_handler.assert_called_once()
            tracer.put_annotation.assert_called_with(key="task_id", value="t-1")
    finally:
        powertools.get_tracer.cache_clear()


def test_logs_carry_the_task_id_as_correlation_id_and_metrics_reach_emf(moto_table, aws_env, capsys):
    aws_env.setenv("FAULTS", "retriever:transient:1")
    reset_system()
    task, _ = asyncio.run(get_system().service.create("arn:aws:iam::123456789012:user/alice", "Explain retries"))
    invoke("AnalyzerFunction", {"action": "plan", "task_id": task.task_id})
    step = {"action": "step", "task_id": task.task_id, "step_id": "step_001", "agent_type": "retriever"}
    log_stream = io.StringIO()
    previous = logger.registered_handler.setStream(log_stream)  # type: ignore[attr-defined]
    try:
        with pytest.raises(Exception, match="injected transient fault"):
            invoke("RetrieverFunction", {**step, "attempt": 0})
        invoke("RetrieverFunction", {**step, "attempt": 1})
    finally:
        logger.registered_handler.setStream(previous)  # type: ignore[attr-defined]
    lines = json_lines(log_stream.getvalue() + capsys.readouterr().out)

    retry_logs = [line for line in lines if line.get("message") == "step will be retried"]
    assert retry_logs
    assert retry_logs[0]["correlation_id"] == task.task_id
    assert retry_logs[0]["function_name"] == "RetrieverFunction"  # the Lambda context is injected
    metrics = {
        metric["Name"]: line
        for line in lines
        if "_aws" in line
        for directive in line["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert "StepRetries" in metrics
    assert metrics["StepRetries"]["StepRetries"] in (1.0, [1.0])
    assert "StepLatency" in metrics
    assert metrics["StepRetries"]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AgenticTests"


# --- errors caught by the state machine ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"Error": "PermanentAgentError", "Cause": json.dumps({"errorType": "X", "errorMessage": "bad input"})},
            ("PermanentAgentError", "PermanentAgentError: bad input"),
        ),
        ({"Error": "States.Timeout", "Cause": ""}, ("States.Timeout", "States.Timeout: the step did not finish")),
        ({"Error": "Lambda.Unknown", "Cause": "not json"}, ("Lambda.Unknown", "Lambda.Unknown: not json")),
        ({"Error": "Custom"}, ("Custom", "Custom")),
        (None, ("Error", "the pipeline failed")),
    ],
)
def test_describe_caught_error(error, expected):
    name, message = describe_caught_error(error)
    assert name == expected[0]
    assert message.startswith(expected[1])


def test_fail_event_of_the_file_is_parsed_like_the_local_runner_records_it():
    error = load_event("finalize_fail.json")["error"]
    assert describe_caught_error(error) == (
        "PermanentAgentError",
        "PermanentAgentError: injected permanent fault in writer",
    )


# --- the Step Functions executor ----------------------------------------------------------------------


def test_start_is_idempotent_by_execution_name():
    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name=REGION)
        arn = create_trivial_state_machine("m")
        executor = StepFunctionsExecutor(arn)
        assert executor._client is None  # no client until the first start
        asyncio.run(executor.start("task-1"))
        asyncio.run(executor.start("task-1"))  # running, same input: the same execution
        execution_arn = sfn.list_executions(stateMachineArn=arn)["executions"][0]["executionArn"]
        sfn.stop_execution(executionArn=execution_arn)
        assert executor.start_sync("task-1") is None  # finished: ExecutionAlreadyExists, a no-op
        assert [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]] == ["task-1"]
        started = sfn.describe_execution(executionArn=execution_arn)
        assert json.loads(started["input"]) == {"task_id": "task-1"}


def _client_raising(code: str) -> Any:
    client = mock.Mock()
    client.start_execution.side_effect = ClientError({"Error": {"Code": code, "Message": code}}, "StartExecution")
    return client


@pytest.mark.parametrize("code", ["ExecutionLimitExceeded", "ThrottlingException"])
def test_a_refused_start_is_backpressure(code):
    executor = StepFunctionsExecutor("arn:sm", _client_raising(code), retry_after_seconds=3)
    with pytest.raises(Backpressure) as caught:
        asyncio.run(executor.start("task-1"))
    assert caught.value.retry_after_seconds == 3


def test_other_start_errors_propagate():
    executor = StepFunctionsExecutor("arn:sm", _client_raising("StateMachineDoesNotExist"))
    with pytest.raises(ClientError):
        asyncio.run(executor.start("task-1"))


def test_a_function_without_a_state_machine_cannot_start_tasks(moto_table):
    assert isinstance(get_system().executor, UnconfiguredExecutor)
    with pytest.raises(ExecutorNotConfigured):
        asyncio.run(get_system().executor.start("task-1"))
