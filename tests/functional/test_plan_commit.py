"""A task's start, its plan and its first step's start are one commit (see the README's *Commits per
task*): a crash before it leaves the task pending and unstarted, and after it the task is executing
with all three events; a task whose start an earlier version committed alone is planned from there."""

from __future__ import annotations

import sqlite3

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.catalog import default_registry
from agentic.errors import StoreUnavailable
from agentic.models import EventType, NewEvent, StepStatus, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.pipeline_ops import PipelineOps

pytestmark = pytest.mark.functional


@pytest.fixture
def store(tmp_path):
    s = SQLiteTaskStore(tmp_path / "tasks.db")
    yield s
    s.close()


def seen_from_another_process(store: SQLiteTaskStore, task_id: str) -> tuple[str, list[str]]:
    """The task's status and event types as another connection to the file sees them."""
    db = sqlite3.connect(str(store.path))
    try:
        (status,) = db.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        types = [
            r[0] for r in db.execute("SELECT event_type FROM events WHERE task_id = ? ORDER BY cursor", (task_id,))
        ]
    finally:
        db.close()
    return status, types


def ops_of(store: SQLiteTaskStore) -> PipelineOps:
    return PipelineOps(store, default_registry(0), load_pipeline())


def test_the_start_the_plan_and_the_first_step_are_one_write(store):
    # Given a claimed pending task
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    lease = store.claim("t", "me", 30)
    ops = ops_of(store)
    writes: list[str] = []
    update, append = store.update, store.append_event
    store.update = lambda *a, **k: writes.append("update") or update(*a, **k)  # type: ignore[method-assign]
    store.append_event = lambda *a, **k: writes.append("append") or append(*a, **k)  # type: ignore[method-assign]
    # When it is planned and started
    task, started = ops.plan_and_start("t", lease=lease)
    # Then one write took it from pending to executing with its first step running
    assert writes == ["update"]
    assert started
    assert task.status is TaskStatus.EXECUTING
    assert task.execution_plan is not None
    assert task.execution_plan.steps[0].status is StepStatus.RUNNING
    assert seen_from_another_process(store, "t") == (
        "executing",
        ["task_started", "plan_created", "step_started"],
    )


def test_a_crash_before_the_plan_commits_leaves_the_task_unstarted_and_it_is_started_once(store):
    # Given a claimed pending task whose plan's write fails (the process dies in its commit)
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    lease = store.claim("t", "me", 30)
    ops = ops_of(store)
    update = store.update

    def dying(*args, **kwargs):
        if any(e.event_type is EventType.PLAN_CREATED for e in kwargs.get("events", ())):
            raise StoreUnavailable("the process died before the commit")
        return update(*args, **kwargs)

    store.update = dying  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        ops.plan_and_start("t", lease=lease)
    # Then nothing of the start is in the file: no task_started without its plan
    assert seen_from_another_process(store, "t") == ("pending", [])
    # When the run is made again (a resumed run)
    store.update = update  # type: ignore[method-assign]
    task, started = ops.plan_and_start("t", lease=lease)
    # Then the task is started, planned and its first step started, each once
    assert started
    assert task.status is TaskStatus.EXECUTING
    assert seen_from_another_process(store, "t")[1] == ["task_started", "plan_created", "step_started"]


def test_on_aws_the_plan_function_commits_the_start_with_the_plan_and_starts_no_step(store):
    # Given a pending task (Step Functions owns the run: no lease)
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    writes: list[str] = []
    update = store.update
    store.update = lambda *a, **k: writes.append("update") or update(*a, **k)  # type: ignore[method-assign]
    # When the Plan state plans it
    task = ops_of(store).plan("t")
    # Then one write made it executing, with the start and the plan, and no step started yet
    assert writes == ["update"]
    assert task.status is TaskStatus.EXECUTING
    assert task.execution_plan is not None
    assert all(s.status is StepStatus.PENDING for s in task.execution_plan.steps)
    assert seen_from_another_process(store, "t") == ("executing", ["task_started", "plan_created"])


def test_a_task_whose_start_was_committed_alone_is_planned_from_there(store):
    # Given a task an earlier version started (its start committed alone: status analyzing)
    store.create(TaskState(task_id="t", owner="o", user_input="Explain idempotency keys"))
    started = NewEvent(
        task_id="t", event_type=EventType.TASK_STARTED, data={"status": "analyzing"}, key="task:task_started"
    )
    store.update("t", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING, events=[started])
    # When it is planned
    task, first_started = ops_of(store).plan_and_start("t")
    # Then it is executing with its plan, and its start is not written twice
    assert first_started
    assert task.status is TaskStatus.EXECUTING
    assert seen_from_another_process(store, "t") == (
        "executing",
        ["task_started", "plan_created", "step_started"],
    )
