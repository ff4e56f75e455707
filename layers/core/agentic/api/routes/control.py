"""Task control: cancel, approve or reject before the final step, retry from the failed step.

Each answers the task as it is afterwards; repeating a request answers the same, and a request the
task's state does not allow is a 409. Bodies are optional.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends

from agentic.api.deps import Caller, TaskId
from agentic.api.errors import error_responses
from agentic.api.limits import require_json
from agentic.models import ApproveRequest, CancelRequest, RejectRequest, RetryRequest, TaskPublic

# A body, when sent, is JSON: anything else is a 415 (as for POST /tasks), before FastAPI tries to parse it.
router = APIRouter(prefix="/tasks", tags=["control"], dependencies=[Depends(require_json)])


@router.post(
    "/{task_id}/cancel",
    response_model=TaskPublic,
    responses=error_responses(404, 409, 413, 415, 422, 503, s409="The task has finished (`invalid_transition`)"),
)
async def cancel_task(
    task_id: TaskId, caller: Caller, body: Annotated[CancelRequest | None, Body()] = None
) -> TaskPublic:
    """Cancel a pending or running task: its run stops now (`task_cancelled`) and its slot is free."""
    service, owner = caller
    return TaskPublic.of(await service.cancel(owner, task_id, body.reason if body else None))


@router.post(
    "/{task_id}/approve",
    response_model=TaskPublic,
    responses=error_responses(
        404, 409, 413, 415, 422, 503, s409="The task is not awaiting approval (`invalid_transition`)"
    ),
)
async def approve_task(
    task_id: TaskId, caller: Caller, body: Annotated[ApproveRequest | None, Body()] = None
) -> TaskPublic:
    """Approve a task awaiting approval: it goes on to its final step (`approval_granted`)."""
    service, owner = caller
    return TaskPublic.of(await service.approve(owner, task_id, body.comment if body else None))


@router.post(
    "/{task_id}/reject",
    response_model=TaskPublic,
    responses=error_responses(
        404, 409, 413, 415, 422, 503, s409="The task is not awaiting approval (`invalid_transition`)"
    ),
)
async def reject_task(
    task_id: TaskId, caller: Caller, body: Annotated[RejectRequest | None, Body()] = None
) -> TaskPublic:
    """Reject a task awaiting approval: it ends `failed` with `ApprovalRejected` (`approval_rejected`)."""
    service, owner = caller
    return TaskPublic.of(await service.reject(owner, task_id, body.reason if body else None))


@router.post(
    "/{task_id}/retry",
    response_model=TaskPublic,
    responses=error_responses(
        404,
        409,
        413,
        415,
        422,
        503,
        s409="The task is not failed or cancelled, or was retried `MAX_TASK_RETRIES` times (`invalid_transition`)",
        s422="`from_step` is not a step of the task, or comes after a step that did not complete",
    ),
)
async def retry_task(
    task_id: TaskId, caller: Caller, body: Annotated[RetryRequest | None, Body()] = None
) -> TaskPublic:
    """Run a failed or cancelled task again from the step that did not complete (`task_retried`)."""
    service, owner = caller
    return TaskPublic.of(await service.retry(owner, task_id, body.from_step if body else None))
