"""A step's output is bounded in UTF-8 bytes (300 KiB): 100,000 CJK characters pass whole, more is cut."""

from __future__ import annotations

from typing import Any

import pytest

from agentic.agents.writer import WriterAgent
from tests.support import SEED_SEQUENCE, event_types, local_client, ndjson

pytestmark = pytest.mark.functional

#: The documented bound, spelled out: a test importing the constant would follow it if it were raised.
BOUND_BYTES = 300 * 1024
#: 100,000 characters of 3 bytes each (CJK), with line breaks.
CJK_REPORT = "".join(("指数退避" * 24 + "\n") if n % 97 == 0 else "重试抖动" for n in range(100_000 // 4))[:100_000]


def run_with_writer_answer(tmp_path, monkeypatch, answer: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    async def execute(agent: WriterAgent, step: Any, context: Any) -> str:
        return answer

    monkeypatch.setattr(WriterAgent, "execute", execute)
    with local_client(tmp_path) as client:
        task_id = client.post("/tasks", json={"description": "Write a very long report"}).json()["task_id"]
        events = ndjson(client.post(f"/tasks/{task_id}/execute").text)
        status = client.get(f"/tasks/{task_id}/status").json()
    return events, status


def writer_output(events: list[dict[str, Any]]) -> str:
    return next(
        e["data"]["output"]
        for e in events
        if e["event_type"] == "partial_output" and e["data"]["agent_type"] == "writer" and "output" in e["data"]
    )


def test_a_100k_character_cjk_report_is_kept_whole(tmp_path, monkeypatch):
    # Given a writer that answers 100,000 three-byte characters (300,000 bytes)
    assert len(CJK_REPORT) == 100_000
    # When the task runs
    events, status = run_with_writer_answer(tmp_path, monkeypatch, CJK_REPORT)
    # Then it completed with the whole report, in the task and in the stream
    assert event_types(events) == SEED_SEQUENCE
    assert status["final_output"] == CJK_REPORT
    assert writer_output(events) == CJK_REPORT
    assert next(e for e in events if e["event_type"] == "task_completed")["data"]["final_output"] == CJK_REPORT


def test_an_answer_over_the_bound_is_cut_at_a_character_boundary(tmp_path, monkeypatch):
    # Given a writer that answers 120,000 three-byte characters (360,000 bytes, over the bound)
    answer = "长" * 120_000
    # When the task runs
    events, status = run_with_writer_answer(tmp_path, monkeypatch, answer)
    # Then it completed with the writer's output cut to the bound, whole characters only
    assert event_types(events) == SEED_SEQUENCE
    final = status["final_output"]
    assert final == "长" * (BOUND_BYTES // 3)
    assert writer_output(events) == final
    # And no event holds more than the bound
    for event in events:
        for key in ("output", "final_output"):
            if isinstance(event["data"].get(key), str):
                assert len(event["data"][key].encode()) <= BOUND_BYTES, (event["event_type"], key)
