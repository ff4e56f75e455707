"""GET /metrics on the local server: the core's metrics, as Prometheus series."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentic.local.metrics import PrometheusSink
from agentic.observability import record_metric
from tests.support import local_client, ndjson

pytestmark = pytest.mark.functional


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def run(client, description: str) -> None:
    task_id = client.post("/tasks", json={"description": description}).json()["task_id"]
    ndjson(client.post(f"/tasks/{task_id}/execute").text)


def test_tasks_steps_retries_and_latencies_are_counted(tmp_path):
    # Given a server whose retriever fails once, transiently, and whose writer fails for good
    with local_client(tmp_path, faults="retriever:transient:1,writer:permanent") as client:
        # When two tasks run (both fail at the writer)
        run(client, "Explain backoff")
        run(client, "Explain jitter")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    got = samples(response.text)
    # Then tasks are counted by outcome, steps by agent and outcome, with latencies
    assert got[("agentic_tasks_created_total", ())] == 2
    assert got[("agentic_tasks_finished_total", (("outcome", "failed"),))] == 2
    assert ("agentic_tasks_finished_total", (("outcome", "completed"),)) not in got
    assert got[("agentic_steps_total", (("agent_type", "retriever"), ("outcome", "retried")))] == 2
    assert got[("agentic_steps_total", (("agent_type", "retriever"), ("outcome", "succeeded")))] == 2
    assert got[("agentic_steps_total", (("agent_type", "analyzer"), ("outcome", "succeeded")))] == 2
    assert got[("agentic_steps_total", (("agent_type", "writer"), ("outcome", "failed")))] == 2
    assert got[("agentic_step_duration_seconds_count", (("agent_type", "analyzer"),))] == 2
    assert got[("agentic_task_duration_seconds_count", (("outcome", "failed"),))] == 2
    assert got[("agentic_queue_size", ())] == 0
    assert got[("agentic_running_executions", ())] == 0


def test_a_completed_task_is_counted_as_completed(tmp_path):
    with local_client(tmp_path) as client:
        run(client, "Explain backoff")
        got = samples(client.get("/metrics").text)
    assert got[("agentic_tasks_finished_total", (("outcome", "completed"),))] == 1
    assert got[("agentic_task_duration_seconds_count", (("outcome", "completed"),))] == 1
    assert got[("agentic_step_duration_seconds_count", (("agent_type", "writer"),))] == 1


def test_queue_and_running_gauges_read_the_executor_when_scraped():
    sink = PrometheusSink()
    load = {"waiting": 3, "running": 2}
    sink.watch_executor(lambda: load["waiting"], lambda: load["running"])
    assert samples(sink.exposition().decode())[("agentic_queue_size", ())] == 3
    load["waiting"] = 0
    got = samples(sink.exposition().decode())
    assert got[("agentic_queue_size", ())] == 0
    assert got[("agentic_running_executions", ())] == 2


def test_a_metric_the_sink_does_not_know_becomes_a_counter():
    # Given the sink installed as the local server installs it
    from agentic.observability import add_metric_sink, remove_metric_sink

    sink = PrometheusSink()
    add_metric_sink(sink)
    try:
        # When the core records a count the sink has no series for (as the S3 trigger does)
        record_metric("TriggerInputRejected", 1)
        record_metric("TasksCancelled", 1)
    finally:
        remove_metric_sink(sink)
    record_metric("TriggerInputRejected", 1)  # after removal: not counted
    got = samples(sink.exposition().decode())
    assert got[("agentic_trigger_input_rejected_total", ())] == 1
    assert got[("agentic_tasks_finished_total", (("outcome", "cancelled"),))] == 1


def test_no_lambda_path_imports_prometheus():
    code = (
        "import sys, agentic.aws.http_handlers, agentic.aws.pipeline_handlers, agentic.aws.trigger_handlers; "
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
