"""``agentic --aws``: requests are SigV4-signed for API Gateway (execute-api) and the Function URL (lambda)."""

from __future__ import annotations

import json

import httpx
import pytest

from agentic.cli.client import AgenticClient, Unsupported
from agentic.cli.sigv4 import aws_auth, region_of

pytestmark = pytest.mark.unit

API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
STREAM = "https://xyz789.lambda-url.eu-west-1.on.aws/"
TASK = {"task_id": "t-1", "status": "pending", "user_input": "x"}


def test_the_region_comes_from_either_url():
    assert region_of(API) == "eu-west-1"
    assert region_of(STREAM) == "eu-west-1"
    assert region_of("http://127.0.0.1:8000") is None


def test_api_calls_are_signed_for_execute_api_and_streams_for_lambda():
    # Given the CLI's client with the signers --aws builds (credentials from the environment)
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text='{"event_type":"task_started","cursor":1}\n')
        return httpx.Response(201, json=TASK)

    api_auth, stream_auth = aws_auth(API, STREAM, None)
    client = AgenticClient(
        API, STREAM, api_auth=api_auth, stream_auth=stream_auth, transport=httpx.MockTransport(server)
    )
    # When it creates a task and reads its stream
    client.create("Explain backoff")
    with client.events("t-1", after=5) as lines:
        assert [e["cursor"] for e in lines] == [1]
    create, stream = seen
    # Then each request goes to its URL, signed for its service, in the URL's region
    assert create.url.host == "abc123.execute-api.eu-west-1.amazonaws.com"
    assert "/eu-west-1/execute-api/aws4_request" in create.headers["authorization"]
    assert create.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "content-type;host;x-amz-date" in create.headers["authorization"]
    assert create.headers["x-amz-security-token"] == "testing"
    assert json.loads(create.content) == {"description": "Explain backoff", "execute": False}
    assert stream.url.host == "xyz789.lambda-url.eu-west-1.on.aws"
    assert "/eu-west-1/lambda/aws4_request" in stream.headers["authorization"]
    assert stream.headers["last-event-id"] == "5"


def test_the_signature_covers_the_body():
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=TASK)

    api_auth, stream_auth = aws_auth(API, STREAM, "us-east-1")
    client = AgenticClient(
        API, STREAM, api_auth=api_auth, stream_auth=stream_auth, transport=httpx.MockTransport(server)
    )
    client.create("one")
    client.create("two")
    signature = [r.headers["authorization"].rsplit("Signature=", 1)[1] for r in seen]
    assert signature[0] != signature[1]
    assert "/us-east-1/execute-api/" in seen[0].headers["authorization"]


@pytest.mark.parametrize(("status", "body"), [(404, {"error": "not_found", "message": "Not Found"}), (405, {})])
def test_a_missing_control_route_is_unsupported_not_a_crash(status, body):
    client = AgenticClient("http://server", transport=httpx.MockTransport(lambda r: httpx.Response(status, json=body)))
    with pytest.raises(Unsupported, match="this server does not support cancel yet"):
        client.control("t-1", "cancel")


def test_an_unknown_task_on_a_control_route_is_not_found_not_unsupported():
    answer = httpx.Response(404, json={"error": "task_not_found", "message": "task t-1 not found"})
    client = AgenticClient("http://server", transport=httpx.MockTransport(lambda r: answer))
    with pytest.raises(Exception, match="task t-1 not found") as raised:
        client.control("t-1", "cancel")
    assert not isinstance(raised.value, Unsupported)


def test_aws_without_the_stack_urls_is_a_usage_error(monkeypatch):
    from typer.testing import CliRunner

    from agentic.cli.main import app

    monkeypatch.delenv("AGENTIC_API_URL", raising=False)
    monkeypatch.delenv("AGENTIC_STREAM_URL", raising=False)
    result = CliRunner().invoke(app, ["--aws", "--api-url", API, "list"])
    assert result.exit_code == 2
    assert "--aws needs --api-url (the stack's ApiUrl output) and --stream-url" in result.output
