"""The ``agentic`` command, second pass: finding tasks (pages, search, short ids), retry from a step,
the end of a cancelled watch, and the mistakes a new user makes (a URL without scheme, no token).

Against a real local server, the command run as a user runs it (a subprocess, no terminal).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agentic.service.tasks import task_id_for
from tests.e2e.server import LocalServer
from tests.e2e.test_cli import AGENTIC, DESCRIPTION, agentic

pytestmark = pytest.mark.e2e


def events(client: httpx.Client, task_id: str) -> list[dict]:
    """The task's log to its end (the stream ends with the task)."""
    with client.stream("GET", f"/tasks/{task_id}/events") as response:
        return [json.loads(line) for line in response.iter_lines() if line.strip()]


def colliding_keys(owner: str = "local") -> tuple[str, str]:
    """Two Idempotency-Keys whose task ids share their first 4 characters (ids are uuid5 of the key)."""
    seen: dict[str, str] = {}
    for n in itertools.count():
        key = f"k-{n}"
        prefix = task_id_for("api", owner, key)[:4]
        if prefix in seen:
            return seen[prefix], key
        seen[prefix] = key
    raise AssertionError("unreachable")


def test_retry_from_a_chosen_step_and_no_message_option(tmp_path):
    # Given a task that failed at its writer
    with (
        LocalServer(tmp_path / "db.sqlite", FAULTS="writer:permanent") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        assert events(api, task_id)[-1]["event_type"] == "task_failed"
        # When it is retried from its first step, by a short prefix of its id
        retried = agentic("retry", task_id[:8], "--from-step", "step_001", url=server.url)
        with_message = agentic("retry", task_id, "-m", "again", url=server.url)
        log = events(api, task_id)
        status = api.get(f"/tasks/{task_id}/status").json()
    # Then the retry ran from that step: the retriever ran twice
    assert retried.returncode == 0, retried.stderr
    assert f"task {task_id} " in retried.stdout
    retry_event = next(e for e in log if e["event_type"] == "task_retried")
    assert retry_event["data"]["from_step"] == "step_001"
    assert status["steps"][0]["attempts"] == 2
    # And -m, which retry has nowhere to send, is refused rather than dropped
    assert with_message.returncode == 2
    assert "No such option: -m" in with_message.stderr


def test_list_pages_on_with_the_cursor_it_prints_and_searches_by_text_and_date(tmp_path):
    descriptions = [f"Task number {n} about {'jitter' if n % 2 else 'backoff'}" for n in range(5)]
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
        ids = [api.post("/tasks", json={"description": d}).json()["task_id"] for d in descriptions]
        # When the user lists 2 at a time, following the "more:" line each time
        seen: list[str] = []
        args = ["list", "--limit", "2"]
        for _ in range(5):
            page = agentic(*args, url=server.url)
            assert page.returncode == 0, page.stderr
            rows = [line.split() for line in page.stdout.splitlines()]
            seen += [row[0] for row in rows if row and row[0] in ids]
            more = [line for line in page.stdout.splitlines() if line.startswith("more: agentic list ")]
            if not more:
                break
            args = more[0].removeprefix("more: agentic ").split()
        # And searches by text, and by date
        jitter = json.loads(agentic("list", "--search", "JITTER", "--json", url=server.url).stdout)
        jitter_paged = json.loads(agentic("list", "-s", "jitter", "--limit", "1", "--json", url=server.url).stdout)
        today = datetime.now(UTC).date()
        since_today = json.loads(agentic("list", "--since", today.isoformat(), "--json", url=server.url).stdout)
        tomorrow = (today + timedelta(days=1)).isoformat()
        since_tomorrow = agentic("list", "--since", tomorrow, url=server.url)
        yesterday = (today - timedelta(days=1)).isoformat()
        until_yesterday = json.loads(agentic("list", "--until", yesterday, "--json", url=server.url).stdout)
        bad_date = agentic("list", "--since", "last week", url=server.url)
    # Then the pages hold every task once, newest first
    assert seen == ids[::-1]
    # And the search finds exactly the matching tasks, and pages on through matches only
    assert {t["task_id"] for t in jitter["items"]} == {ids[1], ids[3]}
    assert [t["task_id"] for t in jitter_paged["items"]] == [ids[3]]
    assert jitter_paged["next_cursor"]
    assert len(since_today["items"]) == 5
    assert since_tomorrow.returncode == 0
    assert "no tasks match" in since_tomorrow.stdout
    assert until_yesterday["items"] == []
    assert bad_date.returncode == 2
    assert "not a date" in bad_date.stderr


def test_a_unique_id_prefix_is_resolved_and_an_ambiguous_one_refused_with_the_candidates(tmp_path):
    first_key, second_key = colliding_keys()
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
        first = api.post("/tasks", json={"description": "first"}, headers={"Idempotency-Key": first_key}).json()
        second = api.post("/tasks", json={"description": "second"}, headers={"Idempotency-Key": second_key}).json()
        shared = first["task_id"][:4]
        assert second["task_id"].startswith(shared)
        unique = first["task_id"][: next(i for i in range(5, 36) if first["task_id"][:i] != second["task_id"][:i])]
        status = agentic("status", unique, url=server.url)
        ambiguous = agentic("status", shared, url=server.url)
        cancelled = agentic("cancel", unique, "-m", "by prefix", url=server.url)
        unknown = agentic("status", "ffff0000", url=server.url)
    assert status.returncode == 0, status.stderr
    assert f"task {first['task_id']}" in status.stdout
    assert ambiguous.returncode == 2
    assert f"'{shared}' is the start of 2 task ids" in ambiguous.stderr
    assert first["task_id"] in ambiguous.stderr
    assert second["task_id"] in ambiguous.stderr
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"task {first['task_id']} cancelled" in cancelled.stdout
    assert unknown.returncode == 4
    assert "task ffff0000 not found" in unknown.stderr


def test_watching_a_task_that_gets_cancelled_ends_with_the_reason_and_no_running_step(tmp_path):
    # (the retriever takes 5 s: the cancel lands while it runs, however slow the machine)
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="50") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        watcher = subprocess.Popen(
            [str(AGENTIC), "--url", server.url, "watch", task_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"COLUMNS": "120", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        )
        # When the task is cancelled while its first step runs
        with api.stream("GET", f"/tasks/{task_id}/events") as response:
            for line in response.iter_lines():
                if json.loads(line)["event_type"] == "step_started":
                    break
        api.post(f"/tasks/{task_id}/cancel", json={"reason": "not needed after all"})
        out, err = watcher.communicate(timeout=30)
    # Then watching ends with exit code 3, the reason, and the stopped step marked as such
    assert watcher.returncode == 3, err
    assert f"⊘ task {task_id} cancelled: not needed after all" in out
    assert "⊘ step_001 retriever stopped: task cancelled" in out
    assert "running" not in out


def test_an_error_names_its_class_once(tmp_path):
    with LocalServer(tmp_path / "db.sqlite", FAULTS="writer:permanent") as server:
        failed = agentic("submit", "--watch", DESCRIPTION, url=server.url)
    assert failed.returncode == 1
    assert "✗ step_003 writer    PermanentAgentError: injected permanent fault in writer" in failed.stdout
    assert "PermanentAgentError: PermanentAgentError" not in failed.stdout


def test_a_url_without_scheme_is_a_usage_error_that_says_the_fix():
    result = subprocess.run(
        [str(AGENTIC), "list"], capture_output=True, text=True, env={"AGENTIC_URL": "localhost:8000"}, check=False
    )
    assert result.returncode == 2
    assert "write it with its scheme, e.g. http://localhost:8000" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_token_says_how_to_give_one(tmp_path):
    with LocalServer(tmp_path / "db.sqlite", API_TOKEN="s3cret") as server:
        missing = agentic("list", url=server.url)
    assert missing.returncode == 4
    assert "(HTTP 401 unauthorized); pass the server's token with --token or AGENTIC_TOKEN" in missing.stderr


def test_submit_says_the_task_started_and_status_shows_timings(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as api:
        submitted = agentic("submit", DESCRIPTION, url=server.url)
        task_id = submitted.stdout.split()[1]
        assert events(api, task_id)[-1]["event_type"] == "task_completed"
        status = agentic("status", task_id, url=server.url)
        task = api.get(f"/tasks/{task_id}/status").json()
    assert submitted.returncode == 0, submitted.stderr
    assert f"task {task_id} started; follow it with: agentic watch {task_id}" in submitted.stdout
    # The status has each step's start, end and duration, and the task's total
    assert all(step["duration_seconds"] is not None and step["duration_seconds"] >= 0 for step in task["steps"])
    for step in task["steps"]:
        assert step["started_at"] <= step["completed_at"]
    assert task["duration_seconds"] >= task["steps"][-1]["duration_seconds"]
    assert "started (UTC)" in status.stdout
    assert "took" in status.stdout
    assert f"completed  in {task['duration_seconds']:.2f} s" in status.stdout


def test_ctrl_c_without_a_terminal_puts_its_notice_on_a_line_of_its_own(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="10") as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        task_id = api.post("/tasks", json={"description": DESCRIPTION, "execute": True}).json()["task_id"]
        watcher = subprocess.Popen(
            [str(AGENTIC), "--url", server.url, "watch", task_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream, as a terminal or `2>&1 | tee` shows them
            text=True,
            env={"COLUMNS": "120", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert watcher.stdout is not None
        assert "output:" in watcher.stdout.readline()  # the first step's output is on screen
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == 130
    assert any(line.startswith("Stopped watching.") for line in out.splitlines()), out


def test_shell_completion_is_offered():
    # Typer detects the user's shell from the parent process; under make or CI there may be none to
    # detect, so name it (Typer's switch for exactly this) instead of depending on who runs the test.
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run(
        [str(AGENTIC), "--show-completion", "bash"], capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "_agentic_completion" in result.stdout
