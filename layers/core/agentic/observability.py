"""Structured JSON logs (Powertools Logger) carrying the task id, and EMF metrics in Lambda."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

# Powertools reads POWERTOOLS_LOG_LEVEL / LOG_LEVEL and POWERTOOLS_SERVICE_NAME itself.
logger = Logger(service="agentic")

_metrics: Any = None


def enable_metrics(metrics: Any) -> None:
    """Send metrics to a Powertools ``Metrics`` (EMF) object; the Lambda handlers call this."""
    global _metrics
    _metrics = metrics


def record_metric(name: str, value: float, unit: str = "Count") -> None:
    """Add a metric if a Lambda enabled metrics; a no-op for the local server."""
    if _metrics is not None:
        _metrics.add_metric(name=name, unit=unit, value=value)
