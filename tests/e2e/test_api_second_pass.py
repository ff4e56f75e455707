"""The API as a new user meets it, on a real server: error statuses and codes as documented, the
OpenAPI of the control routes and of the stream, offline /docs, /metrics by outcome and by route,
and the server's own start and stop lines."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import LocalServer

pytestmark = pytest.mark.e2e

CONTROLS = ("cancel", "approve", "reject", "retry")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LocalServer]:
    with LocalServer(tmp_path_factory.mktemp("api") / "db.sqlite", MAX_REQUEST_BYTES="2048") as server:
        yield server


@pytest.fixture
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def pending_task(api: httpx.Client) -> str:
    return str(api.post("/tasks", json={"description": "Explain idempotency keys"}).json()["task_id"])


@pytest.mark.parametrize("action", CONTROLS)
def test_a_control_route_answers_a_text_body_with_415(api, action):
    task_id = pending_task(api)
    response = api.post(f"/tasks/{task_id}/{action}", content=b"please", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    # An empty body and a JSON body still work as before
    assert api.post(f"/tasks/{task_id}/{action}").status_code != 415
    assert api.post(f"/tasks/{task_id}/{action}", json={}).status_code != 415


def test_a_control_route_documents_the_413_and_415_it_answers(api):
    spec = api.get("/openapi.json").json()
    task_id = pending_task(api)
    too_big = api.post(f"/tasks/{task_id}/cancel", json={"reason": "x" * 4000})
    assert too_big.status_code == 413
    for action in CONTROLS:
        responses = spec["paths"][f"/tasks/{{task_id}}/{action}"]["post"]["responses"]
        assert {"413", "415"} <= responses.keys(), action


def test_every_bad_value_has_one_error_code(api):
    task_id = pending_task(api)
    bad_reason = api.post(f"/tasks/{task_id}/cancel", json={"reason": 5})
    bad_header = api.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "abc"})
    bad_field = api.post("/tasks", json={"description": ""})
    assert [r.status_code for r in (bad_reason, bad_header, bad_field)] == [422, 422, 422]
    assert {r.json()["error"] for r in (bad_reason, bad_header, bad_field)} == {"validation_error"}
    assert "Last-Event-ID" in bad_header.json()["message"]


def test_json_nested_too_deeply_is_a_documented_422(api):
    deep = "[" * 1000 + "]" * 1000
    response = api.post("/tasks", content=deep.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    try:  # Python 3.13's json parses it (an array, then refused as not an object); earlier ones cannot
        json.loads(deep)
    except RecursionError:
        assert response.json()["message"] == "body: not valid JSON (it is nested too deeply)"
    else:
        assert response.json()["message"] == "body: Input should be a valid dictionary or object to extract fields from"
    documented = api.get("/openapi.json").json()["paths"]["/tasks"]["post"]["responses"]
    assert "422" in documented
    assert "400" not in documented


def test_the_stream_documents_each_line_and_every_end(api):
    spec = api.get("/openapi.json").json()
    for path, method in (("/tasks/{task_id}/events", "get"), ("/tasks/{task_id}/execute", "post")):
        ok = spec["paths"][path][method]["responses"]["200"]
        assert ok["content"]["application/x-ndjson"]["itemSchema"] == {"$ref": "#/components/schemas/StreamLine"}
        for end in ("task_completed", "task_failed", "task_cancelled"):
            assert end in ok["description"]
    line = spec["components"]["schemas"]["StreamLine"]
    assert {"event_type", "task_id", "timestamp", "cursor", "data"} <= line["properties"].keys()
    assert "task_cancelled" in line["properties"]["event_type"]["description"]


def test_docs_and_redoc_load_nothing_from_another_host(api):
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = api.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources, html
        assert all(source.startswith("/") for source in sources), sources
        assert f"/docs-assets/{asset}" in sources
    for name, media_type in (
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.standalone.js", "text/javascript"),
    ):
        response = api.get(f"/docs-assets/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
        assert len(response.content) > 50_000
    assert api.get("/docs-assets/../app.py").status_code == 404


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_cancelled_tasks_and_http_requests_by_route(api):
    before = samples(api.get("/metrics").text)
    task_id = pending_task(api)
    assert api.post(f"/tasks/{task_id}/cancel").json()["status"] == "cancelled"
    api.get(f"/tasks/{task_id}/status")
    api.get("/tasks/no-such-task/status")
    api.get("/no/such/path")
    got = samples(api.get("/metrics").text)

    def grew(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return got.get(key, 0) - before.get(key, 0)

    assert grew(("agentic_tasks_finished_total", (("outcome", "cancelled"),))) == 1
    status_route = (("method", "GET"), ("route", "/tasks/{task_id}/status"))
    assert grew(("agentic_http_requests_total", (*status_route, ("status", "200")))) == 1
    assert grew(("agentic_http_requests_total", (*status_route, ("status", "404")))) == 1
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert grew(("agentic_http_requests_total", unmatched)) == 1
    assert grew(("agentic_http_request_duration_seconds_count", status_route)) == 2
    # No series per task id
    assert not any(task_id in json.dumps(key) for key in got)


def test_the_server_says_where_it_listens_and_stops_on_ctrl_c_in_one_line(tmp_path):
    server = LocalServer(tmp_path / "db.sqlite").start()
    server.stop(signal.SIGINT)
    log = server.log.read_text()
    assert server.proc is not None
    assert server.proc.returncode == 0
    assert f"python -m agentic.local: listening on {server.url} (web view {server.url}/ui" in log
    assert log.rstrip().endswith("python -m agentic.local: stopped")
    assert "Traceback" not in log
    assert "KeyboardInterrupt" not in log
