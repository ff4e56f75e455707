"""The streaming function (functions/stream/): the stream routes under uvicorn, as the Web Adapter runs them.

- Each events/stream_*.json file is replayed against the app the way the Lambda Web Adapter forwards
  a Function URL request (method, raw path and query, headers, body, and the request context as the
  ``x-amzn-request-context`` header), in-process.
- Then over real HTTP: uvicorn on loopback serving the same app, moto's Step Functions running the
  real state machine and the real agent handlers against moto's DynamoDB, agents taking visible time.
- Last, run.sh itself: it starts uvicorn on $AWS_LWA_PORT with the app, and a misconfigured function fails
  at startup instead of serving errors.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import httpx
import pytest

from agentic.aws.wiring import get_system
from agentic.models import TaskStatus
from agentic.service.tasks import task_id_for
from tests.functional.aws.stream_support import (
    Line,
    adapter_request,
    identity_headers,
    is_event,
    ndjson,
    read_lines,
    stream_app,
    stream_lines,
    uvicorn_server,
    with_owner,
)
from tests.functional.aws.support import EVENTS, OTHER_OWNER, OWNER, ROOT, TABLE_NAME, Pipeline, load_event
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

EXECUTE_EVENT = load_event("stream_execute.json")
TASK_ID = task_id_for("api", OWNER, "events-demo-1")  # the task every events/ file names
DESCRIPTION = "Explain how exponential backoff with jitter prevents retry storms"
NDJSON = "application/x-ndjson"
#: AGENT_LATENCY_SCALE for the real-HTTP runs: retriever 0.4 s, analyzer 0.8 s, writer 0.4 s, each
#: well above the DynamoDB waiter's longest poll interval (STREAM_POLL_MAX_SECONDS, 0.2 s).
LATENCY_SCALE = 4.0


def create_task(*, idempotency_key: str | None = None) -> str:
    task, _ = asyncio.run(get_system().service.create(OWNER, DESCRIPTION, idempotency_key=idempotency_key))
    return task.task_id


def executions(pipeline: Pipeline) -> list[str]:
    return [e["name"] for e in pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)["executions"]]


def logged_types(task_id: str) -> list[str]:
    return [e.event_type.value for e in get_system().store.read_events(task_id)]


def cursors(lines: list[dict[str, Any]]) -> list[int]:
    return [line["cursor"] for line in lines]


# --- the events/ files, replayed as the Web Adapter forwards them ------------------------------------


def replay(event: dict[str, Any]) -> httpx.Response:
    """Send ``event`` to the app the way the Web Adapter would, in-process; the whole response."""
    request = adapter_request(event)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=stream_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
            return await client.request(request.method, request.url, headers=request.headers, content=request.body)

    return asyncio.run(send())


def a_created_task(pipeline: Pipeline) -> None:
    assert create_task(idempotency_key="events-demo-1") == TASK_ID


def a_finished_task(pipeline: Pipeline) -> None:
    a_created_task(pipeline)
    asyncio.run(get_system().service.execute(OWNER, TASK_ID))
    assert pipeline.wait(TASK_ID)["status"] == "SUCCEEDED"


def check_execute(response: httpx.Response, pipeline: Pipeline) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NDJSON)
    events = ndjson(response.text)
    assert [e["event_type"] for e in events] == SEED_SEQUENCE
    assert cursors(events) == list(range(1, len(SEED_SEQUENCE) + 1))
    assert {e["task_id"] for e in events} == {TASK_ID}
    assert executions(pipeline) == [TASK_ID]
    # the same request again attaches to the finished task: the whole log, no second execution
    again = replay(EXECUTE_EVENT)
    assert again.status_code == 200
    assert ndjson(again.text) == events
    assert executions(pipeline) == [TASK_ID]
    assert logged_types(TASK_ID).count("task_started") == 1


def check_resume(response: httpx.Response, pipeline: Pipeline) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NDJSON)
    events = ndjson(response.text)
    # the file asks for what follows cursor 3: exactly that, nothing seen before
    assert cursors(events) == list(range(4, len(SEED_SEQUENCE) + 1))
    assert [e["event_type"] for e in events] == SEED_SEQUENCE[3:]


CASES: dict[str, tuple[Callable[[Pipeline], None], Callable[[httpx.Response, Pipeline], None]]] = {
    "stream_execute.json": (a_created_task, check_execute),
    "stream_events_resume.json": (a_finished_task, check_resume),
}


def test_every_stream_event_file_has_a_case():
    assert sorted(p.name for p in EVENTS.glob("stream_*.json")) == sorted(CASES)
    for name in CASES:
        event = load_event(name)
        assert event["version"] == "2.0"
        assert event["routeKey"] == "$default"  # a Function URL, not an API Gateway route
        assert TASK_ID in event["rawPath"]
        assert event["requestContext"]["authorizer"]["iam"]["userArn"] == OWNER


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_function_with_event_file(name: str, pipeline: Pipeline):
    prepare, check = CASES[name]
    prepare(pipeline)
    event = load_event(name)
    check(replay(event), pipeline)
    # another IAM caller cannot stream (or start) the task: 404, exactly like a missing task
    other = replay(with_owner(event, OTHER_OWNER))
    assert other.status_code == 404
    assert other.json()["error"] == "task_not_found"
    assert executions(pipeline) == [TASK_ID]


def test_a_request_without_an_iam_caller_is_unauthorized(pipeline: Pipeline):
    a_created_task(pipeline)
    event = load_event("stream_execute.json")
    del event["requestContext"]["authorizer"]
    response = replay(event)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert executions(pipeline) == []


def test_the_stream_function_serves_only_the_stream_routes_and_health(pipeline: Pipeline):
    a_created_task(pipeline)
    paths = set(stream_app().current().openapi()["paths"])
    assert paths >= {"/tasks/{task_id}/execute", "/tasks/{task_id}/events", "/health"}
    assert not paths & {"/tasks", "/tasks/{task_id}/status"}
    event = load_event("stream_execute.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/tasks"
    assert replay(event).status_code in (404, 405)


def test_importing_the_app_builds_no_client_and_the_first_call_builds_the_system_without_one(aws_env):
    with (
        mock.patch.object(boto3, "client", side_effect=AssertionError("a boto3 client at import time")),
        mock.patch.object(boto3.session.Session, "client", side_effect=AssertionError("a client at import")),
    ):
        spec = importlib.util.spec_from_file_location("cold_start_stream", ROOT / "functions" / "stream" / "app.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert get_system.cache_info().currsize == 0
        # uvicorn's lifespan startup (the cold start) builds the app and the system, still no client
        app = module.app.current()
        assert set(app.openapi()["paths"]) == {"/health", "/tasks/{task_id}/execute", "/tasks/{task_id}/events"}
        assert get_system.cache_info().currsize == 1


# --- over real HTTP: uvicorn on loopback, the real state machine running --------------------------------


@pytest.fixture
def server(pipeline: Pipeline) -> Iterator[str]:
    """The stream app under uvicorn on a free loopback port (moto covers its thread too)."""
    pipeline.configure(AGENT_LATENCY_SCALE=str(LATENCY_SCALE), STREAM_KEEPALIVE_SECONDS="5")
    with uvicorn_server(stream_app()) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=httpx.Timeout(20.0)) as http:
        yield http


def test_execute_streams_each_event_while_the_agents_run(pipeline: Pipeline, client: httpx.Client):
    task_id = create_task()
    status_when_seen: dict[int, TaskStatus] = {}
    lines: list[Line] = []
    with client.stream("POST", f"/tasks/{task_id}/execute", headers=identity_headers()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(NDJSON)
        # streamed, not buffered: no length known up front, and proxies told not to buffer
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        assert response.headers["x-accel-buffering"] == "no"
        for line in read_lines(response):
            lines.append(line)
            status = get_system().store.get(task_id)
            assert status is not None
            status_when_seen[line.data["cursor"]] = status.status

    events = [line.data for line in lines]
    assert [e["event_type"] for e in events] == SEED_SEQUENCE
    assert cursors(events) == list(range(1, len(SEED_SEQUENCE) + 1))
    # when step_001's step_started arrived, the task was still running (the log was not sent at the end)
    step_001_started = next(e for e in events if e["event_type"] == "step_started")
    assert step_001_started["data"]["step_id"] == "step_001"
    assert status_when_seen[step_001_started["cursor"]] is TaskStatus.EXECUTING
    assert status_when_seen[cursors(events)[-1]] is TaskStatus.COMPLETED
    assert executions(pipeline) == [task_id]


def test_a_client_resumes_after_a_cursor_and_a_second_execute_attaches(pipeline: Pipeline, client: httpx.Client):
    task_id = create_task()
    execute, events = f"/tasks/{task_id}/execute", f"/tasks/{task_id}/events"

    # the client reads up to cursor 3 (step_001 started), then goes away
    with client.stream("POST", execute, headers=identity_headers()) as response:
        first = []
        for line in read_lines(response):
            first.append(line.data)
            if line.data["cursor"] == 3:
                break
    assert cursors(first) == [1, 2, 3]

    # a second execute while it runs, with Last-Event-ID: the rest of the run, and no second execution
    with client.stream("POST", execute, headers={**identity_headers(), "Last-Event-ID": "3"}) as response:
        assert response.status_code == 200
        second = []
        for line in read_lines(response):
            second.append(line.data)
            if line.data["cursor"] == 6:
                break
    assert cursors(second) == [4, 5, 6]
    assert get_system().store.get(task_id).status is TaskStatus.EXECUTING  # type: ignore[union-attr]

    # nobody is connected now: the task still finishes (it runs in Step Functions, not in a stream)
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"
    rest = list(range(7, len(SEED_SEQUENCE) + 1))
    _, by_query = stream_lines(client, "GET", f"{events}?after=6")
    _, by_header = stream_lines(client, "GET", events, headers={"Last-Event-ID": "6"})
    for resumed in (by_query, by_header):
        assert cursors([line.data for line in resumed]) == rest
        assert [line.data["event_type"] for line in resumed] == SEED_SEQUENCE[6:]
    # execute on the finished task attaches too: from the start, or after a cursor
    _, whole = stream_lines(client, "POST", execute)
    assert [line.data["event_type"] for line in whole] == SEED_SEQUENCE
    _, tail = stream_lines(client, "POST", f"{execute}?after=11")
    assert cursors([line.data for line in tail]) == [12]

    assert executions(pipeline) == [task_id]
    assert logged_types(task_id).count("task_started") == 1
    assert logged_types(task_id) == SEED_SEQUENCE


def test_another_iam_identity_cannot_execute_or_stream_the_task(pipeline: Pipeline, client: httpx.Client):
    task_id = create_task()
    for method, path in (("POST", f"/tasks/{task_id}/execute"), ("GET", f"/tasks/{task_id}/events")):
        response = client.request(method, path, headers=identity_headers(OTHER_OWNER))
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "task_not_found"
        unsigned = client.request(method, path)  # no request context: not a Function URL call
        assert unsigned.status_code == 401
    assert executions(pipeline) == []
    assert get_system().store.get(task_id).status is TaskStatus.PENDING  # type: ignore[union-attr]


def test_a_stream_that_reaches_its_time_limit_names_where_to_resume(pipeline: Pipeline, client: httpx.Client):
    pipeline.configure(STREAM_MAX_SECONDS="0.3", STREAM_KEEPALIVE_SECONDS="0.05")
    task_id = create_task()
    _, lines = stream_lines(client, "POST", f"/tasks/{task_id}/execute")
    received = [line.data for line in lines]
    last = received[-1]
    assert last["event_type"] == "stream_timeout"
    assert not is_event(last)  # a control line: no cursor of its own
    seen = [line for line in received if is_event(line)]
    cursor = seen[-1]["cursor"] if seen else 0
    assert last["data"]["cursor"] == cursor
    assert last["data"]["resume"] == f"/tasks/{task_id}/events?after={cursor}"
    assert len(seen) < len(SEED_SEQUENCE)

    # following each stream_timeout's resume URL yields the whole log exactly once
    streams = 1
    while received[-1]["event_type"] == "stream_timeout":
        assert streams < 20, "the task never finished"
        _, more = stream_lines(client, "GET", received[-1]["data"]["resume"])
        received += [line.data for line in more]
        streams += 1
    events = [line for line in received if is_event(line)]
    assert [e["event_type"] for e in events] == SEED_SEQUENCE
    assert cursors(events) == list(range(1, len(SEED_SEQUENCE) + 1))
    assert streams > 1
    # idle gaps (an agent at work) carried keep-alive lines, which have no cursor either
    keepalives = [line for line in received if line["event_type"] == "keepalive"]
    assert keepalives
    assert not any(is_event(line) for line in keepalives)


# --- run.sh, the handler the Web Adapter starts ---------------------------------------------------------


def run_sh(port: int, **env: str) -> subprocess.Popen[bytes]:
    """functions/stream/run.sh as the adapter starts it; ``python3`` is this venv's interpreter."""
    environment = {
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_LWA_PORT": str(port),
        "STORE": "dynamodb",
        "TABLE_NAME": TABLE_NAME,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **env,
    }
    return subprocess.Popen(
        [str(ROOT / "functions" / "stream" / "run.sh")],
        cwd="/",
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_sh_starts_uvicorn_on_port_with_the_stream_app():
    port = free_port()
    process = run_sh(port)
    try:
        deadline = time.monotonic() + 20
        while True:  # the adapter's readiness check: GET /health until it answers
            assert process.poll() is None, process.communicate()[0].decode()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "run.sh did not serve /health in 20 s"
                time.sleep(0.05)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        unsigned = httpx.post(f"http://127.0.0.1:{port}/tasks/some-task/execute", timeout=5)
        assert unsigned.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/tasks", timeout=5).status_code in (404, 405)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def test_run_sh_fails_at_startup_when_misconfigured():
    process = run_sh(free_port(), STORE="sqlite")
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert b"Application startup failed" in output
