"""Errors -> HTTP responses, in tables. Every error body is ``{"error", "message"}`` (plus documented fields).

- ``STATUS_OF``: domain errors (``agentic.errors``) -> status. A 429 or 503 also carries ``Retry-After``
  (the error's ``retry_after_seconds`` if it has one, else 1 s), so a new retryable error is one line.
- ``HTTP_CODES``: the codes of errors raised by the HTTP layer itself (unknown path, wrong method, ...).
- ``error_responses``: the same errors for OpenAPI, with the ``ErrorBody`` schema, per route.
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
from agentic.observability import logger

STATUS_OF: dict[type[errors.AgenticError], int] = {
    errors.Unauthorized: 401,
    errors.TaskNotFound: 404,
    errors.TaskAlreadyExists: 409,
    errors.IdempotencyConflict: 409,
    errors.InvalidTransition: 409,
    errors.InputTooLarge: 413,
    errors.InvalidInput: 422,
    errors.Backpressure: 429,
    errors.WriteConflict: 503,
    errors.StoreUnavailable: 503,
}

#: The code an error answers with, where it is not the error's own: a bad value is a
#: ``validation_error`` whether FastAPI or the service found it (one code for one kind of mistake).
CODE_OF: dict[type[errors.AgenticError], str] = {errors.InvalidInput: "validation_error"}

#: Errors of the HTTP layer (routing, body parsing, content negotiation): status -> code.
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "input_too_large",
    415: "unsupported_media_type",
}

#: Why FastAPI could not parse a body (its 400's cause), in words.
_UNPARSABLE: dict[type[BaseException], str] = {
    UnicodeDecodeError: "it is not UTF-8 encoded",
    RecursionError: "it is nested too deeply",
}

#: Statuses that tell the client to come back later; their responses carry ``Retry-After``.
RETRYABLE = frozenset({429, 503})


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


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def code_for(exc: errors.AgenticError) -> str:
    for cls in type(exc).__mro__:
        if cls in CODE_OF:
            return CODE_OF[cls]
    return exc.code


def status_for(exc: errors.AgenticError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            position = err.get("loc", ("body", "?"))[-1]
            parts.append(f"body: not valid JSON ({reason} at position {position})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.AgenticError)
    async def _domain(_: Request, exc: errors.AgenticError) -> JSONResponse:
        status = status_for(exc)
        headers = {}
        if status in RETRYABLE:
            headers["Retry-After"] = str(getattr(exc, "retry_after_seconds", 1))
        if isinstance(exc, errors.Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        if status in RETRYABLE and status >= 500:
            logger.warning("service unavailable", extra={"error": exc.code, "reason": str(exc)})
        elif status >= 500:
            logger.exception("unexpected domain error")
        return JSONResponse(error_body(code_for(exc), str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("validation_error", _describe_validation(exc), detail=jsonable(exc.errors())),
            status_code=422,
        )

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
            cause = exc.__cause__
            reason = _UNPARSABLE.get(type(cause), "it cannot be parsed") if cause else "it cannot be parsed"
            return JSONResponse(
                error_body(
                    "validation_error",
                    f"body: not valid JSON ({reason})",
                    detail=[{"type": "json_invalid", "loc": ["body"], "msg": reason}],
                ),
                status_code=422,
            )
        code = HTTP_CODES.get(status, "http_error")
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal error; see the server log"), status_code=500)


def jsonable(errs: object) -> object:
    """Validation errors may carry exception objects in ``ctx``; keep only JSON-safe parts."""
    if isinstance(errs, list):
        return [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errs if isinstance(e, dict)]
    return errs
