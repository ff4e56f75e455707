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
from agentic.errors import InvalidTransition, LeaseLost, PermanentAgentError, TaskNotFound
from agentic.models import (
    EventType,
    ExecutionPlan,
    ExecutionStep,
    Lease,
    NewEvent,
    StepStatus,
    TaskState,
    TaskStatus,
    sources_of,
    utcnow,
)
from agentic.observability import logger, record_metric
from agentic.pipeline import STATES_TIMEOUT, PipelineDefinition
from agentic.ports import Mutation, TaskStore

#: Bound on one step's output, so a task item stays far below DynamoDB's 400 KB.
MAX_OUTPUT_CHARS = 60_000

#: Given the error name and the failed attempt (0-based): seconds until the retry, or None.
RetryDelay = Callable[[str, int], float | None]


def error_name(exc: BaseException) -> str:
    """The name Step Functions gives an error: the exception's bare class name."""
    if isinstance(exc, TimeoutError):
        return STATES_TIMEOUT
    return type(exc).__name__


class _AttemptOvertaken(InvalidTransition):
    """A newer attempt owns the step; this attempt's write is refused (and logged)."""

    def __init__(self, task_id: str, step_id: str, attempt: int) -> None:
        super().__init__(f"attempt {attempt} of {step_id} of task {task_id} was overtaken by a newer attempt")
        logger.warning(
            "late write of an overtaken attempt discarded",
            extra={"task_id": task_id, "step_id": step_id, "attempt": attempt},
        )


class RunInterrupted(TimeoutError):
    """The process running a step stopped (a crash, a restart, a lost store) before the step ended.

    A ``TimeoutError``, so its error name is ``States.Timeout``: on AWS a Lambda that never answers
    surfaces the same way, and the same Retry entry of the state-machine file decides what follows.
    """


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

    @staticmethod
    def _event(task_id: str, event_type: EventType, key: str, **data: Any) -> NewEvent:
        return NewEvent(task_id=task_id, event_type=event_type, data=data, key=key)

    @staticmethod
    def _key(task: TaskState, key: str) -> str:
        """An event key unique to the task's current run: a retried task writes its events anew."""
        return key if task.retries == 0 else f"r{task.retries}:{key}"

    def _emit(self, event: NewEvent) -> None:
        """Append one event on its own (a key written before is skipped)."""
        self.store.append_event(event)

    @staticmethod
    def _fenced(lease: Lease | None, mutate: Mutation | None = None) -> Mutation | None:
        """``mutate``, applied only while the task still holds ``lease`` (checked in the write).

        Local runs hold a lease; a runner whose lease was taken over (it stalled past the expiry and
        another process resumed the task) gets ``LeaseLost`` and nothing of its write lands. Without
        a lease (AWS, where Step Functions owns the run) there is nothing to check.
        """
        if lease is None:
            return mutate

        def check(task: TaskState) -> dict[str, Any]:
            if task.lease != lease:
                raise LeaseLost(f"task {task.task_id} is run by another runner now; this run stops")
            return mutate(task) if mutate is not None else {}

        return check

    @staticmethod
    def _replace_step(plan: ExecutionPlan, index: int, **changes: Any) -> ExecutionPlan:
        steps = list(plan.steps)
        steps[index] = steps[index].model_copy(update=changes)
        return plan.model_copy(update={"steps": steps})

    # --- operations ----------------------------------------------------------------------------

    def plan(self, task_id: str, *, lease: Lease | None = None) -> TaskState:
        """pending -> analyzing -> executing, with the execution plan made by the analyzer.

        Each state change carries its event; on a repeat (a retried Lambda) the events are written
        again with the same keys, which skips those already in the log. Attempts may also overlap (a
        Plan attempt past its TimeoutSeconds still runs while the retry starts): a transition that
        another attempt made first is success, not ``InvalidTransition``.
        """
        task = self._load(task_id)
        if task.status.is_terminal:
            return task
        started = self._event(
            task_id, EventType.TASK_STARTED, self._key(task, "task:task_started"), status=TaskStatus.ANALYZING.value
        )
        if task.status is TaskStatus.PENDING:
            try:
                task = self.store.update(
                    task_id,
                    {TaskStatus.PENDING},
                    status=TaskStatus.ANALYZING,
                    events=[started],
                    mutate=self._fenced(lease),
                )
                logger.info("task started", extra={"task_id": task_id})
            except LeaseLost:
                raise
            except InvalidTransition:
                task = self._overlapping_plan(task_id)
        else:
            self._emit(started)
        if task.status is TaskStatus.ANALYZING:
            analyzer = self.registry.get("analyzer")
            assert isinstance(analyzer, AnalyzerAgent)
            plan = analyzer.analyze(task_id, task.user_input, self.definition, self.registry)
            try:
                return self.store.update(
                    task_id,
                    {TaskStatus.ANALYZING},
                    status=TaskStatus.EXECUTING,
                    execution_plan=plan,
                    current_step_index=0,
                    events=[self._plan_created(task_id, plan)],
                    mutate=self._fenced(lease),
                )
            except LeaseLost:
                raise
            except InvalidTransition:
                task = self._overlapping_plan(task_id)
                if task.status is TaskStatus.ANALYZING:  # cannot be: the write failed on another status
                    raise
        if task.execution_plan is None:  # a failed or cancelled task that was never planned
            return task
        self._emit(self._plan_created(task_id, task.execution_plan))
        return task

    def _overlapping_plan(self, task_id: str) -> TaskState:
        """The task after another attempt of the same Plan state moved it on first."""
        task = self._load(task_id)
        if task.status is TaskStatus.PENDING:
            raise InvalidTransition(f"task {task_id} is still pending after a failed transition")
        logger.info("plan attempts overlapped; the other attempt's transition stands", extra={"task_id": task_id})
        return task

    def _plan_created(self, task_id: str, plan: ExecutionPlan) -> NewEvent:
        steps = [{"step_id": s.step_id, "agent_type": s.agent_type, "description": s.description} for s in plan.steps]
        return self._event(task_id, EventType.PLAN_CREATED, "task:plan_created", steps=steps)

    def _step_done_events(self, task: TaskState, step: ExecutionStep) -> list[NewEvent]:
        base = {"step_id": step.step_id, "agent_type": step.agent_type}
        return [
            self._event(
                task.task_id,
                EventType.PARTIAL_OUTPUT,
                self._key(task, f"{step.step_id}:partial_output"),
                **base,
                output=step.output,
            ),
            self._event(
                task.task_id,
                EventType.STEP_COMPLETED,
                self._key(task, f"{step.step_id}:step_completed"),
                **base,
                attempts=step.attempts,
            ),
        ]

    async def run_step(
        self,
        task_id: str,
        step_id: str,
        attempt: int,
        retry_delay: RetryDelay,
        timeout: float | None = None,
        *,
        lease: Lease | None = None,
    ) -> StepOutcome:
        """Run one attempt of one step. Failures are returned, not raised, with the retry decision.

        ``attempt`` counts within this run of the task (0 = the step's first attempt in it; on AWS
        ``$$.State.RetryCount``); a retried task's steps continue the numbering of earlier runs.
        """
        task = self._load(task_id)
        if task.status is not TaskStatus.EXECUTING or task.execution_plan is None:
            raise InvalidTransition(f"task {task_id} is {task.status.value}; its steps cannot run")
        plan = task.execution_plan
        index = next((i for i, s in enumerate(plan.steps) if s.step_id == step_id), None)
        if index is None:
            raise PermanentAgentError(f"task {task_id} has no step {step_id}")
        step = plan.steps[index]
        if step.status is StepStatus.COMPLETED:  # a repeat after success: make sure its events exist
            for event in self._step_done_events(task, step):
                self._emit(event)
            return StepOutcome(step)
        base = {"step_id": step_id, "agent_type": step.agent_type}
        absolute = step.attempt_base + attempt
        if attempt == 0:
            first = self._event(
                task_id,
                EventType.STEP_STARTED,
                f"{step_id}:{absolute}:step_started",
                **base,
                description=step.description,
                attempt=absolute + 1,
            )
        else:
            # Usually written by the failed attempt already (with its delay); this covers an attempt
            # that died without a word (a Lambda timeout).
            first = self._event(
                task_id,
                EventType.STEP_RETRYING,
                f"{step_id}:{absolute}:step_retrying",
                **base,
                attempt=absolute + 1,
                error=step.error,
                delay_seconds=None,
            )
        try:
            task = self.store.update(
                task_id,
                {TaskStatus.EXECUTING},
                current_step_index=index,
                events=[first],
                mutate=self._fenced(
                    lease, self._step_change(index, absolute, starting=True, status=StepStatus.RUNNING)
                ),
            )
        except _AttemptOvertaken:
            return StepOutcome(step)  # a stale start: a newer attempt owns the step already
        assert task.execution_plan is not None
        context = StepContext(
            task_id=task_id,
            task=task.user_input,
            attempt=absolute,
            outputs={s.agent_type: s.output for s in task.execution_plan.steps if s.output is not None},
        )
        clock = time.perf_counter()
        try:
            # One line per agent invocation: what an operator counts to see that a step ran once.
            logger.info(
                "agent invoked",
                extra={"task_id": task_id, "step_id": step_id, "agent_type": step.agent_type, "attempt": absolute + 1},
            )
            self.faults.check(step.agent_type, attempt)
            agent = self.registry.get(step.agent_type)
            output = await asyncio.wait_for(agent.execute(step, context), timeout)
        except Exception as exc:  # every failure is recorded; the retry policy decides what is next
            return self._record_failure(task_id, step, index, attempt, exc, retry_delay, lease)
        record_metric("StepLatency", (time.perf_counter() - clock) * 1000, "Milliseconds", agent_type=step.agent_type)
        finished = step.model_copy(
            update={"status": StepStatus.COMPLETED, "output": output[:MAX_OUTPUT_CHARS], "attempts": absolute + 1}
        )
        try:
            self.store.update(
                task_id,
                {TaskStatus.EXECUTING},
                events=self._step_done_events(task, finished),
                mutate=self._fenced(
                    lease,
                    self._step_change(
                        index,
                        absolute,
                        status=StepStatus.COMPLETED,
                        output=finished.output,
                        error=None,
                        completed_at=utcnow(),
                    ),
                ),
            )
        except _AttemptOvertaken:
            return StepOutcome(step)
        logger.debug("step completed", extra={"task_id": task_id, "step_id": step_id, "attempts": absolute + 1})
        return StepOutcome(finished)

    def record_interruption(
        self, task_id: str, step_id: str, retry_delay: RetryDelay, *, lease: Lease | None = None
    ) -> StepOutcome:
        """A step found running by a resumed run: its attempt died with its runner.

        That attempt is recorded as failed with ``States.Timeout`` (a ``step_retrying`` event that
        says the run was interrupted, or the step's failure once the retry budget is spent), exactly
        as a Lambda that never answered would be on AWS.
        """
        task = self._load(task_id)
        plan = task.execution_plan
        if task.status is not TaskStatus.EXECUTING or plan is None:
            raise InvalidTransition(f"task {task_id} is {task.status.value}; its steps cannot run")
        index = next(i for i, s in enumerate(plan.steps) if s.step_id == step_id)
        step = plan.steps[index]
        exc = RunInterrupted(
            f"the run was interrupted during attempt {step.attempts} (its server stopped or lost the task's lease)"
        )
        attempt = step.attempts - 1 - step.attempt_base
        return self._record_failure(task_id, step, index, attempt, exc, retry_delay, lease)

    def _step_change(self, index: int, attempt: int, *, starting: bool = False, **step_changes: Any) -> Mutation:
        """A store mutation of one step, applied only while this attempt owns the step.

        An attempt that Step Functions timed out keeps running until Lambda stops it, while the
        retry (or the next step) moves on. Checked inside the store's conditional write, the late
        attempt's start or result is refused (``_AttemptOvertaken``) instead of overwriting theirs.
        """
        owner = attempt + 1

        def mutate(task: TaskState) -> dict[str, Any]:
            plan = task.execution_plan
            assert plan is not None
            step = plan.steps[index]
            if starting:
                if step.attempts > owner or step.status is StepStatus.COMPLETED:
                    raise _AttemptOvertaken(task.task_id, step.step_id, owner)
                changes = {"attempts": owner, "started_at": step.started_at or utcnow(), **step_changes}
            elif step.attempts != owner or step.status is not StepStatus.RUNNING:
                raise _AttemptOvertaken(task.task_id, step.step_id, owner)
            else:
                changes = step_changes
            return {"execution_plan": self._replace_step(plan, index, **changes)}

        return mutate

    def _record_failure(
        self,
        task_id: str,
        step: ExecutionStep,
        index: int,
        attempt: int,
        exc: Exception,
        retry_delay: RetryDelay,
        lease: Lease | None = None,
    ) -> StepOutcome:
        name = error_name(exc)
        message = f"{name}: {exc}" if str(exc) else name
        delay = retry_delay(name, attempt)  # the budget is this run's; the numbering continues
        absolute = step.attempt_base + attempt
        events = []
        if delay is not None:
            record_metric("StepRetries", 1, agent_type=step.agent_type)
            events.append(
                self._event(
                    task_id,
                    EventType.STEP_RETRYING,
                    f"{step.step_id}:{absolute + 1}:step_retrying",
                    step_id=step.step_id,
                    agent_type=step.agent_type,
                    attempt=absolute + 2,
                    error=message,
                    delay_seconds=round(delay, 3),
                )
            )
            logger.warning(
                "step will be retried",
                extra={"task_id": task_id, "step_id": step.step_id, "error": message, "delay": delay},
            )
        else:
            record_metric("StepFailures", 1, agent_type=step.agent_type)
            logger.error("step failed", extra={"task_id": task_id, "step_id": step.step_id, "error": message})
        status = StepStatus.RETRYING if delay is not None else StepStatus.FAILED
        failed = step.model_copy(update={"status": status, "error": message, "attempts": absolute + 1})
        try:
            self.store.update(
                task_id,
                {TaskStatus.EXECUTING},
                events=events,
                mutate=self._fenced(lease, self._step_change(index, absolute, status=status, error=message)),
            )
        except _AttemptOvertaken:
            return StepOutcome(step, error=exc, error_name=name)
        return StepOutcome(failed, error=exc, error_name=name, retry_in=delay)

    def needs_approval(self, task: TaskState) -> bool:
        """The task waits for a person before the gate's step (it asked, and nobody approved yet)."""
        return task.approval and not task.approval_granted and self.definition.approval is not None

    def request_approval(
        self, task_id: str, token: str | None = None, *, lease: Lease | None = None, now: float | None = None
    ) -> TaskState:
        """executing -> awaiting_approval, with what a person needs to decide (``approval_requested``).

        ``token`` is the Step Functions task token of the wait (AWS); locally the wait is the
        task's status, and the deadline comes from the gate's ``TimeoutSeconds``.
        """
        gate = self.definition.approval
        task = self._load(task_id)
        if task.status is TaskStatus.AWAITING_APPROVAL:  # a repeat (a retried Lambda): keep the newest token
            token = token or task.approval_token
            return self.store.update(task_id, {TaskStatus.AWAITING_APPROVAL}, approval_token=token)
        outputs = {s.agent_type: s.output or "" for s in (task.execution_plan.steps if task.execution_plan else [])}
        timeout = gate.timeout_seconds if gate is not None else None
        deadline = (now if now is not None else time.time()) + timeout if timeout else None
        requested = self._event(
            task_id,
            EventType.APPROVAL_REQUESTED,
            self._key(task, "task:approval_requested"),
            step_id=gate.before_step if gate else None,
            summary=outputs.get("analyzer", "")[:2000],
            sources=[line.strip() for line in outputs.get("retriever", "").splitlines() if line[:1].isdigit()][:10],
            timeout_seconds=timeout,
            approve=f"/tasks/{task_id}/approve",
            reject=f"/tasks/{task_id}/reject",
        )
        task = self.store.update(
            task_id,
            {TaskStatus.EXECUTING},
            status=TaskStatus.AWAITING_APPROVAL,
            approval_token=token,
            approval_deadline=deadline,
            events=[requested],
            mutate=self._fenced(lease),
        )
        logger.info("task awaits approval", extra={"task_id": task_id})
        return task

    def complete(self, task_id: str, *, lease: Lease | None = None) -> TaskState:
        """executing -> completed, with the last step's output as the final output."""
        task = self._load(task_id)
        plan = task.execution_plan
        final = (
            task.final_output
            if task.status is TaskStatus.COMPLETED
            else (plan.steps[-1].output if plan and plan.steps else None)
        )
        done = self._event(
            task_id,
            EventType.TASK_COMPLETED,
            self._key(task, "task:task_completed"),
            status=TaskStatus.COMPLETED.value,
            final_output=final,
        )
        if task.status is TaskStatus.COMPLETED:
            self._emit(done)
            return task
        task = self.store.update(
            task_id,
            {TaskStatus.EXECUTING},
            status=TaskStatus.COMPLETED,
            final_output=final,
            events=[done],
            mutate=self._fenced(lease),
        )
        record_metric("TasksCompleted", 1)
        logger.info("task completed", extra={"task_id": task_id})
        return task

    def fail(self, task_id: str, error: str, message: str, *, lease: Lease | None = None) -> TaskState:
        """Any live state -> failed: the running step failed, ``error`` then ``task_failed`` events."""
        task = self._load(task_id)
        if task.status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED):
            return task  # a late failure report cannot undo a completed or cancelled task
        step = None
        if task.execution_plan is not None and task.status is not TaskStatus.FAILED:
            step = task.execution_plan.steps[task.current_step_index]
        where = {"step_id": step.step_id, "agent_type": step.agent_type} if step else {}
        error_event = self._event(
            task_id, EventType.ERROR, self._key(task, "task:error"), error=error, message=message, **where
        )
        if task.status is TaskStatus.FAILED:  # a repeat: make sure both events exist
            self._emit(error_event)
            self._emit(self._failed_event(task))
            return task
        changes: dict[str, Any] = {"status": TaskStatus.FAILED, "error_message": message}
        if task.execution_plan is not None and step is not None and step.status is not StepStatus.COMPLETED:
            changes["execution_plan"] = self._replace_step(
                task.execution_plan, task.current_step_index, status=StepStatus.FAILED, error=step.error or message
            )
        # The error and task_failed events are written with the transition, or not at all.
        task = self.store.update(
            task_id,
            sources_of(TaskStatus.FAILED),
            events=[error_event, self._failed_event(task, message)],
            mutate=self._fenced(lease),
            **changes,
        )
        record_metric("TasksFailed", 1)
        logger.error("task failed", extra={"task_id": task_id, "error": message})
        return task

    def _failed_event(self, task: TaskState, message: str | None = None) -> NewEvent:
        return self._event(
            task.task_id,
            EventType.TASK_FAILED,
            self._key(task, "task:task_failed"),
            status=TaskStatus.FAILED.value,
            error_message=message or task.error_message,
        )
