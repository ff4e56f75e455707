"""A stop signal with a stream attached: the server stops at once, ends the stream with a line that
says how to re-attach, and hands its task over (real server processes, a real streaming client)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Queue

import httpx
import pytest

from tests.e2e.server import LocalServer, free_port
from tests.support import SEED_SEQUENCE

pytestmark = pytest.mark.e2e

# Leases long enough that only a lease handed back lets the other server resume within the test.
LONG_LEASES = {"LEASE_SECONDS": "120", "LEASE_RENEW_SECONDS": "1"}
UVICORN = Path(sys.executable).with_name("uvicorn")


def read_stream(url: str, lines: Queue[dict | None]) -> None:
    """POST /execute and put each line in ``lines`` as it arrives; None when the stream ends."""
    try:
        with httpx.stream("POST", url, timeout=httpx.Timeout(10, read=None)) as response:
            for line in response.iter_lines():
                if line:
                    lines.put(json.loads(line))
    finally:
        lines.put(None)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_streams_with_a_re_attach_line_and_hands_the_running_task_over(tmp_path, sig):
    db = tmp_path / "shared.db"
    # Given two servers on one file; on A each step takes 5 s (AGENT_LATENCY_SCALE=50)
    slow = LocalServer(db, AGENT_LATENCY_SCALE="50", **LONG_LEASES).start()
    other = LocalServer(db, **LONG_LEASES).start()
    try:
        task_id = httpx.post(f"{slow.url}/tasks", json={"description": "explain leases"}, timeout=10).json()["task_id"]
        # And a client streaming the task's execution from A, with its first step running there
        lines: Queue[dict | None] = Queue()
        reader = threading.Thread(target=read_stream, args=(f"{slow.url}/tasks/{task_id}/execute", lines))
        reader.start()
        seen = []
        while not seen or seen[-1]["event_type"] != "step_started":
            line = lines.get(timeout=30)
            assert line is not None, seen
            seen.append(line)
        # When A gets the stop signal
        assert slow.proc is not None
        slow.proc.send_signal(sig)
        # Then the stream ends with a server_stopping line that names the cursor to re-attach after
        while (line := lines.get(timeout=30)) is not None:
            seen.append(line)
        reader.join()
        stop = seen[-1]
        last_cursor = seen[-2]["cursor"]
        assert stop["event_type"] == "server_stopping", seen
        assert stop["data"]["cursor"] == last_cursor
        assert stop["data"]["resume"] == f"/tasks/{task_id}/events?after={last_cursor}"
        # And A exits without waiting for its streams or its steps (it would wait minutes otherwise)
        slow.proc.wait(timeout=15)
        # And no step started on A after the signal: the running one was its last invocation
        assert [r["step_id"] for r in slow.records("agent invoked")] == ["step_001"]
        # When the client re-attaches to the other server after the cursor it was given
        with httpx.stream("GET", f"{other.url}{stop['data']['resume']}", timeout=httpx.Timeout(10, read=60)) as rest:
            resumed = [json.loads(line) for line in rest.iter_lines() if line]
        # Then the task went on there at once (its lease was handed back, not left to expire in 120 s),
        # the interrupted step counted as an interrupted attempt, and it completed
        assert resumed[-1]["event_type"] == "task_completed", resumed
        retry = next(e for e in resumed if e["event_type"] == "step_retrying")
        assert retry["data"]["step_id"] == "step_001"
        assert "interrupted" in retry["data"]["error"]
        every = [e["event_type"] for e in seen[:-1] + resumed if e["event_type"] != "step_retrying"]
        assert every == SEED_SEQUENCE
    finally:
        slow.stop(signal.SIGKILL)
        other.stop()


def test_a_stop_signal_to_uvicorn_workers_ends_every_stream_and_hands_every_lease_back(tmp_path):
    db = tmp_path / "db.sqlite"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_PATH": str(db), "AGENT_LATENCY_SCALE": "50", **LONG_LEASES}
    log = (tmp_path / "uvicorn.log").open("wb")
    # Given two workers behind one port, each running tasks whose streams are attached
    proc = subprocess.Popen(
        [str(UVICORN), "--factory", "agentic.local.wiring:create_local_app", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_health(url, proc)
        ids = [
            httpx.post(f"{url}/tasks", json={"description": f"task {i}"}, timeout=10).json()["task_id"]
            for i in range(4)
        ]
        queues: dict[str, Queue[dict | None]] = {task_id: Queue() for task_id in ids}
        readers = [
            threading.Thread(target=read_stream, args=(f"{url}/tasks/{task_id}/execute", queues[task_id]))
            for task_id in ids
        ]
        for reader in readers:
            reader.start()
        streams: dict[str, list[dict]] = {task_id: [] for task_id in ids}
        for task_id, lines in queues.items():
            while not streams[task_id] or streams[task_id][-1]["event_type"] != "step_started":
                line = lines.get(timeout=30)
                assert line is not None, streams[task_id]
                streams[task_id].append(line)
        # When uvicorn gets SIGTERM
        proc.send_signal(signal.SIGTERM)
        # Then every stream ends with server_stopping, and the process exits
        for task_id, lines in queues.items():
            while (line := lines.get(timeout=30)) is not None:
                streams[task_id].append(line)
        assert [s[-1]["event_type"] for s in streams.values()] == ["server_stopping"] * 4
        proc.wait(timeout=15)
        # And every lease was handed back (due now, not in 120 s): any live server resumes them at once
        with sqlite3.connect(db) as conn:
            leases = conn.execute("SELECT status, lease_expires FROM tasks").fetchall()
        assert leases == [("executing", 0.0)] * 4
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def wait_for_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "uvicorn exited"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("uvicorn did not answer /health in 30 s")
