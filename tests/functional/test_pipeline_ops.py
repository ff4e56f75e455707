"""PipelineOps, the operations both wirings run: repeats and overtaken attempts change nothing."""

from __future__ import annotations

import asyncio

import pytest

from agentic.agents.base import Agent
from agentic.agents.catalog import default_registry
from agentic.models import EventType, StepStatus, TaskState, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.pipeline_ops import PipelineOps

pytestmark = pytest.mark.functional


def never_retry(name, attempt):
    return None


class GatedRetriever(Agent):
    """A retriever whose first attempt waits for the test; later attempts answer at once."""

    agent_type = "retriever"
    base_latency = 0

    def __init__(self):
        super().__init__(0)
        self.gate = asyncio.Event()

    async def execute(self, step, context):
        if context.attempt == 0:
            await self.gate.wait()
            return "late answer of attempt 1"
        return "answer of attempt 2"

    def run(self, step, context):  # pragma: no cover - execute is overridden
        raise NotImplementedError


@pytest.fixture
def ops(local_system):
    registry = default_registry(0)
    retriever = GatedRetriever()
    registry.register(retriever)
    ops = PipelineOps(local_system.store, registry, load_pipeline())
    ops.retriever = retriever
    return ops


async def test_a_late_result_of_an_overtaken_attempt_is_discarded(ops):
    # Given a task whose first retriever attempt hangs (Step Functions timed it out)
    ops.store.create(TaskState(task_id="t", owner="o", user_input="Explain retries"))
    ops.plan("t")
    first = asyncio.create_task(ops.run_step("t", "step_001", 0, never_retry))
    await asyncio.sleep(0)
    # When the retry runs and succeeds, and only then the first attempt returns
    second = await ops.run_step("t", "step_001", 1, never_retry)
    ops.retriever.gate.set()
    await first
    # Then the step keeps the retry's result, and its events were written once
    step = ops.store.get("t").execution_plan.steps[0]
    assert second.ok
    assert step.status is StepStatus.COMPLETED
    assert step.output == "answer of attempt 2"
    assert step.attempts == 2
    kinds = [e.event_type for e in ops.store.read_events("t")]
    assert kinds.count(EventType.STEP_COMPLETED) == 1


async def test_repeating_each_operation_writes_nothing_twice(ops):
    ops.store.create(TaskState(task_id="t", owner="o", user_input="Explain retries"))
    ops.retriever.gate.set()
    for _ in range(2):
        ops.plan("t")
    for spec in ops.definition.steps:
        for _ in range(2):
            assert (await ops.run_step("t", spec.step_id, 0, never_retry)).ok
    for _ in range(2):
        ops.complete("t")
    types = [e.event_type.value for e in ops.store.read_events("t")]
    assert types == [
        "task_started",
        "plan_created",
        *["step_started", "partial_output", "step_completed"] * 3,
        "task_completed",
    ]
    assert ops.store.get("t").status is TaskStatus.COMPLETED


async def test_failing_twice_or_after_completion_changes_nothing(ops):
    ops.store.create(TaskState(task_id="t", owner="o", user_input="x"))
    ops.plan("t")
    ops.fail("t", "PermanentAgentError", "boom")
    ops.fail("t", "PermanentAgentError", "boom again")
    types = [e.event_type.value for e in ops.store.read_events("t")]
    assert types == ["task_started", "plan_created", "error", "task_failed"]
    assert ops.store.get("t").error_message == "boom"
