"""End to end with a model: `python -m agentic.local` with MODEL_PROVIDER=openai against a real local
Chat Completions server, a real HTTP client reading the NDJSON stream line by line."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from tests.e2e.server import LocalServer
from tests.fake_openai import Answer, FakeOpenAI

pytestmark = pytest.mark.e2e


def model_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "MODEL_PROVIDER": "openai",
        "MODEL_BASE_URL": fake.base_url,
        "MODEL_ID": "fake-1",
        "MODEL_API_KEY": "sk-e2e",
        "MODEL_PRICES": '{"fake-1": {"input": 1.0, "output": 4.0}}',
        **extra,
    }


def test_the_report_streams_to_the_client_while_the_model_writes_it(tmp_path):
    with FakeOpenAI() as fake:
        # Given a model that writes its report in 40 pieces over ~2 s
        pieces = [f"part {i}; " for i in range(40)]
        fake.queue("stream", Answer(chunks=pieces, delay_between=0.05, usage=(700, 40)))
        with (
            LocalServer(tmp_path / "db.sqlite", **model_env(fake)) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            task_id = client.post("/tasks", json={"description": "Explain backoff with jitter"}).json()["task_id"]
            # When a client executes the task and reads the stream line by line
            deltas: list[tuple[float, str]] = []
            events: list[dict] = []
            with client.stream("POST", f"/tasks/{task_id}/execute") as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    event = json.loads(line)
                    events.append(event)
                    if event["event_type"] == "partial_output" and "delta" in event["data"]:
                        deltas.append((time.monotonic(), event["data"]["delta"]))
            # Then the first text reached the client while the model was still writing
            writer_call = fake.seen("stream")[0]
            assert deltas
            assert deltas[0][0] < writer_call.sent_at[-1]
            # And the deltas add up to the final report, which the model wrote and the sources close
            final = events[-1]
            assert final["event_type"] == "task_completed"
            joined = "".join(text for _, text in deltas)
            assert joined == final["data"]["final_output"]
            assert joined.startswith("".join(pieces))
            # And far fewer events than pieces were written
            assert len(deltas) < len(pieces)
            # And the status shows the model's usage and cost
            status = client.get(f"/tasks/{task_id}/status").json()
            assert status["usage"] == {"input_tokens": 800, "output_tokens": 60}
            assert status["cost_usd"] == pytest.approx((800 * 1.0 + 60 * 4.0) / 1e6)
            writer = status["steps"][2]
            assert writer["model_id"] == "fake-1"
            assert writer["usage"] == {"input_tokens": 700, "output_tokens": 40}
            # And the token counters are in /metrics
            metrics = client.get("/metrics").text
            assert 'agentic_model_tokens_total{direction="output",model_id="fake-1"} 60.0' in metrics


def test_a_bad_key_fails_the_task_with_a_message_not_a_traceback(tmp_path):
    with FakeOpenAI() as fake:
        fake.queue("structured", Answer.error(401, "invalid api key"))
        with (
            LocalServer(tmp_path / "db.sqlite", **model_env(fake)) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            task_id = client.post("/tasks", json={"description": "Explain backoff"}).json()["task_id"]
            with client.stream("POST", f"/tasks/{task_id}/execute") as response:
                events = [json.loads(line) for line in response.iter_lines() if line]
            assert events[-1]["event_type"] == "task_failed"
            message = events[-1]["data"]["error_message"]
            assert "MODEL_API_KEY" in message
            assert "invalid api key" in message
            assert "Traceback" not in json.dumps(events)


def test_a_model_setting_that_cannot_work_stops_the_server_with_one_line(tmp_path):
    # Given a model timeout longer than the writer step's TimeoutSeconds
    server = LocalServer(tmp_path / "db.sqlite", MODEL_PROVIDER="openai", MODEL_ID="m", MODEL_TIMEOUT_SECONDS="500")
    proc = server.spawn()
    # Then the server refuses to start, naming the setting, with exit code 2
    assert proc.wait(timeout=30) == 2
    output = server.log.read_text()
    assert "MODEL_TIMEOUT_SECONDS" in output
    assert "Traceback" not in output


def test_a_server_killed_mid_answer_resumes_the_step_elsewhere_without_duplicated_text(tmp_path):
    with FakeOpenAI() as fake:
        # Given a writer whose first answer is slow (10 s) and whose second is quick
        fake.queue(
            "stream",
            Answer(chunks=["stale "] * 200, delay_between=0.05),
            Answer.text("The resumed report."),
        )
        env = model_env(fake, LEASE_SECONDS="2", LEASE_RENEW_SECONDS="0.5")
        db = tmp_path / "db.sqlite"
        first = LocalServer(db, **env).start()
        try:
            with httpx.Client(base_url=first.url, timeout=30) as client:
                task_id = client.post("/tasks", json={"description": "Explain backoff"}).json()["task_id"]
                # When the server is killed (SIGKILL) while the model streams the report
                with client.stream("POST", f"/tasks/{task_id}/execute") as response:
                    for line in response.iter_lines():
                        event = json.loads(line)
                        if event["event_type"] == "partial_output" and "delta" in event["data"]:
                            break
                first.stop(signal.SIGKILL)
        finally:
            first.stop(signal.SIGKILL)
        # Then the model server saw that connection go
        assert fake.seen("stream")[0].gone.wait(5)
        # And a server started on the same file resumes the writer from its start
        with (
            LocalServer(db, **env) as second,
            httpx.Client(base_url=second.url, timeout=60) as client,
            client.stream("GET", f"/tasks/{task_id}/events") as response,
        ):
            events = [json.loads(line) for line in response.iter_lines() if line]
        assert events[-1]["event_type"] == "task_completed"
        final = events[-1]["data"]["final_output"]
        assert final.startswith("The resumed report.")
        assert "stale" not in final
        (retry,) = [e["data"] for e in events if e["event_type"] == "step_retrying"]
        assert retry["step_id"] == "step_003"
        assert "States.Timeout" in retry["error"]
        # And the resumed attempt's deltas alone add up to the report
        resumed = [e["data"]["delta"] for e in events if "delta" in e["data"] and e["data"]["attempt"] == 2]
        assert "".join(resumed) == final
