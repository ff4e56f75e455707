"""The pipeline's operations on one task: plan, run one step attempt, ask for approval, complete, fail.

Both wirings call exactly these: the local runner in a loop, and on AWS one Lambda per Step
Functions state. Every operation may be repeated (a retried Lambda, a resumed run): state changes
are conditional and every event has a deterministic key, so a repeat never duplicates anything.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

from agentic.agents.analyzer import AnalyzerAgent
from agentic.agents.faults import FaultPlan
from agentic.agents.passages import parse_passages
from agentic.agents.registry import AgentRegistry
from agentic.errors import InvalidTransition, LeaseLost
from agentic.models import (
    EventType,
    ExecutionPlan,
    Lease,
    NewEvent,
    StepStatus,
    TaskState,
    TaskStatus,
    sources_of,
    utcnow,
)
from agentic.observability import logger, record_metric
from agentic.pipeline import PipelineDefinition
from agentic.ports import TaskStore
from agentic.service.step_attempts import (
    MAX_OUTPUT_BYTES,
    RetryDelay,
    RunInterrupted,
    StepAttempts,
    StepOutcome,
    StoreCaller,
    call_directly,
    error_name,
)
from agentic.settings import Settings

__all__ = ["MAX_OUTPUT_BYTES", "PipelineOps", "RetryDelay", "RunInterrupted", "StepOutcome", "error_name"]


class PipelineOps(StepAttempts):
    def __init__(
        self,
        store: TaskStore,
        registry: AgentRegistry,
        definition: PipelineDefinition,
        faults: FaultPlan | None = None,
        *,
        prices: Mapping[str, tuple[float, float]] | None = None,
        delta_seconds: float = 0.1,
        delta_chars: int = 1000,
        io: StoreCaller = call_directly,
    ) -> None:
        self.store = store
        self.registry = registry
        self.definition = definition
        self.faults = faults or FaultPlan()
        self.prices = dict(prices or {})
        self.delta_seconds = delta_seconds
        self.delta_chars = delta_chars
        self.io = io

    @classmethod
    def configured(
        cls,
        store: TaskStore,
        registry: AgentRegistry,
        definition: PipelineDefinition,
        settings: Settings,
        *,
        io: StoreCaller = call_directly,
    ) -> PipelineOps:
        """The ops as the settings ask (faults, model prices, delta batching)."""
        return cls(
            store,
            registry,
            definition,
            FaultPlan.parse(settings.faults),
            prices={m: (p.input, p.output) for m, p in settings.model_prices.items()},
            delta_seconds=settings.stream_delta_seconds,
            delta_chars=settings.stream_delta_chars,
            io=io,
        )

    # --- task-level operations (step attempts: StepAttempts) ------------------------------------

    def plan(self, task_id: str, *, lease: Lease | None = None) -> TaskState:
        """pending -> analyzing -> executing (``plan_and_start`` without starting the first step)."""
        return self.plan_and_start(task_id, lease=lease, start_first=False)[0]

    def plan_and_start(
        self, task_id: str, *, lease: Lease | None = None, start_first: bool = True
    ) -> tuple[TaskState, bool]:
        """pending -> analyzing -> executing, with the execution plan made by the analyzer; and
        whether the first step's first attempt was started in the same write (``start_first``,
        local runs, unless an approval gate stands before it).

        Each state change carries its event; on a repeat (a retried Lambda) the events are written
        again with the same keys, which skips those already in the log. Attempts may also overlap (a
        Plan attempt past its TimeoutSeconds still runs while the retry starts): a transition that
        another attempt made first is success, not ``InvalidTransition``.
        """
        task = self._load(task_id)
        if task.status.is_terminal:
            return task, False
        started = self._event(
            # One key for every run: a retried run is announced by task_retried, and a repeat of the
            # plan (a retried Lambda, a resumed or retried local run) must not start the task again.
            task_id,
            EventType.TASK_STARTED,
            "task:task_started",
            status=TaskStatus.ANALYZING.value,
        )
        if task.status is TaskStatus.PENDING:
            # The start, the plan and (``start``) the first step's start in one commit: the plan is
            # made here, from the task alone, so nothing can happen between them that a commit of
            # the start alone would keep (see the README's *Commits per task*). The task passes
            # through analyzing within the write, as its task_started event says.
            try:
                planned = self._write_plan(task, lease, start_first, [started])
                logger.info("task started", extra={"task_id": task_id})
                return planned
            except LeaseLost:
                raise
            except InvalidTransition:
                task = self._overlapping_plan(task_id)
        else:
            self._emit(started)
        if task.status is TaskStatus.ANALYZING:
            # Started and not planned: a task started by an earlier version, which committed the
            # start on its own before planning.
            try:
                return self._write_plan(task, lease, start_first, [])
            except LeaseLost:
                raise
            except InvalidTransition:
                task = self._overlapping_plan(task_id)
                if task.status is TaskStatus.ANALYZING:  # cannot be: the write failed on another status
                    raise
        if task.execution_plan is None:  # a failed or cancelled task that was never planned
            return task, False
        self._emit(self._plan_created(task_id, task.execution_plan))
        return task, False

    def _write_plan(
        self, task: TaskState, lease: Lease | None, start_first: bool, before: list[NewEvent]
    ) -> tuple[TaskState, bool]:
        """``task`` -> executing with the analyzer's plan (and its first step started, ``start``), in
        one write after the events ``before``; the task as written and ``start``."""
        plan, events, start = self._planned(task, start_first)
        planned = self.store.update(
            task.task_id,
            {task.status},
            status=TaskStatus.EXECUTING,
            execution_plan=plan,
            current_step_index=0,
            events=[*before, *events],
            mutate=self._fenced(lease),
        )
        return planned, start

    def _planned(self, task: TaskState, start_first: bool) -> tuple[ExecutionPlan, list[NewEvent], bool]:
        """The analyzer's plan, its plan_created event, and whether the first step starts with it
        (its step_started event then follows): ``start_first`` unless an approval gate stands first."""
        analyzer = self.registry.get("analyzer")
        assert isinstance(analyzer, AnalyzerAgent)
        plan = analyzer.analyze(task.task_id, task.user_input, self.definition, self.registry)
        events = [self._plan_created(task.task_id, plan)]
        gate = self.definition.approval
        first = plan.steps[0] if plan.steps else None
        start = (
            start_first
            and first is not None
            and not (gate is not None and gate.before_step == first.step_id and self.needs_approval(task))
        )
        if start and first is not None:
            # The first step starts in the plan's own commit (see the README's durability section).
            plan = self._replace_step(
                plan, 0, status=StepStatus.RUNNING, attempts=first.attempt_base + 1, started_at=utcnow()
            )
            events.append(self._start_event(task.task_id, first, first.attempt_base))
        return plan, events, start

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

    def needs_approval(self, task: TaskState) -> bool:
        """The task waits for a person before the gate's step (it asked, and nobody approved yet)."""
        return task.approval and not task.approval_granted and self.definition.approval is not None

    def request_approval(
        self, task_id: str, token: str | None = None, *, lease: Lease | None = None, now: float | None = None
    ) -> TaskState:
        """executing -> awaiting_approval, with what a person needs to decide (``approval_requested``).

        The wait is the task's status (no execution waits: on AWS the run ends at the gate), and
        the deadline comes from the gate's ``approval_timeout_seconds``. ``token`` is kept for a
        caller that waits on a task token.
        """
        gate = self.definition.approval
        task = self._load(task_id)
        if task.status is TaskStatus.AWAITING_APPROVAL:  # a repeat (a retried Lambda): keep the newest token
            if token is None or token == task.approval_token:
                return task  # nothing to change (AWS ends the run at the gate: no token)
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
            sources=[f"[{p.number}] {p.label}" for p in parse_passages(outputs.get("retriever", ""))][:10],
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
        done = self._completed_event(task, final)
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
        self._task_completed(task_id)
        return task

    def fail(
        self,
        task_id: str,
        error: str,
        message: str,
        *,
        lease: Lease | None = None,
        expect: Collection[TaskStatus] | None = None,
    ) -> TaskState:
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
            expect if expect is not None else sources_of(TaskStatus.FAILED),
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
