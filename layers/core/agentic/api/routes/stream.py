"""Execute a task and stream its events as NDJSON, one line per event, written as it happens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from agentic.api.checks import Checks
from agentic.api.deps import Caller, TaskId, caller_of
from agentic.api.errors import error_responses
from agentic.api.hand_parsed import HandParsedRoute, checked, read_by
from agentic.api.ndjson import NdjsonResponse
from agentic.errors import InvalidInput
from agentic.models import MAX_CURSOR, StreamLine

router = APIRouter(prefix="/tasks", tags=["stream"], route_class=HandParsedRoute)

NDJSON = "application/x-ndjson"
_STREAM_OK: dict[int | str, dict[str, object]] = {
    200: {
        "model": StreamLine,
        "content": {NDJSON: {}},
        "description": "One JSON object per line (schema `StreamLine`, the shape of each line), written as it "
        "happens, until the task ends: `task_completed`, `task_failed` or `task_cancelled` (a retried task's "
        "log goes on after `task_retried`). Events carry a `cursor`; control lines (`keepalive`, "
        "`task_pending`, `stream_timeout`, `store_unavailable`, ...) have none and are not stored.",
    },
}


def describe_lines(spec: dict[str, Any]) -> dict[str, Any]:
    """A stream's 200 is NDJSON whose lines each are a ``StreamLine``: ``itemSchema``, as OpenAPI 3.2 (and
    FastAPI's own JSON Lines responses) describe a sequence. FastAPI files the model under
    ``application/json``, which a stream never answers; its errors stay JSON."""
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            content = operation.get("responses", {}).get("200", {}).get("content", {})
            if NDJSON in content and "application/json" in content:
                content[NDJSON] = {"itemSchema": content.pop("application/json")["schema"]}
    return spec


# Proxies (nginx, some API gateways) buffer unless told not to.
_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


After = Annotated[
    int | None, Query(ge=0, le=MAX_CURSOR, description="Resume after this cursor (wins over Last-Event-ID)")
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", description="Resume after this cursor")]


def resume_cursor(after: int | None, last_event_id: str | None) -> int:
    """Where a stream resumes: ``?after=<cursor>``, else ``Last-Event-ID``, else the start (?after wins)."""
    if after is not None:
        return after
    if last_event_id:
        value = last_event_id.strip()
        if not (value.isascii() and value.isdigit()) or int(value) > MAX_CURSOR:
            raise InvalidInput(f"Last-Event-ID must be the cursor of an event (an integer 0-{MAX_CURSOR})")
        return int(value)
    return 0


async def _read_stream(request: Request) -> dict[str, Any]:
    """A stream route's arguments, read as FastAPI would read its signature: the caller, then the task
    id and ``?after`` (Last-Event-ID is checked by ``resume_cursor``)."""
    caller = caller_of(request)
    checks = Checks()
    task_id = checks.param("path", "task_id", request.path_params["task_id"])
    after = checks.param("query", "after", request.query_params.get("after"))
    checked(checks)
    return {"task_id": task_id, "caller": caller, "after": after, "last_event_id": request.headers.get("last-event-id")}


@router.post(
    "/{task_id}/execute",
    response_class=StreamingResponse,
    responses={**_STREAM_OK, **error_responses(404, 422, 429, 503)},
)
@read_by(_read_stream)
async def execute_task(
    task_id: TaskId,
    caller: Caller,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Start the task (if pending) and stream its events. Running or finished tasks are attached to."""
    service, owner = caller
    lines = await service.execute_and_stream(owner, task_id, resume_cursor(after, last_event_id))
    return NdjsonResponse(lines, media_type=NDJSON, headers=_NO_BUFFERING)


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={**_STREAM_OK, **error_responses(404, 422, 503)},
)
@read_by(_read_stream)
async def task_events(
    task_id: TaskId,
    caller: Caller,
    after: After = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Re-attach to a task's stream without starting it."""
    service, owner = caller
    lines = await service.stream(owner, task_id, resume_cursor(after, last_event_id))
    return NdjsonResponse(lines, media_type=NDJSON, headers=_NO_BUFFERING)
