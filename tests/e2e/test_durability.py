"""Durable execution across real processes: several servers on one file, crashes, restarts.

Agent invocations are counted from the servers' own logs (one ``agent invoked`` record per attempt
of a step), not from events: the event log drops duplicate keys and would hide a step run twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.server import LocalServer
from tests.support import SEED_SEQUENCE, event_types

pytestmark = pytest.mark.e2e

# Short leases so a dead process's tasks are resumed within a couple of seconds.
FAST_LEASES = {"LEASE_SECONDS": "2", "LEASE_RENEW_SECONDS": "0.5"}


def invocations(*servers: LocalServer) -> Counter[tuple[str, str]]:
    return Counter((r["task_id"], r["agent_type"]) for s in servers for r in s.records("agent invoked"))


def create(client: httpx.Client, i: int = 0, **body: object) -> str:
    response = client.post("/tasks", json={"description": f"task {i}: explain retries with backoff", **body})
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


def stream(client: httpx.Client, method: str, path: str) -> list[dict]:
    with client.stream(method, path) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line]


def test_the_same_tasks_executed_on_two_servers_at_once_run_each_step_once(tmp_path):
    db = tmp_path / "shared.db"
    with LocalServer(db, AGENT_LATENCY_SCALE="1") as a, LocalServer(db, AGENT_LATENCY_SCALE="1") as b:
        with httpx.Client(base_url=a.url, timeout=30) as client:
            ids = [create(client, i) for i in range(10)]

        async def execute_everywhere() -> list[list[dict]]:
            async with httpx.AsyncClient(timeout=60) as client:

                async def run(url: str, task_id: str) -> list[dict]:
                    async with client.stream("POST", f"{url}/tasks/{task_id}/execute") as response:
                        return [json.loads(line) async for line in response.aiter_lines() if line]

                # When every task is executed on both servers at the same instant
                return await asyncio.gather(*(run(url, t) for t in ids for url in (a.url, b.url)))

        streams = asyncio.run(execute_everywhere())
        # Then both streams of every task show the whole run, once
        assert all(event_types(s) == SEED_SEQUENCE for s in streams)
        # And each agent ran exactly once per task, in one process or the other
        counts = invocations(a, b)
        assert counts == Counter({(t, agent): 1 for t in ids for agent in ("retriever", "analyzer", "writer")})


def test_a_server_started_beside_a_busy_one_leaves_its_tasks_running(tmp_path):
    db = tmp_path / "shared.db"
    with LocalServer(db, AGENT_LATENCY_SCALE="10") as a, httpx.Client(base_url=a.url, timeout=60) as client:
        # Given server A running 10 tasks (about 4 s each)
        ids = [create(client, i, execute=True) for i in range(10)]
        # When a second server starts on the same file, and a third that cannot take A's port
        late = LocalServer(db, port=a.port)
        assert late.spawn().wait(timeout=30) == 2
        assert "cannot listen" in late.log.read_text()
        with LocalServer(db) as b:
            # Then A's tasks all complete (none is failed or taken over), run by A alone
            for task_id in ids:
                assert event_types(stream(client, "GET", f"/tasks/{task_id}/events"))[-1] == "task_completed"
            assert invocations(b) == Counter()
        assert sum(invocations(a).values()) == 30


@pytest.mark.parametrize("group_commit", ["false", "true"])
def test_a_killed_server_s_task_resumes_after_a_restart_without_rerunning_finished_steps(tmp_path, group_commit):
    db = tmp_path / "db.sqlite"
    # Given a task whose analyzer step (20 s at this latency) is running
    first = LocalServer(db, AGENT_LATENCY_SCALE="100", SQLITE_GROUP_COMMIT=group_commit, **FAST_LEASES).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            task_id = create(client)
            with client.stream("POST", f"/tasks/{task_id}/execute") as response:
                for line in response.iter_lines():
                    event = json.loads(line)
                    if event["event_type"] == "step_started" and event["data"]["step_id"] == "step_002":
                        break
            # (runs go on a thread of their own: the step is announced just before its agent is invoked)
            while not [r for r in first.records("agent invoked") if r["step_id"] == "step_002"]:
                time.sleep(0.02)
            # When the server is killed
            first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
    # And a server starts again on the file
    with (
        LocalServer(db, SQLITE_GROUP_COMMIT=group_commit, **FAST_LEASES) as second,
        httpx.Client(base_url=second.url, timeout=30) as client,
    ):
        events = stream(client, "GET", f"/tasks/{task_id}/events")
        # Then the stream shows the interruption and ends with the completed task
        retrying = [e for e in events if e["event_type"] == "step_retrying"]
        assert [(r["data"]["step_id"], r["data"]["attempt"]) for r in retrying] == [("step_002", 2)]
        assert "interrupted" in retrying[0]["data"]["error"]
        assert events[-1]["event_type"] == "task_completed"
        assert client.get(f"/tasks/{task_id}/status").json()["status"] == "completed"
        # And the retriever, finished before the crash, did not run again
        assert invocations(first, second) == Counter(
            {(task_id, "retriever"): 1, (task_id, "analyzer"): 2, (task_id, "writer"): 1}
        )
        assert invocations(second)[(task_id, "retriever")] == 0


def test_a_stream_of_a_pending_task_says_it_waits_for_the_start(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as client:
        task_id = create(client)
        with client.stream("GET", f"/tasks/{task_id}/events") as response:
            lines = response.iter_lines()
            first = json.loads(next(lines))
            # Then the first line says nothing will happen until someone executes the task
            assert first["event_type"] == "task_pending"
            assert first["data"]["execute"] == f"/tasks/{task_id}/execute"
            # When someone does, the same stream shows the run to its end
            assert event_types(stream(client, "POST", f"/tasks/{task_id}/execute")) == SEED_SEQUENCE
            rest = [json.loads(line) for line in lines if line]
        assert event_types(rest) == SEED_SEQUENCE


def test_streams_resumed_at_or_past_the_end_end_with_the_task(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="2") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        # Given a pending task executed with a cursor beyond anything its run will write
        task_id = create(client)
        events = stream(client, "POST", f"/tasks/{task_id}/execute?after=50")
        # Then the stream ends once the task has ended, with nothing to show
        assert events == []
        assert client.get(f"/tasks/{task_id}/status").json()["status"] == "completed"
        # And a running task re-attached with Last-Event-ID at its last event ends with it too
        other = create(client, 1)
        with client.stream("POST", f"/tasks/{other}/execute") as response:
            last = json.loads(next(response.iter_lines()))
        with client.stream("GET", f"/tasks/{other}/events", headers={"Last-Event-ID": str(last["cursor"] + 100)}) as r:
            assert [line for line in r.iter_lines() if line] == []
        assert client.get(f"/tasks/{other}/status").json()["status"] == "completed"
