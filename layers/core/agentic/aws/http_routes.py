"""The buffered API's routes as the Lambda API functions serve them, without a web framework.

Each route answers as the FastAPI route of the same path (``agentic.api.routes``) does, checking in
FastAPI's order: the body must be JSON (415), then the caller (401), then every parameter at once
(path, query, header, body: one 422 listing them all, in that order), then the service. The
answers themselves (statuses, bodies, headers of every outcome) come from ``agentic.api.answers``,
which the FastAPI routes use too; tests/functional/aws/test_api_front_parity.py sends the same
requests to both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from agentic.api.answers import (
    LIST_LIMIT_DEFAULT,
    Answer,
    create_answer,
    health_answer,
    http_error_answer,
    json_body_refusal,
    task_page,
)
from agentic.api.checks import NO_BODY, Checks
from agentic.models import (
    ApproveRequest,
    CancelRequest,
    RejectRequest,
    RetryRequest,
    TaskCreate,
    TaskPublic,
    TaskState,
)
from agentic.service.tasks import TaskService

from .identity import event_owner

M = TypeVar("M", bound=BaseModel)


@dataclass
class HttpRequest:
    """One API Gateway request, as Starlette would have seen it behind Mangum."""

    event: dict[str, Any]
    service: TaskService
    method: str
    path: str
    #: lower-case names; values as Starlette decodes them (latin-1 of the UTF-8 bytes)
    headers: dict[str, str]
    #: the query string's pairs, in order (the last of a repeated name wins, as in Starlette)
    query: list[tuple[str, str]]
    #: ``NO_BODY``, the parsed JSON, or the raw bytes of a body not labelled JSON
    body: Any = NO_BODY
    path_params: dict[str, str] = field(default_factory=dict)


RouteCall = Callable[[HttpRequest], Awaitable[Answer]]


@dataclass(frozen=True)
class Route:
    method: str
    #: Starlette's path template: ``{task_id}`` is one path segment
    path: str
    call: RouteCall
    #: reads (and parses) a body: the body limit and the 415 apply
    reads_body: bool = False


def _query(request: HttpRequest, name: str) -> str | None:
    value = None
    for key, item in request.query:
        if key == name:
            value = item
    return value


def _refuse_non_json(request: HttpRequest) -> Answer | None:
    refusal = json_body_refusal(request.headers)
    return http_error_answer(415, refusal) if refusal is not None else None


# --- the routes -----------------------------------------------------------------------------------


async def create_task(request: HttpRequest) -> Answer:
    if refused := _refuse_non_json(request):
        return refused
    owner = event_owner(request.event)
    checks = Checks()
    idempotency_key = request.headers.get("idempotency-key")
    body = checks.body(TaskCreate, request.body, required=True)
    if refused := checks.refused():
        return refused
    assert body is not None
    return await create_answer(request.service, owner, body, idempotency_key)


async def list_tasks(request: HttpRequest) -> Answer:
    owner = event_owner(request.event)
    checks = Checks()
    limit = checks.param("query", "limit", _query(request, "limit"), LIST_LIMIT_DEFAULT)
    cursor = checks.param("query", "cursor", _query(request, "cursor"))
    status = checks.param("query", "status", _query(request, "status"))
    if refused := checks.refused():
        return refused
    return Answer(200, await task_page(request.service, owner, limit, cursor, status), {})


async def task_status(request: HttpRequest) -> Answer:
    owner = event_owner(request.event)
    checks = Checks()
    task_id = checks.param("path", "task_id", request.path_params["task_id"])
    if refused := checks.refused():
        return refused
    return Answer(200, TaskPublic.of(await request.service.get(owner, task_id)), {})


async def health(request: HttpRequest) -> Answer:
    return await health_answer(request.service)


def _control(model: type[M], act: Callable[[TaskService, str, str, M | None], Awaitable[TaskState]]) -> RouteCall:
    """A task control route: an optional body of ``model``, the task as it is afterwards."""

    async def call(request: HttpRequest) -> Answer:
        if refused := _refuse_non_json(request):
            return refused
        owner = event_owner(request.event)
        checks = Checks()
        task_id = checks.param("path", "task_id", request.path_params["task_id"])
        body = checks.body(model, request.body, required=False)
        if refused := checks.refused():
            return refused
        return Answer(200, TaskPublic.of(await act(request.service, owner, task_id, body)), {})

    return call


async def _cancel(service: TaskService, owner: str, task_id: str, body: CancelRequest | None) -> TaskState:
    return await service.cancel(owner, task_id, body.reason if body else None)


async def _approve(service: TaskService, owner: str, task_id: str, body: ApproveRequest | None) -> TaskState:
    return await service.approve(owner, task_id, body.comment if body else None)


async def _reject(service: TaskService, owner: str, task_id: str, body: RejectRequest | None) -> TaskState:
    return await service.reject(owner, task_id, body.reason if body else None)


async def _retry(service: TaskService, owner: str, task_id: str, body: RetryRequest | None) -> TaskState:
    return await service.retry(owner, task_id, body.from_step if body else None)


#: The create function's routes (template.yaml's CreateTaskFunction events).
CREATE_ROUTES = (
    Route("POST", "/tasks", create_task, reads_body=True),
    Route("POST", "/tasks/{task_id}/cancel", _control(CancelRequest, _cancel), reads_body=True),
    Route("POST", "/tasks/{task_id}/approve", _control(ApproveRequest, _approve), reads_body=True),
    Route("POST", "/tasks/{task_id}/reject", _control(RejectRequest, _reject), reads_body=True),
    Route("POST", "/tasks/{task_id}/retry", _control(RetryRequest, _retry), reads_body=True),
)
#: The query function's routes (QueryTasksFunction's events): read only.
QUERY_ROUTES = (
    Route("GET", "/tasks", list_tasks),
    Route("GET", "/tasks/{task_id}/status", task_status),
    Route("GET", "/health", health),
)
