"""Domain errors -> HTTP responses, in one table. Every error body is ``{"error", "message"}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def status_for(exc: errors.AgenticError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.AgenticError)
    async def _domain(_: Request, exc: errors.AgenticError) -> JSONResponse:
        status = status_for(exc)
        headers = {}
        if isinstance(exc, errors.Backpressure):
            headers["Retry-After"] = str(exc.retry_after_seconds)
        if isinstance(exc, errors.WriteConflict | errors.StoreUnavailable):
            headers["Retry-After"] = "1"
        if isinstance(exc, errors.Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, errors.StoreUnavailable):
            logger.warning("store unavailable", extra={"reason": str(exc)})
        elif status >= 500:
            logger.exception("unexpected domain error")
        return JSONResponse(error_body(exc.code, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("validation_error", _describe_validation(exc), detail=jsonable(exc.errors())),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "input_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal error; see the server log"), status_code=500)


def jsonable(errs: object) -> object:
    """Validation errors may carry exception objects in ``ctx``; keep only JSON-safe parts."""
    if isinstance(errs, list):
        return [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errs if isinstance(e, dict)]
    return errs
