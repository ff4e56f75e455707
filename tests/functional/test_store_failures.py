"""A store that cannot commit: every writer hears it, nothing is announced, no task is left stuck."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from fastapi.testclient import TestClient

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.catalog import default_registry
from agentic.errors import StoreUnavailable
from agentic.local.wiring import create_local_app
from agentic.models import EventType, NewEvent, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.pipeline_ops import PipelineOps
from agentic.service.runner import LocalRunner
from tests.support import local_settings

pytestmark = pytest.mark.functional

DISK_FULL = "database or disk is full"


class FailingCommits:
    """The store's connection, whose COMMITs fail (as on a full disk) while ``failing`` is set."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.failing = False
        self.failed = 0

    def execute(self, sql, *args):
        if self.failing and sql == "COMMIT":
            self.failed += 1
            raise sqlite3.OperationalError(DISK_FULL)
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def with_failing_commits(store: SQLiteTaskStore) -> FailingCommits:
    store._db = FailingCommits(store._db)  # type: ignore[assignment]
    return store._db  # type: ignore[return-value]


def committed(path, sql):
    with sqlite3.connect(path) as other:  # another connection sees only committed data
        return other.execute(sql).fetchall()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_write_whose_commit_fails_is_a_failure_and_wakes_no_stream(tmp_path):
    path = tmp_path / "t.db"
    store = SQLiteTaskStore(path)
    store.create(TaskState(task_id="t", owner="o", user_input="x"))
    waiter = asyncio.create_task(store.bus.wait("t", 0, timeout=0.5))
    await asyncio.sleep(0)
    db = with_failing_commits(store)
    db.failing = True
    # When a state change and its event cannot be committed
    event = NewEvent(task_id="t", event_type=EventType.TASK_STARTED, key="k")
    with pytest.raises(StoreUnavailable, match=DISK_FULL):
        store.update("t", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[event])
    with pytest.raises(StoreUnavailable):
        store.append_event(NewEvent(task_id="t", event_type=EventType.TASK_QUEUED))
    # Then nothing of them exists, for this connection or any other, and no stream was woken
    assert store.get("t").status is TaskStatus.PENDING
    assert store.read_events("t") == []
    assert committed(path, "SELECT status FROM tasks") == [("pending",)]
    await waiter  # it times out: nothing was announced
    assert store.bus._latest.get("t", 0) == 0
    # And /health's check reports why
    assert DISK_FULL in store.check_writable()
    # When commits work again, the same write succeeds
    db.failing = False
    store.update("t", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[event])
    assert committed(path, "SELECT status FROM tasks") == [("analyzing",)]
    assert [e.cursor for e in store.read_events("t")] == [1]
    store.close()


async def test_runs_stopped_by_a_failing_store_are_resumed_once_it_can_write(tmp_path):
    # Given 5 tasks running whose store starts failing every commit mid-run
    clock = Clock()
    store = SQLiteTaskStore(tmp_path / "t.db", clock=clock)
    ops = PipelineOps(store, default_registry(0), load_pipeline())
    runner = LocalRunner(ops, time_scale=0)
    executor = LocalExecutor(runner.run, store, lease_seconds=5, runner_id="me")
    ids = [f"t{i}" for i in range(5)]
    for task_id in ids:
        store.create(TaskState(task_id=task_id, owner="o", user_input="Explain idempotency keys"))
    db = with_failing_commits(store)
    original = ops.run_step
    all_started = asyncio.Event()  # every run has reached its second step
    arrived: set[str] = set()

    async def fail_from_the_second_step(task_id, step_id, *args, **kwargs):
        if step_id == "step_002":
            arrived.add(task_id)
            if arrived == set(ids):
                all_started.set()
            await all_started.wait()
            db.failing = True
        return await original(task_id, step_id, *args, **kwargs)

    ops.run_step = fail_from_the_second_step  # type: ignore[method-assign]
    for task_id in ids:
        await executor.start(task_id)
    await asyncio.wait_for(executor.drain(), 10)
    # Then every run has stopped (none is left spinning), none finished, none was marked failed
    assert db.failed >= 5
    assert executor.running == 0
    assert {store.get(t).status for t in ids} == {TaskStatus.EXECUTING}
    # And while the store still fails, maintenance resumes nothing and does not crash
    clock.now += 6
    with pytest.raises(StoreUnavailable):
        await executor.maintain_once()
    # When the store can write again, the expired leases are claimed and the tasks complete
    db.failing = False
    ops.run_step = original  # type: ignore[method-assign]
    assert sorted(await executor.maintain_once()) == ids
    await asyncio.wait_for(executor.drain(), 10)
    assert {store.get(t).status for t in ids} == {TaskStatus.COMPLETED}
    store.close()


def test_api_answers_503_with_retry_after_when_the_store_cannot_write(tmp_path):
    app = create_local_app(local_settings(tmp_path))
    with TestClient(app) as client:
        assert client.get("/health").json()["store"] == {"writable": True}
        db = with_failing_commits(app.state.system.store)
        db.failing = True
        # When a task is created on a store that cannot commit
        response = client.post("/tasks", json={"description": "Explain retries"})
        # Then the client gets a clear, retryable error, not a 500
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        body = response.json()
        assert body["error"] == "store_unavailable"
        assert DISK_FULL in body["message"]
        # And /health says the store cannot be written, and why
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["store"] == {"writable": False, "reason": DISK_FULL}
        # And nothing was created
        db.failing = False
        assert client.get("/tasks").json()["items"] == []


def test_a_read_only_data_file_is_a_503_not_a_500(tmp_path):
    path = tmp_path / "tasks.db"
    SQLiteTaskStore(path).close()
    app = create_local_app(local_settings(tmp_path))
    with TestClient(app) as client:
        app.state.system.store._db.execute("PRAGMA query_only = ON")  # as a read-only file behaves
        response = client.post("/tasks", json={"description": "Explain retries"})
        assert response.status_code == 503
        assert response.json()["error"] == "store_unavailable"
        assert client.get("/tasks").status_code == 200  # reads still work
