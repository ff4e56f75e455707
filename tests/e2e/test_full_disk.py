"""A real full disk: the data file on a 2 MB tmpfs that fills up while 40 tasks run.

Needs permission to mount a tmpfs (root in a container that allows it, as on this project's CI
machines); elsewhere the test is skipped with the reason. The same behaviour is covered without a
mount by tests/functional/test_store_failures.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LocalServer

pytestmark = pytest.mark.e2e

TERMINAL = {"task_completed", "task_failed"}


@contextlib.contextmanager
def small_filesystem(tmp_path: Path, size: str = "2m") -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Take all the free space of ``folder``'s file system but ``leave_bytes``."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    size = max(stat.f_bavail * stat.f_frsize - leave_bytes, 0)
    with filler.open("wb") as f:
        f.write(b"\0" * size)
    return filler


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_to_end(url: str, task_id: str, seen: dict[str, list[str]]) -> None:
    with (
        httpx.Client(base_url=url, timeout=120) as client,
        client.stream("GET", f"/tasks/{task_id}/events") as response,
    ):
        seen[task_id] = [json.loads(line)["event_type"] for line in response.iter_lines() if line]


def test_a_full_disk_answers_503_and_every_task_finishes_once_space_returns(tmp_path):
    with small_filesystem(tmp_path) as small:
        server = LocalServer(
            small / "tasks.db",
            log=tmp_path / "server.log",
            AGENT_LATENCY_SCALE="1",
            LEASE_SECONDS="2",
            LEASE_RENEW_SECONDS="0.5",
            HEALTH_PROBE_SECONDS="60",
        ).start()
        try:
            # Given a disk with 1 MB left
            filler = fill(small, 1024 * 1024)
            description = "Explain backpressure in streaming systems. " * 20  # 880 characters

            # When 40 clients create and execute a task at once
            def create(i: int) -> httpx.Response:
                with httpx.Client(base_url=server.url, timeout=30) as client:
                    return client.post(
                        "/tasks",
                        json={"description": f"{i} {description}", "execute": True},
                        headers={"Idempotency-Key": str(uuid.uuid4())},
                    )

            with ThreadPoolExecutor(40) as pool:
                responses = list(pool.map(create, range(40)))
            # Then every answer is a task or a clear, retryable 503; never a 500
            codes = {r.status_code for r in responses}
            assert codes <= {201, 503}, [r.text for r in responses if r.status_code not in (201, 503)]
            for r in responses:
                if r.status_code == 503:
                    assert r.json()["error"] == "store_unavailable"
                    assert "Retry-After" in r.headers
            with httpx.Client(base_url=server.url, timeout=30) as client:
                # And /health says the store cannot be written
                deadline = time.monotonic() + 30
                while client.get("/health").status_code != 503:  # the disk fills as runs go on
                    assert time.monotonic() < deadline, "the disk never filled"
                    time.sleep(0.2)
                assert client.get("/health").json()["store"]["writable"] is False
                ids = [t["task_id"] for t in client.get("/tasks", params={"limit": 100}).json()["items"]]
            assert ids
            # And with streams attached to every task, the server does not spin
            seen: dict[str, list[str]] = {}
            readers = [threading.Thread(target=read_to_end, args=(server.url, t, seen), daemon=True) for t in ids]
            for reader in readers:
                reader.start()
            assert server.proc is not None
            before = cpu_seconds(server.proc.pid)
            time.sleep(3)  # a measuring window, not a wait for a result
            assert cpu_seconds(server.proc.pid) - before < 1.5  # well under one busy core
            # When space returns
            filler.unlink()
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for task_id in ids:  # tasks whose execute was refused with the 503 are executed again
                    if client.get(f"/tasks/{task_id}/status").json()["status"] == "pending":
                        assert client.post(f"/tasks/{task_id}/execute", params={"after": 10**6}).status_code == 200
            # Then every stream ends with its task, and no task is left running
            for reader in readers:
                reader.join(timeout=120)
            assert {t: events[-1] for t, events in seen.items() if events[-1] not in TERMINAL} == {}
            with httpx.Client(base_url=server.url, timeout=30) as client:
                statuses = {client.get(f"/tasks/{t}/status").json()["status"] for t in ids}
            assert statuses <= {"completed", "failed"}
            assert "completed" in statuses
        finally:
            server.stop()
