"""FastAPI dependencies: the service and the caller, as ``Annotated`` aliases.

They are ``async`` on purpose: FastAPI runs sync dependencies in a thread pool, a thread hop per
request for what is a dictionary lookup.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Path, Request

from agentic.api.answers import TASK_ID_MAX_LENGTH
from agentic.service.tasks import TaskService


class TaskCaller(NamedTuple):
    """The service and who calls it: what every task route needs (``service, owner = caller``)."""

    service: TaskService
    owner: str


def caller_of(request: Request) -> TaskCaller:
    """The service and who calls it (401 for a caller the identity refuses)."""
    state = request.app.state
    return TaskCaller(state.service, state.identity(request))


async def _caller(request: Request) -> TaskCaller:
    return caller_of(request)


async def _owner(request: Request) -> str:
    owner: str = request.app.state.identity(request)
    return owner


# One dependency for both: FastAPI resolves each dependency of a request anew (its parameters, its
# cache key), ~30 µs apiece, and every task route needs both.
Caller = Annotated[TaskCaller, Depends(_caller)]
Owner = Annotated[str, Depends(_owner)]
# Task ids are UUIDs; anything much longer is refused before it reaches a store (DynamoDB rejects
# keys over 2 KB with an error of its own).
TaskId = Annotated[str, Path(min_length=1, max_length=TASK_ID_MAX_LENGTH, description="The task id")]
