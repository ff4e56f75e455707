"""Structured JSON logs (Powertools Logger) carrying the task id, and metrics.

The core calls ``record_metric(name, value, unit, **dimensions)`` and knows nothing of where metrics
go: each wiring installs its sinks. In Lambda, ``enable_metrics`` sends them to a Powertools
``Metrics`` (EMF, CloudWatch); locally, the server installs a Prometheus sink
(``agentic.local.metrics``), so nothing on a Lambda path imports ``prometheus_client``.
"""

from __future__ import annotations

from typing import Any, Protocol

from aws_lambda_powertools import Logger

# Powertools reads POWERTOOLS_LOG_LEVEL / LOG_LEVEL and POWERTOOLS_SERVICE_NAME itself.
logger = Logger(service="agentic")


class MetricSink(Protocol):
    """Where ``record_metric`` sends a data point. Must be cheap and must not raise."""

    def record(self, name: str, value: float, unit: str, dimensions: dict[str, str]) -> None: ...


class EmfSink:
    """A Powertools ``Metrics`` (EMF in Lambda). Dimensions are dropped: EMF dimensions apply to a
    whole flush, and the metrics' meaning does not depend on them."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def record(self, name: str, value: float, unit: str, dimensions: dict[str, str]) -> None:
        self.metrics.add_metric(name=name, unit=unit, value=value)


_sinks: list[MetricSink] = []


def add_metric_sink(sink: MetricSink) -> None:
    if sink not in _sinks:
        _sinks.append(sink)


def remove_metric_sink(sink: MetricSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def enable_metrics(metrics: Any) -> None:
    """Send metrics to a Powertools ``Metrics`` (EMF) object (instead of any earlier one); Lambdas call this."""
    for sink in [s for s in _sinks if isinstance(s, EmfSink)]:
        _sinks.remove(sink)
    add_metric_sink(EmfSink(metrics))


def record_metric(name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
    """Record a data point in every installed sink (none: a no-op).

    ``dimensions`` (e.g. ``agent_type``) become Prometheus labels locally.
    """
    for sink in _sinks:
        try:
            sink.record(name, value, unit, dimensions)
        except Exception:  # a metric must never break the work it measures
            logger.exception("metric sink failed", extra={"metric": name})
