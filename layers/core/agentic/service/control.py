"""Task control in the store: cancel, approve or reject, retry. Both wirings share these rules.

Each is one conditional write with its event, so a repeat or a race never applies anything twice:
cancelling a cancelled task, approving an approved one or rejecting a rejected one answers with the
task as it is; anything else from the wrong state is ``InvalidTransition`` (409). The executor then
does the wiring's part (interrupt the run or StopExecution, resume the run or SendTaskSuccess, ...).
"""

from __future__ import annotations

from typing import Any

from agentic.errors import InvalidInput, InvalidTransition
from agentic.models import (
    LIVE_STATUSES,
    RETRYABLE_STATUSES,
    EventType,
    NewEvent,
    StepStatus,
    TaskState,
    TaskStatus,
)
from agentic.observability import logger, record_metric
from agentic.pipeline import PipelineDefinition
from agentic.ports import TaskStore
from agentic.service.step_attempts import run_key

REJECTED = "ApprovalRejected"
#: ``start_at`` of a run that begins with planning (a retry of a task that was never planned).
START_AT_PLAN = "plan"


def _event(task: TaskState, event_type: EventType, key: str, **data: Any) -> NewEvent:
    return NewEvent(task_id=task.task_id, event_type=event_type, key=run_key(task, key), data=data)


def _where(task: TaskState) -> dict[str, Any]:
    """``step_id``/``agent_type`` of the step a task is at, for events about it."""
    if task.execution_plan is None or task.status is TaskStatus.PENDING:
        return {}
    step = task.execution_plan.steps[task.current_step_index]
    return {"step_id": step.step_id, "agent_type": step.agent_type}


def _stop_running_step(task: TaskState) -> dict[str, Any]:
    """The step in flight, as the store holds it at the cancel's write, marked failed (cancelled)."""
    plan = task.execution_plan
    if plan is None or task.status is TaskStatus.PENDING:
        return {}
    step = plan.steps[task.current_step_index]
    if step.status not in (StepStatus.RUNNING, StepStatus.RETRYING):
        return {}
    steps = list(plan.steps)
    steps[task.current_step_index] = step.model_copy(update={"status": StepStatus.FAILED, "error": "cancelled"})
    return {"execution_plan": plan.model_copy(update={"steps": steps})}


class TaskControl:
    def __init__(self, store: TaskStore, definition: PipelineDefinition, *, max_retries: int = 3) -> None:
        self.store = store
        self.definition = definition
        self.max_retries = max_retries

    def _reread(self, task: TaskState) -> TaskState:
        fresh = self.store.get(task.task_id)
        return fresh if fresh is not None else task

    # --- cancel --------------------------------------------------------------------------------

    def cancel(self, task: TaskState, reason: str | None, by: str) -> tuple[TaskState, bool]:
        """Any live state -> cancelled. Returns the task and whether this call cancelled it."""
        for _ in range(3):  # the task may move on between the read and the write: decide again
            if task.status is TaskStatus.CANCELLED:
                return task, False
            if task.status not in LIVE_STATUSES:
                raise InvalidTransition(
                    f"task {task.task_id} is {task.status.value}; only a live task can be cancelled"
                )
            changes: dict[str, Any] = {
                "status": TaskStatus.CANCELLED,
                "error_message": f"cancelled by {by}" + (f": {reason}" if reason else ""),
                "approval_token": None,
                "lease": None,  # the run's writes are fenced out from now on
            }
            event = _event(
                task,
                EventType.TASK_CANCELLED,
                "task:task_cancelled",
                status=TaskStatus.CANCELLED.value,
                reason=reason,
                by=by,
                **_where(task),
            )
            try:
                updated = self.store.update(
                    task.task_id, {task.status}, events=[event], mutate=_stop_running_step, **changes
                )
            except InvalidTransition:
                task = self._reread(task)
                continue
            logger.info("task cancelled", extra={"task_id": task.task_id, "by": by})
            record_metric("TasksCancelled", 1)  # as TasksCompleted and TasksFailed: a task that ended
            return updated, True
        raise InvalidTransition(f"task {task.task_id} kept changing; try again")

    # --- approval ------------------------------------------------------------------------------

    def approve(self, task: TaskState, comment: str | None, by: str) -> tuple[TaskState, bool]:
        """awaiting_approval -> executing. Returns the task and whether this call approved it."""
        if task.status is not TaskStatus.AWAITING_APPROVAL:
            if task.approval_granted:
                return task, False  # approved before: the same answer
            raise InvalidTransition(f"task {task.task_id} is {task.status.value}; it is not awaiting approval")
        event = _event(
            task,
            EventType.APPROVAL_GRANTED,
            "task:approval_granted",
            comment=comment,
            by=by,
            step_id=self.definition.approval.before_step if self.definition.approval else None,
        )
        try:
            updated = self.store.update(
                task.task_id,
                {TaskStatus.AWAITING_APPROVAL},
                status=TaskStatus.EXECUTING,
                approval_granted=True,
                approval_deadline=None,
                lease=None,
                events=[event],
            )
        except InvalidTransition:  # it moved on meanwhile (approved, rejected, cancelled): decide again
            return self.approve(self._reread(task), comment, by)
        logger.info("task approved", extra={"task_id": task.task_id, "by": by})
        return updated, True

    def reject(self, task: TaskState, reason: str | None, by: str) -> tuple[TaskState, bool]:
        """awaiting_approval -> failed (``approval_rejected``, ``error``, ``task_failed``)."""
        if task.status is not TaskStatus.AWAITING_APPROVAL:
            if task.status is TaskStatus.FAILED and (task.error_message or "").startswith(REJECTED):
                return task, False  # rejected before: the same answer
            raise InvalidTransition(f"task {task.task_id} is {task.status.value}; it is not awaiting approval")
        message = f"{REJECTED}: rejected by {by}" + (f": {reason}" if reason else "")
        where = {"step_id": self.definition.approval.before_step} if self.definition.approval else {}
        events = [
            _event(task, EventType.APPROVAL_REJECTED, "task:approval_rejected", reason=reason, by=by, **where),
            # The same keys PipelineOps.fail writes, so the state machine's own MarkFailed adds nothing.
            _event(task, EventType.ERROR, "task:error", error=REJECTED, message=message, **where),
            _event(
                task, EventType.TASK_FAILED, "task:task_failed", status=TaskStatus.FAILED.value, error_message=message
            ),
        ]
        updated = self.store.update(
            task.task_id,
            {TaskStatus.AWAITING_APPROVAL},
            status=TaskStatus.FAILED,
            error_message=message,
            approval_deadline=None,
            events=events,
        )
        logger.info("task rejected", extra={"task_id": task.task_id, "by": by})
        return updated, True

    # --- retry ---------------------------------------------------------------------------------

    def retry(self, task: TaskState, from_step: str | None, by: str) -> tuple[TaskState, str]:
        """failed | cancelled -> executing at the step to run again (pending if nothing was planned).

        Completed steps before it keep their outputs; the steps from it on start afresh, their
        attempt numbers continuing the old ones. Returns the task and where the run starts.
        """
        if task.status not in RETRYABLE_STATUSES:
            raise InvalidTransition(
                f"task {task.task_id} is {task.status.value}; only a failed or cancelled task can be retried"
            )
        if task.retries >= self.max_retries:
            raise InvalidTransition(f"task {task.task_id} was retried {task.retries} times, the limit")
        retried = task.model_copy(update={"retries": task.retries + 1})
        plan = task.execution_plan
        if plan is None:
            if from_step is not None:
                raise InvalidInput(f"task {task.task_id} has no plan yet; retry it without from_step")
            event = _event(
                retried, EventType.TASK_RETRIED, "task:task_retried", retry=retried.retries, from_step=None, by=by
            )
            updated = self.store.update(
                task.task_id,
                {task.status},
                status=TaskStatus.PENDING,
                retries=retried.retries,
                error_message=None,
                lease=None,
                events=[event],
            )
            return updated, START_AT_PLAN
        ids = [s.step_id for s in plan.steps]
        first_open = next((i for i, s in enumerate(plan.steps) if s.status is not StepStatus.COMPLETED), len(ids) - 1)
        if from_step is None:
            index = first_open
        elif from_step not in ids:
            raise InvalidInput(f"from_step must be one of {', '.join(ids)}")
        elif ids.index(from_step) > first_open:
            raise InvalidInput(f"{ids[first_open]} did not complete; a retry cannot start after it")
        else:
            index = ids.index(from_step)
        steps = [
            s
            if i < index
            else s.model_copy(
                update={
                    "status": StepStatus.PENDING,
                    "attempt_base": s.attempts,
                    "error": None,
                    "output": None,
                    "started_at": None,
                    "completed_at": None,
                }
            )
            for i, s in enumerate(plan.steps)
        ]
        gate = self.definition.approval
        # An approval stands only for the analysis it approved: re-running that asks again.
        keep_approval = task.approval_granted and gate is not None and gate.before_step in ids[index:][:1]
        event = _event(
            retried,
            EventType.TASK_RETRIED,
            "task:task_retried",
            retry=retried.retries,
            from_step=ids[index],
            agent_type=plan.steps[index].agent_type,
            step_id=ids[index],
            by=by,
        )
        updated = self.store.update(
            task.task_id,
            {task.status},
            status=TaskStatus.EXECUTING,
            execution_plan=plan.model_copy(update={"steps": steps}),
            current_step_index=index,
            retries=retried.retries,
            error_message=None,
            final_output=None,
            approval_granted=keep_approval,
            approval_token=None,
            approval_deadline=None,
            lease=None,
            events=[event],
        )
        logger.info("task retried", extra={"task_id": task.task_id, "from_step": ids[index], "retry": retried.retries})
        return updated, ids[index]
