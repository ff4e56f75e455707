from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentic.service.io import call_store

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={503: {"description": "The store cannot be written (the reason is in the body)"}},
)
async def health(request: Request) -> JSONResponse:
    """Liveness, whether the store can be written (where the store can tell), the executor's load."""
    service = request.app.state.service
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
    executor = service.executor
    if hasattr(executor, "running"):
        body["executions"] = {
            "running": executor.running,
            "waiting": executor.waiting,
            "max_concurrent": executor.max_concurrent,
            "max_queue": executor.max_queue,
        }
    headers = {"Retry-After": "5"} if status_code == 503 else None
    return JSONResponse(body, status_code=status_code, headers=headers)
