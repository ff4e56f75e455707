"""Cancel, approve or reject, retry: on the real server, watched through real streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LocalServer
from tests.support import event_types

pytestmark = pytest.mark.e2e

FAST_LEASES = {"LEASE_SECONDS": "2", "LEASE_RENEW_SECONDS": "0.5"}


def create(client: httpx.Client, **body: object) -> str:
    response = client.post("/tasks", json={"description": "Explain circuit breakers and retries", **body})
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


def lines(response: httpx.Response) -> Iterator[str]:
    """The stream's lines, read once (a later read goes on where an earlier one stopped)."""
    return response.iter_lines()


def lines_until(stream: Iterator[str], event_type: str, step_id: str | None = None) -> list[dict]:
    """Read a stream until an event of ``event_type`` (of ``step_id``) arrives."""
    seen = []
    for line in stream:
        if not line:
            continue
        event = json.loads(line)
        seen.append(event)
        if event["event_type"] == event_type and (step_id is None or event["data"].get("step_id") == step_id):
            return seen
    raise AssertionError(f"the stream ended without {event_type}: {event_types(seen)}")


def rest(stream: Iterator[str]) -> list[dict]:
    return [json.loads(line) for line in stream if line]


def invoked(server: LocalServer, task_id: str) -> list[tuple[str, int]]:
    return [(r["agent_type"], r["attempt"]) for r in server.records("agent invoked") if r["task_id"] == task_id]


def test_cancel_interrupts_the_running_step_frees_its_slot_and_ends_the_stream(tmp_path):
    # Given a task whose retriever takes 10 s, and a server with one slot
    with (
        LocalServer(tmp_path / "db.sqlite", AGENT_LATENCY_SCALE="100", MAX_CONCURRENT_EXECUTIONS="1") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        task_id = create(client)
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            stream = lines(response)
            lines_until(stream, "step_started", "step_001")
            # When it is cancelled, with a reason
            cancelled = client.post(f"/tasks/{task_id}/cancel", json={"reason": "wrong question"})
            # Then the same stream ends at once with task_cancelled, naming the step and who
            tail = rest(stream)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert event_types(tail) == ["task_cancelled"]
        assert tail[0]["data"] == {
            "status": "cancelled",
            "reason": "wrong question",
            "by": "local",
            "step_id": "step_001",
            "agent_type": "retriever",
        }
        # And the step was interrupted, not left to finish and write
        status = client.get(f"/tasks/{task_id}/status").json()
        assert status["steps"][0]["status"] == "failed"
        assert [e["event_type"] for e in rest_of_log(client, task_id)].count("partial_output") == 0
        # And the slot is free: the only slot runs the next task right away
        assert client.get("/health").json()["executions"]["running"] == 0
        # And cancelling again answers the same; a finished task cannot be cancelled
        again = client.post(f"/tasks/{task_id}/cancel")
        assert again.status_code == 200
        assert again.json()["status"] == "cancelled"
        assert event_types(rest_of_log(client, task_id)).count("task_cancelled") == 1


def rest_of_log(client: httpx.Client, task_id: str) -> list[dict]:
    with client.stream("GET", f"/tasks/{task_id}/events") as response:
        return rest(lines(response))


def test_a_pending_task_is_cancelled_at_once_and_a_finished_one_is_a_409(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as client:
        pending = create(client)
        response = client.post(f"/tasks/{pending}/cancel")
        assert response.json()["status"] == "cancelled"
        assert event_types(rest_of_log(client, pending)) == ["task_cancelled"]
        done = create(client, execute=True)
        assert event_types(rest_of_log(client, done))[-1] == "task_completed"
        refused = client.post(f"/tasks/{done}/cancel")
        assert refused.status_code == 409
        assert refused.json()["error"] == "invalid_transition"
        # And another owner's task is a 404, as everywhere
        assert client.post("/tasks/not-a-task/cancel").status_code == 404


def test_approval_holds_the_task_before_the_writer_until_a_person_approves(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as client:
        task_id = create(client, approval=True)
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            stream = lines(response)
            seen = lines_until(stream, "approval_requested")
            # Then the stream shows what a person needs to decide, and the task waits
            requested = seen[-1]["data"]
            assert requested["step_id"] == "step_003"
            assert requested["summary"]
            assert requested["sources"][0].startswith("[1] ")  # "[1] <source> — <heading>"
            assert requested["approve"] == f"/tasks/{task_id}/approve"
            assert client.get(f"/tasks/{task_id}/status").json()["status"] == "awaiting_approval"
            assert "step_003" not in {e["data"].get("step_id") for e in seen if e["event_type"] == "step_started"}
            # When it is approved (twice: the second answers the same)
            approved = client.post(f"/tasks/{task_id}/approve", json={"comment": "looks right"})
            assert client.post(f"/tasks/{task_id}/approve").status_code == 200
            tail = rest(stream)
        # Then the same stream goes on to the report
        assert approved.json()["status"] in ("executing", "completed")
        assert event_types(tail)[0] == "approval_granted"
        assert tail[0]["data"]["comment"] == "looks right"
        assert event_types(tail)[-1] == "task_completed"
        assert invoked(server, task_id)[-1] == ("writer", 1)


def test_a_rejected_task_fails_with_a_clear_error(tmp_path):
    with LocalServer(tmp_path / "db.sqlite") as server, httpx.Client(base_url=server.url, timeout=30) as client:
        task_id = create(client, approval=True)
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            stream = lines(response)
            lines_until(stream, "approval_requested")
            assert client.post(f"/tasks/{task_id}/reject", json={"reason": "sources are too old"}).status_code == 200
            tail = rest(stream)
        assert event_types(tail) == ["approval_rejected", "error", "task_failed"]
        status = client.get(f"/tasks/{task_id}/status").json()
        assert status["status"] == "failed"
        assert status["error_message"] == "ApprovalRejected: rejected by local: sources are too old"
        # And the writer never ran; a second reject answers the same; approving now is a 409
        assert "writer" not in {agent for agent, _ in invoked(server, task_id)}
        assert client.post(f"/tasks/{task_id}/reject").status_code == 200
        assert client.post(f"/tasks/{task_id}/approve").status_code == 409
        # And a task that does not wait for approval cannot be approved
        plain = create(client)
        assert client.post(f"/tasks/{plain}/approve").status_code == 409


def test_an_approval_past_the_state_machine_s_timeout_fails_the_task(tmp_path):
    # Given the state-machine file with a 1 s approval timeout
    definition = json.loads((Path(__file__).parents[2] / "statemachine" / "pipeline.asl.json").read_text())
    definition["States"]["Write"]["Parameters"]["approval_timeout_seconds"] = 1
    short = tmp_path / "short-approval.asl.json"
    short.write_text(json.dumps(definition))
    with (
        LocalServer(tmp_path / "db.sqlite", PIPELINE_DEFINITION=str(short), **FAST_LEASES) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        task_id = create(client, approval=True)
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            stream = lines(response)
            lines_until(stream, "approval_requested")
            # When nobody answers, the same stream ends with the failure
            tail = rest(stream)
        assert event_types(tail) == ["error", "task_failed"]
        assert tail[0]["data"]["error"] == "States.Timeout"
        assert "nobody approved" in tail[1]["data"]["error_message"]


def test_retry_resumes_a_failed_task_from_its_failed_step(tmp_path):
    db = tmp_path / "db.sqlite"
    # Given a task failed by its writer (a permanent fault on this server)
    with (
        LocalServer(db, FAULTS="writer:permanent") as broken,
        httpx.Client(base_url=broken.url, timeout=30) as client,
    ):
        task_id = create(client, execute=True)
        assert event_types(rest_of_log(client, task_id))[-1] == "task_failed"
    # When it is retried on a server without the fault
    with LocalServer(db, MAX_TASK_RETRIES="2") as server, httpx.Client(base_url=server.url, timeout=30) as client:
        retried = client.post(f"/tasks/{task_id}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["retries"] == 1
        log = rest_of_log(client, task_id)
        # Then the log shows the first run, the retry, and the second run to its end
        kinds = event_types(log)
        assert kinds[kinds.index("task_failed") + 1] == "task_retried"
        assert kinds[-1] == "task_completed"
        retry_event = log[kinds.index("task_retried")]["data"]
        assert (retry_event["from_step"], retry_event["retry"], retry_event["agent_type"]) == ("step_003", 1, "writer")
        # And only the writer ran again, its attempts numbered after the failed one
        assert invoked(server, task_id) == [("writer", 2)]
        restarted = [e for e in log if e["event_type"] == "step_started" and e["data"]["step_id"] == "step_003"]
        assert [e["data"]["attempt"] for e in restarted] == [1, 2]
        status = client.get(f"/tasks/{task_id}/status").json()
        assert status["status"] == "completed"
        assert status["steps"][2]["attempts"] == 2
        # And a completed task cannot be retried
        assert client.post(f"/tasks/{task_id}/retry").status_code == 409


def test_retry_from_an_earlier_step_and_the_retry_bound(tmp_path):
    with (
        LocalServer(tmp_path / "db.sqlite", MAX_TASK_RETRIES="1", AGENT_LATENCY_SCALE="100") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        # Given a task cancelled while its analyzer ran
        task_id = create(client)
        with client.stream("POST", f"/tasks/{task_id}/execute") as response:
            stream = lines(response)
            lines_until(stream, "step_started", "step_002")
            client.post(f"/tasks/{task_id}/cancel")
        # Then a retry cannot skip the step that did not complete
        skip = client.post(f"/tasks/{task_id}/retry", json={"from_step": "step_003"})
        assert skip.status_code == 422
        unknown = client.post(f"/tasks/{task_id}/retry", json={"from_step": "step_009"})
        assert unknown.status_code == 422
        # When it is retried from the first step
        response = client.post(f"/tasks/{task_id}/retry", json={"from_step": "step_001"})
        assert response.status_code == 200, response.text
        with client.stream("GET", f"/tasks/{task_id}/events") as response:
            stream = lines(response)
            lines_until(stream, "task_retried")
            seen = lines_until(stream, "step_started", "step_001")
        # Then the retriever runs again, as its second attempt
        assert seen[-1]["data"]["attempt"] == 2
        # And the bound: after MAX_TASK_RETRIES, a retry is a 409
        client.post(f"/tasks/{task_id}/cancel")
        refused = client.post(f"/tasks/{task_id}/retry")
        assert refused.status_code == 409
        assert "limit" in refused.json()["message"]
