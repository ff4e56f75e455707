"""The Lambda API functions answer exactly as the FastAPI app does, through either front.

The API functions serve the FastAPI routers through Mangum (``functions/api/app.py``, the default), or,
with the template's ``ApiFront=lean``, answer API Gateway's events without any web framework (cold
start, ``functions/api/lean.py``, ``agentic.aws.lean_http``). One table of request sequences goes to
the FastAPI app (the buffered routers, the IAM caller in ``x-amzn-request-context`` as the stream
function reads it) in-process through Starlette's TestClient, and to the real handlers of each front
as API Gateway (HTTP API, payload 2.0) events, each side on a fresh moto DynamoDB table and Step
Functions state machine. Every answer must agree: status, body (task ids are deterministic from the
Idempotency-Key; times are masked) and the headers clients read.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from agentic.adapters.dynamodb_store import create_table
from agentic.adapters.sfn_executor import StepFunctionsExecutor
from agentic.api.app import create_app
from agentic.api.routes import control, health
from agentic.api.routes.tasks import read_router, write_router
from agentic.aws.identity import iam_owner
from agentic.aws.wiring import get_system, reset_system
from agentic.errors import Backpressure
from agentic.service.tasks import task_id_for
from tests.functional.aws.support import (
    FUNCTIONS,
    OTHER_OWNER,
    OWNER,
    REGION,
    TABLE_NAME,
    FakeLambdaContext,
    create_trivial_state_machine,
    load_event,
    load_module,
)

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

JSON = {"content-type": "application/json"}
#: The headers a client reads (besides content-type, compared always).
HEADERS = ("location", "idempotent-replayed", "retry-after", "www-authenticate", "allow")
UNKNOWN = "0b7f2c1e-9d7a-4c55-8a8e-3f1d2b6c4a90"


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    owner: str | None = OWNER
    #: the function invoked; by default the one API Gateway routes the method to
    function: str | None = None


def post(path: str, body: object = None, *, raw: bytes | None = None, key: str | None = None, **kw: Any) -> Req:
    headers = dict(kw.pop("headers", JSON))
    if key is not None:
        headers["idempotency-key"] = key
    content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    return Req("POST", path, content, headers, **kw)


def get(path: str, query: str = "", **kw: Any) -> Req:
    return Req("GET", path, query=query, **kw)


def task(key: str) -> str:
    return task_id_for("api", OWNER, key)


def create(key: str, **body: Any) -> Req:
    return post("/tasks", {"description": "Explain backoff", **body}, key=key)


DEEP = b'{"description": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"

#: name -> the requests of one scenario, sent in order; every answer is compared.
CASES: dict[str, list[Req]] = {
    "create": [create("k1")],
    "create and execute": [create("k1", execute=True)],
    "replayed Idempotency-Key": [create("k1"), create("k1")],
    "idempotency conflict": [create("k1"), post("/tasks", {"description": "something else"}, key="k1")],
    "create with approval, no key": [post("/tasks", {"description": "Explain", "approval": True})],
    "bad JSON": [post("/tasks", raw=b'{"description": ')],
    "not UTF-8": [post("/tasks", raw=b'{"description": "\xff\xfe"}')],
    "deep JSON": [post("/tasks", raw=DEEP)],
    "wrong content-type": [post("/tasks", {"description": "x"}, headers={"content-type": "text/plain"})],
    "no content-type": [post("/tasks", {"description": "x"}, headers={})],
    "json+ suffix": [post("/tasks", {"description": "x"}, headers={"content-type": "application/vnd.x+json"})],
    "too large": [post("/tasks", {"description": "x" * 70_000})],
    "no body": [post("/tasks")],
    "null body": [post("/tasks", raw=b"null")],
    "array body": [post("/tasks", raw=b"[1, 2]")],
    "missing field": [post("/tasks", {})],
    "extra field": [post("/tasks", {"description": "x", "extra": 1})],
    "blank description": [post("/tasks", {"description": "   "})],
    "execute not a boolean": [post("/tasks", {"description": "x", "execute": "yes"})],
    "several bad fields": [post("/tasks", {"description": "", "execute": 1, "approval": "no"})],
    "no IAM identity": [create("k1", owner=None)],
    "no IAM identity and bad JSON": [post("/tasks", raw=b"{", owner=None)],
    "list": [create("k1"), create("k2"), get("/tasks", "limit=1"), get("/tasks", "status=pending&limit=100")],
    "list of another owner": [create("k1"), get("/tasks", owner=OTHER_OWNER)],
    "list limit 0": [get("/tasks", "limit=0")],
    "list limit 101": [get("/tasks", "limit=101")],
    "list limit not a number": [get("/tasks", "limit=ten")],
    "list limit empty": [get("/tasks", "limit=")],
    "list limit repeated": [create("k1"), create("k2"), get("/tasks", "limit=0&limit=1")],
    "list cursor too long": [get("/tasks", "cursor=" + "c" * 1025)],
    "list bad cursor": [get("/tasks", "cursor=not-a-cursor")],
    "list bad status": [get("/tasks", "status=sleeping")],
    "list every bad parameter": [get("/tasks", "limit=-1&cursor=" + "c" * 1025 + "&status=x")],
    "list without identity": [get("/tasks", "limit=0", owner=None)],
    "status": [create("k1"), get(f"/tasks/{task('k1')}/status")],
    "status of another owner": [create("k1"), get(f"/tasks/{task('k1')}/status", owner=OTHER_OWNER)],
    "status unknown task": [get(f"/tasks/{UNKNOWN}/status")],
    "status task id too long": [get(f"/tasks/{'x' * 65}/status")],
    "status percent-encoded id": [get("/tasks/a%20b/status")],
    "cancel with a body": [create("k1"), post(f"/tasks/{task('k1')}/cancel", {"reason": "not needed"})],
    "cancel without a body": [create("k1"), post(f"/tasks/{task('k1')}/cancel", headers={})],
    "cancel twice": [create("k1"), post(f"/tasks/{task('k1')}/cancel"), post(f"/tasks/{task('k1')}/cancel")],
    "cancel null body": [create("k1"), post(f"/tasks/{task('k1')}/cancel", raw=b"null")],
    "cancel extra field": [create("k1"), post(f"/tasks/{task('k1')}/cancel", {"why": "x"})],
    "cancel reason too long": [create("k1"), post(f"/tasks/{task('k1')}/cancel", {"reason": "r" * 1001})],
    "cancel wrong content-type": [post(f"/tasks/{task('k1')}/cancel", raw=b"x", headers={"content-type": "text/x"})],
    "cancel unknown task": [post(f"/tasks/{UNKNOWN}/cancel")],
    "cancel id too long and bad body": [post(f"/tasks/{'y' * 70}/cancel", {"reason": 5})],
    "approve not awaiting approval": [create("k1"), post(f"/tasks/{task('k1')}/approve", {"comment": "ok"})],
    "reject not awaiting approval": [create("k1"), post(f"/tasks/{task('k1')}/reject")],
    "retry a pending task": [create("k1"), post(f"/tasks/{task('k1')}/retry", {"from_step": "step_001"})],
    "retry a cancelled task": [
        create("k1"),
        post(f"/tasks/{task('k1')}/cancel"),
        post(f"/tasks/{task('k1')}/retry", {"from_step": "step_009"}),
    ],
    "approve bad JSON": [post(f"/tasks/{task('k1')}/approve", raw=b"{,}")],
    "unknown path": [get("/nothing")],
    "wrong method": [post("/tasks/abc/status"), get("/tasks/abc/cancel"), Req("PUT", "/tasks")],
    "wrong method on the query function": [Req("POST", "/tasks", function="QueryTasksFunction")],
    "options": [Req("OPTIONS", "/tasks/abc/cancel"), Req("OPTIONS", "/health")],
    "health": [get("/health")],
}


def event_for(req: Req) -> dict[str, Any]:
    """The API Gateway (HTTP API, payload 2.0) event of ``req``, from an events/ file."""
    event = copy.deepcopy(load_event("create_task_post.json"))
    headers = {k: v for k, v in event["headers"].items() if k not in ("content-type", "content-length")}
    headers.pop("idempotency-key")
    headers.update(req.headers)
    if req.body is not None:
        headers["content-length"] = str(len(req.body))
    event["headers"] = headers
    event["routeKey"] = f"{req.method} {req.path}"
    event["rawPath"] = req.path
    event["requestContext"]["http"].update(method=req.method, path=req.path)
    event["rawQueryString"] = req.query
    if req.owner is None:
        del event["requestContext"]["authorizer"]
    else:
        event["requestContext"]["authorizer"]["iam"]["userArn"] = req.owner
    event.pop("body", None)
    event["isBase64Encoded"] = False
    if req.body is not None:
        try:
            event["body"] = req.body.decode()
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(req.body).decode(), True
    return event


@dataclass
class Answer:
    status: int
    body: str
    headers: dict[str, str]


TIMES = re.compile(r'"\d{4}-\d\d-\d\dT[\d:.]+Z?"')
DURATION = re.compile(r'"duration_seconds":[\d.]+')
#: A page's cursor names the time of its last task.
CURSOR = re.compile(r'"next_cursor":"[^"]+"')
#: A task created without an Idempotency-Key gets a random (version 4) id; keyed ones are uuid5.
RANDOM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def comparable(answer: Answer) -> tuple[int, str, dict[str, str | None]]:
    if answer.status != 204:  # (OPTIONS: no body; Mangum labelled even that application/json)
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(answer.body.encode()))
    body = DURATION.sub('"duration_seconds":0', TIMES.sub('"<time>"', answer.body))
    body = RANDOM_ID.sub("<id>", CURSOR.sub('"next_cursor":"<cursor>"', body))
    return answer.status, body, {name: RANDOM_ID.sub("<id>", answer.headers.get(name) or "") for name in HEADERS}


def via_fastapi(clients: dict[str, TestClient], req: Req) -> Answer:
    client = clients[function_of(req)]
    headers = dict(req.headers)
    if req.owner is not None:
        headers["x-amzn-request-context"] = json.dumps({"authorizer": {"iam": {"userArn": req.owner}}})
    url = req.path + (f"?{req.query}" if req.query else "")
    response = client.request(req.method, url, content=req.body, headers=headers)
    return Answer(response.status_code, response.text, {k.lower(): v for k, v in response.headers.items()})


def function_of(req: Req) -> str:
    """Which function API Gateway would invoke, by method (each function serves only its routes)."""
    return req.function or ("QueryTasksFunction" if req.method == "GET" else "CreateTaskFunction")


#: The handler files of the two fronts (the template's ApiFront parameter).
FRONTS = {"mangum": "api/app.py", "lean": "api/lean.py"}


def via_lambda(req: Req, front: str = "lean") -> Answer:
    function = function_of(req)
    _, attribute = FUNCTIONS[function]
    handler = getattr(load_module(FRONTS[front]), attribute)
    response = handler(event_for(req), FakeLambdaContext(function))
    assert set(response) == {"statusCode", "body", "headers", "isBase64Encoded"}
    assert response["isBase64Encoded"] is False
    return Answer(response["statusCode"], response["body"], response["headers"])


#: The routers each function serves through Mangum (functions/api/app.py).
ROUTERS = {
    "CreateTaskFunction": (write_router, control.router),
    "QueryTasksFunction": (read_router, health.router),
}


@contextmanager
def fresh_aws(aws_env: pytest.MonkeyPatch) -> Iterator[None]:
    """A new moto table and state machine, and a system built on them."""
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name=REGION), TABLE_NAME)
        aws_env.setenv("STATE_MACHINE_ARN", create_trivial_state_machine("pipeline"))
        reset_system()
        yield
    reset_system()


def run_fastapi(aws_env: pytest.MonkeyPatch, requests: list[Req]) -> list[Answer]:
    with fresh_aws(aws_env):
        system = get_system()
        apps = {
            function: create_app(
                system.service, iam_owner, routers=routers, max_request_bytes=system.settings.max_request_bytes
            )
            for function, routers in ROUTERS.items()
        }
        clients = {function: TestClient(app, raise_server_exceptions=False) for function, app in apps.items()}
        return [via_fastapi(clients, req) for req in requests]


def run_lambda(aws_env: pytest.MonkeyPatch, requests: list[Req], front: str = "lean") -> list[Answer]:
    with fresh_aws(aws_env):
        return [via_lambda(req, front) for req in requests]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("requests", CASES.values(), ids=CASES.keys())
def test_the_lambda_functions_answer_as_the_fastapi_app(aws_env, requests, front):
    # Given the same requests, each side on a fresh store
    # When the FastAPI app and the Lambda functions (either front) answer them
    expected = [comparable(a) for a in run_fastapi(aws_env, requests)]
    got = [comparable(a) for a in run_lambda(aws_env, requests, front)]
    # Then every answer agrees
    assert got == expected


def test_execute_refused_for_backpressure_answers_alike(aws_env, monkeypatch):
    # Given Step Functions refusing new executions (as a throttled StartExecution does)
    def busy(self: StepFunctionsExecutor, task_id: str) -> str | None:
        raise Backpressure("Step Functions refused a new execution now (ThrottlingException)", 7)

    monkeypatch.setattr(StepFunctionsExecutor, "start_sync", busy)
    requests = [create("k1", execute=True), get(f"/tasks/{task('k1')}/status")]
    # When both create a task with execute: true
    expected = [comparable(a) for a in run_fastapi(aws_env, requests)]
    got = [comparable(a) for a in run_lambda(aws_env, requests)]
    # Then both answer the 429 naming the created (pending) task, with Retry-After and Location
    assert got == expected
    status, body, headers = got[0]
    assert status == 429
    assert json.loads(body)["task_id"] == task("k1")
    assert headers["retry-after"] == "7"
    assert headers["location"] == f"/tasks/{task('k1')}/status"
