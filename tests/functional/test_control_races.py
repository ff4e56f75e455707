"""Task control racing runs in other processes on one file: nothing resurrects, nothing is lost.

Each case is a reproduction from review, on two processes' wirings sharing one SQLite file.
"""

from __future__ import annotations

import asyncio

import pytest

import agentic.service.runner as runner_module
from agentic.models import StepStatus, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.control import TaskControl
from tests.functional.test_leases import Clock, Process, new_task
from tests.virtual_time import until

pytestmark = pytest.mark.functional


@pytest.fixture
def two(tmp_path):
    clock, calls = Clock(), []
    made: list[Process] = []

    def process(name, held=None):
        made.append(Process(tmp_path / "t.db", clock, calls, name, held))
        return made[-1]

    yield clock, calls, process
    for p in made:
        p.store.close()


async def test_a_cancelled_run_does_not_come_back_when_the_task_is_retried_at_once(two):
    _, calls, process = two
    # Given process A running the task's writer
    gate = asyncio.Event()
    a, b = process("A", {"writer": gate}), process("B")
    new_task(a.store)
    await a.executor.start("t")
    await until(lambda: any(agent == "writer" for _, agent, _ in calls))
    # When B serves a cancel, and A a retry, before A's next lease renewal
    task, _ = TaskControl(b.store, load_pipeline()).cancel(b.store.get("t"), None, "o")
    await b.executor.cancel(task)
    task, start_at = TaskControl(a.store, load_pipeline()).retry(a.store.get("t"), None, "o")
    await a.executor.retry(task, start_at)
    await a.executor.maintain_once()
    await b.executor.maintain_once()
    gate.set()
    await asyncio.wait_for(a.executor.drain(), 10)
    await asyncio.wait_for(b.executor.drain(), 10)
    # Then the old run did not finish the retried task: the writer ran again and wrote the report
    final = a.store.get("t")
    assert final.status is TaskStatus.COMPLETED
    assert final.final_output
    assert [attempt for _, agent, attempt in calls if agent == "writer"] == [0, 1]


async def test_an_approval_landing_while_the_deadline_is_handled_stands(two, monkeypatch):
    clock, _, process = two
    c, d = process("C"), process("D")
    c.store.create(TaskState(task_id="t", owner="o", user_input="Explain backoff", approval=True))
    await c.executor.start("t")
    await asyncio.wait_for(c.executor.drain(), 10)
    task = c.store.get("t")
    assert task.status is TaskStatus.AWAITING_APPROVAL
    # Given the deadline passed, and C picks the task up to fail it
    clock.now = task.approval_deadline + 1
    monkeypatch.setattr(runner_module.time, "time", clock)
    plan = c.ops.plan_and_start

    def approved_meanwhile(task_id, lease=None):
        found = plan(task_id, lease=lease)
        TaskControl(d.store, load_pipeline()).approve(d.store.get("t"), None, "o")  # D serves /approve now
        return found

    c.ops.plan_and_start = approved_meanwhile
    assert await c.executor.maintain_once() == ["t"]
    await asyncio.wait_for(c.executor.drain(), 10)
    # Then the approval stands: the task is not failed for a timeout
    final = c.store.get("t")
    assert final.status is TaskStatus.EXECUTING
    assert final.approval_granted


async def test_cancel_keeps_the_progress_made_after_it_read_the_task(two):
    _, calls, process = two
    analyzer, writer = asyncio.Event(), asyncio.Event()
    a = process("A", {"analyzer": analyzer, "writer": writer})
    new_task(a.store)
    await a.executor.start("t")
    await until(lambda: any(agent == "analyzer" for _, agent, _ in calls))
    stale = a.store.get("t")  # what a cancel read (another process, a DynamoDB round trip)
    analyzer.set()
    await until(lambda: any(agent == "writer" for _, agent, _ in calls))
    task, _ = TaskControl(a.store, load_pipeline()).cancel(stale, None, "o")
    await a.executor.cancel(task)
    steps = [s.status for s in a.store.get("t").execution_plan.steps]
    assert steps == [StepStatus.COMPLETED, StepStatus.COMPLETED, StepStatus.FAILED]
    assert TaskControl(a.store, load_pipeline()).retry(a.store.get("t"), None, "o")[1] == "step_003"
