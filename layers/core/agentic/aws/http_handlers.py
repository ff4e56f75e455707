"""The buffered API on Lambda: the core's FastAPI routers behind API Gateway (HTTP API) via Mangum.

Each function mounts only the routers it serves, so a read-only function gets a read-only policy.
The caller's IAM identity (the HTTP API's AWS_IAM authorizer) is the task owner (``identity``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from mangum import Mangum

from agentic.api.app import create_app

from .http_event import request_correlation_id, thread_event_loop
from .identity import iam_owner
from .powertools import LambdaEvent, LambdaHandler, instrumented
from .wiring import get_system


def http_handler(*routers: APIRouter) -> LambdaHandler:
    """A Lambda handler serving ``routers``; the app is built on the first request, not at import."""
    adapter: Mangum | None = None

    def handle(event: LambdaEvent, context: Any) -> Any:
        nonlocal adapter
        if adapter is None:
            system = get_system()
            app = create_app(
                system.service,
                iam_owner,
                routers=routers,
                max_request_bytes=system.settings.max_request_bytes,
            )
            adapter = Mangum(app, lifespan="off")
        thread_event_loop()
        return adapter(event, context)

    return instrumented(handle, request_correlation_id)
