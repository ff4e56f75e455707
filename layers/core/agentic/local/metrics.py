"""Prometheus metrics of the local server, served at ``GET /metrics``.

The core records metrics with ``observability.record_metric`` under the names the Lambdas publish
as EMF (``TasksCreated``, ``StepLatency``, ...); ``PrometheusSink`` turns each into its Prometheus
series. Two figures only the local wiring knows are measured here: a task's run time (wrapped
around the runner) and the executor's load (read when scraped). Only the local wiring imports this
module, so ``prometheus_client`` never loads in a Lambda.

| Prometheus series | Type | From |
|---|---|---|
| ``agentic_tasks_created_total`` | counter | ``TasksCreated`` |
| ``agentic_tasks_finished_total{outcome}`` | counter | ``TasksCompleted``, ``TasksFailed``, ``TasksCancelled`` |
| ``agentic_task_duration_seconds{outcome}`` | histogram | the runner: start of a run to its end |
| ``agentic_step_duration_seconds{agent_type}`` | histogram | ``StepLatency`` (successful attempts) |
| ``agentic_steps_total{agent_type,outcome}`` | counter | ``StepLatency`` (succeeded), ``StepRetries``      |
|                                             |         | (retried), ``StepFailures`` (failed)                |
| ``agentic_model_tokens_total{model_id,direction}`` | counter | ``ModelInputTokens``, ``ModelOutputTokens`` |
| ``agentic_queue_size`` | gauge | tasks waiting for an execution slot |
| ``agentic_running_executions`` | gauge | tasks running |
| ``agentic_http_requests_total{method,route,status}`` | counter | ``HttpMetrics``: each request answered |
| ``agentic_http_request_duration_seconds{method,route}`` | histogram | ``HttpMetrics``: until the response's |
|                                                       |           | headers (a stream's length is no latency) |

``route`` is the route's template (``/tasks/{task_id}/status``), never the raw path, so task ids do
not make a series each; a request no route matched is ``route="unmatched"``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentic.models import Lease, TaskStatus
from agentic.observability import logger
from agentic.ports import TaskStore

PREFIX = "agentic"
#: Seconds. Steps take ~0.1-0.2 s at the seed's latencies, a task ~0.4 s; retries add up to seconds.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Run = Callable[..., Awaitable[TaskStatus | None]]  # (task_id, lease, first=None): LocalRunner.run

# No `*_created` timestamp series next to each counter and histogram: noise for a scraper.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class PrometheusSink:
    """A ``MetricSink``: the core's metrics, and the local server's own, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.tasks_created = Counter(
            f"{PREFIX}_tasks_created",
            "Tasks created (a replayed Idempotency-Key is not counted)",
            registry=self.registry,
        )
        self.tasks_finished = Counter(
            f"{PREFIX}_tasks_finished", "Tasks that ended, by outcome", ["outcome"], registry=self.registry
        )
        self.task_duration = Histogram(
            f"{PREFIX}_task_duration_seconds",
            "Run time of a task, from the start of its run to its end, by outcome",
            ["outcome"],
            buckets=TASK_BUCKETS,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            f"{PREFIX}_step_duration_seconds",
            "Duration of a successful step attempt, by agent",
            ["agent_type"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.steps = Counter(
            f"{PREFIX}_steps",
            "Step attempts by agent and outcome: succeeded, retried (a transient failure) or failed (for good)",
            ["agent_type", "outcome"],
            registry=self.registry,
        )
        self.model_tokens = Counter(
            f"{PREFIX}_model_tokens",
            "Tokens of completed model steps, by model and direction (input: the prompt; output: the answer)",
            ["model_id", "direction"],
            registry=self.registry,
        )
        self.queue_size = Gauge(
            f"{PREFIX}_queue_size", "Tasks waiting for an execution slot (backpressure)", registry=self.registry
        )
        self.running = Gauge(f"{PREFIX}_running_executions", "Tasks running now", registry=self.registry)
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time from a request to its response's headers, by method and route template",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self._other: dict[str, Counter] = {}
        # Each metric's series by label values: prometheus_client's ``labels()`` validates and locks
        # on every call, and a task records a dozen data points.
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}

    def series(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per series."""
        key = (id(metric), values)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = metric.labels(*values)
        return found

    def watch_executor(self, waiting: Callable[[], int], running: Callable[[], int]) -> None:
        """Read the executor's load when scraped."""
        self.queue_size.set_function(lambda: float(waiting()))
        self.running.set_function(lambda: float(running()))

    def record(self, name: str, value: float, unit: str, dimensions: dict[str, str]) -> None:
        agent = dimensions.get("agent_type", "unknown")
        if name == "TasksCreated":
            self.tasks_created.inc(value)
        elif name == "StepLatency":
            seconds = value / 1000 if unit == "Milliseconds" else value
            self.series(self.step_duration, agent).observe(seconds)
            self.series(self.steps, agent, "succeeded").inc()
        elif name in ("ModelInputTokens", "ModelOutputTokens"):
            direction = "input" if name == "ModelInputTokens" else "output"
            self.model_tokens.labels(dimensions.get("model_id", "unknown"), direction).inc(value)
        elif name == "StepRetries":
            self.series(self.steps, agent, "retried").inc(value)
        elif name == "StepFailures":
            self.series(self.steps, agent, "failed").inc(value)
        elif name.startswith("Tasks") and unit == "Count":  # TasksCompleted, TasksFailed, TasksCancelled, ...
            self.series(self.tasks_finished, _snake(name.removeprefix("Tasks"))).inc(value)
        elif unit == "Count":  # any other count, e.g. TriggerInputRejected: agentic_trigger_input_rejected_total
            labels = sorted(dimensions)
            key = f"{name}:{','.join(labels)}"
            if key not in self._other:
                self._other[key] = Counter(f"{PREFIX}_{_snake(name)}", name, labels, registry=self.registry)
            counter = self._other[key]
            (counter.labels(*(dimensions[k] for k in labels)) if labels else counter).inc(value)

    def timed(self, run: Run, store: TaskStore) -> Run:
        """``run`` that also observes the task's run time, labelled with how it ended."""

        async def timed_run(task_id: str, lease: Lease, first: Any = None) -> TaskStatus | None:
            started = time.perf_counter()
            ended: TaskStatus | None = None
            try:
                ended = await run(task_id, lease, first)
                return ended
            finally:
                try:
                    if ended is None:  # the run did not say how it ended (it stopped, or another did it)
                        task = store.get(task_id)
                        ended = task.status if task is not None else None
                    if ended is not None and ended.is_terminal:  # not when the server stopped mid-run
                        self.series(self.task_duration, ended.value).observe(time.perf_counter() - started)
                except Exception:  # a metric must never break the run it measures
                    logger.exception("could not observe the task's duration", extra={"task_id": task_id})

        return timed_run

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetrics:
    """ASGI middleware: count each HTTP request and time it to its response's headers."""

    def __init__(self, app: ASGIApp, sink: PrometheusSink) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sink = self.sink
        status = 500  # an app that raised before it answered: what the server sends

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                sink.series(sink.http_duration, scope["method"], _route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            sink.series(sink.http_requests, scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    # The router writes the matched route into the request's scope.
    return str(getattr(scope.get("route"), "path", "unmatched"))


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: tasks by outcome, task and step latencies, step outcomes, queue and running."""
    sink: PrometheusSink = request.app.state.metrics
    return Response(sink.exposition(), media_type=CONTENT_TYPE_LATEST)
