"""The local runner keeps the state machine's Retry and TimeoutSeconds: it times steps out as
``States.Timeout``, retries them, and really waits the backoff between attempts.

These run the local wiring (store, runner, executor) on a virtual clock (tests/virtual_time.py), so
the ASL's 30 s step timeout and its backoff fire at once, and the test still reads how long the runner
waited before each attempt, however the runner waits. Nothing is asserted about wall-clock time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

from agentic.agents.retriever import RetrieverAgent
from agentic.errors import TransientAgentError
from agentic.local.wiring import build_local_system
from tests.support import SEED_SEQUENCE, local_settings
from tests.virtual_time import run_virtual

pytestmark = pytest.mark.functional


@dataclass
class Attempt:
    started: float
    ended: float | None = None


@dataclass
class ScriptedRetriever:
    """Replaces the retriever's ``execute``: attempt N does ``script[N]`` and the times are recorded."""

    script: list[str]
    attempts: list[Attempt] = field(default_factory=list)

    async def execute(self, agent: RetrieverAgent, step: Any, context: Any) -> str:
        loop = asyncio.get_running_loop()
        attempt = Attempt(started=loop.time())
        self.attempts.append(attempt)
        action = self.script[min(len(self.attempts), len(self.script)) - 1]
        try:
            if action == "hang":
                await asyncio.Event().wait()  # never answers: only a timeout ends this attempt
            if action == "transient":
                raise TransientAgentError("the index is busy")
            return "Top 3 documents: a, b, c"
        finally:
            attempt.ended = loop.time()


@pytest.fixture
def retriever(monkeypatch):
    def install(*script: str) -> ScriptedRetriever:
        scripted = ScriptedRetriever(list(script))

        async def execute(agent: RetrieverAgent, step: Any, context: Any) -> str:
            return await scripted.execute(agent, step, context)

        monkeypatch.setattr(RetrieverAgent, "execute", execute)
        return scripted

    return install


def run_one_task(tmp_path, **settings: Any) -> tuple[list[Any], Any]:
    """Create and execute one task on the local wiring (virtual clock); its events and final state."""

    async def main() -> tuple[list[Any], Any]:
        system = build_local_system(local_settings(tmp_path, **settings))
        try:
            task, _ = await system.service.create("local", "Explain exponential backoff with jitter")
            await system.service.execute("local", task.task_id)
            await system.executor.drain()
            return system.store.read_events(task.task_id), system.store.get(task.task_id)
        finally:
            await system.executor.shutdown()
            system.store.close()

    return run_virtual(main(), limit_seconds=3600)


def test_a_step_that_outlives_its_timeout_is_retried_as_states_timeout(tmp_path, retriever):
    # Given a retriever whose first attempt never answers (the ASL gives the step TimeoutSeconds 30)
    scripted = retriever("hang", "answer")
    # When the task runs
    events, task = run_one_task(tmp_path, retry_time_scale=0.1)
    # Then the first attempt was cut off at the state's 30 s, as States.Timeout, and retried
    retries = [e.data for e in events if e.event_type.value == "step_retrying"]
    assert [(r["step_id"], r["attempt"]) for r in retries] == [("step_001", 2)]
    assert "States.Timeout" in retries[0]["error"]
    assert retries[0]["delay_seconds"] == 0.1
    first, second = scripted.attempts
    assert first.ended - first.started == pytest.approx(30, abs=0.01)
    assert second.started - first.ended == pytest.approx(0.1, abs=0.01)
    # And the task completed with the retry's answer
    assert task.status.value == "completed"
    assert task.execution_plan.steps[0].attempts == 2
    assert [e.event_type.value for e in events if e.event_type.value != "step_retrying"] == SEED_SEQUENCE


def test_the_backoff_between_attempts_is_really_waited(tmp_path, retriever):
    # Given a retriever that fails transiently three times (the ASL allows 3 retries) at the default
    # RETRY_TIME_SCALE of 0.1, which turns the state machine's 1/2/4 s into the seed's 0.1/0.2/0.4 s
    scripted = retriever("transient", "transient", "transient", "answer")
    # When the task runs
    events, task = run_one_task(tmp_path, retry_time_scale=0.1)
    # Then each retry announced its delay
    retries = [e.data for e in events if e.event_type.value == "step_retrying"]
    assert [r["attempt"] for r in retries] == [2, 3, 4]
    assert [r["delay_seconds"] for r in retries] == [0.1, 0.2, 0.4]
    # And the runner waited that long before the next attempt started: not less, not much more
    waits = [later.started - earlier.ended for earlier, later in pairwise(scripted.attempts)]
    assert waits == [pytest.approx(d, abs=0.01) for d in (0.1, 0.2, 0.4)]
    assert task.status.value == "completed"
    assert task.execution_plan.steps[0].attempts == 4
