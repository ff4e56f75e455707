"""The pipeline's operations on one task: plan, run one step attempt, complete, fail.

Both wirings call exactly these: the local runner in a loop, and on AWS one Lambda per Step
Functions state. Every operation may be repeated (a retried Lambda, a resumed run): state changes
are conditional and every event has a deterministic key, so a repeat never duplicates anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentic.agents.analyzer import AnalyzerAgent
from agentic.agents.base import StepContext
from agentic.agents.faults import FaultPlan
from agentic.agents.registry import AgentRegistry
from agentic.errors import InvalidTransition, PermanentAgentError, TaskNotFound
from agentic.models import (
    EventType,
    ExecutionPlan,
    ExecutionStep,
    NewEvent,
    StepStatus,
    TaskState,
    TaskStatus,
    sources_of,
    utcnow,
)
from agentic.observability import logger, record_metric
from agentic.pipeline import STATES_TIMEOUT, PipelineDefinition
from agentic.ports import TaskStore

#: Bound on one step's output, so a task item stays far below DynamoDB's 400 KB.
MAX_OUTPUT_CHARS = 60_000

#: Given the error name and the failed attempt (0-based): seconds until the retry, or None.
RetryDelay = Callable[[str, int], float | None]


def error_name(exc: BaseException) -> str:
    """The name Step Functions gives an error: the exception's bare class name."""
    if isinstance(exc, TimeoutError):
        return STATES_TIMEOUT
    return type(exc).__name__


@dataclass(frozen=True)
class StepOutcome:
    step: ExecutionStep
    error: BaseException | None = None
    error_name: str | None = None
    retry_in: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PipelineOps:
    def __init__(
        self,
        store: TaskStore,
        registry: AgentRegistry,
        definition: PipelineDefinition,
        faults: FaultPlan | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.definition = definition
        self.faults = faults or FaultPlan()

    # --- helpers -------------------------------------------------------------------------------

    def _load(self, task_id: str) -> TaskState:
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def _emit(self, task_id: str, event_type: EventType, key: str | None, **data: Any) -> None:
        written = self.store.append_event(NewEvent(task_id=task_id, event_type=event_type, data=data, key=key))
        if written is not None:
            logger.debug("event", extra={"task_id": task_id, "event_type": event_type.value, "cursor": written.cursor})

    @staticmethod
    def _replace_step(plan: ExecutionPlan, index: int, **changes: Any) -> ExecutionPlan:
        steps = list(plan.steps)
        steps[index] = steps[index].model_copy(update=changes)
        return plan.model_copy(update={"steps": steps})

    # --- operations ----------------------------------------------------------------------------

    def plan(self, task_id: str) -> TaskState:
        """pending -> analyzing -> executing, with the execution plan made by the analyzer."""
        task = self._load(task_id)
        if task.status.is_terminal:
            return task
        if task.status is TaskStatus.PENDING:
            task = self.store.update(task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
            logger.info("task started", extra={"task_id": task_id})
        self._emit(task_id, EventType.TASK_STARTED, "task:task_started", status=TaskStatus.ANALYZING.value)
        if task.status is TaskStatus.ANALYZING:
            analyzer = self.registry.get("analyzer")
            assert isinstance(analyzer, AnalyzerAgent)
            plan = analyzer.analyze(task_id, task.user_input, self.definition, self.registry)
            task = self.store.update(
                task_id, {TaskStatus.ANALYZING}, status=TaskStatus.EXECUTING, execution_plan=plan, current_step_index=0
            )
        assert task.execution_plan is not None
        self._emit(
            task_id,
            EventType.PLAN_CREATED,
            "task:plan_created",
            steps=[{"step_id": s.step_id, "agent_type": s.agent_type, "description": s.description}
                   for s in task.execution_plan.steps],
        )
        return task

    async def run_step(
        self, task_id: str, step_id: str, attempt: int, retry_delay: RetryDelay, timeout: float | None = None
    ) -> StepOutcome:
        """Run one attempt of one step. Failures are returned, not raised, with the retry decision."""
        task = self._load(task_id)
        if task.status is not TaskStatus.EXECUTING or task.execution_plan is None:
            raise InvalidTransition(f"task {task_id} is {task.status.value}; its steps cannot run")
        plan = task.execution_plan
        index = next((i for i, s in enumerate(plan.steps) if s.step_id == step_id), None)
        if index is None:
            raise PermanentAgentError(f"task {task_id} has no step {step_id}")
        step = plan.steps[index]
        if step.status is StepStatus.COMPLETED:
            return StepOutcome(step)  # a repeat after success: nothing to do
        base = {"step_id": step_id, "agent_type": step.agent_type}
        if attempt == 0:
            self._emit(task_id, EventType.STEP_STARTED, f"{step_id}:0:step_started", **base,
                       description=step.description)
        else:
            # Usually written by the failed attempt already (with its delay); this covers an attempt
            # that died without a word (a Lambda timeout).
            self._emit(task_id, EventType.STEP_RETRYING, f"{step_id}:{attempt}:step_retrying", **base,
                       attempt=attempt + 1, error=step.error, delay_seconds=None)
        started = utcnow()
        task = self.store.update(
            task_id,
            {TaskStatus.EXECUTING},
            current_step_index=index,
            execution_plan=self._replace_step(plan, index, status=StepStatus.RUNNING, attempts=attempt + 1,
                                              started_at=step.started_at or started),
        )
        assert task.execution_plan is not None
        context = StepContext(
            task_id=task_id,
            task=task.user_input,
            attempt=attempt,
            outputs={s.agent_type: s.output for s in task.execution_plan.steps if s.output is not None},
        )
        clock = time.perf_counter()
        try:
            self.faults.check(step.agent_type, attempt)
            agent = self.registry.get(step.agent_type)
            output = await asyncio.wait_for(agent.execute(step, context), timeout)
        except Exception as exc:  # every failure is recorded; the retry policy decides what is next
            return self._record_failure(task, index, attempt, exc, retry_delay)
        record_metric("StepLatency", (time.perf_counter() - clock) * 1000, "Milliseconds")
        output = output[:MAX_OUTPUT_CHARS]
        task = self.store.update(
            task_id,
            {TaskStatus.EXECUTING},
            execution_plan=self._replace_step(task.execution_plan, index, status=StepStatus.COMPLETED,
                                              output=output, error=None, completed_at=utcnow()),
        )
        self._emit(task_id, EventType.PARTIAL_OUTPUT, f"{step_id}:partial_output", **base, output=output)
        self._emit(task_id, EventType.STEP_COMPLETED, f"{step_id}:step_completed", **base, attempts=attempt + 1)
        logger.info("step completed", extra={"task_id": task_id, "step_id": step_id, "attempts": attempt + 1})
        assert task.execution_plan is not None
        return StepOutcome(task.execution_plan.steps[index])

    def _record_failure(
        self, task: TaskState, index: int, attempt: int, exc: Exception, retry_delay: RetryDelay
    ) -> StepOutcome:
        assert task.execution_plan is not None
        name = error_name(exc)
        message = f"{name}: {exc}" if str(exc) else name
        delay = retry_delay(name, attempt)
        step = task.execution_plan.steps[index]
        status = StepStatus.RETRYING if delay is not None else StepStatus.FAILED
        task = self.store.update(
            task.task_id,
            {TaskStatus.EXECUTING},
            execution_plan=self._replace_step(task.execution_plan, index, status=status, error=message),
        )
        if delay is not None:
            record_metric("StepRetries", 1)
            self._emit(task.task_id, EventType.STEP_RETRYING, f"{step.step_id}:{attempt + 1}:step_retrying",
                       step_id=step.step_id, agent_type=step.agent_type, attempt=attempt + 2, error=message,
                       delay_seconds=round(delay, 3))
            logger.warning("step will be retried",
                           extra={"task_id": task.task_id, "step_id": step.step_id, "error": message, "delay": delay})
        else:
            logger.error("step failed", extra={"task_id": task.task_id, "step_id": step.step_id, "error": message})
        assert task.execution_plan is not None
        return StepOutcome(task.execution_plan.steps[index], error=exc, error_name=name, retry_in=delay)

    def complete(self, task_id: str) -> TaskState:
        """executing -> completed, with the last step's output as the final output."""
        task = self._load(task_id)
        if task.status is not TaskStatus.COMPLETED:
            plan = task.execution_plan
            final = plan.steps[-1].output if plan and plan.steps else None
            task = self.store.update(task_id, {TaskStatus.EXECUTING}, status=TaskStatus.COMPLETED, final_output=final)
            record_metric("TasksCompleted", 1)
            logger.info("task completed", extra={"task_id": task_id})
        self._emit(task_id, EventType.TASK_COMPLETED, "task:task_completed", status=TaskStatus.COMPLETED.value,
                   final_output=task.final_output)
        return task

    def fail(self, task_id: str, error: str, message: str) -> TaskState:
        """Any live state -> failed: the running step failed, ``error`` then ``task_failed`` events."""
        task = self._load(task_id)
        if task.status is TaskStatus.COMPLETED:
            return task  # a late failure report cannot undo a completed task
        step = None
        if task.execution_plan is not None and task.status is not TaskStatus.FAILED:
            step = task.execution_plan.steps[task.current_step_index]
        where = {"step_id": step.step_id, "agent_type": step.agent_type} if step else {}
        self._emit(task_id, EventType.ERROR, "task:error", error=error, message=message, **where)
        if task.status is not TaskStatus.FAILED:
            changes: dict[str, Any] = {"status": TaskStatus.FAILED, "error_message": message}
            if task.execution_plan is not None and step is not None and step.status is not StepStatus.COMPLETED:
                changes["execution_plan"] = self._replace_step(
                    task.execution_plan, task.current_step_index, status=StepStatus.FAILED, error=step.error or message
                )
            task = self.store.update(task_id, sources_of(TaskStatus.FAILED), **changes)
            record_metric("TasksFailed", 1)
            logger.error("task failed", extra={"task_id": task_id, "error": message})
        self._emit(task_id, EventType.TASK_FAILED, "task:task_failed", status=TaskStatus.FAILED.value,
                   error_message=task.error_message)
        return task
