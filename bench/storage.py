"""Storage benchmarks of the local store. Prints figures; asserts nothing.

    make bench            (or: python -m bench.storage [--run N] [--total N] [--kill-tasks N])

1. Bytes on disk per task: ``--run`` tasks run to completion in-process (AGENT_LATENCY_SCALE=0), then
   the WAL is checkpointed and the file's size (database + WAL + shared memory) is divided by the
   count, with the share of each table and index.
2. Listing at depth: the same file grown to ``--total`` tasks (copies of the completed ones, added with
   ``SQLiteTaskStore.create``), then ``list`` page 1, page 200 (10,000 deep at 50 a page) and
   ``status=failed`` with no match, each timed repeatedly (p50/p99, and the ratio to page 1).
3. Resume after a crash: a real server (``python -m agentic.local``) runs tasks with slow agents, is
   killed with SIGKILL mid-run, and a new server starts on the same file. Printed: the time from the
   kill to each task's terminal status, that status, and each step's attempts (a completed step run
   again shows 2).
"""

from __future__ import annotations

import os

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

import argparse
import asyncio
import signal
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.local.wiring import build_local_system
from agentic.models import TaskState, TaskStatus
from agentic.settings import Settings
from tests.e2e.server import LocalServer

OWNER = "bench"
PAGE = 50
DEEP_PAGE = 200


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def files_of(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def size_on_disk(db: Path) -> int:
    return sum(p.stat().st_size for p in files_of(db) if p.exists())


# --- 1. bytes per task ------------------------------------------------------------------------


async def run_tasks(db: Path, n: int) -> None:
    settings = Settings(
        database_path=db, agent_latency_scale=0, max_concurrent_executions=100, max_queue_size=n, faults=""
    )
    system = build_local_system(settings)
    try:
        for i in range(n):
            task, _ = await system.service.create(OWNER, f"benchmark task {i}: explain retries with backoff and jitter")
            await system.service.execute(OWNER, task.task_id)
            if i % 100 == 99:
                await asyncio.sleep(0)
        await system.executor.drain()
    finally:
        await system.executor.shutdown()
        system.store.close()


def checkpoint(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def space_by_object(db: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    except sqlite3.Error:  # SQLite built without dbstat
        rows = []
    finally:
        conn.close()
    return [(str(name), int(size)) for name, size in rows]


def bytes_per_task(db: Path, n: int) -> None:
    t0 = time.perf_counter()
    asyncio.run(run_tasks(db, n))
    elapsed = time.perf_counter() - t0
    before = size_on_disk(db)
    checkpoint(db)
    after = size_on_disk(db)
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())
    conn.close()
    print(f"{n} tasks run in {elapsed:.1f} s; statuses {statuses}")
    print(
        f"on disk: {after / n:8.0f} bytes a task ({after / n / 1024:.1f} KiB; {after / 1e6:.1f} MB for {n}) after "
        f"a checkpoint; {before / 1e6:.1f} MB with the WAL before it"
    )
    parts = space_by_object(db)
    if parts:
        print("  by table/index: " + ", ".join(f"{name} {size / n / 1024:.1f} KiB" for name, size in parts[:6]))


# --- 2. listing at depth ----------------------------------------------------------------------


def grow(db: Path, total: int) -> int:
    """Add copies of the completed tasks (older than them) until the file holds ``total`` tasks."""
    store = SQLiteTaskStore(db)
    try:
        templates = [t for t in store.list(OWNER, limit=100).items if t.status is TaskStatus.COMPLETED]
        with sqlite3.connect(db) as conn:
            have = int(conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])
        conn.close()
        oldest = min(t.created_at for t in templates)
        added = 0
        for i in range(max(0, total - have)):
            template = templates[i % len(templates)]
            copy = template.model_copy(
                update={
                    "task_id": str(uuid.uuid4()),
                    "created_at": oldest - timedelta(milliseconds=i + 1),
                    "updated_at": oldest - timedelta(milliseconds=i + 1),
                }
            )
            try:
                store.create(copy)
            except Exception:  # a store that only creates pending tasks: add pending ones instead
                store.create(TaskState(task_id=copy.task_id, owner=OWNER, user_input=template.user_input))
            added += 1
        return have + added
    finally:
        store.close()


def timed(
    fn: Callable[[], Any], *, budget_seconds: float = 3.0, min_runs: int = 20, max_runs: int = 300
) -> list[float]:
    fn()  # warm
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() - started < budget_seconds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def listing(db: Path, total: int) -> None:
    t0 = time.perf_counter()
    count = grow(db, total)
    print(f"grown to {count} tasks in {time.perf_counter() - t0:.1f} s")
    checkpoint(db)
    store = SQLiteTaskStore(db)
    try:
        print("through the store API (SQLiteTaskStore.list):")
        measure_pages(lambda cursor, status: store.list(OWNER, limit=PAGE, cursor=cursor, status=status).next_cursor)
    finally:
        store.close()
    server = LocalServer(db, DEFAULT_OWNER=OWNER, POWERTOOLS_LOG_LEVEL="WARNING")
    with server, httpx.Client(base_url=server.url, timeout=30) as client:

        def page(cursor: str | None, status: TaskStatus | None) -> str | None:
            params: dict[str, Any] = {"limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            if status:
                params["status"] = status.value
            response = client.get("/tasks", params=params)
            response.raise_for_status()
            next_cursor: str | None = response.json().get("next_cursor")
            return next_cursor

        print("over HTTP (GET /tasks on a real server, one keep-alive client):")
        measure_pages(page)


def measure_pages(page: Callable[[str | None, TaskStatus | None], str | None]) -> None:
    """Walk to page 200 as a client would, then time page 1, page 200 and a status filter."""
    cursor = None
    t0 = time.perf_counter()
    for _ in range(DEEP_PAGE - 1):
        cursor = page(cursor, None)
        if cursor is None:
            break
    walk = time.perf_counter() - t0
    print(f"  walking pages 1-{DEEP_PAGE - 1}: {walk:.2f} s ({walk / (DEEP_PAGE - 1) * 1000:.1f} ms a page)")
    deep = cursor
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("page 1", lambda: page(None, None)),
        (f"page {DEEP_PAGE} ({(DEEP_PAGE - 1) * PAGE} deep)", lambda: page(deep, None)),
        ("status=failed, no match", lambda: page(None, TaskStatus.FAILED)),
    ]
    if deep is None:
        print(f"  (fewer than {DEEP_PAGE} pages: page {DEEP_PAGE} skipped)")
        cases.pop(1)
    base = 0.0
    for label, fn in cases:
        samples = timed(fn)
        p50, p99 = pct(samples, 50), pct(samples, 99)
        base = base or p50
        print(
            f"  {label:<28} p50 {p50 * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   "
            f"{p50 / base:5.2f}x page 1   ({len(samples)} runs)"
        )


# --- 3. resume after SIGKILL ------------------------------------------------------------------


def status_of(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get(f"/tasks/{task_id}/status")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def resume_after_kill(tmp: Path, n: int, latency_scale: float) -> None:
    db = tmp / "kill.db"
    env = {"AGENT_LATENCY_SCALE": str(latency_scale), "RETRY_TIME_SCALE": "0.1", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    work = 0.4 * latency_scale
    first = LocalServer(db, **env).start()
    try:
        with httpx.Client(base_url=first.url, timeout=10) as client:
            ids = [
                client.post("/tasks", json={"description": f"resume benchmark {i}", "execute": True}).json()["task_id"]
                for i in range(n)
            ]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # mid-run: every task is past its first step
                steps = [status_of(client, t)["steps"] for t in ids]
                if all(s and s[0]["status"] == "completed" for s in steps):
                    break
                time.sleep(0.02)
    finally:
        killed_at = time.monotonic()
        first.stop(signal.SIGKILL)
    print(f"{n} tasks ({work:.1f} s of agent work each) killed with SIGKILL in their second step")
    second = LocalServer(db, **env)
    try:
        second.start()
        ready = time.monotonic() - killed_at
        done: dict[str, tuple[float, dict[str, Any]]] = {}
        with httpx.Client(base_url=second.url, timeout=10) as client:
            deadline = time.monotonic() + 120
            while len(done) < n and time.monotonic() < deadline:
                for task_id in ids:
                    if task_id not in done:
                        body = status_of(client, task_id)
                        if body["status"] in ("completed", "failed"):
                            done[task_id] = (time.monotonic() - killed_at, body)
                time.sleep(0.02)
        print(f"  restarted server ready {ready:.2f} s after the kill")
        for task_id in ids:
            if task_id not in done:
                print(f"  {task_id[:8]}: not terminal 120 s after the kill")
                continue
            after, body = done[task_id]
            attempts = [s["attempts"] for s in body["steps"]]
            print(
                f"  {task_id[:8]}: {body['status']:<9} {after:6.2f} s after the kill; step attempts {attempts}"
                + (f"; {body['error_message'][:60]}" if body.get("error_message") else "")
            )
        times = [after for after, _ in done.values()]
        if times:
            statuses = sorted({body["status"] for _, body in done.values()})
            print(
                f"  kill -> terminal: p50 {statistics.median(times):.2f} s, max {max(times):.2f} s; statuses {statuses}"
            )
    finally:
        second.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=int, default=1000, help="tasks run to completion (bytes per task)")
    parser.add_argument("--total", type=int, default=20_000, help="tasks in the file for the listing figures")
    parser.add_argument("--kill-tasks", type=int, default=5, help="tasks running when the server is killed")
    parser.add_argument("--kill-latency-scale", type=float, default=5.0, help="AGENT_LATENCY_SCALE of that server")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentic-bench-storage-"))
    db = tmp / "storage.db"

    print(f"== storage: bytes on disk per task ({args.run} completed tasks, AGENT_LATENCY_SCALE=0)")
    bytes_per_task(db, args.run)
    print(f"\n== storage: GET /tasks pages and a status filter at {args.total} tasks (store API, {PAGE} a page)")
    listing(db, args.total)
    print("\n== resume: SIGKILL of a server mid-run, restart on the same file")
    resume_after_kill(tmp, args.kill_tasks, args.kill_latency_scale)
    print("\ntargets: page 200 and status= within 1.5x of page 1; killed tasks resume and complete")


if __name__ == "__main__":
    main()
