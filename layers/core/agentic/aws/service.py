"""The task service on AWS: executing a task whose Step Functions execution died fails it.

A task's run belongs to its execution (named by the task id). If that execution ends without
recording the task's end (``MarkFailedFailed`` after the finalize function kept failing, an abort,
an expired history), the task would stay pending / analyzing / executing for ever: starting it
again is ``ExecutionAlreadyExists`` and a stream only waits. So ``execute`` asks Step Functions
whether the execution is still alive, and if it ended, fails the task with the execution's error (the
``error`` and ``task_failed`` events, as a caught failure writes them). The stream then ends at once.
"""

from __future__ import annotations

import asyncio

from agentic.adapters.sfn_executor import ExecutionEnd, StepFunctionsExecutor
from agentic.errors import InvalidTransition
from agentic.models import TaskState, TaskStatus
from agentic.observability import logger
from agentic.service.tasks import TaskService

#: Longest execution cause kept in the task's error message.
MAX_CAUSE_CHARS = 1000


def dead_execution_message(end: ExecutionEnd) -> str:
    return f"{end.error}: the task's execution ended ({end.status}) without finishing it: {end.cause}"[:MAX_CAUSE_CHARS]


class AwsTaskService(TaskService):
    async def execute(self, owner: str, task_id: str) -> TaskState:
        executor = self.executor
        if not isinstance(executor, StepFunctionsExecutor) or self.ops is None:
            return await super().execute(owner, task_id)
        task = await self.get(owner, task_id)
        if task.status.is_terminal:
            return task
        if task.status is TaskStatus.PENDING and await asyncio.to_thread(executor.start_sync, task_id) is not None:
            return task  # started now
        # Started before: attach, unless the execution is over while the task is not. A retried
        # task runs in its newest execution (<task>-retry-<n>), not in the one named by its id.
        end = await asyncio.to_thread(executor.ended_execution, executor.execution_name(task))
        if end is None:
            return task
        logger.error(
            "the task's execution ended without finishing it; the task is failed",
            extra={"task_id": task_id, "execution_status": end.status, "error": end.error},
        )
        try:
            return await asyncio.to_thread(self.ops.fail, task_id, end.error, dead_execution_message(end))
        except InvalidTransition:  # finished meanwhile
            return await self.get(owner, task_id)
