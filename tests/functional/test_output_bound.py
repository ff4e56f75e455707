"""A step's output is bounded (60,000 characters), so a task item stays far below DynamoDB's 400 KB."""

from __future__ import annotations

from typing import Any

import pytest

from agentic.agents.writer import WriterAgent
from tests.support import SEED_SEQUENCE, event_types, local_client, ndjson

pytestmark = pytest.mark.functional

#: The documented bound, spelled out: a test importing the constant would follow it if it were raised.
BOUND = 60_000


def test_an_agent_answering_100k_characters_stores_at_most_60k(tmp_path, monkeypatch):
    # Given a writer agent that answers with 100,000 characters
    answer = "".join(f"line {n:06d}\n" for n in range(100_000 // 12 + 1))[:100_000]

    async def execute(agent: WriterAgent, step: Any, context: Any) -> str:
        return answer

    monkeypatch.setattr(WriterAgent, "execute", execute)
    with local_client(tmp_path) as client:
        task_id = client.post("/tasks", json={"description": "Write a very long report"}).json()["task_id"]
        # When the task runs
        events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
        status = client.get(f"/tasks/{task_id}/status").json()
    # Then it completed with the writer's output cut to 60k, in the task and in the stream
    assert event_types(events) == SEED_SEQUENCE
    assert status["status"] == "completed"
    final = status["final_output"]
    assert 0 < len(final) <= BOUND
    assert answer.startswith(final)
    writer_partial = next(
        e["data"]["output"]
        for e in events
        if e["event_type"] == "partial_output" and e["data"]["agent_type"] == "writer"
    )
    assert writer_partial == final
    # And no event holds more than the bound
    for event in events:
        for key in ("output", "final_output"):
            if isinstance(event["data"].get(key), str):
                assert len(event["data"][key]) <= BOUND, (event["event_type"], key)
