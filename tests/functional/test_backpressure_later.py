"""Backpressure refuses an execute with 429 and leaves the task pending: executed later, it runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentic.agents.retriever import RetrieverAgent
from tests.support import SEED_SEQUENCE, event_types, local_client, ndjson

pytestmark = pytest.mark.functional


@pytest.fixture
def gate(monkeypatch) -> Iterator[threading.Event]:
    """Holds the retriever of the task described "busy" until the test sets it (a bounded wait)."""
    opened = threading.Event()
    original = RetrieverAgent.execute

    async def execute(agent: RetrieverAgent, step: Any, context: Any) -> str:
        if context.task == "busy":
            await asyncio.to_thread(opened.wait, 30)
        return await original(agent, step, context)

    monkeypatch.setattr(RetrieverAgent, "execute", execute)
    yield opened
    opened.set()  # never leave a thread waiting after a failed test


def test_a_task_refused_with_429_runs_when_executed_later(tmp_path, gate):
    # Given one execution slot, no waiting line, and a task holding the slot
    with local_client(tmp_path, max_concurrent_executions=1, max_queue_size=0, stream_max_seconds=10) as client:
        busy = client.post("/tasks", json={"description": "busy"}).json()["task_id"]
        later = client.post("/tasks", json={"description": "Explain backpressure"}).json()["task_id"]
        with client.stream("POST", f"/tasks/{busy}/execute") as stream:
            lines = stream.iter_lines()
            assert '"task_started"' in next(lines)
            # When another task is executed, it is refused
            refused = client.post(f"/tasks/{later}/execute")
            assert refused.status_code == 429
            assert client.get(f"/tasks/{later}/status").json()["status"] == "pending"
            # And the busy task finishes
            gate.set()
            assert event_types(ndjson("\n".join(lines)))[-1] == "task_completed"
        # When the refused task is executed again
        events = ndjson(client.post(f"/tasks/{later}/execute").text)
        # Then it runs to completion, exactly like a task that was never refused
        assert event_types(events) == SEED_SEQUENCE
        status = client.get(f"/tasks/{later}/status").json()
        assert status["status"] == "completed"
        assert [s["attempts"] for s in status["steps"]] == [1, 1, 1]
        assert status["final_output"]
