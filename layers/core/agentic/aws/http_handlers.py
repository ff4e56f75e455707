"""The buffered API on Lambda: the core's FastAPI routers behind API Gateway (HTTP API) via Mangum.

Each function mounts only the routers it serves, so a read-only function gets a read-only policy.
The caller's IAM identity (the HTTP API's AWS_IAM authorizer) is the task owner (``identity``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from fastapi import APIRouter
from mangum import Mangum

from agentic.api.app import create_app

from .identity import iam_owner
from .powertools import LambdaEvent, LambdaHandler, instrumented
from .wiring import get_system

_local = threading.local()


def _use_thread_event_loop() -> None:
    """Give Mangum a live event loop on this thread.

    Mangum runs each request with ``asyncio.get_event_loop()``; an ``asyncio.run`` on the same
    thread (another handler in the same process, as in tests) leaves no current loop behind.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    asyncio.set_event_loop(loop)


def request_correlation_id(event: LambdaEvent) -> str | None:
    """The task id of ``/tasks/{task_id}/...`` routes, else the API Gateway request id."""
    params = event.get("pathParameters") or {}
    if isinstance(params, dict) and params.get("task_id"):
        return str(params["task_id"])
    context = event.get("requestContext") or {}
    request_id = context.get("requestId") if isinstance(context, dict) else None
    return str(request_id) if request_id else None


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
        _use_thread_event_loop()
        return adapter(event, context)

    return instrumented(handle, request_correlation_id)
