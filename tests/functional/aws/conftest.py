"""Fixtures for the AWS wiring: the real handlers in-process against moto (DynamoDB, Step Functions).

- ``aws_env`` sets the environment a deployed function gets (tests/conftest.py already set fake
  credentials) and resets the cached settings and system around each test.
- ``moto_table`` is a moto DynamoDB table built by ``create_table`` (the production schema).
- ``pipeline`` runs the real ``statemachine/pipeline.asl.json`` in moto's Step Functions
  interpreter; each Lambda invocation runs the real handler of that function in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from agentic.adapters.dynamodb_store import create_table
from agentic.aws.wiring import reset_system
from tests.fake_bedrock import FakeBedrock
from tests.functional.aws.support import REGION, TABLE_NAME, WORKFLOW_TYPES, Pipeline, moto_pipeline


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


@pytest.fixture(params=WORKFLOW_TYPES)
def pipeline(aws_env: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """The real state machine in moto's interpreter, the real handlers behind its Lambda ARNs; once
    as a Standard and once as an Express workflow (the template's WorkflowType)."""
    with moto_pipeline(aws_env, request.param) as running:
        yield running


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
