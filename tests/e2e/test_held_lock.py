"""Another process holding the store's write lock (``BEGIN IMMEDIATE``, as a server frozen inside a
transaction would) delays writes only: reads, /health and streams of a real server keep answering,
and a write that cannot get the lock fails with 503 and Retry-After."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LocalServer

pytestmark = pytest.mark.e2e

BUSY_TIMEOUT_SECONDS = 8
#: Far below the busy timeout: a request that waited for the lock cannot answer within it.
READ_TIMEOUT_SECONDS = 3

HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


class LockHolder:
    def __init__(self, database: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


def test_a_lock_held_by_another_process_stalls_no_read_health_or_stream(tmp_path):
    db = tmp_path / "shared.db"
    env = {
        "STORE_BUSY_TIMEOUT_SECONDS": str(BUSY_TIMEOUT_SECONDS),
        "AGENT_LATENCY_SCALE": "5",  # each step takes 0.5 s: the run writes while the lock is held
        "STREAM_KEEPALIVE_SECONDS": "0.3",
        "HEALTH_PROBE_SECONDS": "600",  # only a successful write can clear a failure /health saw
    }
    with LocalServer(db, **env) as server, httpx.Client(base_url=server.url, timeout=READ_TIMEOUT_SECONDS) as client:
        task_id = client.post("/tasks", json={"description": "explain write locks"}).json()["task_id"]
        # Given a stream attached to a running task
        lines: list[dict] = []
        stream_open = threading.Event()

        def follow() -> None:
            with httpx.stream("POST", f"{server.url}/tasks/{task_id}/execute", timeout=30) as response:
                for line in response.iter_lines():
                    stream_open.set()
                    if line:
                        lines.append(json.loads(line))

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert stream_open.wait(10)
        # When another process takes the write lock and holds it
        holder = LockHolder(db)
        try:
            seen_before = len(lines)
            # And a client creates a task meanwhile (a write: it waits for the lock, then gives up)
            created: list[httpx.Response] = []
            writer = threading.Thread(
                target=lambda: created.append(httpx.post(f"{server.url}/tasks", json={"description": "x"}, timeout=30))
            )
            writer.start()
            # Then reads and /health answer all along, well within the busy timeout
            until = time.monotonic() + BUSY_TIMEOUT_SECONDS + 1
            reads = 0
            while time.monotonic() < until:
                assert client.get(f"/tasks/{task_id}/status").status_code == 200
                assert client.get("/tasks").status_code == 200
                health = client.get("/health")
                assert health.status_code in (200, 503)
                reads += 1
                time.sleep(0.2)
            # And the stream kept flowing (keepalive lines: nothing new can be written)
            assert any(line["event_type"] == "keepalive" for line in lines[seen_before:])
            # And the write failed with 503 and Retry-After once its time was up
            writer.join(timeout=30)
            assert created[0].status_code == 503, created[0].text
            assert created[0].json()["error"] == "store_unavailable"
            assert int(created[0].headers["Retry-After"]) >= 1
            assert client.get("/health").status_code == 503  # /health saw the failure
        finally:
            holder.release()
        # When the lock is free again, the next write succeeds and /health says so at once
        assert client.post("/tasks", json={"description": "after the lock"}).status_code == 201
        assert client.get("/health").status_code == 200
        # And the task goes on to its end
        reader.join(timeout=60)
        assert lines[-1]["event_type"] == "task_completed"
        assert reads >= 5
