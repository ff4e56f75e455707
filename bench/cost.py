"""``make cost``: the AWS bill of one task, measured under moto, per workflow type (prints, never asserts).

The real ``statemachine/pipeline.asl.json`` runs in moto's Step Functions interpreter as a Standard
and as an Express workflow, each Lambda ARN backed by the real handler in-process (as the AWS tests
run it). A client creates each task through the API function (API Gateway) and executes it through
the streaming function, reading its NDJSON stream to the end. Every AWS request any boto3 client
makes is recorded (``BaseClient._make_api_call``) and priced:

- DynamoDB units from item sizes (DynamoDB's own rules: 1 WRU per 1 KB written, the larger of the
  item before and after; 1 RRU per 4 KB read strongly consistent, half that eventually consistent;
  transactions x2; a KEYS_ONLY index write when its key appears, changes (x2) or goes). moto's
  ``ConsumedCapacity`` is a constant, so it is not used.
- Step Functions: Standard bills state transitions (every state entered, Choice states included,
  and every retry); Express bills requests and duration x memory (64 MB, 100 ms steps).
- Lambda: requests and GB-seconds at the template's memory sizes (arm64). Durations are the
  handlers' wall times in this process against moto: the template agents' modelled latency plus
  moto's answer times, so they stand for the seed's agents, not for a model's answers.
- CloudWatch Logs: the bytes the functions log (Powertools JSON lines and EMF metrics) plus
  Lambda's START/END/REPORT lines.

Not per task, so not here: DynamoDB storage, log storage, data transfer, the Function URL's bytes
streamed past 6 MB per request (none), KMS.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: us-east-1 list prices (arm64), USD, as published on the services' pricing pages; checked 2025-06
#: (DynamoDB on-demand after its 2024-11-01 price cut). Re-check before quoting a bill.
PRICES_DATE = "2025-06"
PRICES = {
    "sfn_standard_transition": 25.0 / 1e6,  # $0.025 per 1,000 state transitions
    "sfn_express_request": 1.00 / 1e6,
    "sfn_express_gb_second": 0.00001667,  # first 1,000 GB-hours a month
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm64": 0.0000133334,  # first 7.5 billion GB-s a month
    "dynamodb_wru": 0.625 / 1e6,  # on-demand
    "dynamodb_rru": 0.125 / 1e6,
    "http_api_request": 1.00 / 1e6,  # first 300 million a month, per 512 KB
    "logs_ingested_gb": 0.50,
    "xray_trace": 5.00 / 1e6,
    "scheduler_invocation": 1.00 / 1e6,
}
#: X-Ray's default sampling (1 request a second, then 5 %): the share of tasks traced at scale.
XRAY_SAMPLED = 0.05
#: Lambda's platform lines per invocation (START, END, REPORT with X-Ray ids), in bytes.
PLATFORM_LOG_BYTES = 400
TASKS = int(os.environ.get("COST_TASKS", "5"))


# --- DynamoDB item sizes ---------------------------------------------------------------------------


def value_size(value: dict[str, Any]) -> int:
    """The size DynamoDB counts for one attribute value (low-level JSON form)."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(inner.encode())
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in inner)
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in (item or {}).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return units if consistent else units / 2


# --- recording -------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What one configuration's tasks cost: requests by service and operation, and units."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    lambda_invocations: Counter[str] = field(default_factory=Counter)
    lambda_gb_seconds: float = 0.0
    lambda_seconds: Counter[str] = field(default_factory=Counter)
    transitions: int = 0
    scheduler_invocations: int = 0
    express_requests: int = 0
    express_gb_seconds: float = 0.0
    http_api_requests: int = 0
    log_bytes: int = 0
    largest_item: int = 0
    #: WRU by write shape (operation and the kinds of item it touches), for ``COST_DETAIL=1``.
    writes: Counter[str] = field(default_factory=Counter)
    write_counts: Counter[str] = field(default_factory=Counter)
    reads: Counter[str] = field(default_factory=Counter)
    read_counts: Counter[str] = field(default_factory=Counter)


class Recorder:
    """Patches botocore's ``_make_api_call`` to record (and size) every AWS request."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.indexes: dict[str, list[list[str]]] = {}
        self.lock = threading.Lock()
        self.local = threading.local()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The bench's own requests (waiting for an execution, reading its history) are not the task's."""
        self.local.paused = True
        try:
            yield
        finally:
            self.local.paused = False

    @contextmanager
    def active(self) -> Iterator[None]:
        from botocore.client import BaseClient

        real = BaseClient._make_api_call
        recorder = self

        def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            if getattr(recorder.local, "paused", False):
                return real(client, operation, params)
            if service == "dynamodb" and operation in _WRITES:
                return recorder._write(real, client, operation, params)
            response = real(client, operation, params)
            with recorder.lock:
                recorder.ledger.requests[(service, operation)] += 1
                if service == "dynamodb":
                    recorder._read(operation, params, response)
            return response

        BaseClient._make_api_call = call  # type: ignore[method-assign]
        try:
            yield
        finally:
            BaseClient._make_api_call = real  # type: ignore[method-assign]

    # DynamoDB reads: sized from what came back.
    def _read(self, operation: str, params: dict[str, Any], response: dict[str, Any]) -> None:
        consistent = bool(params.get("ConsistentRead"))
        before = self.ledger.rru
        if operation == "GetItem":
            self.ledger.rru += read_units(item_size(response.get("Item")), consistent)
            label = f"GetItem[{params['Key'].get('sk', {}).get('S', '?').split('#')[0]}]"
        elif operation == "Query":
            self.ledger.rru += read_units(sum(item_size(i) for i in response.get("Items", [])), consistent)
            label = f"Query[{params.get('IndexName', 'table')}, {len(response.get('Items', []))} items]"
        elif operation == "BatchGetItem":
            for items in response.get("Responses", {}).values():
                self.ledger.rru += sum(read_units(item_size(i), consistent) for i in items)
            label = "BatchGetItem"
        else:
            return
        if not consistent:
            label += " (eventually consistent)"
        self.ledger.reads[label] += self.ledger.rru - before
        self.ledger.read_counts[label] += 1

    # DynamoDB writes: sized from the item before and after (read around the call, unrecorded).
    def _write(self, real: Callable[..., Any], client: Any, operation: str, params: dict[str, Any]) -> Any:
        targets = _write_targets(operation, params)
        before = [self._item(real, client, table, key) for table, key, _ in targets]
        try:
            return real(client, operation, params)
        finally:
            after = [self._item(real, client, table, key) for table, key, _ in targets]
            with self.lock:
                self.ledger.requests[("dynamodb", operation)] += 1
                factor = 2 if operation == "TransactWriteItems" else 1
                units = 0
                shape = []
                for (table, key, kind), old, new in zip(targets, before, after, strict=True):
                    size = max(item_size(old), item_size(new))
                    self.ledger.largest_item = max(self.ledger.largest_item, size)
                    units += factor * write_units(size)
                    if kind != "ConditionCheck":
                        units += factor * self._index_writes(real, client, table, old, new)
                    sort = key.get("sk", {}).get("S", "?")
                    shape.append(f"{kind}:{sort.split('#')[0]}({math.ceil(size / 1024)}K)")
                self.ledger.wru += units
                label = f"{operation}[{' '.join(shape)}]"
                self.ledger.writes[label] += units
                self.ledger.write_counts[label] += 1

    def _item(self, real: Callable[..., Any], client: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = real(
            client, "GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}
        ).get("Item")
        return item

    def _index_writes(
        self, real: Callable[..., Any], client: Any, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> int:
        if table not in self.indexes:
            described = real(client, "DescribeTable", {"TableName": table})["Table"]
            self.indexes[table] = [
                [k["AttributeName"] for k in index["KeySchema"]]
                for index in described.get("GlobalSecondaryIndexes", [])
            ]
        writes = 0
        for keys in self.indexes[table]:
            was = (
                tuple(json.dumps((old or {}).get(k), sort_keys=True) for k in keys)
                if old and all(k in old for k in keys)
                else None
            )
            now = (
                tuple(json.dumps((new or {}).get(k), sort_keys=True) for k in keys)
                if new and all(k in new for k in keys)
                else None
            )
            if was != now:
                writes += (was is not None) + (now is not None)  # a projected key-only item: < 1 KB
        return writes


_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def _write_targets(operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(table, key, kind) of every item a write touches."""
    if operation == "TransactWriteItems":
        out = []
        for entry in params["TransactItems"]:
            (kind, body), *_ = entry.items()
            out.append((body["TableName"], _key_of(body), kind))
        return out
    if operation == "BatchWriteItem":
        return [
            (table, _key_of(request.get("PutRequest") or request["DeleteRequest"]), "Put")
            for table, requests in params["RequestItems"].items()
            for request in requests
        ]
    return [(params["TableName"], _key_of(params), operation)]


def _key_of(body: dict[str, Any]) -> dict[str, Any]:
    if "Key" in body:
        return dict(body["Key"])
    item = body["Item"]
    return {k: item[k] for k in ("pk", "sk") if k in item}


class CountingStream(io.TextIOBase):
    """Counts the bytes the functions log (and drops them)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


# --- the run ---------------------------------------------------------------------------------------


def stream_environment() -> dict[str, str]:
    """The streaming function's environment variables in template.yaml (the plain strings)."""
    from cfnlint.decode import decode

    template, _ = decode(str(ROOT / "template.yaml"))
    assert template is not None
    variables = template["Resources"]["StreamFunction"]["Properties"]["Environment"]["Variables"]
    return {k: v for k, v in variables.items() if isinstance(v, str)}


def template_memory() -> dict[str, int]:
    """Each function's MemorySize in template.yaml (its own, else the Globals')."""
    from cfnlint.decode import decode

    template, errors = decode(str(ROOT / "template.yaml"))
    assert not errors, errors
    assert template is not None
    default = int(template["Globals"]["Function"].get("MemorySize", 128))
    return {
        name: int(resource["Properties"].get("MemorySize", default))
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def run_configuration(workflow_type: str, tasks: int) -> Ledger:
    import httpx
    import pytest

    from tests.functional.aws import support
    from tests.functional.aws.stream_support import identity_headers, stream_app, uvicorn_server

    ledger = Ledger()
    memory = template_memory()
    recorder = Recorder(ledger)
    logs = CountingStream()

    def invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
        started = time.perf_counter()
        try:
            return support.fake_invoke_lambda(function, event)
        finally:
            elapsed = time.perf_counter() - started
            record_lambda(function.function_name, elapsed)

    def record_lambda(name: str, seconds: float) -> None:
        billed = math.ceil(seconds * 1000) / 1000  # 1 ms steps
        with recorder.lock:
            ledger.lambda_invocations[name] += 1
            ledger.lambda_seconds[name] += billed
            ledger.lambda_gb_seconds += billed * memory[name] / 1024
            ledger.log_bytes += PLATFORM_LOG_BYTES

    monkeypatch = pytest.MonkeyPatch()
    for name, value in {
        "STORE": "dynamodb",
        "TABLE_NAME": support.TABLE_NAME,
        "AGENT_LATENCY_SCALE": "1",
        "FAULTS": "",
        "POWERTOOLS_SERVICE_NAME": "agentic",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": support.REGION,
        "POWERTOOLS_METRICS_NAMESPACE": "Agentic",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("TRACING_ENABLED", "PIPELINE_DEFINITION"):
        monkeypatch.delenv(name, raising=False)
    from agentic.observability import logger

    handler = logger.registered_handler
    real_stdout = sys.stdout
    try:
        with support.moto_pipeline(monkeypatch, workflow_type, invoke_lambda) as pipeline, recorder.active():
            handler.setStream(logs)  # type: ignore[attr-defined]
            sys.stdout = logs  # EMF metrics are printed
            with uvicorn_server(stream_app()) as url, httpx.Client(base_url=url, timeout=60) as http:
                for n in range(tasks):
                    body = json.dumps({"description": f"Explain circuit breakers ({n})", "execute": False})
                    event = support.http_event("create_task_post.json", body=body)
                    del event["headers"]["idempotency-key"]
                    started = time.perf_counter()
                    response = support.invoke("CreateTaskFunction", event)
                    record_lambda("CreateTaskFunction", time.perf_counter() - started)
                    ledger.http_api_requests += 1
                    task_id = json.loads(response["body"])["task_id"]
                    started = time.perf_counter()
                    with http.stream("POST", f"/tasks/{task_id}/execute", headers=identity_headers()) as stream:
                        lines = [json.loads(line) for line in stream.iter_lines() if line.strip()]
                    record_lambda("StreamFunction", time.perf_counter() - started)
                    assert lines[-1]["event_type"] == "task_completed", lines[-1]
                    with recorder.paused():
                        execution = pipeline.wait_arn(_current_execution(pipeline, task_id))
                        history = pipeline.sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
                    assert execution["status"] == "SUCCEEDED", execution
                    # EventBridge Scheduler later fires what the task scheduled (an Express run's watchdog)
                    for target in due_schedules(recorder):
                        ledger.scheduler_invocations += 1
                        started = time.perf_counter()
                        support.invoke("FinalizeFunction", target)
                        record_lambda("FinalizeFunction", time.perf_counter() - started)
                    ledger.transitions += transitions(history)
                    ledger.express_requests += 1
                    seconds = (execution["stopDate"] - execution["startDate"]).total_seconds()
                    ledger.express_gb_seconds += math.ceil(seconds * 10) / 10 * 64 / 1024
            ledger.log_bytes += logs.bytes
    finally:
        sys.stdout = real_stdout
        handler.setStream(real_stdout)  # type: ignore[attr-defined]
        monkeypatch.undo()
        support.reset_system()
    return ledger


def due_schedules(recorder: Recorder) -> list[dict[str, Any]]:
    """The inputs of the schedules in moto's Scheduler (deleted: each fires once)."""
    import boto3

    with recorder.paused():
        scheduler = boto3.client("scheduler", region_name="us-east-1")
        inputs = []
        for schedule in scheduler.list_schedules()["Schedules"]:
            found = scheduler.get_schedule(Name=schedule["Name"], GroupName=schedule["GroupName"])
            inputs.append(json.loads(found["Target"]["Input"]))
            scheduler.delete_schedule(Name=schedule["Name"], GroupName=schedule["GroupName"])
    return inputs


def _current_execution(pipeline: Any, task_id: str) -> str:
    executions = pipeline.sfn.list_executions(stateMachineArn=pipeline.state_machine_arn)["executions"]
    [arn] = [e["executionArn"] for e in executions if e["name"].startswith(task_id)][-1:]
    return str(arn)


def transitions(history: list[dict[str, Any]]) -> int:
    """Billed state transitions: every state entered, and every retry of a Task state."""
    entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
    task_states = sum(1 for e in history if e["type"] == "TaskStateEntered")
    attempts = sum(1 for e in history if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled"))
    return entered + max(0, attempts - task_states)


def watched_hour(reattaches: int = 5) -> None:
    """What a stream costs while its task waits for a person, per watched hour.

    Measured: a task runs to its approval gate through the stream, which ends with ``stream_paused``;
    the client comes back ``reattaches`` times (each a Lambda request, its reads and its log lines).
    Scaled to the re-attaches of an hour at the template's STREAM_APPROVAL_PAUSE_SECONDS. Compared
    with a stream held open for the hour, computed from the polling waiter's schedule.
    """
    import httpx
    import pytest

    from agentic.service.stream import IDLE_SECONDS, IDLE_STATUS_CHECK_SECONDS
    from tests.functional.aws import support
    from tests.functional.aws.stream_support import identity_headers, stream_app, uvicorn_server

    environment = stream_environment()
    pause = float(environment.get("STREAM_APPROVAL_PAUSE_SECONDS", "0"))
    memory_gb = template_memory()["StreamFunction"] / 1024
    ledger = Ledger()
    recorder = Recorder(ledger)
    monkeypatch = pytest.MonkeyPatch()
    for name, value in {
        "STORE": "dynamodb",
        "TABLE_NAME": support.TABLE_NAME,
        "AGENT_LATENCY_SCALE": "0",
        "AWS_DEFAULT_REGION": support.REGION,
        "STREAM_APPROVAL_PAUSE_SECONDS": str(pause or 15),
    }.items():
        monkeypatch.setenv(name, value)
    from agentic.observability import logger

    handler = logger.registered_handler
    logs = CountingStream()
    seconds = 0.0
    real_stdout = sys.stdout
    try:
        with support.moto_pipeline(monkeypatch, "STANDARD") as pipeline:
            handler.setStream(logs)  # type: ignore[attr-defined]
            sys.stdout = logs  # EMF metrics are printed
            body = json.dumps({"description": "Explain approvals", "execute": False, "approval": True})
            event = support.http_event("create_task_post.json", body=body)
            del event["headers"]["idempotency-key"]
            task_id = json.loads(support.invoke("CreateTaskFunction", event)["body"])["task_id"]
            with uvicorn_server(stream_app()) as url, httpx.Client(base_url=url, timeout=60) as http:
                with http.stream("POST", f"/tasks/{task_id}/execute", headers=identity_headers()) as stream:
                    lines = [json.loads(line) for line in stream.iter_lines() if line.strip()]
                assert lines[-1]["event_type"] == "stream_paused", lines[-1]
                pipeline.wait(task_id)
                cursor = lines[-1]["data"]["cursor"]
                logs.bytes = 0
                with recorder.active():
                    for _ in range(reattaches):
                        started = time.perf_counter()
                        again = http.get(f"/tasks/{task_id}/events?after={cursor}", headers=identity_headers())
                        seconds += math.ceil((time.perf_counter() - started) * 1000) / 1000
                        assert json.loads(again.text)["event_type"] == "stream_paused"
    finally:
        sys.stdout = real_stdout
        handler.setStream(real_stdout)  # type: ignore[attr-defined]
        monkeypatch.undo()
        support.reset_system()
    per = 3600 / (pause or 15) / reattaches
    paused_cost = per * (
        reattaches * PRICES["lambda_request"]
        + seconds * memory_gb * PRICES["lambda_gb_second_arm64"]
        + ledger.rru * PRICES["dynamodb_rru"]
        + (logs.bytes + reattaches * PLATFORM_LOG_BYTES) / 1e9 * PRICES["logs_ingested_gb"]
    )
    reads = ", ".join(f"{op} {n / reattaches:g}" for (_, op), n in sorted(ledger.requests.items()))
    print(f"\n== A stream waiting on a person, per watched hour (StreamFunction {memory_gb * 1024:.0f} MB) ==")
    print(
        f"paused (stream_paused, back every {pause or 15:g} s): {3600 / (pause or 15):.0f} re-attaches, each "
        f"{seconds / reattaches * 1000:.0f} ms and {reads}: ${paused_cost:.5f} per watched hour"
    )
    idle_queries = IDLE_SECONDS / 0.2 + (3600 - IDLE_SECONDS) / 2
    idle_gets = IDLE_SECONDS + (3600 - IDLE_SECONDS) / IDLE_STATUS_CHECK_SECONDS
    held = (
        3600 * memory_gb * PRICES["lambda_gb_second_arm64"]
        + (idle_queries + idle_gets) * 2 * PRICES["dynamodb_rru"]
        + (3600 / 280) * PRICES["lambda_request"]
    )
    print(
        f"held open instead (one Query per 2 s after 10 s idle, a status read per 10 s, re-attached every 280 s): "
        f"${held:.5f} per watched hour"
    )


# --- the bill --------------------------------------------------------------------------------------


def bill(ledger: Ledger, tasks: int, workflow_type: str) -> list[tuple[str, str, float]]:
    """(component, units per task, dollars per 1M tasks)."""
    per = 1e6 / tasks
    rows: list[tuple[str, str, float]] = []
    if workflow_type == "STANDARD":
        rows.append(
            (
                "Step Functions (Standard)",
                f"{ledger.transitions / tasks:.1f} state transitions",
                ledger.transitions * PRICES["sfn_standard_transition"] * per,
            )
        )
    else:
        rows.append(
            (
                "Step Functions (Express)",
                f"{ledger.express_requests / tasks:.1f} requests, {ledger.express_gb_seconds / tasks:.4f} GB-s",
                (
                    ledger.express_requests * PRICES["sfn_express_request"]
                    + ledger.express_gb_seconds * PRICES["sfn_express_gb_second"]
                )
                * per,
            )
        )
    rows.append(("DynamoDB writes", f"{ledger.wru / tasks:.1f} WRU", ledger.wru * PRICES["dynamodb_wru"] * per))
    rows.append(("DynamoDB reads", f"{ledger.rru / tasks:.1f} RRU", ledger.rru * PRICES["dynamodb_rru"] * per))
    invocations = sum(ledger.lambda_invocations.values())
    rows.append(
        (
            "Lambda requests",
            f"{invocations / tasks:.1f} invocations",
            invocations * PRICES["lambda_request"] * per,
        )
    )
    rows.append(
        (
            "Lambda duration (arm64)",
            f"{ledger.lambda_gb_seconds / tasks:.3f} GB-s",
            ledger.lambda_gb_seconds * PRICES["lambda_gb_second_arm64"] * per,
        )
    )
    rows.append(
        (
            "API Gateway (HTTP API)",
            f"{ledger.http_api_requests / tasks:.1f} requests",
            ledger.http_api_requests * PRICES["http_api_request"] * per,
        )
    )
    rows.append(
        (
            "CloudWatch Logs ingestion",
            f"{ledger.log_bytes / tasks / 1024:.1f} KB",
            ledger.log_bytes / 1e9 * PRICES["logs_ingested_gb"] * per,
        )
    )
    rows.append(
        (
            "EventBridge Scheduler",
            f"{ledger.scheduler_invocations / tasks:.1f} invocations",
            ledger.scheduler_invocations * PRICES["scheduler_invocation"] * per,
        )
    )
    rows.append(("X-Ray traces", f"{XRAY_SAMPLED:.2f} traces (sampled)", XRAY_SAMPLED * PRICES["xray_trace"] * 1e6))
    return rows


def report(workflow_type: str, ledger: Ledger, tasks: int) -> float:
    print(f"\n== {workflow_type.title()} workflow: {tasks} tasks, each created, executed and streamed to its end ==")
    calls = defaultdict(list)
    for (service, operation), count in sorted(ledger.requests.items()):
        # Step Functions invoking the agents: billed as the Lambda requests below, not twice.
        label = "(by Step Functions) " if (service, operation) == ("lambda", "Invoke") else ""
        calls[service].append(f"{label}{operation} {count / tasks:g}")
    print("AWS requests per task:")
    for service, operations in calls.items():
        print(f"  {service:<14} {', '.join(operations)}")
    lambdas = ", ".join(
        f"{name.removesuffix('Function')} {count / tasks:g} ({ledger.lambda_seconds[name] / count * 1000:.0f} ms)"
        for name, count in sorted(ledger.lambda_invocations.items())
    )
    print(f"  {'lambda (ms)':<14} {lambdas}")
    print(f"  largest item written: {ledger.largest_item / 1024:.1f} KB")
    if os.environ.get("COST_DETAIL"):
        print("  DynamoDB writes per task (WRU, count, shape: kind:sk prefix(KB)):")
        for label, units in ledger.writes.most_common():
            print(f"    {units / tasks:6.1f} WRU {ledger.write_counts[label] / tasks:5.1f}x {label}")
        print("  DynamoDB reads per task (RRU, count, shape):")
        for label, units in ledger.reads.most_common():
            print(f"    {units / tasks:6.1f} RRU {ledger.read_counts[label] / tasks:5.1f}x {label}")
    print(f"{'component':<28} {'per task':<36} {'$ per 1M tasks':>14}")
    total = 0.0
    for component, units, dollars in bill(ledger, tasks, workflow_type):
        total += dollars
        print(f"{component:<28} {units:<36} {dollars:>14.2f}")
    print(f"{workflow_type.lower()}: total ${total:.2f} per 1M tasks")
    return total


def main() -> None:
    sys.path.insert(0, str(ROOT))
    print(f"AWS cost per task, measured under moto (us-east-1 list prices of {PRICES_DATE}, arm64)")
    results = {}
    for workflow_type in ("STANDARD", "EXPRESS"):
        ledger = run_configuration(workflow_type, TASKS)
        results[workflow_type] = report(workflow_type, ledger, TASKS)
    watched_hour()
    print()
    for workflow_type, total in results.items():
        print(f"{workflow_type.title():<9} total ${total:.2f} per 1M tasks")


if __name__ == "__main__":
    main()
