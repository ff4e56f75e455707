"""Leases on the SQLite store: one runner per task, fenced writes, resume from the last durable step."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.base import Agent
from agentic.agents.catalog import default_registry
from agentic.errors import LeaseLost
from agentic.models import EventType, StepStatus, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.pipeline_ops import PipelineOps
from agentic.service.runner import LocalRunner

pytestmark = pytest.mark.functional


class Clock:
    """Wall-clock stand-in shared by the stores of one test: leases expire when the test says."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def recorded(agent: Agent, calls: list, held: dict[str, asyncio.Event]) -> Agent:
    """The real agent, its invocations recorded; a held agent type blocks until released."""
    inner = agent.execute

    async def execute(step, context):
        calls.append((context.task_id, agent.agent_type, context.attempt))
        gate = held.get(agent.agent_type)
        if gate is not None:
            await gate.wait()
        return await inner(step, context)

    agent.execute = execute  # type: ignore[method-assign]
    return agent


class Process:
    """One server process's worth of wiring on a shared file: its own connection and runner id."""

    def __init__(self, path, clock, calls, name, held=None) -> None:
        self.store = SQLiteTaskStore(path, clock=clock)
        self.held: dict[str, asyncio.Event] = held if held is not None else {}
        registry = default_registry(0)
        for agent_type in registry.types:
            recorded(registry.get(agent_type), calls, self.held)
        self.ops = PipelineOps(self.store, registry, load_pipeline())
        self.runner = LocalRunner(self.ops, time_scale=0)
        self.executor = LocalExecutor(self.runner.run, self.store, lease_seconds=5, runner_id=name)


def new_task(store, task_id="t"):
    store.create(TaskState(task_id=task_id, owner="o", user_input="Explain exponential backoff"))


def test_exactly_one_claim_wins_among_processes(shared):
    clock, _, process = shared
    a, b = process("a"), process("b")
    new_task(a.store)
    # When both processes claim the same pending task
    first = a.store.claim("t", "a", 5)
    second = b.store.claim("t", "b", 5)
    # Then one holds it; the other is refused while the lease lives, and may take over once it expired
    assert first is not None
    assert first.epoch == 1
    assert second is None
    clock.now += 6
    taken = b.store.claim("t", "b", 5)
    assert taken is not None
    assert taken.epoch == 2
    assert b.store.get("t").lease == taken


async def test_a_runner_that_lost_its_lease_cannot_write(shared):
    clock, _, process = shared
    a, b = process("a"), process("b")
    new_task(a.store)
    old = a.store.claim("t", "a", 5)
    clock.now += 6
    b.store.claim("t", "b", 5)
    # When the stale runner tries to start the task
    with pytest.raises(LeaseLost):
        a.ops.plan("t", lease=old)
    # Then nothing of its write landed
    assert a.store.get("t").status is TaskStatus.PENDING
    assert a.store.read_events("t") == []


def test_renew_reports_the_leases_a_runner_no_longer_holds(shared):
    clock, _, process = shared
    a, b = process("a"), process("b")
    for t in ("kept", "taken"):
        new_task(a.store, t)
    leases = {t: a.store.claim(t, "a", 5) for t in ("kept", "taken")}
    clock.now += 6
    b.store.claim("taken", "b", 5)
    assert a.store.renew("a", leases, 5) == {"taken"}
    # And the renewed lease keeps the task from the expired list
    clock.now += 4
    assert a.store.expired(10) == []


async def test_a_task_whose_runner_died_resumes_from_its_interrupted_step(shared):
    clock, calls, process = shared
    # Given process A running a task, stopped for good while the analyzer step runs
    a = process("a", held={"analyzer": asyncio.Event()})
    new_task(a.store)
    await a.executor.start("t")
    while not any(agent == "analyzer" for _, agent, _ in calls):  # noqa: ASYNC110 - the runner is in this loop
        await asyncio.sleep(0.01)
    a.executor._running["t"].cancel()  # the process dies: no release, no failure written
    await asyncio.gather(*a.executor._running.values(), return_exceptions=True)
    assert a.store.get("t").execution_plan.steps[1].status is StepStatus.RUNNING
    # When its lease expires and process B does its lease maintenance
    b = process("b")
    assert await b.executor.maintain_once() == []  # not before the lease expired
    clock.now += 6
    assert await b.executor.maintain_once() == ["t"]
    await asyncio.wait_for(b.executor.drain(), 10)
    # Then B completes the task without re-running the retriever, and the analyzer ran as attempt 2
    task = b.store.get("t")
    assert task.status is TaskStatus.COMPLETED
    assert [(agent, attempt) for _, agent, attempt in calls] == [
        ("retriever", 0),
        ("analyzer", 0),
        ("analyzer", 1),
        ("writer", 0),
    ]
    events = b.store.read_events("t")
    retrying = [e for e in events if e.event_type is EventType.STEP_RETRYING]
    assert len(retrying) == 1
    assert retrying[0].data["step_id"] == "step_002"
    assert retrying[0].data["attempt"] == 2
    assert "interrupted" in retrying[0].data["error"]
    assert retrying[0].data["error"].startswith("States.Timeout")
    assert events[-1].event_type is EventType.TASK_COMPLETED
    assert events[-1].data["final_output"] == task.final_output


async def test_an_interruption_past_the_retry_budget_fails_the_task(shared):
    clock, calls, process = shared
    a = process("a")
    new_task(a.store)
    lease = a.store.claim("t", "a", 5)
    a.ops.plan("t", lease=lease)

    # Given the retriever's last allowed attempt (the 4th: MaxAttempts 3 retries) was running
    def at_last_attempt(task):
        plan = task.execution_plan
        steps = list(plan.steps)
        steps[0] = steps[0].model_copy(update={"status": StepStatus.RUNNING, "attempts": 4})
        return {"execution_plan": plan.model_copy(update={"steps": steps})}

    a.store.update("t", {TaskStatus.EXECUTING}, mutate=at_last_attempt)
    clock.now += 6
    # When another runner resumes it
    b = process("b")
    assert await b.executor.maintain_once() == ["t"]
    await asyncio.wait_for(b.executor.drain(), 10)
    # Then the task fails as an exhausted step does, and no agent ran again
    task = b.store.get("t")
    assert task.status is TaskStatus.FAILED
    assert "interrupted" in task.error_message
    assert calls == []
    assert [e.event_type for e in b.store.read_events("t")][-2:] == [EventType.ERROR, EventType.TASK_FAILED]


async def test_a_queued_task_holds_its_lease_and_runs_once(shared):
    _, calls, process = shared
    a = process("a")
    a.executor.max_concurrent = 1
    b = process("b")
    for t in ("first", "second"):
        new_task(a.store, t)
    # When A admits two tasks (one runs, one waits) and B is asked to execute the waiting one
    await a.executor.start("first")
    await a.executor.start("second")
    await b.executor.start("second")
    # Then B leaves it to A, which runs each exactly once
    assert b.executor.running == 0
    await asyncio.wait_for(a.executor.drain(), 10)
    assert {(t, agent) for t, agent, _ in calls} == {
        (t, x) for t in ("first", "second") for x in ("retriever", "analyzer", "writer")
    }
    assert len(calls) == 6


async def test_finished_tasks_are_purged_after_the_retention(shared):
    clock, _, process = shared
    a = process("a")
    for t in ("old", "live"):
        new_task(a.store, t)
    await a.executor.start("old")
    await asyncio.wait_for(a.executor.drain(), 10)
    assert a.store.get("old").status is TaskStatus.COMPLETED
    # When 30 days and a second pass
    assert a.store.purge_finished(30 * 86400) == 0
    clock.now += 30 * 86400 + 1
    assert a.store.purge_finished(30 * 86400) == 1
    # Then the finished task and its events are gone; the unfinished one is kept
    assert a.store.get("old") is None
    assert a.store.read_events("old") == []
    assert a.store.get("live") is not None


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def test_each_step_output_is_stored_once(shared, tmp_path):
    _, _, process = shared
    a = process("a")
    new_task(a.store)

    async def run():
        await a.executor.start("t")
        await asyncio.wait_for(a.executor.drain(), 10)

    asyncio.run(run())
    task = a.store.get("t")
    outputs = [s.output for s in task.execution_plan.steps]
    assert all(outputs)
    with sqlite3.connect(tmp_path / "tasks.db") as raw:
        rows = raw.execute("SELECT doc FROM tasks UNION ALL SELECT data FROM events").fetchall()
    stored = [value for (text,) in rows for value in strings(json.loads(text))]
    # Then each step output is in the stored text once, and the report twice at most (its step
    # event and the task's final_output), though the task and both events show it
    for output in outputs[:-1]:
        assert stored.count(output) == 1
    assert stored.count(task.final_output) == 2
    completed = a.store.read_events("t")[-1]
    assert completed.data["final_output"] == task.final_output


async def test_a_crash_after_a_step_boundary_commit_costs_one_attempt_of_the_next_step(shared):
    clock, calls, process = shared
    # Given process A, which dies right after the commit that completed the retriever and started
    # the analyzer (one transaction), before the analyzer's agent ran
    a = process("a")
    new_task(a.store)
    update = a.store.update

    def dies_after_the_boundary(task_id, expect, **kwargs):
        written = update(task_id, expect, **kwargs)
        if any(e.event_type is EventType.STEP_COMPLETED for e in kwargs.get("events", ())):
            raise asyncio.CancelledError  # the process is gone: nothing after this commit happens
        return written

    a.store.update = dies_after_the_boundary  # type: ignore[method-assign]
    await a.executor.start("t")
    await asyncio.gather(*a.executor._running.values(), return_exceptions=True)
    # Then the boundary is durable as one: the retriever completed, the analyzer started (not run)
    steps = a.store.get("t").execution_plan.steps
    assert (steps[0].status, steps[1].status, steps[1].attempts) == (StepStatus.COMPLETED, StepStatus.RUNNING, 1)
    assert calls == [("t", "retriever", 0)]
    kinds = [e.event_type for e in a.store.read_events("t")]
    assert kinds[-3:] == [EventType.PARTIAL_OUTPUT, EventType.STEP_COMPLETED, EventType.STEP_STARTED]
    # When its lease expires and process B resumes the task
    clock.now += 6
    b = process("b")
    assert await b.executor.maintain_once() == ["t"]
    await asyncio.wait_for(b.executor.drain(), 10)
    # Then the retriever is not run again, and the started analyzer counts as one interrupted attempt
    assert b.store.get("t").status is TaskStatus.COMPLETED
    assert [(agent, attempt) for _, agent, attempt in calls] == [("retriever", 0), ("analyzer", 1), ("writer", 0)]
    retrying = [e for e in b.store.read_events("t") if e.event_type is EventType.STEP_RETRYING]
    assert [(e.data["step_id"], e.data["error"].split(":")[0]) for e in retrying] == [("step_002", "States.Timeout")]
