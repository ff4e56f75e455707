"""The API explains itself: OpenAPI (bearer scheme, error responses), one error style, content
types, strict booleans, Allow on OPTIONS/405, the web view's routes and /metrics."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agentic import errors
from agentic.api.errors import STATUS_OF, install_error_handlers
from tests.support import local_client, ndjson

pytestmark = pytest.mark.functional
REPO = Path(__file__).resolve().parents[2]
DESCRIPTION = "Explain exponential backoff with jitter"


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path) as c:
        yield c


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").json()


def operations(spec):
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            yield path, method, op


def test_openapi_declares_the_bearer_scheme_on_every_task_route(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Needed when the server sets API_TOKEN or API_TOKENS; the token is the owner's.",
    }
    task_ops = [(p, m, op) for p, m, op in operations(spec) if p.startswith("/tasks")]
    assert len(task_ops) >= 5
    for path, method, op in task_ops:
        assert op.get("security") == [{"bearerAuth": []}], (method, path)
        assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    assert "security" not in spec["paths"]["/health"]["get"]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/tasks", {"401", "409", "413", "415", "422", "429", "503"}),
        ("get", "/tasks", {"401", "422", "503"}),
        ("get", "/tasks/{task_id}/status", {"401", "404", "422", "503"}),
        ("post", "/tasks/{task_id}/execute", {"401", "404", "422", "429", "503"}),
        ("get", "/tasks/{task_id}/events", {"401", "404", "422", "503"}),
    ],
)
def test_each_route_documents_its_errors_with_the_error_body(spec, method, path, statuses):
    responses = spec["paths"][path][method]["responses"]
    errors_documented = {s for s in responses if s.startswith(("4", "5"))}
    assert statuses <= errors_documented
    for status in errors_documented:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    for status in {"429", "503"} & errors_documented:
        assert "Retry-After" in responses[status]["headers"]
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"error", "message"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_the_list_limit_and_the_resume_precedence_are_documented(spec):
    limit = next(p for p in spec["paths"]["/tasks"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["default"] == 20
    assert limit["schema"]["maximum"] == 100
    after = next(p for p in spec["paths"]["/tasks/{task_id}/events"]["get"]["parameters"] if p["name"] == "after")
    assert "wins over Last-Event-ID" in after["description"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body: not valid JSON (Expecting property name enclosed in double quotes at position 1)"),
        ('{"description": "caf\u00e9"}'.encode("latin-1"), "body: not valid JSON (it is not UTF-8 encoded)"),
    ],
)
def test_a_body_that_is_not_utf8_json_is_a_422_in_the_error_style(client, body, message):
    response = client.post("/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert response.json()["message"] == message


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_that_is_not_json_is_415(client, content_type):
    response = client.post("/tasks", content=b'{"description": "x"}', headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.json() == {
        "error": "unsupported_media_type",
        "message": f"the body must be application/json (Content-Type: application/json), not {content_type}",
    }


def test_a_body_without_a_content_type_is_415_and_no_body_is_422(client):
    unlabelled = client.post("/tasks", content=b'{"description": "x"}', headers={"content-type": ""})
    assert unlabelled.status_code == 415
    assert unlabelled.json()["message"].endswith("not unlabelled")
    empty = client.post("/tasks")
    assert empty.status_code == 422
    assert empty.json()["message"] == "body: Field required"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/merge-patch+json"])
def test_json_media_types_are_accepted(client, content_type):
    response = client.post("/tasks", content=b'{"description": "x"}', headers={"content-type": content_type})
    assert response.status_code == 201


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_execute_must_be_a_json_boolean(client, value):
    response = client.post("/tasks", json={"description": DESCRIPTION, "execute": value})
    assert response.status_code == 422
    assert response.json()["message"] == "execute: Input should be a valid boolean"
    assert client.get("/tasks").json()["items"] == []  # nothing was created


def test_execute_true_still_starts_the_task(client):
    task_id = client.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
    assert ndjson(client.get(f"/tasks/{task_id}/events").text)[-1]["event_type"] == "task_completed"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/tasks", "GET, OPTIONS, POST"),
        ("/tasks/abc/execute", "OPTIONS, POST"),
        ("/tasks/abc/status", "GET, OPTIONS"),
        ("/health", "GET, OPTIONS"),
    ],
)
def test_options_and_405_list_every_method_of_the_path(client, path, allow):
    options = client.options(path)
    assert options.status_code == 204
    assert options.headers["allow"] == allow
    wrong = client.put(path, json={})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == allow
    assert wrong.json() == {"error": "method_not_allowed", "message": f"PUT is not allowed here; allowed: {allow}"}


def test_every_error_has_the_one_style(tmp_path):
    with local_client(tmp_path, api_token="s3cret") as client:
        responses = [
            client.get("/tasks"),  # 401
            client.get("/no/such/path"),  # 404
            client.get("/ui/nothing.js"),  # 404
            client.get("/tasks/nope/status", headers={"Authorization": "Bearer s3cret"}),  # 404 task
        ]
    for response in responses:
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) == {"error", "message"}, response.json()
    assert responses[0].headers["www-authenticate"] == "Bearer"


def test_a_retryable_error_carries_retry_after_from_the_table():
    # Given an app whose routes raise a conflict (503) and a new error mapped to 503 with its own wait
    class Busy(errors.AgenticError):
        code = "busy"
        retry_after_seconds = 7

    app = FastAPI()
    install_error_handlers(app)
    STATUS_OF[Busy] = 503  # the one line a new retryable error needs

    @app.get("/conflict")
    async def conflict() -> None:
        raise errors.WriteConflict("the task kept changing")

    @app.get("/busy")
    async def busy() -> None:
        raise Busy("the store is busy")

    try:
        with TestClient(app) as client:
            conflict_response, busy_response = client.get("/conflict"), client.get("/busy")
    finally:
        del STATUS_OF[Busy]
    assert (conflict_response.status_code, conflict_response.headers["retry-after"]) == (503, "1")
    assert conflict_response.json() == {"error": "write_conflict", "message": "the task kept changing"}
    assert (busy_response.status_code, busy_response.headers["retry-after"]) == (503, "7")


def test_root_redirects_to_the_web_view_which_is_served_with_a_strict_policy(client):
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307
    assert root.headers["location"] == "/ui"
    page = client.get("/ui")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset


def test_the_web_view_files_ship_as_package_data():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agentic"]
    static = REPO / "layers/core/agentic/api/ui/static"
    files = [p.relative_to(REPO / "layers/core/agentic").as_posix() for p in static.iterdir()]
    assert files
    for name in files:
        assert any(fnmatch(name, pattern) for pattern in globs), name


def test_after_wins_over_last_event_id(client):
    task_id = client.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
    events = ndjson(client.get(f"/tasks/{task_id}/events").text)
    resumed = ndjson(client.get(f"/tasks/{task_id}/events", params={"after": 8}, headers={"Last-Event-ID": "2"}).text)
    assert resumed == events[8:]
