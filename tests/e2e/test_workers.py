"""``WORKERS=2``: several server processes on one port and one SQLite file, under a supervisor
(real processes, real signals, a real HTTP client reading the streams)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LocalServer, run_to_exit

pytestmark = pytest.mark.e2e


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's live children (its workers), from ``/proc``."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue  # exited meanwhile
            if int(ppid) == supervisor and state != "Z":
                children.append(int(entry.name))
    return sorted(children)


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_ms(pid: int) -> float:
    """User + system CPU of one process so far (``/proc/<pid>/stat``), in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def lease_holders(database: Path) -> list[int]:
    """The pids whose runners hold leases on tasks (runner ids are ``host:pid:suffix``), most first."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT lease_owner FROM tasks WHERE lease_owner IS NOT NULL").fetchall()
    pids = Counter(int(owner.split(":")[1]) for (owner,) in rows)
    return [pid for pid, _ in pids.most_common()]


def wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def run_task(url: str, i: int) -> str:
    """Create and execute a task, reading its stream to the end: its last event's type."""
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=None)) as client:
        task_id = client.post("/tasks", json={"description": f"Explain backoff, worker test {i}"}).json()["task_id"]
        last = ""
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            for line in response.iter_lines():
                if line:
                    last = json.loads(line)["event_type"]
        return last


def test_two_workers_serve_one_port_and_every_task_completes(tmp_path):
    # Given a server with two worker processes
    with LocalServer(tmp_path / "t.db", WORKERS="2", POWERTOOLS_LOG_LEVEL="WARNING") as server:
        assert server.proc is not None
        assert wait_for(lambda: len(workers_of(server.proc.pid)) == 2)
        workers = workers_of(server.proc.pid)
        before = {pid: cpu_ms(pid) for pid in workers}
        # When 60 clients each create a task and stream its execution, each on a new connection
        with ThreadPoolExecutor(20) as pool:
            ends = list(pool.map(lambda i: run_task(server.url, i), range(60)))
        # Then every stream ends with its task completed, and both workers did part of the work
        assert ends == ["task_completed"] * 60
        # (a task costs a worker ~3 ms of CPU; an idle one spends well under 1 ms in these seconds)
        used = {pid: cpu_ms(pid) - before[pid] for pid in workers}
        assert all(ms >= 15 for ms in used.values()), used
        # And the supervisor announced both in its one listening line
        assert "2 worker processes" in server.log.read_text().splitlines()[0]


def test_a_stop_signal_stops_every_worker_and_the_server_says_stopped_once(tmp_path):
    # Given a server with two worker processes
    with LocalServer(tmp_path / "t.db", WORKERS="2") as server:
        assert server.proc is not None
        assert wait_for(lambda: len(workers_of(server.proc.pid)) == 2)
        workers = workers_of(server.proc.pid)
        # When the supervisor is sent SIGTERM
        server.proc.send_signal(signal.SIGTERM)
        # Then it exits 0 once its workers have stopped gracefully, and says so once
        assert server.proc.wait(timeout=30) == 0
        assert not any(alive(pid) for pid in workers)
        log = server.log.read_text()
        assert log.count("python -m agentic.local: stopped") == 1
        assert log.count("Application shutdown complete") == 2


def test_a_killed_worker_is_replaced_and_its_tasks_are_finished_by_the_others(tmp_path):
    # Given a server with two workers and tasks whose agents take a while
    settings = {"WORKERS": "2", "AGENT_LATENCY_SCALE": "3", "LEASE_SECONDS": "2", "LEASE_RENEW_SECONDS": "0.5"}
    with LocalServer(tmp_path / "t.db", **settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert server.proc is not None
        assert wait_for(lambda: len(workers_of(server.proc.pid)) == 2)
        ids = []
        for i in range(8):
            task = client.post("/tasks", json={"description": f"Explain leases {i}", "execute": True})
            assert task.status_code == 201, task.text
            ids.append(task.json()["task_id"])
        assert wait_for(lambda: all(client.get(f"/tasks/{t}/status").json()["status"] == "executing" for t in ids))
        victim = lease_holders(tmp_path / "t.db")[0]
        assert victim in workers_of(server.proc.pid)
        # When the worker running them is killed with SIGKILL mid-run
        os.kill(victim, signal.SIGKILL)
        # Then the supervisor starts another in its place
        assert wait_for(lambda: "exited with -9; starting another" in server.log.read_text())
        assert wait_for(lambda: len(live := workers_of(server.proc.pid)) == 2 and victim not in live)

        # And every task completes (the dead worker's once its leases expire), each step run to completion
        # once (each request on a new connection: the client's one may have gone to the dead worker)
        def status(task_id: str) -> str:
            return str(httpx.get(f"{server.url}/tasks/{task_id}/status", timeout=30).json()["status"])

        assert wait_for(lambda: all(status(t) == "completed" for t in ids), 60)
        for task_id in ids:
            text = httpx.get(f"{server.url}/tasks/{task_id}/events", timeout=30).text
            events = [json.loads(line) for line in text.splitlines() if line]
            completed = [e["data"]["step_id"] for e in events if e["event_type"] == "step_completed"]
            assert sorted(completed) == ["step_001", "step_002", "step_003"]


def test_the_workers_stop_when_the_supervisor_is_killed(tmp_path):
    # Given a server with two worker processes
    with LocalServer(tmp_path / "t.db", WORKERS="2") as server:
        assert server.proc is not None
        assert wait_for(lambda: len(workers_of(server.proc.pid)) == 2)
        workers = workers_of(server.proc.pid)
        # When the supervisor is killed with SIGKILL (it cannot stop them itself)
        server.proc.kill()
        server.proc.wait(timeout=10)
        # Then each worker notices its supervisor is gone and stops by itself
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 30)


def test_a_worker_that_cannot_open_the_store_stops_the_server_with_exit_code_2(tmp_path):
    # Given a database path that cannot be created
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    # When the server starts with two workers
    result = run_to_exit(0, DATABASE_PATH=str(blocker / "t.db"), WORKERS="2")
    # Then it stops with exit code 2, saying why, and does not restart workers in a loop
    assert result.returncode == 2
    assert "cannot open DATABASE_PATH" in result.stderr
    assert "could not start; stopping" in result.stderr
    assert "starting another" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_stop_right_after_start_stops_every_worker(tmp_path):
    # Given a server with four workers, told to stop while it is still forking them
    server = LocalServer(tmp_path / "t.db", WORKERS="4")
    proc = server.spawn()
    try:
        assert wait_for(lambda: "listening on" in server.log.read_text(), 30)
        # When it is sent SIGTERM at once
        proc.send_signal(signal.SIGTERM)
        # Then it and every worker stop (none goes on serving)
        assert proc.wait(timeout=30) == 0
        assert workers_of(proc.pid) == []
    finally:
        server.stop(signal.SIGKILL)


def test_a_second_server_with_workers_cannot_take_a_port_already_served(tmp_path):
    # Given a server with two workers on a port
    with LocalServer(tmp_path / "a.db", WORKERS="2") as first:
        # When another is started with two workers on the same port
        result = run_to_exit(first.port, DATABASE_PATH=str(tmp_path / "b.db"), WORKERS="2")
        # Then it refuses, instead of sharing the port's connections with the first
        assert result.returncode == 2
        assert "cannot listen on" in result.stderr
