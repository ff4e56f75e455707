"""Retry, approval, retention and the bounds of a step: each test names a small bug that once went
unnoticed by the suite.

Runs are in-process; where a wait matters the event loop runs on a virtual clock
(``tests/virtual_time.py``), so backoffs cost no real time and still can be measured.

Two bugs of the same list are caught by older tests, so they have none here: the retry wait between
attempts replaced by no wait (``test_runner_retries.py`` measures the waits on a virtual clock), and
a timeout no longer named ``States.Timeout`` (``test_runner_retries.py`` and ``test_leases.py``
assert the name, without which the state machine's Retry would not match it). The wait of a resumed
run, which no test measured, is below.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentic.agents.analyzer import AnalyzerAgent
from agentic.errors import TransientAgentError
from agentic.local.wiring import build_local_system
from agentic.models import EventType, StepStatus, TaskStatus
from agentic.pipeline import load_pipeline
from agentic.service.control import TaskControl
from agentic.service.step_attempts import MAX_OUTPUT_BYTES
from tests.functional.test_leases import new_task
from tests.support import local_settings
from tests.virtual_time import run_virtual, until

pytestmark = pytest.mark.functional

DAY = 86400.0


def test_a_retry_that_runs_the_analysis_again_asks_for_approval_again(tmp_path):
    """Bug guarded: a retry that re-runs the analysis keeping the approval given for the old analysis.

    The person approved a plan that no longer exists: the retried run must stop at the approval
    gate again. A retry of the final step only (the approved analysis stands) does not ask again.
    """

    async def main() -> None:
        system = build_local_system(local_settings(tmp_path, faults="writer:permanent"))
        service, store = system.service, system.store
        try:
            task, _ = await service.create("o", "Explain backoff", approval=True)
            await service.execute("o", task.task_id)
            await system.executor.drain()
            assert store.get(task.task_id).status is TaskStatus.AWAITING_APPROVAL
            await service.approve("o", task.task_id, "looks right")
            await system.executor.drain()
            assert store.get(task.task_id).status is TaskStatus.FAILED  # the writer fails for good
            # When only the writer is retried, the approval stands: it runs (and fails) again
            await service.retry("o", task.task_id)
            await system.executor.drain()
            again = store.get(task.task_id)
            assert again.status is TaskStatus.FAILED
            assert again.execution_plan.steps[2].attempts == 2  # one attempt per run: the fault is permanent
            # When the task is retried from the analysis
            await service.retry("o", task.task_id, "step_002")
            await system.executor.drain()
            # Then the new analysis waits for a person's approval, and the writer did not run again
            final = store.get(task.task_id)
            assert final.status is TaskStatus.AWAITING_APPROVAL
            assert not final.approval_granted
            assert final.execution_plan.steps[1].status is StepStatus.COMPLETED
            assert final.execution_plan.steps[2].attempts == again.execution_plan.steps[2].attempts
            kinds = [e.event_type for e in store.read_events(task.task_id)]
            assert kinds[-1] is EventType.APPROVAL_REQUESTED
            assert kinds.count(EventType.APPROVAL_REQUESTED) == 2
        finally:
            await system.executor.shutdown()
            store.close()

    run_virtual(main(), limit_seconds=600)


def test_a_retried_task_is_not_purged_as_finished(shared):
    """Bug guarded: a task that leaves a terminal state (a retry) keeping its ``finished_at``.

    The retention purge deletes tasks finished longer ago than the retention period; a retried task
    is live again, and must not be deleted however long ago it first ended.
    """
    clock, _, process = shared
    a = process("a")
    new_task(a.store)
    control = TaskControl(a.store, load_pipeline())
    # Given a task cancelled, then retried a day later (not run yet: it waits for a process)
    control.cancel(a.store.get("t"), None, "o")
    clock.now += DAY
    control.retry(a.store.get("t"), None, "o")
    # When the retention purge runs 30 days after the cancel
    clock.now += 29 * DAY + 1
    assert a.store.purge_finished(30 * DAY) == 0
    # Then the live task is kept
    assert a.store.get("t").status is TaskStatus.PENDING
    assert a.store.read_events("t")
    # And once it has run to its end, its own retention period counts from then
    asyncio.run(a.runner.run("t", a.store.claim("t", "a", 5)))
    assert a.store.get("t").status is TaskStatus.COMPLETED
    clock.now += 30 * DAY - 1
    assert a.store.purge_finished(30 * DAY) == 0
    clock.now += 2
    assert a.store.purge_finished(30 * DAY) == 1
    assert a.store.get("t") is None


def test_a_resumed_run_waits_the_backoff_before_retrying_an_interrupted_step(shared):
    """Bug guarded: the retry wait replaced by no wait at all, on the path of a resumed run.

    A step found running by a resumed run (its runner died) counts as a failed attempt; the next
    attempt waits the state machine's backoff like any retry. A virtual clock records the wait.
    """
    clock, _, process = shared
    a = process("a")
    new_task(a.store)
    a.ops.plan("t", lease=a.store.claim("t", "a", 5))

    def running_first_attempt(task):
        plan = task.execution_plan
        steps = list(plan.steps)
        steps[0] = steps[0].model_copy(update={"status": StepStatus.RUNNING, "attempts": 1})
        return {"execution_plan": plan.model_copy(update={"steps": steps})}

    a.store.update("t", {TaskStatus.EXECUTING}, mutate=running_first_attempt)
    clock.now += 6  # A died: its lease expired

    async def main() -> tuple[float, list[float]]:
        b = process("b")
        b.runner.time_scale = 1.0  # the state machine's own intervals (1 s first)
        loop = asyncio.get_running_loop()
        starts: list[float] = []
        retriever = b.ops.registry.get("retriever")
        inner = retriever.execute

        async def execute(step: Any, context: Any) -> str:
            starts.append(loop.time())
            return await inner(step, context)

        retriever.execute = execute  # type: ignore[method-assign]
        resumed_at = loop.time()
        assert await b.executor.maintain_once() == ["t"]
        await asyncio.wait_for(b.executor.drain(), 60)
        return resumed_at, starts

    resumed_at, starts = run_virtual(main(), limit_seconds=600)
    retrying = [e.data for e in a.store.read_events("t") if e.event_type is EventType.STEP_RETRYING]
    assert [(r["attempt"], r["delay_seconds"]) for r in retrying] == [(2, 1.0)]
    assert len(starts) == 1
    assert starts[0] - resumed_at == pytest.approx(1.0, abs=0.01)
    assert a.store.get("t").status is TaskStatus.COMPLETED


@pytest.mark.parametrize("late", ["answers", "fails"])
def test_a_late_result_of_an_overtaken_attempt_is_discarded(shared, late):
    """Bug guarded: a step overtaken by a newer attempt still treated as the owner of its writes.

    On AWS an attempt that Step Functions timed out keeps running while the retry runs. When the
    old attempt ends first (with an answer or a failure), its result must not land: the step is the
    newer attempt's, whose answer is what the task keeps.
    """
    _, _, process = shared
    a = process("a")
    new_task(a.store)
    a.ops.plan("t")
    gates = {0: asyncio.Event(), 1: asyncio.Event()}
    retriever = a.ops.registry.get("retriever")

    async def execute(step: Any, context: Any) -> str:
        await gates[context.attempt].wait()
        if context.attempt == 0 and late == "fails":
            raise TransientAgentError("the index was busy")
        return f"documents of attempt {context.attempt + 1}"

    retriever.execute = execute  # type: ignore[method-assign]

    def delay(name: str, attempt: int) -> float:
        return 0.0

    async def main() -> None:
        old = asyncio.create_task(a.ops.run_step("t", "step_001", 0, delay))
        await until(lambda: a.store.get("t").execution_plan.steps[0].attempts == 1)
        # Given Step Functions timed the first attempt out and started the retry
        new = asyncio.create_task(a.ops.run_step("t", "step_001", 1, delay))
        await until(lambda: a.store.get("t").execution_plan.steps[0].attempts == 2)
        # When the old attempt ends first, then the new one
        gates[0].set()
        await old
        gates[1].set()
        outcome = await new
        assert outcome.ok

    asyncio.run(main())
    # Then the step is the new attempt's: completed with its answer, the old result discarded
    step = a.store.get("t").execution_plan.steps[0]
    assert (step.status, step.attempts, step.error) == (StepStatus.COMPLETED, 2, None)
    assert step.output == "documents of attempt 2"
    partial = [e.data for e in a.store.read_events("t") if e.event_type is EventType.PARTIAL_OUTPUT]
    assert [p["output"] for p in partial] == ["documents of attempt 2"]


def test_a_stored_step_output_is_bounded_to_its_byte_budget(tmp_path, monkeypatch):
    """Bug guarded: the bound on a stored step's output removed (MAX_OUTPUT_BYTES of UTF-8).

    The final output and the stream are bounded elsewhere, so a test of the report alone passes
    while the stored items grow: here an intermediate step (the analyzer) answers 1.2 MB (400,000
    three-byte characters), and the step as the store gives it back (which is what the next agent
    reads) holds at most MAX_OUTPUT_BYTES of it, cut at a character boundary. Written against the
    store's public ``get`` and the agents' context, so it holds wherever the store keeps step outputs.
    """
    answer = "研究" * 200_000
    seen: dict[str, str] = {}

    async def execute(agent: AnalyzerAgent, step: Any, context: Any) -> str:
        return answer

    monkeypatch.setattr(AnalyzerAgent, "execute", execute)

    def bounded(text: str | None) -> bool:
        return text is None or len(text.encode()) <= MAX_OUTPUT_BYTES

    async def main() -> None:
        system = build_local_system(local_settings(tmp_path))
        writer = system.ops.registry.get("writer")
        inner = writer.execute

        async def remember(step: Any, context: Any) -> str:
            seen.update(context.outputs)
            return await inner(step, context)

        writer.execute = remember  # type: ignore[method-assign]
        try:
            task, _ = await system.service.create("o", "Analyse a very large corpus")
            await system.service.execute("o", task.task_id)
            await system.executor.drain()
            stored = system.store.get(task.task_id)
            assert stored.status is TaskStatus.COMPLETED
            assert bounded(stored.execution_plan.steps[1].output)  # None: a store that reads outputs apart
            partial = [e.data for e in system.store.read_events(task.task_id) if e.data.get("agent_type") == "analyzer"]
            assert all(bounded(p.get("output")) for p in partial)
        finally:
            await system.executor.shutdown()
            system.store.close()

    run_virtual(main(), limit_seconds=600)
    # And the writer read the analysis from the store: its first MAX_OUTPUT_BYTES, whole characters
    assert 0 < len(seen["analyzer"].encode()) <= MAX_OUTPUT_BYTES
    assert len(seen["analyzer"].encode()) > MAX_OUTPUT_BYTES - 3
    assert answer.startswith(seen["analyzer"])
