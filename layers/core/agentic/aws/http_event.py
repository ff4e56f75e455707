"""What both API fronts (``http_handlers``: FastAPI through Mangum; ``lean_http``: no framework) share:
an event loop kept on the invoking thread, and the correlation id of an API Gateway event."""

from __future__ import annotations

import asyncio
import threading

from .powertools import LambdaEvent

_local = threading.local()


def thread_event_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, kept between invocations, and set as the thread's current loop.

    Mangum runs each request with ``asyncio.get_event_loop()``, and the store's thread pool lives with
    the loop; an ``asyncio.run`` on the same thread (another handler in the same process, as in tests)
    leaves no current loop behind, so the loop is kept here.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    asyncio.set_event_loop(loop)
    return loop


def request_correlation_id(event: LambdaEvent) -> str | None:
    """The task id of ``/tasks/{task_id}/...`` routes, else the API Gateway request id."""
    params = event.get("pathParameters") or {}
    if isinstance(params, dict) and params.get("task_id"):
        return str(params["task_id"])
    context = event.get("requestContext") or {}
    request_id = context.get("requestId") if isinstance(context, dict) else None
    return str(request_id) if request_id else None
