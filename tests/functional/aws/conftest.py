"""Fixtures for the AWS wiring: the real handlers in-process against moto (DynamoDB, Step Functions).

- ``aws_env`` sets the environment a deployed function gets (tests/conftest.py already set fake
  credentials) and resets the cached settings and system around each test.
- ``moto_table`` is a moto DynamoDB table built by ``create_table`` (the production schema).
- ``pipeline`` runs the real ``statemachine/pipeline.asl.json`` in moto's Step Functions
  interpreter; each Lambda invocation runs the real handler of that function in-process.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.awslambda.models import LambdaFunction

from agentic.adapters.dynamodb_store import create_table
from agentic.aws.wiring import reset_system
from tests.fake_bedrock import FakeBedrock
from tests.functional.aws.support import (
    ASL,
    FUNCTIONS,
    REGION,
    SUBSTITUTIONS,
    TABLE_NAME,
    Pipeline,
    fake_invoke_lambda,
    placeholder_zip,
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A deployed function's environment (minus the state machine, which tests add)."""
    for name, value in {
        "STORE": "dynamodb",
        "TABLE_NAME": TABLE_NAME,
        "AGENT_LATENCY_SCALE": "0",
        "FAULTS": "",
        "POWERTOOLS_SERVICE_NAME": "agentic",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("STATE_MACHINE_ARN", "TRACING_ENABLED", "PIPELINE_DEFINITION"):
        monkeypatch.delenv(name, raising=False)
    reset_system()
    yield monkeypatch
    reset_system()


@pytest.fixture
def moto_table(aws_env: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh moto DynamoDB table with the production schema; yields the client."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_table(client, TABLE_NAME)
        yield client


@pytest.fixture
def pipeline(aws_env: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """The real state machine in moto's interpreter, the real handlers behind its Lambda ARNs."""
    logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
    sleeps: list[float] = []
    no_sleep = mock.Mock(sleep=sleeps.append)  # Retry waits are recorded, not slept
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        mock.patch.object(LambdaFunction, "_invoke_lambda", fake_invoke_lambda),
        mock.patch("moto.stepfunctions.parser.asl.component.common.retry.retrier_decl.time", no_sleep),
    ):
        create_table(boto3.client("dynamodb", region_name=REGION), TABLE_NAME)
        role = boto3.client("iam", region_name=REGION).create_role(
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
        state_machine_arn = sfn.create_state_machine(name="pipeline", definition=definition, roleArn=role)[
            "stateMachineArn"
        ]
        aws_env.setenv("STATE_MACHINE_ARN", state_machine_arn)
        reset_system()
        running = Pipeline(sfn, state_machine_arn, sleeps, aws_env)
        try:
            yield running
        finally:
            # Never leave moto's scope with an execution thread still calling boto3.
            for execution in sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]:
                if execution["status"] == "RUNNING":
                    running.wait(execution["name"])


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml parsed with cfn-lint's decoder (it understands !Ref, !Sub, !GetAtt)."""
    from cfnlint.decode import decode

    parsed, errors = decode(str(Path(__file__).resolve().parents[3] / "template.yaml"))
    assert not errors, errors
    assert parsed is not None
    return dict(parsed)


@pytest.fixture
def fake_bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBedrock]:
    """A local bedrock-runtime (tests/fake_bedrock.py) that boto3 reaches through its endpoint variable."""
    server = FakeBedrock().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
    try:
        yield server
    finally:
        server.stop()
