"""What the HTTP API answers, with no web framework: the FastAPI app (``errors``, ``limits``, the routes)
and the Lambda API functions with ``ApiFront=lean`` (``agentic.aws.lean_http``, which import no FastAPI) both answer
through these, so the two cannot drift.

- ``STATUS_OF``: domain errors (``agentic.errors``) -> status. A 429 or 503 also carries ``Retry-After``
  (the error's ``retry_after_seconds`` if it has one, else 1 s), so a new retryable error is one line.
- ``HTTP_CODES``: the codes of errors raised by the HTTP layer itself (unknown path, wrong method, ...).
- ``error_answer``, ``validation_answer``, ``unparsable_answer``, ``http_error_answer``: an error ->
  status, ``{"error", "message"}`` body and headers.
- ``json_body_refusal``: the 415 of a body that is not JSON; ``too_large_message``: the 413's words.
- ``create_answer``, ``health_answer``, ``task_page``: what the routes with more than one outcome answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from agentic import errors
from agentic.models import TaskCreate, TaskList, TaskPublic, TaskStatus
from agentic.observability import logger
from agentic.service.io import call_store
from agentic.service.tasks import TaskService

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

#: Why a body could not be parsed (beyond a JSON syntax error), in words.
UNPARSABLE: dict[type[BaseException], str] = {
    UnicodeDecodeError: "it is not UTF-8 encoded",
    RecursionError: "it is nested too deeply",
}

#: Request parameters' bounds. Task ids are UUIDs; anything much longer is refused before it reaches a
#: store (DynamoDB rejects keys over 2 KB with an error of its own).
TASK_ID_MAX_LENGTH = 64
LIST_LIMIT_DEFAULT = 20
LIST_LIMIT_MAX = 100
CURSOR_MAX_LENGTH = 1024

#: Statuses that tell the client to come back later; their responses carry ``Retry-After``.
RETRYABLE = frozenset({429, 503})


class Answer(NamedTuple):
    """A response before any framework renders it: a model as its JSON, a dict with json.dumps, None as
    no body."""

    status: int
    body: TaskPublic | TaskList | dict[str, Any] | None
    headers: dict[str, str]


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


def error_answer(exc: errors.AgenticError) -> Answer:
    """A domain error's answer; an unavailable store is logged as a warning, an unmapped error with its
    traceback (call it where the exception is being handled)."""
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
    return Answer(status, error_body(code_for(exc), str(exc)), headers)


def describe_validation(errs: list[dict[str, Any]]) -> str:
    parts = []
    for err in errs:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            position = err.get("loc", ("body", "?"))[-1]
            parts.append(f"body: not valid JSON ({reason} at position {position})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def jsonable(errs: object) -> object:
    """Validation errors may carry exception objects in ``ctx``; keep only JSON-safe parts."""
    if isinstance(errs, list):
        return [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errs if isinstance(e, dict)]
    return errs


def validation_answer(errs: list[dict[str, Any]]) -> Answer:
    """The 422 of request validation errors (pydantic's, each ``loc`` starting with where: body, query,
    path, header), as FastAPI collects them."""
    return Answer(422, error_body("validation_error", describe_validation(errs), detail=jsonable(errs)), {})


def unparsable_answer(cause: BaseException | None) -> Answer:
    """A body that is not UTF-8 or is nested past the parser's recursion limit: invalid JSON like any other."""
    reason = UNPARSABLE.get(type(cause), "it cannot be parsed") if cause else "it cannot be parsed"
    return Answer(
        422,
        error_body(
            "validation_error",
            f"body: not valid JSON ({reason})",
            detail=[{"type": "json_invalid", "loc": ["body"], "msg": reason}],
        ),
        {},
    )


def http_error_answer(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, error_body(HTTP_CODES.get(status, "http_error"), message), dict(headers or {}))


def internal_error_answer() -> Answer:
    return Answer(500, error_body("internal_error", "internal error; see the server log"), {})


def too_large_message(max_bytes: int) -> str:
    return f"request body exceeds {max_bytes} bytes"


def json_body_refusal(headers: Mapping[str, str]) -> str | None:
    """Why a request's body is refused (415), or None: a body must be JSON (``application/json`` or
    ``application/*+json``).

    Without a Content-Type a body is refused too (it would not be parsed as JSON and the client would
    get a puzzling 422); a request without a body goes on to the usual 422 "field required".
    ``headers``: lower-case names.
    """
    content_type = headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, sub = media_type.partition("/")
    if main == "application" and (sub == "json" or sub.endswith("+json")):
        return None
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if not media_type and not has_body:
        return None
    return f"the body must be application/json (Content-Type: application/json), not {media_type or 'unlabelled'}"


async def create_answer(service: TaskService, owner: str, body: TaskCreate, idempotency_key: str | None) -> Answer:
    """``POST /tasks``: 201 (200 and ``Idempotent-Replayed`` on a replay), ``Location`` naming the task;
    with ``execute`` and no room to start it, a 429 naming the created (pending) task."""
    task, created = await service.create(
        owner, body.description, idempotency_key=idempotency_key, approval=body.approval
    )
    headers = {} if created else {"Idempotent-Replayed": "true"}
    location = f"/tasks/{task.task_id}/status"
    headers["Location"] = location
    if body.execute:
        try:
            task = await service.execute(owner, task.task_id)
        except errors.Backpressure as exc:
            # The task exists (pending); name it so the client can execute it later without
            # creating a duplicate.
            message = f"task {task.task_id} was created but not started: {exc}"
            return Answer(
                429,
                error_body(exc.code, message, task_id=task.task_id),
                {"Retry-After": str(exc.retry_after_seconds), "Location": location},
            )
    return Answer(201 if created else 200, TaskPublic.of(task), headers)


async def task_page(
    service: TaskService, owner: str, limit: int, cursor: str | None, status: TaskStatus | None
) -> TaskList:
    """``GET /tasks``: a page of the caller's tasks, each final output cut to its preview."""
    page = await service.list(owner, limit=limit, cursor=cursor, status=status)
    return TaskList(items=[TaskPublic.of(t).preview() for t in page.items], next_cursor=page.next_cursor)


async def health_answer(service: TaskService) -> Answer:
    """``GET /health``: liveness, whether the store can be written (where it can tell), the executor's load."""
    body: dict[str, Any] = {"status": "ok"}
    status_code = 200
    check = getattr(service.store, "check_writable", None)
    if check is not None:
        reason = await call_store(service.store, check)
        body["store"] = {"writable": reason is None}
        if reason is not None:
            body["status"] = "unavailable"
            body["store"]["reason"] = reason
            status_code = 503
    executor: Any = service.executor  # the local executor reports its load; Step Functions does not
    if hasattr(executor, "running"):
        body["executions"] = {
            "running": executor.running,
            "waiting": executor.waiting,
            "max_concurrent": executor.max_concurrent,
            "max_queue": executor.max_queue,
        }
    return Answer(status_code, body, {"Retry-After": "5"} if status_code == 503 else {})
