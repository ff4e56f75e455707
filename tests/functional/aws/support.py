"""Helpers for the AWS wiring tests: the real handlers in-process against moto (DynamoDB, Step Functions).

- ``function_handler(name)`` imports the handler of a template function from ``functions/`` as
  Lambda does (its folder is the code root), and ``invoke`` calls it with a Lambda context.
- ``fake_invoke_lambda`` replaces moto's Lambda invocation (which needs Docker) with the real
  handler of the function, in-process; an exception becomes a Lambda error payload.
- ``Pipeline`` drives the state machine the ``pipeline`` fixture (conftest.py) set up.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from moto.awslambda.models import LambdaFunction

from agentic.aws.wiring import AwsSystem, get_system, reset_system

ROOT = Path(__file__).resolve().parents[3]
EVENTS = ROOT / "events"
ASL = ROOT / "statemachine" / "pipeline.asl.json"
TABLE_NAME = "agentic-aws-test"
REGION = "us-east-1"
ACCOUNT = "123456789012"
OWNER = "arn:aws:iam::123456789012:user/alice"
OTHER_OWNER = "arn:aws:iam::123456789012:user/bob"

#: template.yaml's function -> (file under functions/, handler attribute), as Lambda imports them.
FUNCTIONS: dict[str, tuple[str, str]] = {
    "CreateTaskFunction": ("api/app.py", "create_handler"),
    "QueryTasksFunction": ("api/app.py", "query_handler"),
    "RetrieverFunction": ("agents/retriever.py", "handler"),
    "AnalyzerFunction": ("agents/analyzer.py", "handler"),
    "WriterFunction": ("agents/writer.py", "handler"),
    "FinalizeFunction": ("finalize/handler.py", "handler"),
    "S3TriggerFunction": ("triggers/s3_handler.py", "handler"),
    "SqsTriggerFunction": ("triggers/sqs_handler.py", "handler"),
    "KnowledgeIndexerFunction": ("knowledge/indexer.py", "handler"),
}
#: The ASL's DefinitionSubstitutions -> the function each one names.
SUBSTITUTIONS = {
    "AnalyzerFunctionArn": "AnalyzerFunction",
    "RetrieverFunctionArn": "RetrieverFunction",
    "WriterFunctionArn": "WriterFunction",
    "FinalizeFunctionArn": "FinalizeFunction",
}


# --- loading handlers as Lambda does ---------------------------------------------------------------


def load_module(relative: str) -> Any:
    """Import ``functions/<relative>`` under a private module name (the files are not a package)."""
    name = "lambda_fn_" + re.sub(r"\W", "_", relative.removesuffix(".py"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cold_start(function: str) -> None:
    """The next invocation of ``function`` runs in a new Lambda container: its module is imported
    again, so its app and system are built afresh from the environment of that moment.

    The API functions build their app on the first request and keep it (as a warm container
    does), so a test that changes their settings (e.g. MAX_TASK_RETRIES) starts them cold.
    """
    relative, _ = FUNCTIONS[function]
    sys.modules.pop("lambda_fn_" + re.sub(r"\W", "_", relative.removesuffix(".py")), None)


def function_handler(function: str) -> Callable[[dict[str, Any], Any], Any]:
    relative, attribute = FUNCTIONS[function]
    handler: Callable[[dict[str, Any], Any], Any] = getattr(load_module(relative), attribute)
    return handler


@dataclass
class FakeLambdaContext:
    """What Powertools reads from the Lambda context."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    function_version: str = "$LATEST"
    invoked_function_arn: str = field(default="")

    def __post_init__(self) -> None:
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


#: One Lambda invocation at a time in this process. A Lambda instance handles one request at a time,
#: and moto's DynamoDB is not thread-safe (``transact_write_items`` deep-copies a table that another
#: execution's thread may be writing: "dictionary changed size during iteration"), so the handlers
#: that moto's Step Functions threads and the test itself invoke run one after the other.
#: Re-entrant: a handler that starts an execution returns before that execution invokes anything.
INVOCATION_LOCK = threading.RLock()


def invoke(function: str, event: dict[str, Any]) -> Any:
    with INVOCATION_LOCK:
        return function_handler(function)(event, FakeLambdaContext(function))


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def http_event(name: str, *, owner: str | None = None, task_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """An events/ file, with another caller, another task in the path, or other top-level fields."""
    event = load_event(name)
    if owner is not None:
        event["requestContext"]["authorizer"]["iam"]["userArn"] = owner
    if task_id is not None:
        old = event["pathParameters"]["task_id"]
        event["pathParameters"]["task_id"] = task_id
        event["rawPath"] = event["rawPath"].replace(old, task_id)
        event["requestContext"]["http"]["path"] = event["rawPath"]
    event.update(changes)
    return event


# --- the state machine on moto ----------------------------------------------------------------------


def fake_invoke_lambda(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
    """Run the real handler of this function in-process; an exception becomes a Lambda error.

    Invocations are serialised (``INVOCATION_LOCK``), as one Lambda instance would run them.
    """
    try:
        result = invoke(self.function_name, event)
    except Exception as exc:
        payload = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_exception(exc),
        }
        return json.dumps(payload), True, ""
    return json.dumps(result), False, ""


#: The template's WorkflowType values; the ``pipeline`` fixture runs each test under both.
WORKFLOW_TYPES = ("STANDARD", "EXPRESS")


@dataclass
class Pipeline:
    sfn: Any
    state_machine_arn: str
    retry_sleeps: list[float]
    monkeypatch: pytest.MonkeyPatch
    workflow_type: str = "STANDARD"

    @property
    def express(self) -> bool:
        return self.workflow_type == "EXPRESS"

    def configure(self, **env: str) -> None:
        """Change the functions' environment (e.g. FAULTS) and forget the cached system."""
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        reset_system()

    def execution_arn(self, task_id: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{task_id}"

    def wait(self, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """describe_execution once the execution is no longer RUNNING."""
        return self.wait_arn(self.execution_arn(task_id), timeout)

    def wait_arn(self, arn: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            description: dict[str, Any] = self.sfn.describe_execution(executionArn=arn)
            if description["status"] != "RUNNING":
                return description
            time.sleep(0.02)
        raise TimeoutError(f"execution {arn} still running after {timeout} s")

    def history(self, task_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.sfn.get_execution_history(executionArn=self.execution_arn(task_id))[
            "events"
        ]
        return events


def create_role() -> str:
    import boto3

    return str(
        boto3.client("iam", region_name=REGION).create_role(
            RoleName="agentic-test-role",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
    )


@contextmanager
def moto_pipeline(
    monkeypatch: pytest.MonkeyPatch,
    workflow_type: str = "STANDARD",
    invoke_lambda: Callable[..., tuple[str, bool, str]] | None = None,
) -> Iterator[Pipeline]:
    """moto (mock_aws) running the real state machine as ``workflow_type``, each Lambda ARN backed by
    the real handler in-process (``invoke_lambda``, ``fake_invoke_lambda`` by default); the functions'
    environment names the state machine, the workflow type and the approval scheduler's target."""
    import logging
    from unittest import mock

    import boto3
    from moto import mock_aws

    from agentic.adapters.dynamodb_store import create_table

    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
    sleeps: list[float] = []
    no_sleep = mock.Mock(sleep=sleeps.append)  # Retry waits are recorded, not slept
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        mock.patch.object(LambdaFunction, "_invoke_lambda", invoke_lambda or fake_invoke_lambda),
        mock.patch("moto.stepfunctions.parser.asl.component.common.retry.retrier_decl.time", no_sleep),
    ):
        create_table(boto3.client("dynamodb", region_name=REGION), TABLE_NAME)
        role = create_role()
        lambda_client = boto3.client("lambda", region_name=REGION)
        arns = {}
        for function, (relative, attribute) in FUNCTIONS.items():
            module = Path(relative).stem
            arns[function] = lambda_client.create_function(
                FunctionName=function,
                Runtime="python3.13",
                Role=role,
                Handler=f"{module}.{attribute}",
                Code={"ZipFile": placeholder_zip(module)},
            )["FunctionArn"]
        definition = re.sub(r"\$\{(\w+)\}", lambda m: arns[SUBSTITUTIONS[m.group(1)]], ASL.read_text(encoding="utf-8"))
        sfn = boto3.client("stepfunctions", region_name=REGION)
        state_machine_arn = sfn.create_state_machine(
            name="pipeline", definition=definition, roleArn=role, type=workflow_type
        )["stateMachineArn"]
        monkeypatch.setenv("STATE_MACHINE_ARN", state_machine_arn)
        monkeypatch.setenv("WORKFLOW_TYPE", workflow_type)
        monkeypatch.setenv("APPROVAL_TIMEOUT_TARGET_ARN", arns["FinalizeFunction"])
        monkeypatch.setenv("SCHEDULER_ROLE_ARN", role)
        reset_system()
        for function in FUNCTIONS:  # the API functions keep their app: start them in this environment
            cold_start(function)
        running = Pipeline(sfn, state_machine_arn, sleeps, monkeypatch, workflow_type)
        try:
            yield running
        finally:
            # Never leave moto's scope with an execution thread still calling boto3.
            for execution in sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]:
                if execution["status"] == "RUNNING":
                    running.wait_arn(execution["executionArn"])


def placeholder_zip(module: str) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{module}.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def system() -> AwsSystem:
    return get_system()


def create_trivial_state_machine(name: str) -> str:
    """A one-state machine in moto, for tests that start executions without running the pipeline."""
    import boto3

    return boto3.client("stepfunctions", region_name=REGION).create_state_machine(
        name=name,
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn="arn:aws:iam::123456789012:role/agentic-test-role",
    )["stateMachineArn"]
