"""FastAPI routes whose arguments are read by hand: the task's hot path (create, execute, events).

Why: FastAPI's solver is generic. For each parameter and dependency of each request it looks up, again,
what the declaration says (aliases, whether the type is a sequence or a model, the dependency's cache
key and scopes) and makes a sub-response per dependency: ~95 µs for ``POST /tasks`` and ~85 µs for
``POST /tasks/{id}/execute``, a sixth of the server's CPU from a task's create to its first step.
Read by hand with the same bounds (``agentic.api.checks``, which the Lambda API functions' lean
front uses too): ~45 µs for the create (reading and parsing its body included, which FastAPI does
before its solver) and ~20 µs for an execute.

What stays FastAPI's: the route, its endpoint and signature (the OpenAPI document is made from them,
unchanged), the exception handlers that answer. The reader gives the endpoint the arguments FastAPI
would, checked in FastAPI's order: the body read as JSON (invalid JSON is a 422 at once), then the
route's dependencies in order (415 for a body not labelled JSON, 401 for the caller), then every
parameter at once (one 422 listing path, query, header and body errors). The same endpoints served
by FastAPI's own solver answer alike (tests/functional/test_hand_parsed_routes.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from agentic.api.checks import Checks, json_error, parse_body

Reader = Callable[[Request], Awaitable[dict[str, Any]]]
E = TypeVar("E", bound=Callable[..., Awaitable[Response]])


def read_by(reader: Reader) -> Callable[[E], E]:
    """Mark an endpoint whose arguments ``reader`` reads from the request (served by ``HandParsedRoute``)."""

    def mark(endpoint: E) -> E:
        endpoint.read_arguments = reader  # type: ignore[attr-defined]
        return endpoint

    return mark


class HandParsedRoute(APIRoute):
    """A route that calls its endpoint with the arguments its reader made (``read_by``); an endpoint
    without one is served by FastAPI's own solver. The endpoint answers with a ``Response``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        reader: Reader | None = getattr(self.endpoint, "read_arguments", None)
        if reader is None:
            return super().get_route_handler()
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(**await reader(request))
            return response

        return handle


async def read_body(request: Request) -> Any:
    """The body as FastAPI reads it: ``NO_BODY``, the parsed JSON, or the bytes of a body not labelled JSON."""
    try:
        return parse_body(await request.body(), request.headers.get("content-type"))
    except json.JSONDecodeError as exc:
        raise RequestValidationError([json_error(exc)]) from None
    except HTTPException:
        raise  # the body limit's 413
    except Exception as exc:  # not UTF-8, nested too deeply: FastAPI's 400, answered as invalid JSON
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def checked(checks: Checks) -> None:
    """Raise the 422 of every error collected, as FastAPI's solver does after the last parameter."""
    if checks.errors:
        raise RequestValidationError(checks.errors)
