"""Create, list and read tasks: the buffered routes (on AWS through Mangum, or ``agentic.aws.lean_http`` alike)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from agentic.api.answers import CURSOR_MAX_LENGTH, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, create_answer, task_page
from agentic.api.checks import Checks
from agentic.api.deps import Caller, TaskId, caller_of
from agentic.api.errors import error_responses
from agentic.api.hand_parsed import HandParsedRoute, checked, read_body, read_by
from agentic.api.limits import require_json
from agentic.models import TaskCreate, TaskList, TaskPublic, TaskStatus

# Two routers so a deployment can give the read routes a read-only function.
write_router = APIRouter(prefix="/tasks", tags=["tasks"], route_class=HandParsedRoute)
read_router = APIRouter(prefix="/tasks", tags=["tasks"])


async def _read_create(request: Request) -> dict[str, Any]:
    """``create_task``'s arguments, read as FastAPI would read its signature and dependencies."""
    raw = await read_body(request)
    await require_json(request)
    caller = caller_of(request)
    checks = Checks()
    body = checks.body(TaskCreate, raw, required=True)
    checked(checks)
    return {"body": body, "caller": caller, "idempotency_key": request.headers.get("idempotency-key")}


@write_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskPublic,
    dependencies=[Depends(require_json)],
    responses={
        200: {"description": "An Idempotency-Key replay: the task created the first time"},
        **error_responses(
            409,
            413,
            415,
            422,
            429,
            503,
            s409="`Idempotency-Key` reused with another description (`idempotency_conflict`)",
            s429="`execute: true` but too many executions: the task was created and stays pending; the body's "
            "`task_id` and the `Location` header name it",
        ),
    },
)
@read_by(_read_create)
async def create_task(
    body: TaskCreate,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Create a pending task. With ``execute: true`` it also starts (stream it from ``/events``)."""
    service, owner = caller
    answer = await create_answer(service, owner, body, idempotency_key)
    if not isinstance(answer.body, TaskPublic):  # execute hit backpressure: the 429
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
    # The JSON FastAPI would make of the response model, without validating again the model this
    # service just built (a fifth of the route's own CPU).
    return Response(
        answer.body.model_dump_json(by_alias=True),
        status_code=answer.status,
        headers=answer.headers,
        media_type="application/json",
    )


@read_router.get("", response_model=TaskList, responses=error_responses(422, 503))
async def list_tasks(
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = LIST_LIMIT_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_LENGTH)] = None,
    task_status: Annotated[TaskStatus | None, Query(alias="status")] = None,
) -> TaskList:
    """The caller's tasks, newest first; pass ``next_cursor`` back as ``cursor`` for the next page.

    ``limit`` is 20 by default, at most 100. Each final output is cut to its first 2000 characters
    (``final_output_truncated`` says so); ``GET /tasks/{task_id}/status`` returns it whole.
    """
    service, owner = caller
    return await task_page(service, owner, limit, cursor, task_status)


@read_router.get("/{task_id}/status", response_model=TaskPublic, responses=error_responses(404, 422, 503))
async def task_status(task_id: TaskId, caller: Caller) -> TaskPublic:
    """The task: its status, steps (status, attempts, error), final output and error message."""
    service, owner = caller
    return TaskPublic.of(await service.get(owner, task_id))
