"""FastAPI dependencies: the service and the caller, as ``Annotated`` aliases.

They are ``async`` on purpose: FastAPI runs sync dependencies in a thread pool, a thread hop per
request for what is a dictionary lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from agentic.api.answers import TASK_ID_MAX_LENGTH
from agentic.service.tasks import TaskService


async def _service(request: Request) -> TaskService:
    service: TaskService = request.app.state.service
    return service


async def _owner(request: Request) -> str:
    owner: str = request.app.state.identity(request)
    return owner


Service = Annotated[TaskService, Depends(_service)]
Owner = Annotated[str, Depends(_owner)]
# Task ids are UUIDs; anything much longer is refused before it reaches a store (DynamoDB rejects
# keys over 2 KB with an error of its own).
TaskId = Annotated[str, Path(min_length=1, max_length=TASK_ID_MAX_LENGTH, description="The task id")]
