"""Powertools around every Lambda handler: structured logs, EMF metrics and (when on) X-Ray tracing.

- Logger: the core's logger with the Lambda context injected; the correlation id is the task id.
- Metrics: one EMF ``Metrics`` (namespace from ``POWERTOOLS_METRICS_NAMESPACE``), handed to the core
  so its ``record_metric`` calls (TasksCreated, TasksCompleted, TasksFailed, StepLatency,
  StepRetries, ModelInputTokens, ModelOutputTokens) reach CloudWatch; flushed after each invocation,
  with a ColdStart metric.
- Tracer: created on the first invocation and only when ``TRACING_ENABLED`` is set, because creating
  it (X-Ray SDK import, boto3 patching) costs ~200 ms of cold start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Metrics

from agentic.observability import enable_metrics, logger
from agentic.settings import get_settings

from . import snapstart

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

LambdaEvent = dict[str, Any]
LambdaHandler = Callable[[LambdaEvent, Any], Any]
#: Picks the correlation id (the task id where there is one) out of an event.
CorrelationId = Callable[[LambdaEvent], str | None]

metrics = Metrics()
enable_metrics(metrics)
snapstart.install()  # re-seed and rebuild clients after a SnapStart restore (nothing elsewhere)


@lru_cache(maxsize=1)
def get_tracer() -> Tracer | None:
    """The X-Ray tracer, or None when tracing is off (nothing of it is created then)."""
    if not get_settings().tracing_enabled:
        return None
    from aws_lambda_powertools import Tracer

    return Tracer()


def annotate(key: str, value: str) -> None:
    """An X-Ray annotation (searchable) when tracing is on; nothing otherwise."""
    tracer = get_tracer()
    if tracer is not None:
        tracer.put_annotation(key=key, value=value)


def task_id_of(event: LambdaEvent) -> str | None:
    """The correlation id of a Step Functions task input: its task id."""
    value = event.get("task_id") if isinstance(event, dict) else None
    return str(value) if value else None


def instrumented(fn: LambdaHandler, correlation_id: CorrelationId = task_id_of) -> LambdaHandler:
    """Wrap a handler with Logger (context, correlation id), Metrics (flush) and the lazy Tracer."""
    traced: LambdaHandler | None = None

    @functools.wraps(fn)
    def handler(event: LambdaEvent, context: Any) -> Any:
        nonlocal traced
        # Set on every invocation, so a warm container never logs the previous task's id.
        logger.set_correlation_id(correlation_id(event))
        if traced is None:
            tracer = get_tracer()
            traced = tracer.capture_lambda_handler(fn, capture_response=False) if tracer is not None else fn
        return traced(event, context)

    with_metrics = metrics.log_metrics(handler, capture_cold_start_metric=True)
    wrapped: LambdaHandler = logger.inject_lambda_context(with_metrics, clear_state=True)
    return wrapped
