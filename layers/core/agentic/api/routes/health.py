from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness, plus the executor's load where it is local."""
    body: dict[str, Any] = {"status": "ok"}
    executor = request.app.state.service.executor
    if hasattr(executor, "running"):
        body["executions"] = {
            "running": executor.running,
            "waiting": executor.waiting,
            "max_concurrent": executor.max_concurrent,
            "max_queue": executor.max_queue,
        }
    return body
