"""The task service on AWS: executing a task whose Step Functions execution died fails it.

A task's run belongs to its execution (named by the task id). If that execution ends without
recording the task's end (``MarkFailedFailed`` after the finalize function kept failing, an abort,
an expired history), the task would stay pending / analyzing / executing for ever: starting it
again is ``ExecutionAlreadyExists`` and a stream only waits. So ``execute`` asks Step Functions
whether the execution is still alive, and if it ended, fails the task with the execution's error (the
``error`` and ``task_failed`` events, as a caught failure writes them). The stream then ends at once.

A task awaiting approval has no execution (the run ended at the gate); an approved one runs in its
continuation (``<run>-approved``). Express executions cannot be described: one that wrote nothing to
its task for longer than an Express execution may run (5 minutes) is over, whatever it did.
"""

from __future__ import annotations

import asyncio

from agentic.adapters.sfn_executor import ExecutionEnd, StepFunctionsExecutor
from agentic.errors import InvalidTransition
from agentic.models import TaskState, TaskStatus, utcnow
from agentic.observability import logger
from agentic.service.tasks import TaskService

#: Longest execution cause kept in the task's error message.
MAX_CAUSE_CHARS = 1000
#: An Express execution runs for at most 5 minutes; past this without a write, none runs the task.
EXPRESS_SILENCE_SECONDS = 300 + 60


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
        if task.status is TaskStatus.AWAITING_APPROVAL:
            return task  # no execution runs while a person decides
        # Started before: attach, unless the execution is over while the task is not. A retried
        # task runs in its newest execution (<task>-retry-<n>), not in the one named by its id.
        end = await asyncio.to_thread(current_run_end, executor, task)
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


def current_run_end(executor: StepFunctionsExecutor, task: TaskState) -> ExecutionEnd | None:
    """How the execution that runs the task now ended, or None while it may still run."""
    if executor.express:
        silence = (utcnow() - task.updated_at).total_seconds()
        if task.status is TaskStatus.PENDING or silence < EXPRESS_SILENCE_SECONDS:
            return None
        return ExecutionEnd(
            "TIMED_OUT", "States.Timeout", f"no Express execution wrote to the task for {silence:.0f} s"
        )
    name = executor.execution_name(task)
    if task.approval_granted:
        return executor.ended_execution(executor.continuation_name(task), fallback=name)
    return executor.ended_execution(name)
