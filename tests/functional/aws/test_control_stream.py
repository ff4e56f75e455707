"""The streaming function while a person decides: the stream of a task awaiting approval stays open
(keepalives) and goes on after the approval; a cancel ends it with ``task_cancelled``.

The stream app under uvicorn on loopback (as run.sh serves it behind the Web Adapter), the real
state machine in moto, the controls through the real create function while the stream is open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentic.models import TaskStatus
from tests.functional.aws.control_support import control, create, task
from tests.functional.aws.stream_support import identity_headers, is_event, read_lines, stream_app, uvicorn_server
from tests.functional.aws.support import Pipeline
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[httpx.Client]:
    pipeline.configure(STREAM_KEEPALIVE_SECONDS="0.05")
    with uvicorn_server(stream_app()) as url, httpx.Client(base_url=url, timeout=httpx.Timeout(20.0)) as http:
        yield http


def stream_until(client: httpx.Client, task_id: str, act: Any, *, after_keepalives: int = 2) -> list[dict[str, Any]]:
    """POST /execute and read the whole stream; once the task waits for approval and the stream has
    sent ``after_keepalives`` keepalives since, call ``act()`` (the stream still open)."""
    lines: list[dict[str, Any]] = []
    waiting_keepalives = None
    with client.stream("POST", f"/tasks/{task_id}/execute", headers=identity_headers()) as response:
        assert response.status_code == 200
        for line in read_lines(response):
            lines.append(line.data)
            kind = line.data["event_type"]
            if kind == "approval_requested":
                waiting_keepalives = 0
            elif kind == "keepalive" and waiting_keepalives is not None:
                waiting_keepalives += 1
                if waiting_keepalives == after_keepalives:
                    act()
    return lines


def test_the_stream_of_a_task_awaiting_approval_stays_open_and_goes_on_once_approved(
    pipeline: Pipeline, client: httpx.Client
):
    # Given a task created with approval, executed through the stream
    task_id = create(approval=True, execute=False)
    statuses: list[TaskStatus] = []

    def approve() -> None:
        statuses.append(task(task_id).status)
        assert control("approve", task_id)["statusCode"] == 200

    # When a person approves while the stream is open
    lines = stream_until(client, task_id, approve)

    # Then the stream waited with keepalives (the task awaiting approval), then ran to its end
    assert statuses == [TaskStatus.AWAITING_APPROVAL]
    kinds = [line["event_type"] for line in lines]
    wait = kinds[kinds.index("approval_requested") + 1 : kinds.index("approval_granted")]
    assert len(wait) >= 2
    assert set(wait) == {"keepalive"}
    events = [line["event_type"] for line in lines if is_event(line)]
    assert events == [*SEED_SEQUENCE[:8], "approval_requested", "approval_granted", *SEED_SEQUENCE[8:]]
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"


def test_a_cancel_ends_the_stream_with_task_cancelled(pipeline: Pipeline, client: httpx.Client):
    # Given a task waiting for approval, streamed
    task_id = create(approval=True, execute=False)

    def cancel() -> None:
        assert control("cancel", task_id, {"reason": "not needed"})["statusCode"] == 200

    # When it is cancelled while the stream is open
    lines = stream_until(client, task_id, cancel)

    # Then the stream ends with task_cancelled
    events = [line for line in lines if is_event(line)]
    assert events[-1]["event_type"] == "task_cancelled"
    assert events[-1]["data"]["reason"] == "not needed"
    assert task(task_id).status is TaskStatus.CANCELLED
    assert pipeline.wait(task_id)["status"] == "SUCCEEDED"  # its run had ended at the gate


def test_a_stream_paused_while_a_person_decides_resumes_after_its_cursor(pipeline: Pipeline):
    # Given the stream function as deployed: a stream whose task waits for a person pauses
    pipeline.configure(STREAM_APPROVAL_PAUSE_SECONDS="15")
    task_id = create(approval=True, execute=False)
    with uvicorn_server(stream_app()) as url, httpx.Client(base_url=url, timeout=httpx.Timeout(20.0)) as http:
        # When the client executes it, the stream ends once the task waits, saying when to come back
        with http.stream("POST", f"/tasks/{task_id}/execute", headers=identity_headers()) as response:
            first = [line.data for line in read_lines(response)]
        assert [line["event_type"] for line in first if is_event(line)] == [*SEED_SEQUENCE[:8], "approval_requested"]
        paused = first[-1]
        assert paused["event_type"] == "stream_paused"
        cursor = paused["data"]["cursor"]
        assert cursor == first[-2]["cursor"]
        assert paused["data"]["retry_after_seconds"] == 15
        # and coming back while it still waits is told the same at once
        again = http.get(f"/tasks/{task_id}/events", params={"after": cursor}, headers=identity_headers())
        assert [json.loads(line)["event_type"] for line in again.text.splitlines()] == ["stream_paused"]

        # When a person approves and the client comes back after its cursor
        assert control("approve", task_id)["statusCode"] == 200
        with http.stream("GET", f"/tasks/{task_id}/events?after={cursor}", headers=identity_headers()) as response:
            rest = [line.data for line in read_lines(response)]

    # Then it reads the rest to the end
    assert [line["event_type"] for line in rest if is_event(line)] == ["approval_granted", *SEED_SEQUENCE[8:]]
    assert task(task_id).status is TaskStatus.COMPLETED
