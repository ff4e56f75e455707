"""The ``agentic`` command against a real local server: what a user sees, and its exit codes.

The command runs as a user runs it (the installed console script, in a subprocess, no terminal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.proxy import CuttingProxy
from tests.e2e.server import LocalServer, free_port

pytestmark = pytest.mark.e2e

AGENTIC = Path(sys.executable).with_name("agentic")
DESCRIPTION = "Explain how exponential backoff with jitter prevents retry storms"


def agentic(*args: str, url: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTIC), "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1", **env},
        check=False,
    )


def test_submit_watch_shows_each_step_the_retry_and_the_report(tmp_path):
    # Given a server whose analyzer fails once, transiently
    with LocalServer(tmp_path / "db.sqlite", FAULTS="analyzer:transient:1") as server:
        # When a user submits a task and watches it
        result = agentic("submit", "--watch", DESCRIPTION, url=server.url)
    # Then the command exits 0 and shows the steps, the retry with its wait, the outputs and the report
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "✓ step_001 retriever done in 1 attempt" in out
    assert "✓ step_002 analyzer  done in 2 attempts" in out
    assert (
        "↻ step_002 analyzer: TransientAgentError: injected transient fault in analyzer (attempt 1); retrying in" in out
    )
    assert "step_001 retriever output:" in out
    assert "─ Report ─" in out
    assert "Recommendations" in out
    assert out.rstrip().endswith("completed")
    assert result.stderr == ""


def test_a_dropped_stream_is_re_attached_with_no_event_twice(tmp_path):
    # Given a proxy that drops the first stream after its third event, while the task runs
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="2") as server,
        CuttingProxy(server.port, cut_after=3) as proxy,
    ):
        # When the task is submitted and watched, raw, through the proxy
        raw = agentic("submit", "--watch", "--json", DESCRIPTION, url=proxy.url)
    # Then its stream was cut once and re-attached after the last event it had seen
    assert len(proxy.cut_streams) == 1
    assert len(proxy.streams) >= 2
    assert proxy.streams[0].last_event_id is None
    assert proxy.streams[1].last_event_id == str(proxy.streams[0].last_cursor)
    assert raw.returncode == 0, raw.stderr
    events = [json.loads(line) for line in raw.stdout.splitlines()]
    # And the raw events are the whole log, once each, in order
    assert [e["cursor"] for e in events] == list(range(1, 13))
    assert events[-1]["event_type"] == "task_completed"


def test_the_person_watching_sees_the_re_attach_and_the_end_once(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="2") as server,
        CuttingProxy(server.port, cut_after=3) as proxy,
    ):
        result = agentic("submit", "--watch", DESCRIPTION, url=proxy.url)
    assert len(proxy.cut_streams) == 1
    assert result.returncode == 0, result.stderr
    out = result.stdout
    resumed_after = proxy.streams[0].last_cursor
    assert f"connection lost (RemoteProtocolError); re-attaching after cursor {resumed_after} (Last-Event-ID)" in out
    assert out.count("step_001 retriever output:") == 1
    assert out.count("step_002 analyzer output:") == 1
    assert out.count("─ Report ─") == 1
    assert out.count("✓ task ") == 1


def test_the_exit_code_says_how_the_task_ended(tmp_path):
    with LocalServer(tmp_path / "db.sqlite", FAULTS="writer:permanent") as server:
        failed = agentic("submit", "--watch", DESCRIPTION, url=server.url)
        task_id = json.loads(agentic("list", "--json", url=server.url).stdout)["items"][0]["task_id"]
        watched = agentic("watch", task_id, url=server.url)  # a finished task: its log, then its outcome
    assert failed.returncode == 1
    assert "✗ step_003 writer" in failed.stdout
    assert f"✗ task {task_id} failed: PermanentAgentError: injected permanent fault in writer" in failed.stdout
    assert watched.returncode == 1


def test_submit_list_and_status(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server:
        # Given a task submitted without watching (it starts at once)
        submitted = agentic("submit", "--json", "--idempotency-key", "k-1", DESCRIPTION, url=server.url)
        task = json.loads(submitted.stdout)
        again = json.loads(agentic("submit", "--json", "--idempotency-key", "k-1", DESCRIPTION, url=server.url).stdout)
        with httpx.Client(base_url=server.url) as client, client.stream("GET", f"/tasks/{task['task_id']}/events") as r:
            assert list(r.iter_lines())[-1].startswith('{"event_type":"task_completed"')
        listed = agentic("list", "--status", "completed", url=server.url)
        pending = agentic("list", "--status", "pending", "--json", url=server.url)
        status = agentic("status", task["task_id"], url=server.url)
    assert submitted.returncode == 0
    assert again["task_id"] == task["task_id"]  # the same key, the same task
    assert task["task_id"] in listed.stdout
    assert "completed" in listed.stdout
    assert json.loads(pending.stdout)["items"] == []
    assert status.returncode == 0
    assert "step_003  writer     completed  1" in status.stdout
    assert "Recommendations" in status.stdout


def test_task_controls_and_approval_are_one_clear_line_where_the_server_lacks_them(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url) as client:
        paths = client.get("/openapi.json").json()["paths"]
        task_id = client.post("/tasks", json={"description": DESCRIPTION}).json()["task_id"]
        results = {action: agentic(action, task_id, url=server.url) for action in ("cancel", "approve", "reject")}
        approval = agentic("submit", "--approval", DESCRIPTION, url=server.url)
        missing = agentic("status", "no-such-task", url=server.url)
    for action, result in results.items():
        if f"/tasks/{{task_id}}/{action}" in paths:
            continue  # the task-control API is there: its own tests cover it
        assert result.returncode == 4
        assert result.stderr == f"agentic: this server does not support {action} yet\n"
    if "approval" not in json.dumps(paths):
        assert approval.returncode == 4
        assert approval.stderr == "agentic: this server does not support approval yet\n"
    assert missing.returncode == 4
    assert missing.stderr == "agentic: task no-such-task not found (HTTP 404 task_not_found)\n"


def test_a_token_is_sent_from_the_environment_and_a_wrong_one_is_refused(tmp_path):
    with LocalServer(tmp_path / "db.sqlite", API_TOKEN="s3cret") as server:
        refused = agentic("list", url=server.url, AGENTIC_TOKEN="wrong")
        accepted = agentic("list", url=server.url, AGENTIC_TOKEN="s3cret")
    assert refused.returncode == 4
    assert "(HTTP 401 unauthorized)" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def test_an_unreachable_server_is_exit_code_5_in_one_line():
    result = agentic("list", url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 5
    assert result.stderr.startswith("agentic: cannot reach http://127.0.0.1:")
    assert "Traceback" not in result.stderr


def test_ctrl_c_stops_watching_and_the_task_goes_on(tmp_path):
    # Given a slow task being watched (2 s of agent work)
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="5") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        task_id = client.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        watcher = subprocess.Popen(
            [str(AGENTIC), "--url", server.url, "watch", "--json", task_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # As in a terminal: a shell starts background jobs (make test &) with SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())  # attached: the first event is on screen
        # When the user presses Ctrl-C
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=30)
        # Then watching stops with 130 and says the task was not cancelled
        assert watcher.returncode == 130
        assert f"The task was not cancelled and keeps running; re-attach with: agentic watch {task_id}" in stderr
        # And the task runs to its end
        with client.stream("GET", f"/tasks/{task_id}/events", params={"after": first["cursor"]}) as response:
            last = [json.loads(line) for line in response.iter_lines() if line][-1]
        assert last["event_type"] == "task_completed"


def test_approve_cancel_and_retry_from_the_command_line(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="0") as server,
        httpx.Client(base_url=server.url) as api,
    ):
        # Given a task submitted with --approval: it stops before the report
        submitted = agentic("submit", "--approval", "--json", DESCRIPTION, url=server.url)
        task_id = json.loads(submitted.stdout)["task_id"]
        with api.stream("GET", f"/tasks/{task_id}/events") as response:
            for line in response.iter_lines():
                if json.loads(line)["event_type"] == "approval_requested":
                    break
        # When it is approved from the command line, it finishes with the report
        approved = agentic("approve", task_id, "-m", "fine", url=server.url)
        assert approved.returncode == 0, approved.stderr
        watched = agentic("watch", task_id, "--json", url=server.url)
        assert watched.returncode == 0
        assert json.loads(watched.stdout.splitlines()[-1])["event_type"] == "task_completed"
        # And a pending task cancelled from the command line ends cancelled (exit code 3 to watch it)
        pending = api.post("/tasks", json={"description": DESCRIPTION}).json()["task_id"]
        cancelled = agentic("cancel", pending, "-m", "not needed", url=server.url)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"task {pending} cancelled" in cancelled.stdout
        assert agentic("watch", pending, url=server.url).returncode == 3
        # And retried, it runs to the end
        retried = agentic("retry", pending, url=server.url)
        assert retried.returncode == 0, retried.stderr
        assert agentic("watch", pending, url=server.url).returncode == 0
        # And a request the task's state does not allow is one clear line, exit code 4
        refused = agentic("approve", pending, url=server.url)
        assert refused.returncode == 4
        assert "not awaiting approval" in refused.stderr


def test_a_watch_re_attaches_by_itself_when_its_server_stops_and_comes_back(tmp_path):
    db = tmp_path / "db.sqlite"
    # Given a task watched from the command line while its first step runs (5 s on this server)
    first = LocalServer(db, AGENT_LATENCY_SCALE="50").start()
    watch = subprocess.Popen(
        [str(AGENTIC), "--url", first.url, "submit", "--watch", DESCRIPTION],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
    )
    try:
        while not first.records("agent invoked"):
            assert watch.poll() is None
            time.sleep(0.02)
        # When the server is stopped (SIGTERM) and started again on the same port and file
        first.stop(signal.SIGTERM)
        with LocalServer(db, port=first.port):
            out, err = watch.communicate(timeout=60)
    finally:
        first.stop(signal.SIGKILL)
        if watch.poll() is None:
            watch.kill()
    # Then the watch said why its stream ended, re-attached after its last event, and saw the end
    assert watch.returncode == 0, err
    assert "the server is stopping; re-attaching after cursor 3 (Last-Event-ID)" in out
    assert out.count("✓ step_001 retriever done in 2 attempts") == 1
    assert out.rstrip().endswith("completed")
