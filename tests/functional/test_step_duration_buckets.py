"""The step-latency histogram of ``GET /metrics``, against a known step duration. Names the bug it
guards (issue 19)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentic.agents.writer import WriterAgent
from tests.support import local_client, ndjson

pytestmark = pytest.mark.functional


def buckets(text: str, agent_type: str) -> dict[float, float]:
    return {
        float(s.labels["le"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "agentic_step_duration_seconds_bucket" and s.labels.get("agent_type") == agent_type
    }


def test_step_duration_lands_in_the_bucket_of_its_seconds(tmp_path, monkeypatch):
    """Bug guarded: step latency observed in milliseconds into ``agentic_step_duration_seconds``.

    Off by 1000x, every step would land past the largest bucket. A writer step that takes at least
    0.15 s (a real sleep: the latency is measured on the real clock) must be above the 0.1 s bucket
    and, on any machine that runs this suite, far below 30 s.
    """

    async def execute(agent: WriterAgent, step: Any, context: Any) -> str:
        await asyncio.sleep(0.15)
        return "the report"

    monkeypatch.setattr(WriterAgent, "execute", execute)
    with local_client(tmp_path) as client:
        task_id = client.post("/tasks", json={"description": "Explain backoff"}).json()["task_id"]
        ndjson(client.post(f"/tasks/{task_id}/execute").text)
        got = buckets(client.get("/metrics").text, "writer")
    assert got[float("inf")] == 1
    assert got[0.1] == 0
    assert got[30.0] == 1
