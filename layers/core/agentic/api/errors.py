"""Errors -> HTTP responses in the FastAPI app. Every error body is ``{"error", "message"}`` (plus documented
fields).

The tables (which error answers which status, code and headers; how validation errors become the 422)
live in ``agentic.api.answers``, free of FastAPI, which the Lambda API functions answer through too.
Here: FastAPI's exception handlers over them, and ``error_responses``, the same errors for OpenAPI,
with the ``ErrorBody`` schema, per route.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from agentic import errors
from agentic.api.answers import (
    CODE_OF,
    HTTP_CODES,
    RETRYABLE,
    STATUS_OF,
    Answer,
    code_for,
    error_answer,
    error_body,
    http_error_answer,
    internal_error_answer,
    jsonable,
    status_for,
    unparsable_answer,
    validation_answer,
)
from agentic.observability import logger

__all__ = [
    "CODE_OF",
    "HTTP_CODES",
    "RETRYABLE",
    "STATUS_OF",
    "ErrorBody",
    "allowed_methods",
    "code_for",
    "error_body",
    "error_responses",
    "install_error_handlers",
    "jsonable",
    "status_for",
]


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable machine-readable code, e.g. `task_not_found`, `validation_error`.")
    message: str = Field(description="What went wrong, in words.")
    task_id: str | None = Field(
        default=None, description="Only on a 429 from `POST /tasks` with `execute: true`: the created (pending) task."
    )
    detail: list[dict[str, Any]] | None = Field(
        default=None,
        description="Only on a 422 `validation_error`: one entry per invalid field (`type`, `loc`, `msg`).",
    )


#: What each error status means on this API (OpenAPI descriptions; routes may say more).
ERROR_DESCRIPTIONS: dict[int, str] = {
    401: "`API_TOKEN`/`API_TOKENS` is set and the bearer token is missing or wrong (`unauthorized`)",
    404: "Unknown task, or another owner's task (`task_not_found`)",
    409: "A state change the task's state does not allow, or an `Idempotency-Key` reused with another description",
    413: "The request body is over `MAX_REQUEST_BYTES` (`input_too_large`)",
    415: "The body is not `application/json` (`unsupported_media_type`)",
    422: "Invalid input (`validation_error`): a missing, blank or wrong-typed field, a body that is not a UTF-8 JSON "
    "object (or is nested too deeply to parse), a bad query parameter or header",
    429: "Too many executions (`too_many_executions`); the task stays pending: retry after `Retry-After` seconds",
    503: "The store is unavailable or a write kept conflicting; retry after `Retry-After` seconds",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``statuses``, each with the ``ErrorBody`` schema.

    ``descriptions`` overrides a status's text, keyed ``s409="..."``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": descriptions.get(f"s{status}", ERROR_DESCRIPTIONS[status]),
        }
        if status in RETRYABLE:
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
        out[status] = entry
    return out


#: The methods probed by ``allowed_methods``.
_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method the app serves at this request's path, plus OPTIONS (answered here).

    Asks the router itself, one method at a time (a route matches FULL only for a method it serves),
    so the answer is exact for routes of every kind, however they were included.
    """
    allowed = {"OPTIONS"}
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return sorted(allowed)


def _render(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.AgenticError)
    async def _domain(_: Request, exc: errors.AgenticError) -> JSONResponse:
        return _render(error_answer(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _render(validation_answer(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status, message = exc.status_code, str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 405:
            allow = ", ".join(allowed_methods(request))
            if request.method == "OPTIONS":  # what this path accepts, for any route
                return Response(status_code=204, headers={"Allow": allow})
            headers["Allow"] = allow
            message = f"{request.method} is not allowed here; allowed: {allow}"
        if status == 400:
            # FastAPI answers a body it cannot parse (not UTF-8, or JSON nested past the parser's
            # recursion limit) with a bare 400; it is invalid JSON like any other: 422.
            return _render(unparsable_answer(exc.__cause__))
        return _render(http_error_answer(status, message, headers))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return _render(internal_error_answer())
