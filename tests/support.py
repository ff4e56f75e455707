"""Helpers shared by the test tiers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from agentic.local.wiring import create_local_app
from agentic.settings import Settings

SEED_SEQUENCE = [
    "task_started",
    "plan_created",
    *["step_started", "partial_output", "step_completed"] * 3,
    "task_completed",
]


def local_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_path": tmp_path / "tasks.db",
        "agent_latency_scale": 0,
        "retry_time_scale": 0.01,
        "stream_keepalive_seconds": 5,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def local_client(tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    """The local app in-process (lifespan included) on a fresh SQLite file."""
    app = create_local_app(local_settings(tmp_path, **overrides))
    with TestClient(app) as client:
        yield client


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]
