"""End to end: the real server over loopback, a real HTTP client reading the stream line by line."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.e2e.server import LocalServer
from tests.support import SEED_SEQUENCE, event_types

pytestmark = pytest.mark.e2e


def create(client: httpx.Client, description: str = "Explain how retries with exponential backoff work") -> str:
    response = client.post("/tasks", json={"description": description})
    assert response.status_code == 201, response.text
    return response.json()["task_id"]


def read_stream(client: httpx.Client, method: str, path: str, **kw) -> list[dict]:
    with client.stream(method, path, **kw) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line]


def test_events_arrive_one_by_one_while_the_task_runs(tmp_path):
    # Given a server with slow agents (the seed's latencies x10: 1 s, 2 s, 1 s)
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="10") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        task_id = create(client)
        seen: list[dict] = []
        status_during: dict[str, str] = {}
        # When the client reads the execute stream line by line
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            assert response.headers["content-type"].startswith("application/x-ndjson")
            for line in response.iter_lines():
                event = json.loads(line)
                seen.append(event)
                if event["event_type"] == "step_started":
                    # Then, at each step start, the task is visibly still running (not buffered to the end)
                    status = client.get(f"/tasks/{task_id}/status").json()
                    status_during[event["data"]["step_id"]] = status["status"]
                    assert status["steps"][int(event["data"]["step_id"][-1]) - 1]["status"] == "running"
        assert event_types(seen) == SEED_SEQUENCE
        assert status_during == {"step_001": "executing", "step_002": "executing", "step_003": "executing"}
        assert client.get(f"/tasks/{task_id}/status").json()["status"] == "completed"


def test_tasks_and_events_survive_a_restart(tmp_path):
    db = tmp_path / "db.sqlite"
    with LocalServer(db) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        task_id = create(client)
        events = read_stream(client, "POST", f"/tasks/{task_id}/execute")
    # When the server restarts on the same file
    with LocalServer(db) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        # Then the task and its whole log are there
        assert client.get(f"/tasks/{task_id}/status").json()["status"] == "completed"
        assert read_stream(client, "GET", f"/tasks/{task_id}/events") == events
        assert [t["task_id"] for t in client.get("/tasks").json()["items"]] == [task_id]


@pytest.mark.parametrize("group_commit", ["false", "true"])
def test_one_hundred_concurrent_tasks_all_complete(tmp_path, group_commit):
    async def run_all(url: str) -> list[list[str]]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

            async def one(i: int) -> list[str]:
                created = await client.post("/tasks", json={"description": f"concurrent task {i} about streaming"})
                task_id = created.json()["task_id"]
                async with client.stream("POST", f"/tasks/{task_id}/execute") as response:
                    return [json.loads(line)["event_type"] async for line in response.aiter_lines() if line]

            return await asyncio.gather(*(one(i) for i in range(100)))

    with LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="1", SQLITE_GROUP_COMMIT=group_commit) as server:
        results = asyncio.run(run_all(server.url))
        assert len(results) == 100
        assert all(r == SEED_SEQUENCE for r in results)
        with httpx.Client(base_url=server.url) as client:
            done = client.get("/tasks", params={"status": "completed", "limit": 100}).json()["items"]
            assert len(done) == 100


def test_transient_faults_recover_with_step_retrying_events(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", FAULTS="analyzer:transient:2", RETRY_TIME_SCALE="0.1") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        events = read_stream(client, "POST", f"/tasks/{create(client)}/execute")
        retries = [e["data"] for e in events if e["event_type"] == "step_retrying"]
        assert [(r["step_id"], r["delay_seconds"]) for r in retries] == [("step_002", 0.1), ("step_002", 0.2)]
        assert events[-1]["event_type"] == "task_completed"


def test_a_permanent_fault_ends_failed_with_an_error_event(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", FAULTS="retriever:permanent") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        task_id = create(client)
        events = read_stream(client, "POST", f"/tasks/{task_id}/execute")
        assert event_types(events) == ["task_started", "plan_created", "step_started", "error", "task_failed"]
        assert events[-2]["data"]["error"] == "PermanentAgentError"
        status = client.get(f"/tasks/{task_id}/status").json()
        assert status["status"] == "failed"
        assert "injected permanent fault" in status["error_message"]
