"""The FastAPI app factory. Each wiring passes its service and identity, and picks routers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI

from agentic import __version__
from agentic.api.errors import install_error_handlers
from agentic.api.identity import IdentityResolver
from agentic.api.limits import BodySizeLimit
from agentic.api.routes import health, stream, tasks
from agentic.service.tasks import TaskService

ALL_ROUTERS: tuple[APIRouter, ...] = (tasks.write_router, tasks.read_router, stream.router, health.router)

DESCRIPTION = """
Create a task, execute it, and watch three agents (retriever -> analyzer -> writer) work on it as a
live stream of NDJSON events. Streams resume after a cursor (`?after=` or `Last-Event-ID`).
"""


def create_app(
    service: TaskService,
    identity: IdentityResolver,
    *,
    routers: Sequence[APIRouter] = ALL_ROUTERS,
    max_request_bytes: int = 64 * 1024,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
) -> FastAPI:
    app = FastAPI(title="Agentic task system", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.state.identity = identity
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    return app
