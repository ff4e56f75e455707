"""The streaming Function URL: execute a task and stream its events as NDJSON, as they happen.

Python Lambdas cannot stream a response, and the event-to-ASGI adapter of the buffered API
functions collects the whole body first, so this function is a plain ASGI app served by uvicorn
(``run.sh``) behind the AWS Lambda Web Adapter layer, which forwards each Function URL request to it
over loopback and streams the response back (``response_stream``). It serves only the stream router
(``POST /tasks/{task_id}/execute``, ``GET /tasks/{task_id}/events``) and ``GET /health`` (the
adapter's readiness check). The Function URL's IAM caller, which the adapter forwards in the
``x-amzn-request-context`` header, owns the tasks it may stream.

Importing this module builds nothing: the app is built on its first ASGI call (uvicorn's lifespan
startup, so during the cold start), and the AWS clients on first use.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from agentic.api.app import create_app
from agentic.api.routes import health, stream
from agentic.aws.identity import iam_owner
from agentic.aws.wiring import AwsSystem, get_system
from agentic.observability import logger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ROUTERS = (stream.router, health.router)
_TASK_PATH = re.compile(r"^/tasks/([^/]+)/")


def create_stream_app(system: AwsSystem) -> FastAPI:
    """The core's FastAPI app with only the stream routes and health, owned by the IAM caller."""
    return create_app(system.service, iam_owner, routers=ROUTERS, max_request_bytes=system.settings.max_request_bytes)


class StreamApp:
    """The ASGI entry uvicorn imports (``app:app``): one FastAPI app per AWS system, built lazily.

    A container builds one system (``get_system`` caches it); tests that reset the system get a
    fresh app on their next request.
    """

    def __init__(self) -> None:
        self._system: AwsSystem | None = None
        self._app: FastAPI | None = None

    def current(self) -> FastAPI:
        system = get_system()
        if self._app is None or system is not self._system:
            self._app, self._system = create_stream_app(system), system
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.current()
        if scope["type"] == "http":
            # One request at a time per Lambda container: the task id is this request's correlation id.
            match = _TASK_PATH.match(scope.get("path", ""))
            logger.set_correlation_id(match.group(1) if match else None)
        await app(scope, receive, send)


app = StreamApp()
