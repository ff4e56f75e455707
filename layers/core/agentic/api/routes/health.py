from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentic.api.answers import health_answer

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={503: {"description": "The store cannot be written (the reason is in the body)"}},
)
async def health(request: Request) -> JSONResponse:
    """Liveness, whether the store can be written (where the store can tell), the executor's load."""
    answer = await health_answer(request.app.state.service)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers or None)
