"""Cancel: each test names a small bug that once went unnoticed by the suite.

The local wiring runs in-process on a virtual clock (``tests/virtual_time.py``): a step that takes
20 s or a 10 s retry wait costs no real time, and a cancel that never returns fails the test at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentic.agents.writer import WriterAgent
from agentic.local.wiring import build_local_system
from agentic.models import EventType, StepStatus, TaskStatus
from tests.support import local_client, local_settings, ndjson
from tests.virtual_time import run_virtual, until

pytestmark = pytest.mark.functional


@dataclass
class SlowWriter:
    """Replaces the writer's ``execute``: each call works ``seconds`` (virtual) and is watched."""

    seconds: float
    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)

    async def execute(self, agent: WriterAgent, step: Any, context: Any) -> str:
        self.started.append(context.task_id)
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.interrupted.append(context.task_id)
            raise
        self.finished.append(context.task_id)
        return "the report"


def test_a_local_cancel_interrupts_the_step_in_flight_and_frees_its_slot(tmp_path, monkeypatch):
    """Bug guarded: a local cancel that waits for the running step to finish instead of interrupting it.

    The task would read ``cancelled`` while its agent ran on and its execution slot stayed busy. The
    test watches the step's work, not only the status.
    """
    writer = SlowWriter(seconds=20)  # a long step, within its 30 s timeout

    async def execute(agent: WriterAgent, step: Any, context: Any) -> str:
        return await writer.execute(agent, step, context)

    monkeypatch.setattr(WriterAgent, "execute", execute)

    async def main() -> None:
        system = build_local_system(local_settings(tmp_path, max_concurrent_executions=1, max_queue_size=0))
        try:
            first, _ = await system.service.create("o", "Explain backoff")
            second, _ = await system.service.create("o", "Explain jitter")
            await system.service.execute("o", first.task_id)
            await until(lambda: writer.started == [first.task_id])
            # When the task is cancelled while its writer works
            try:
                cancelled = await asyncio.wait_for(system.service.cancel("o", first.task_id, "changed my mind"), 5)
            except TimeoutError:
                raise AssertionError("the cancel waits for the step instead of interrupting it") from None
            # Then the writer's work was interrupted at once, and the only slot is free again
            assert cancelled.status is TaskStatus.CANCELLED
            assert writer.interrupted == [first.task_id]
            assert system.executor.running == 0
            await system.service.execute("o", second.task_id)
            assert system.executor.running == 1
            await asyncio.wait_for(system.executor.drain(), 60)
            assert system.store.get(second.task_id).status is TaskStatus.COMPLETED
        finally:
            await system.executor.shutdown()
            system.store.close()

    run_virtual(main(), limit_seconds=300)
    assert writer.finished == [writer.started[1]]  # the cancelled task's writer never finished


def test_cancelling_a_failed_task_is_refused_with_409(tmp_path):
    """Bug guarded: cancel accepted on a ``failed`` task (only ``completed`` treated as finished).

    A failed task is finished: a cancel must not turn it into ``cancelled`` (which would also change
    its error message and its outcome for whoever reads it).
    """
    with local_client(tmp_path, faults="writer:permanent") as client:
        task_id = client.post("/tasks", json={"description": "Explain backoff"}).json()["task_id"]
        ndjson(client.post(f"/tasks/{task_id}/execute").text)
        failed = client.get(f"/tasks/{task_id}/status").json()
        assert failed["status"] == "failed"
        # When it is cancelled
        response = client.post(f"/tasks/{task_id}/cancel", json={"reason": "too late"})
        # Then the cancel is refused, and the task is as it was
        assert response.status_code == 409, response.text
        assert "failed" in response.json()["message"]
        after = client.get(f"/tasks/{task_id}/status").json()
        assert after["status"] == "failed"
        assert after["error_message"] == failed["error_message"]
        events = ndjson(client.get(f"/tasks/{task_id}/events").text)
        assert "task_cancelled" not in [e["event_type"] for e in events]


def test_cancelling_a_task_whose_step_waits_for_its_retry_ends_that_step(tmp_path):
    """Bug guarded: cancel of a task whose step waits for its retry (``retrying``) leaving it ``retrying``.

    A step between attempts is as much in flight as a running one: after the cancel it must read
    failed (cancelled), and no further attempt may start.
    """

    async def main() -> None:
        # Given a retriever that fails once, transiently, and a 10 s wait before its retry
        system = build_local_system(local_settings(tmp_path, faults="retriever:transient:1", retry_time_scale=10))
        try:
            task, _ = await system.service.create("o", "Explain backoff")
            await system.service.execute("o", task.task_id)

            def retrying() -> bool:
                found = system.store.get(task.task_id)
                return found.execution_plan is not None and found.execution_plan.steps[0].status is StepStatus.RETRYING

            await until(retrying)
            # When the task is cancelled during the wait
            await system.service.cancel("o", task.task_id, None)
            await asyncio.wait_for(system.executor.drain(), 60)
            await asyncio.sleep(30)  # past the retry's due time
            # Then the waiting step ended as a running one does, and it was not attempted again
            final = system.store.get(task.task_id)
            assert final.status is TaskStatus.CANCELLED
            step = final.execution_plan.steps[0]
            assert (step.status, step.error, step.attempts) == (StepStatus.FAILED, "cancelled", 1)
            kinds = [e.event_type for e in system.store.read_events(task.task_id)]
            assert kinds[-1] is EventType.TASK_CANCELLED
            assert kinds.count(EventType.STEP_STARTED) == 1
        finally:
            await system.executor.shutdown()
            system.store.close()

    run_virtual(main(), limit_seconds=600)
