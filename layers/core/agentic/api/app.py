"""The FastAPI app factory. Each wiring passes its service and identity, and picks routers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from agentic import __version__
from agentic.api.errors import error_responses, install_error_handlers
from agentic.api.identity import IdentityResolver
from agentic.api.limits import BodySizeLimit
from agentic.api.routes import health
from agentic.service.tasks import TaskService


def all_routers() -> tuple[APIRouter, ...]:
    """Every router, for the local server. Imported here, not at the top: a Lambda function that
    serves a few of them imports only those (the stream's and the knowledge search's are not the
    buffered API functions')."""
    from agentic.api.routes import control, knowledge, stream, tasks

    # The two routes of every task first: a request is matched against the routes in this order.
    return (tasks.write_router, stream.router, control.router, tasks.read_router, health.router, knowledge.router)


DESCRIPTION = """
Create a task, execute it, and watch three agents (retriever -> analyzer -> writer) work on it as a
live stream of NDJSON events. Streams resume after a cursor (`?after=` or `Last-Event-ID`; `?after`
wins when both are given).

Every error is JSON, `{"error": "<code>", "message": "<what went wrong>"}` (schema `ErrorBody`).
"""

#: Declares ``Authorization: Bearer`` in OpenAPI (so /docs can authorize). Only declared: the identity
#: resolver reads the header and decides who the caller is, and whether a token is needed at all.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="Needed when the server sets API_TOKEN or API_TOKENS; the token is the owner's.",
)


def create_app(
    service: TaskService,
    identity: IdentityResolver,
    *,
    routers: Sequence[APIRouter] | None = None,
    max_request_bytes: int = 64 * 1024,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    bearer_auth: bool = False,
    offline_docs: bool = False,
) -> FastAPI:
    """``routers``: the routers to serve (None: all of them).

    ``bearer_auth``: the identity is a bearer token (local); on AWS it is the caller's SigV4 identity.

    ``offline_docs``: serve ``/docs`` and ``/redoc`` with packaged assets (needs the ``local`` extra).
    """
    app = FastAPI(
        title="Agentic task system",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None if offline_docs else "/docs",
        redoc_url=None if offline_docs else "/redoc",
        # The system observes itself through Powertools (AWS) and Prometheus (local); FastAPI's
        # native OpenTelemetry would look up the global providers on every request for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    if offline_docs:
        from agentic.api.docs import install_offline_docs

        install_offline_docs(app)
    app.state.service = service
    app.state.identity = identity
    if routers is None:
        routers = all_routers()
    # The task routes' operations declare the bearer token in OpenAPI, as ``Depends(bearer_scheme)``
    # on them would; as a dependency FastAPI ran the scheme on every request for nothing.
    secured: set[tuple[str, str]] = set()
    for router in routers:
        if router is health.router:
            app.include_router(router)
            continue
        # Every task route knows its caller: it may answer 401.
        app.include_router(router, responses=error_responses(401))
        if bearer_auth:
            secured |= {(r.path, m.lower()) for r in router.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    _describe_openapi(app, secured)
    return app


def _describe_openapi(app: FastAPI, secured: set[tuple[str, str]]) -> None:
    """The stream's lines, and the bearer token on the operations of ``secured`` (path, method)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from agentic.api.routes import stream  # on the first /openapi.json, not at import

            spec = stream.describe_lines(generate())
            if secured:
                for path, operations in spec.get("paths", {}).items():
                    for method, operation in operations.items():
                        if (path, method) in secured:
                            operation["security"] = [{bearer_scheme.scheme_name: []}]
                schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
                schemes[bearer_scheme.scheme_name] = bearer_scheme.model.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
