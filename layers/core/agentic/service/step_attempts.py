"""One attempt of one pipeline step: run the agent, record its result or its failure.

The machinery under ``PipelineOps`` (``pipeline_ops.py``): every write is conditional on the
attempt still owning its step (a late result of an overtaken attempt is discarded) and, for local
runs, on the run's lease (fencing). Failures are returned with the retry decision of the
state-machine file's Retry clauses, never raised, so both wirings apply the same policy.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentic.agents.base import Agent, AgentOutput, StepContext
from agentic.agents.faults import FaultPlan
from agentic.agents.registry import AgentRegistry
from agentic.chat import Usage
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
    utcnow,
)
from agentic.observability import logger, record_metric
from agentic.pipeline import STATES_TIMEOUT, PipelineDefinition
from agentic.ports import Mutation, TaskStore

if TYPE_CHECKING:
    from agentic.service.deltas import DeltaBatcher

#: Bound on one step's output, in UTF-8 bytes: 100,000 characters of a 3-byte script (CJK) and a
#: sources list fit. A store keeps an output as one item of its own (DynamoDB: 400 KB an item), and
#: no Step Functions payload carries it (256 KB), so every output of a task can be this long.
MAX_OUTPUT_BYTES = 300 * 1024

#: How async code makes a call of the store (or a whole operation built on it): ``call_store`` for
#: the local server (no wait on its loop), a direct call on AWS (a Lambda serves one request).
StoreCaller = Callable[..., Awaitable[Any]]


async def call_directly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def bound_output(text: str) -> str:
    """``text`` cut to ``MAX_OUTPUT_BYTES`` of UTF-8, at a character boundary."""
    if len(text) * 4 <= MAX_OUTPUT_BYTES:  # short enough whatever its characters
        return text
    encoded = text.encode()
    if len(encoded) <= MAX_OUTPUT_BYTES:
        return text
    return encoded[:MAX_OUTPUT_BYTES].decode(errors="ignore")  # drops a character cut in two


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
    #: The step's completion started the next step (``start_next``) or completed the task too.
    next_started: bool = False
    task_completed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _then(first: Mutation, second: Mutation) -> Mutation:
    """Both mutations in one write: ``second`` sees the task as ``first`` left it."""

    def both(task: TaskState) -> dict[str, Any]:
        changes = first(task)
        return {**changes, **second(task.model_copy(update=changes))}

    return both


def run_key(task: TaskState, key: str) -> str:
    """An event key unique to the task's current run: a retried task writes its events anew.

    One rule for every writer (the pipeline and task control), so that the same event written by
    two of them (a rejection's ``task_failed`` and the state machine's MarkFailed) is one event.
    """
    return key if task.retries == 0 else f"r{task.retries}:{key}"


class StepAttempts:
    """Runs and records step attempts against a store; ``PipelineOps`` adds the task-level moves."""

    store: TaskStore
    registry: AgentRegistry
    definition: PipelineDefinition
    faults: FaultPlan
    #: Dollars per 1M (input, output) tokens by model id (MODEL_PRICES).
    prices: Mapping[str, tuple[float, float]]
    #: How a streaming step's text is batched into partial_output events.
    delta_seconds: float
    delta_chars: int
    #: How the async parts (``run_step``, and the local runner around the operations) make their
    #: writes: each such call is one transaction or a whole operation, so it may be made again.
    io: StoreCaller

    def _load(self, task_id: str) -> TaskState:
        # Every decision made on it ends in a conditional write (see ``get_as_written``).
        task = self.store.get_as_written(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    @staticmethod
    def _event(task_id: str, event_type: EventType, key: str, **data: Any) -> NewEvent:
        return NewEvent(task_id=task_id, event_type=event_type, data=data, key=key)

    _key = staticmethod(run_key)

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

        runner, epoch = lease.runner, lease.epoch

        def check(task: TaskState) -> dict[str, Any]:
            held = task.lease
            if held is None or held.epoch != epoch or held.runner != runner:
                raise LeaseLost(f"task {task.task_id} is run by another runner now; this run stops")
            return mutate(task) if mutate is not None else {}

        return check

    @staticmethod
    def _replace_step(plan: ExecutionPlan, index: int, **changes: Any) -> ExecutionPlan:
        steps = list(plan.steps)
        steps[index] = steps[index].model_copy(update=changes)
        return plan.model_copy(update={"steps": steps})

    @staticmethod
    def _done_key(step: ExecutionStep, kind: str) -> str:
        """The key of a step's completion events, fixed by the run that completed it.

        A step a retry ran again starts from ``attempt_base`` > 0 and its completion is keyed by its
        attempt; a step kept from an earlier run keeps that run's key, so a retried run that passes
        it (locally the runner walks every step) writes nothing twice.
        """
        if step.attempt_base == 0:
            return f"{step.step_id}:{kind}"
        return f"{step.step_id}:{step.attempts}:{kind}"

    def _step_done_events(self, task: TaskState, step: ExecutionStep) -> list[NewEvent]:
        base = {"step_id": step.step_id, "agent_type": step.agent_type}
        return [
            self._event(
                task.task_id,
                EventType.PARTIAL_OUTPUT,
                self._done_key(step, "partial_output"),
                **base,
                output=step.output,
            ),
            self._event(
                task.task_id,
                EventType.STEP_COMPLETED,
                self._done_key(step, "step_completed"),
                **base,
                attempts=step.attempts,
                **self._model_fields(step),
            ),
        ]

    @staticmethod
    def _model_fields(step: ExecutionStep) -> dict[str, Any]:
        """What a model-backed step adds to its ``step_completed`` (nothing for the template agents)."""
        if step.usage is None:
            return {}
        return {"model_id": step.model_id, "usage": step.usage, "cost_usd": step.cost_usd}

    async def run_step(
        self,
        task_id: str,
        step_id: str,
        attempt: int,
        retry_delay: RetryDelay,
        timeout: float | None = None,
        *,
        lease: Lease | None = None,
        started: bool = False,
        start_next: bool = False,
        complete_task: bool = False,
    ) -> StepOutcome:
        """Run one attempt of one step. Failures are returned, not raised, with the retry decision.

        ``attempt`` counts within this run of the task (0 = the step's first attempt in it; on AWS
        ``$$.State.RetryCount``); a retried task's steps continue the numbering of earlier runs.

        Local runs chain their commits (see the README's durability section): ``start_next``
        writes the next step's start with this step's completion, ``complete_task`` completes the
        task with it (the last step), and ``started`` says this attempt's start was written so.
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
                await self.io(self._emit, event)
            return StepOutcome(step)
        base = {"step_id": step_id, "agent_type": step.agent_type}
        absolute = step.attempt_base + attempt
        if started:
            if step.status is not StepStatus.RUNNING or step.attempts != absolute + 1:
                return StepOutcome(step)  # the start written with the last step is not this attempt's now
        elif attempt == 0:
            first = self._start_event(task_id, step, absolute)
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
        if not started:
            try:
                task = await self.io(
                    self.store.update,
                    task_id,
                    {TaskStatus.EXECUTING},
                    current_step_index=index,
                    events=[first],
                    mutate=self._fenced(lease, self._start_change(index, absolute)),
                )
            except _AttemptOvertaken:
                return StepOutcome(step)  # a stale start: a newer attempt owns the step already
        assert task.execution_plan is not None
        # Here, not at the top: it and asyncio load with the loop that runs a step, so the agent
        # functions' import (and a planning or finalize call) skips them.
        import asyncio

        from agentic.service.deltas import DeltaBatcher

        deltas = DeltaBatcher(
            self._delta_writer(task, index, absolute, lease),
            interval=self.delta_seconds,
            max_chars=self.delta_chars,
        )
        context = StepContext(
            task_id=task_id,
            task=task.user_input,
            attempt=absolute,
            outputs={s.agent_type: s.output for s in task.execution_plan.steps if s.output is not None},
            on_delta=deltas.add,
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
            async with asyncio.timeout(timeout):  # no task per step, as wait_for would make
                result = await self._execute(agent, step, context, deltas)
        except _AttemptOvertaken:
            return StepOutcome(step)  # a delta write found a newer attempt owning the step
        except InvalidTransition:
            # A delta write was refused: the task was cancelled or this run lost its lease. The model
            # call is over (leaving its stream closed the connection); whoever owns the task goes on.
            raise
        except Exception as exc:  # every failure is recorded; the retry policy decides what is next
            outcome: StepOutcome = await self.io(
                self._record_failure, task_id, step, index, attempt, exc, retry_delay, lease
            )
            return outcome
        finally:
            deltas.abandon()
        record_metric("StepLatency", (time.perf_counter() - clock) * 1000, "Milliseconds", agent_type=step.agent_type)
        usage = result.usage
        if usage is not None:
            model = result.model_id or "unknown"
            record_metric("ModelInputTokens", usage.input_tokens, "Count", model_id=model, agent_type=step.agent_type)
            record_metric("ModelOutputTokens", usage.output_tokens, "Count", model_id=model, agent_type=step.agent_type)
        finished = step.model_copy(
            update={
                "status": StepStatus.COMPLETED,
                "output": bound_output(result.text),
                "attempts": absolute + 1,
                "model_id": result.model_id,
                "usage": usage.as_dict() if usage is not None else None,
                "cost_usd": self._cost(result.model_id, usage),
            }
        )
        events = self._step_done_events(task, finished)
        done = self._step_change(
            index,
            absolute,
            status=StepStatus.COMPLETED,
            output=finished.output,
            error=None,
            completed_at=utcnow(),
            model_id=finished.model_id,
            usage=finished.usage,
            cost_usd=finished.cost_usd,
        )
        changes: dict[str, Any] = {}
        if start_next and index + 1 < len(plan.steps):
            following = task.execution_plan.steps[index + 1]
            start = following.attempt_base
            events.append(self._start_event(task_id, following, start))
            done = _then(done, self._start_change(index + 1, start))
            changes["current_step_index"] = index + 1
        elif complete_task:
            events.append(self._completed_event(task, finished.output))
            changes.update(status=TaskStatus.COMPLETED, final_output=finished.output)
        try:
            await self.io(
                self.store.update,
                task_id,
                {TaskStatus.EXECUTING},
                events=events,
                mutate=self._fenced(lease, done),
                **changes,
            )
        except _AttemptOvertaken:
            return StepOutcome(step)
        logger.debug("step completed", extra={"task_id": task_id, "step_id": step_id, "attempts": absolute + 1})
        if "status" in changes:
            self._task_completed(task_id)
        return StepOutcome(finished, next_started="current_step_index" in changes, task_completed="status" in changes)

    def _start_event(self, task_id: str, step: ExecutionStep, absolute: int) -> NewEvent:
        """``step_started`` of a step's first attempt in this run."""
        return self._event(
            task_id,
            EventType.STEP_STARTED,
            f"{step.step_id}:{absolute}:step_started",
            step_id=step.step_id,
            agent_type=step.agent_type,
            description=step.description,
            attempt=absolute + 1,
        )

    def _start_change(self, index: int, absolute: int) -> Mutation:
        return self._step_change(index, absolute, starting=True, status=StepStatus.RUNNING)

    def _completed_event(self, task: TaskState, final: str | None) -> NewEvent:
        return self._event(
            task.task_id,
            EventType.TASK_COMPLETED,
            run_key(task, "task:task_completed"),
            status=TaskStatus.COMPLETED.value,
            final_output=final,
        )

    @staticmethod
    def _task_completed(task_id: str) -> None:
        record_metric("TasksCompleted", 1)
        logger.info("task completed", extra={"task_id": task_id})

    @staticmethod
    async def _execute(agent: Agent, step: ExecutionStep, context: StepContext, deltas: DeltaBatcher) -> AgentOutput:
        """Run the agent; the text it streamed is written (its last batch) before the step completes."""
        result = await agent.invoke(step, context)
        await deltas.close()
        return result

    def _delta_writer(
        self, task: TaskState, index: int, attempt: int, lease: Lease | None
    ) -> Callable[[str, int], Awaitable[None]]:
        """Writes one batch of a streaming step as a ``partial_output`` event with ``data.delta``.

        Conditional like every write of the attempt (the task still executing, this attempt still
        owning the step, the run still holding its lease): a refused write raises, which ends the
        agent's model call at once; that is how a cancel or a lost lease stops a model mid-answer.
        """
        step = task.execution_plan.steps[index] if task.execution_plan else None
        assert step is not None
        base = {"step_id": step.step_id, "agent_type": step.agent_type, "attempt": attempt + 1}

        async def write(text: str, seq: int) -> None:
            event = self._event(
                task.task_id,
                EventType.PARTIAL_OUTPUT,
                self._key(task, f"{step.step_id}:{attempt}:delta:{seq}"),
                **base,
                seq=seq,
                delta=text,
            )
            await self.io(
                self.store.update,
                task.task_id,
                {TaskStatus.EXECUTING},
                events=[event],
                mutate=self._fenced(lease, self._step_change(index, attempt)),
            )

        return write

    def _cost(self, model_id: str | None, usage: Usage | None) -> float | None:
        price = self.prices.get(model_id) if model_id and usage is not None else None
        if price is None or usage is None:
            return None
        return round((usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1_000_000, 8)

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
        # Counted once written: a call made again (``StoreBusy``) counts nothing twice.
        if delay is not None:
            record_metric("StepRetries", 1, agent_type=step.agent_type)
            logger.warning(
                "step will be retried",
                extra={"task_id": task_id, "step_id": step.step_id, "error": message, "delay": delay},
            )
        else:
            record_metric("StepFailures", 1, agent_type=step.agent_type)
            logger.error("step failed", extra={"task_id": task_id, "step_id": step.step_id, "error": message})
        return StepOutcome(failed, error=exc, error_name=name, retry_in=delay)
