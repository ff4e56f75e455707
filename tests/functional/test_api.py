"""The HTTP API over the local wiring: every route and every error case."""

from __future__ import annotations

import pytest

from agentic.models import LIST_PREVIEW_CHARS, TaskStatus
from tests.support import SEED_SEQUENCE, event_types, local_client, ndjson

pytestmark = pytest.mark.functional


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path) as c:
        yield c


def create(client, description="Explain exponential backoff with jitter", **kw):
    return client.post("/tasks", json={"description": description}, **kw)


def test_create_returns_a_pending_task(client):
    response = create(client)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["user_input"] == "Explain exponential backoff with jitter"
    assert body["steps"] == []
    assert response.headers["location"] == f"/tasks/{body['task_id']}/status"


def test_execute_streams_the_seed_sequence_and_status_reports_completion(client):
    task_id = create(client).json()["task_id"]
    # When the task is executed
    with client.stream("POST", f"/tasks/{task_id}/execute") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        events = [__import__("json").loads(line) for line in response.iter_lines() if line]
    # Then each line is one event, in the seed's order, with increasing cursors
    assert event_types(events) == SEED_SEQUENCE
    assert [e["cursor"] for e in events] == sorted({e["cursor"] for e in events})
    assert all(e["task_id"] == task_id and e["timestamp"].endswith("Z") for e in events)
    steps = [e["data"] for e in events if e["event_type"] == "step_started"]
    assert [(s["step_id"], s["agent_type"]) for s in steps] == [
        ("step_001", "retriever"),
        ("step_002", "analyzer"),
        ("step_003", "writer"),
    ]
    # And the status shows the completed task with its report
    status = client.get(f"/tasks/{task_id}/status").json()
    assert status["status"] == "completed"
    assert [s["status"] for s in status["steps"]] == ["completed"] * 3
    assert status["final_output"].startswith("# Report")
    assert events[-1]["data"]["final_output"] == status["final_output"]


def test_execute_twice_replays_the_log_instead_of_running_again(client):
    task_id = create(client).json()["task_id"]
    first = ndjson(client.post(f"/tasks/{task_id}/execute").text)
    second = ndjson(client.post(f"/tasks/{task_id}/execute").text)
    assert second == first
    assert event_types(second).count("task_started") == 1


def test_execute_on_the_server_that_created_a_task_another_server_cancelled_does_not_start_it(tmp_path):
    # Given a task created through server A and cancelled through server B, on one file
    with local_client(tmp_path) as a, local_client(tmp_path) as b:
        task_id = create(a).json()["task_id"]
        assert b.post(f"/tasks/{task_id}/cancel").json()["status"] == "cancelled"
        # When A, which remembers the task as it created it (pending), is asked to execute it
        events = ndjson(a.post(f"/tasks/{task_id}/execute").text)
        # Then A streams the task's end and never starts it
        assert event_types(events) == ["task_cancelled"]
        assert a.get(f"/tasks/{task_id}/status").json()["status"] == "cancelled"


def test_resume_after_a_cursor_returns_exactly_the_rest(client):
    task_id = create(client).json()["task_id"]
    events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
    cut = events[4]["cursor"]
    by_query = ndjson(client.get(f"/tasks/{task_id}/events", params={"after": cut}).text)
    by_header = ndjson(client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(cut)}).text)
    assert by_query == events[5:]
    assert by_header == events[5:]


def test_list_is_newest_first_paginated_and_filtered(client):
    ids = [create(client, f"task number {i}").json()["task_id"] for i in range(5)]
    client.post(f"/tasks/{ids[0]}/execute").read()
    page1 = client.get("/tasks", params={"limit": 2}).json()
    page2 = client.get("/tasks", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/tasks", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    seen = [t["task_id"] for p in (page1, page2, page3) for t in p["items"]]
    assert seen == list(reversed(ids))
    assert page3["next_cursor"] is None
    done = client.get("/tasks", params={"status": "completed"}).json()["items"]
    assert [t["task_id"] for t in done] == [ids[0]]


def test_idempotency_key_yields_one_task(client):
    headers = {"Idempotency-Key": "order-42"}
    first = create(client, headers=headers)
    again = create(client, headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["task_id"] == first.json()["task_id"]
    assert len(client.get("/tasks").json()["items"]) == 1
    conflict = create(client, "a different description", headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "idempotency_conflict"


def test_create_with_execute_true_starts_the_task(client):
    task = client.post("/tasks", json={"description": "Stream events as NDJSON", "execute": True}).json()
    events = ndjson(client.get(f"/tasks/{task['task_id']}/events").text)
    assert event_types(events) == SEED_SEQUENCE


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/tasks/nope/status"), ("POST", "/tasks/nope/execute"), ("GET", "/tasks/nope/events")],
)
def test_unknown_task_is_404_with_a_message(client, method, path):
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"error": "task_not_found", "message": "task nope not found"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "description"),
        ({"description": ""}, "description"),
        ({"description": "   "}, "blank"),
        ({"description": "x" * 4001}, "4000"),
        ({"description": 12}, "description"),
        ({"description": "ok", "colour": "red"}, "colour"),
    ],
)
def test_invalid_input_is_422_with_a_clear_message(client, body, needle):
    response = client.post("/tasks", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert needle in response.json()["message"]


def test_malformed_json_is_422_not_500(client):
    response = client.post("/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_oversized_body_is_413(client):
    response = client.post(
        "/tasks",
        content=b'{"description": "' + b"x" * 70_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "input_too_large"


def test_oversized_chunked_body_is_413(client):
    def chunks():
        yield b'{"description": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    response = client.post("/tasks", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"status": "sleeping"}, {"cursor": "!!!"}, {"cursor": "WzFd"}]
)
def test_bad_list_parameters_are_422(client, params):
    response = client.get("/tasks", params=params)
    assert response.status_code == 422
    assert response.json()["message"]


def test_bad_resume_cursor_is_422(client):
    task_id = create(client).json()["task_id"]
    assert client.get(f"/tasks/{task_id}/events", params={"after": -1}).status_code == 422
    assert client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "abc"}).status_code == 422


def test_health_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["executions"]["max_queue"] == 100
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/tasks",
        "/tasks/{task_id}/status",
        "/tasks/{task_id}/execute",
        "/tasks/{task_id}/events",
    } <= set(paths)
    assert client.get("/docs").status_code == 200


def test_unknown_route_is_json_404(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_transient_faults_are_retried_with_step_retrying_events(tmp_path):
    with local_client(tmp_path, faults="retriever:transient:2") as client:
        task_id = create(client).json()["task_id"]
        events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
        retries = [e["data"] for e in events if e["event_type"] == "step_retrying"]
        assert [(r["step_id"], r["attempt"]) for r in retries] == [("step_001", 2), ("step_001", 3)]
        assert [r["delay_seconds"] for r in retries] == [0.01, 0.02]
        assert events[-1]["event_type"] == "task_completed"
        status = client.get(f"/tasks/{task_id}/status").json()
        assert status["steps"][0]["attempts"] == 3


def test_exhausted_retries_fail_the_task(tmp_path):
    with local_client(tmp_path, faults="analyzer:transient:9") as client:
        task_id = create(client).json()["task_id"]
        events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
        assert event_types(events).count("step_retrying") == 3  # 4 attempts in all
        assert event_types(events)[-2:] == ["error", "task_failed"]
        status = client.get(f"/tasks/{task_id}/status").json()
        assert status["status"] == "failed"
        assert "TransientAgentError" in status["error_message"]
        assert status["steps"][1]["status"] == "failed"


def test_permanent_fault_fails_at_once(tmp_path):
    with local_client(tmp_path, faults="writer:permanent") as client:
        task_id = create(client).json()["task_id"]
        events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
        assert "step_retrying" not in event_types(events)
        error = next(e for e in events if e["event_type"] == "error")
        assert error["data"]["step_id"] == "step_003"
        assert error["data"]["error"] == "PermanentAgentError"
        assert events[-1]["event_type"] == "task_failed"
        assert client.get(f"/tasks/{task_id}/status").json()["status"] == TaskStatus.FAILED


def test_backpressure_returns_429_and_the_task_stays_pending(tmp_path):
    # Given one slot and no queue, and a slow agent holding the slot
    with local_client(tmp_path, max_concurrent_executions=1, max_queue_size=0, agent_latency_scale=20) as client:
        busy = create(client, "first").json()["task_id"]
        waiting = create(client, "second").json()["task_id"]
        with client.stream("POST", f"/tasks/{busy}/execute") as stream:
            first_line = next(stream.iter_lines())
            assert '"task_started"' in first_line
            # When another task is executed
            refused = client.post(f"/tasks/{waiting}/execute")
            # Then it is refused with Retry-After, and not lost
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"] == "too_many_executions"
            assert client.get(f"/tasks/{waiting}/status").json()["status"] == "pending"


def test_queued_tasks_start_with_task_queued_events(tmp_path):
    with local_client(tmp_path, max_concurrent_executions=1, max_queue_size=5, agent_latency_scale=2) as client:
        first = client.post("/tasks", json={"description": "one", "execute": True}).json()["task_id"]
        second = client.post("/tasks", json={"description": "two", "execute": True}).json()["task_id"]
        events = ndjson(client.get(f"/tasks/{second}/events").text)
        assert events[0]["event_type"] == "task_queued"
        assert events[0]["data"]["position"] == 1
        assert event_types(events)[1:] == SEED_SEQUENCE
        assert client.get(f"/tasks/{first}/status").json()["status"] == "completed"


def test_bearer_tokens_isolate_owners(tmp_path):
    with local_client(tmp_path, api_tokens="alice=tok-a,bob=tok-b") as client:
        alice = {"Authorization": "Bearer tok-a"}
        bob = {"Authorization": "Bearer tok-b"}
        assert client.post("/tasks", json={"description": "x"}).status_code == 401
        assert client.get("/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        task_id = create(client, headers=alice).json()["task_id"]
        assert client.get(f"/tasks/{task_id}/status", headers=alice).status_code == 200
        assert client.get(f"/tasks/{task_id}/status", headers=bob).status_code == 404
        assert client.post(f"/tasks/{task_id}/execute", headers=bob).status_code == 404
        assert client.get("/tasks", headers=bob).json()["items"] == []
        # The same Idempotency-Key from two owners makes two tasks
        key = {"Idempotency-Key": "k1"}
        a = create(client, headers={**alice, **key}).json()["task_id"]
        b = create(client, headers={**bob, **key}).json()["task_id"]
        assert a != b


def test_another_owners_event_stream_is_404_like_a_missing_task(tmp_path):
    # Given a task of alice's that has run
    with local_client(tmp_path, api_tokens="alice=tok-a,bob=tok-b") as client:
        alice = {"Authorization": "Bearer tok-a"}
        bob = {"Authorization": "Bearer tok-b"}
        task_id = create(client, headers=alice).json()["task_id"]
        assert event_types(ndjson(client.post(f"/tasks/{task_id}/execute", headers=alice).text)) == SEED_SEQUENCE
        # When bob reads its events, from the start or after a cursor
        # Then he gets the same 404 as for a task that does not exist, and none of its events
        missing = client.get("/tasks/00000000-0000-0000-0000-000000000000/events", headers=bob)
        for params in ({}, {"after": 3}):
            response = client.get(f"/tasks/{task_id}/events", headers=bob, params=params)
            assert response.status_code == 404
            assert response.json() | {"message": ""} == missing.json() | {"message": ""}
            assert response.json()["error"] == "task_not_found"
            assert "task_started" not in response.text
        # And alice still reads them
        assert event_types(ndjson(client.get(f"/tasks/{task_id}/events", headers=alice).text)) == SEED_SEQUENCE


@pytest.mark.parametrize(
    ("query", "headers"),
    [({"after": 10**30}, {}), ({}, {"Last-Event-ID": str(10**30)})],
)
def test_cursors_beyond_any_real_cursor_are_422_not_500(client, query, headers):
    task_id = create(client).json()["task_id"]
    response = client.get(f"/tasks/{task_id}/events", params=query, headers=headers)
    assert response.status_code == 422
    assert "cursor" in response.json()["message"] or "after" in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [b"null", b"[]", b'"text"', b"description=x"],
)
def test_bodies_that_are_not_a_json_object_are_422(client, body):
    response = client.post("/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


def test_resuming_a_finished_task_at_its_end_closes_the_stream_at_once(client):
    task_id = create(client).json()["task_id"]
    events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
    last = events[-1]["cursor"]
    assert ndjson(client.get(f"/tasks/{task_id}/events", params={"after": last}).text) == []
    assert ndjson(client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(last + 50)}).text) == []


def test_a_non_ascii_digit_last_event_id_is_422(client):
    task_id = create(client).json()["task_id"]
    response = client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "²".encode("latin-1")})
    assert response.status_code == 422


def test_an_overlong_task_id_is_422(client):
    assert client.get(f"/tasks/{'x' * 65}/status").status_code == 422
    assert client.post(f"/tasks/{'x' * 65}/execute").status_code == 422


def test_execute_true_refused_by_backpressure_names_the_created_task(tmp_path):
    with local_client(tmp_path, max_concurrent_executions=1, max_queue_size=0, agent_latency_scale=20) as client:
        client.post("/tasks", json={"description": "busy", "execute": True})
        refused = client.post("/tasks", json={"description": "second", "execute": True})
        assert refused.status_code == 429
        task_id = refused.json()["task_id"]
        assert refused.headers["location"] == f"/tasks/{task_id}/status"
        assert refused.headers["retry-after"] == "1"
        assert client.get(f"/tasks/{task_id}/status").json()["status"] == "pending"


def test_a_listing_previews_long_final_outputs_and_the_status_returns_them_whole(client):
    # Given a completed task whose final output is longer than a listing shows (set through the store)
    task_id = create(client).json()["task_id"]
    client.post(f"/tasks/{task_id}/execute").read()
    report = "# Report\n" + "长" * (LIST_PREVIEW_CHARS * 3)
    store = client.app.state.service.store
    store.update(task_id, [TaskStatus.COMPLETED], final_output=report)
    short_id = create(client, "a task that keeps its short output").json()["task_id"]
    client.post(f"/tasks/{short_id}/execute").read()
    store.update(short_id, [TaskStatus.COMPLETED], final_output="# Short report")
    # When the tasks are listed
    items = {t["task_id"]: t for t in client.get("/tasks").json()["items"]}
    # Then the long output is its first LIST_PREVIEW_CHARS characters, flagged as cut
    assert items[task_id]["final_output"] == report[:LIST_PREVIEW_CHARS]
    assert items[task_id]["final_output_truncated"] is True
    # And a short one is whole and not flagged
    assert (items[short_id]["final_output"], items[short_id]["final_output_truncated"]) == ("# Short report", False)
    # And the status route returns the long output whole
    status = client.get(f"/tasks/{task_id}/status").json()
    assert (status["final_output"], status["final_output_truncated"]) == (report, False)
