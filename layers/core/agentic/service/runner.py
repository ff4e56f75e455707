"""The local runner: the same steps as the state machine, in-process, with its retry policy."""

from __future__ import annotations

import asyncio
import functools
import time

from agentic.errors import InvalidTransition, StoreUnavailable
from agentic.models import ExecutionStep, Lease, StepStatus, TaskState, TaskStatus
from agentic.observability import logger
from agentic.pipeline import STATES_TIMEOUT
from agentic.service.pipeline_ops import PipelineOps, RetryDelay, error_name


class LocalRunner:
    """Runs a task through the pipeline read from the state-machine file, from where it stands.

    A run holds the task's lease (see ``LocalExecutor``); every write is fenced by it. A task found
    mid-run (its previous runner died) resumes: completed steps are kept, a step caught running
    counts as a failed attempt (``States.Timeout``) and is retried within the file's retry budget.

    ``time_scale`` shrinks the ASL's retry intervals (0.1 gives the seed's 0.1/0.2/0.4 s);
    ``jitter`` applies the file's FULL jitter, off by default so the seed's table holds exactly.
    """

    def __init__(self, ops: PipelineOps, *, time_scale: float = 0.1, jitter: bool = False) -> None:
        self.ops = ops
        self.time_scale = time_scale
        self.jitter = jitter

    async def run(
        self, task_id: str, lease: Lease | None = None, first: tuple[TaskState, bool] | None = None
    ) -> TaskStatus | None:
        """Run the task from where it stands; return the status the run ended it in (None: not ended here).

        ``first``: what ``first_write`` returned, made already in the claim's commit (``claim_then``).
        """
        try:
            io = self.ops.io  # each operation may be made again after StoreBusy (they are repeatable)
            if first is not None:
                task, started = first
            else:
                task, started = await io(self.ops.plan_and_start, task_id, lease=lease)
            if task.status is TaskStatus.AWAITING_APPROVAL:
                status: TaskStatus | None = await io(self._approval_expired, task, lease)
                return status
            if task.status is not TaskStatus.EXECUTING or task.execution_plan is None:
                return None
            found = {s.step_id: s for s in task.execution_plan.steps}
            gate = self.ops.definition.approval
            steps = self.ops.definition.steps

            def gated(step_id: str) -> bool:
                return gate is not None and step_id == gate.before_step and self.ops.needs_approval(task)

            # ``started``: this step's first attempt was started by the last write (the plan's, or
            # the last step's completion).
            for i, spec in enumerate(steps):
                if gated(spec.step_id):
                    # The run ends here and frees its slot; POST /approve starts the rest.
                    await io(self.ops.request_approval, task_id, lease=lease)
                    return None
                retry_delay = functools.partial(spec.retry_delay, time_scale=self.time_scale, jitter=self.jitter)
                attempt = 0 if started else await self._resume_at(task_id, found.get(spec.step_id), retry_delay, lease)
                if attempt is None:
                    return TaskStatus.FAILED
                last = i + 1 == len(steps)
                # One commit per step boundary: this step's completion starts the next (or completes
                # the task), as the README's durability section says.
                start_next = not last and not gated(steps[i + 1].step_id)
                while True:
                    outcome = await self.ops.run_step(
                        task_id,
                        spec.step_id,
                        attempt,
                        retry_delay,
                        spec.timeout_seconds,
                        lease=lease,
                        started=started,
                        start_next=start_next,
                        complete_task=last,
                    )
                    started = False
                    if outcome.ok:
                        if outcome.step.status is not StepStatus.COMPLETED:
                            # Overtaken: another run owns the step now (a retry, a resumed run).
                            logger.info("runner stops: its attempt was overtaken", extra={"task_id": task_id})
                            return None
                        if outcome.task_completed:
                            return TaskStatus.COMPLETED
                        started = outcome.next_started
                        break
                    if outcome.retry_in is None:
                        failed = await io(
                            self.ops.fail,
                            task_id,
                            outcome.error_name or "Error",
                            outcome.step.error or "step failed",
                            lease=lease,
                        )
                        return failed.status  # type: ignore[no-any-return]
                    await asyncio.sleep(outcome.retry_in)
                    attempt += 1
            completed = await io(self.ops.complete, task_id, lease=lease)
            return completed.status  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            raise  # shutdown or a lost lease: whoever holds the lease next resumes the task
        except StoreUnavailable as exc:
            # Nothing can be written now, not even a failure. The run stops; its lease is no longer
            # renewed, so once it expires a live process resumes the task from its last durable step.
            logger.warning("run paused: the store is unavailable", extra={"task_id": task_id, "reason": str(exc)})
            raise
        except InvalidTransition as exc:  # the task left its running state under us, or the lease moved on
            logger.info("runner stops: the task is not ours to run", extra={"task_id": task_id, "reason": str(exc)})
            return None
        except Exception as exc:  # a fault of the pipeline itself, not of an agent: never leave it hanging
            logger.exception("pipeline error", extra={"task_id": task_id})
            try:
                message = f"internal error: {exc}"
                failed = await self.ops.io(self.ops.fail, task_id, error_name(exc), message, lease=lease)
                return failed.status  # type: ignore[no-any-return]
            except Exception:
                logger.exception("could not mark the task failed", extra={"task_id": task_id})
                return None

    def first_write(self, task_id: str, lease: Lease) -> tuple[TaskState, bool]:
        """A run's first write (``plan_and_start``), for the executor to make in the claim's commit."""
        return self.ops.plan_and_start(task_id, lease=lease)

    def _approval_expired(self, task: TaskState, lease: Lease | None) -> TaskStatus | None:
        """Picked up while waiting for approval: its deadline passed (the store wakes it then)."""
        deadline = task.approval_deadline
        if deadline is None or time.time() < deadline:
            return None
        gate = self.ops.definition.approval
        waited = f" within {gate.timeout_seconds:g} s" if gate is not None and gate.timeout_seconds else ""
        # Only if it is still waiting when the failure is written: an approval may land meanwhile.
        return self.ops.fail(
            task.task_id,
            STATES_TIMEOUT,
            f"{STATES_TIMEOUT}: nobody approved the task{waited}",
            lease=lease,
            expect={TaskStatus.AWAITING_APPROVAL},
        ).status

    async def _resume_at(
        self, task_id: str, step: ExecutionStep | None, retry_delay: RetryDelay, lease: Lease | None
    ) -> int | None:
        """The attempt a step starts at (0 for a fresh step), or None when the task has failed."""
        if step is None or step.status in (StepStatus.PENDING, StepStatus.COMPLETED):
            return 0
        if step.status is StepStatus.RETRYING:  # the failed attempt already scheduled its retry
            return step.attempts - step.attempt_base
        if step.status is StepStatus.RUNNING:  # its runner died during the attempt
            io = self.ops.io
            outcome = await io(self.ops.record_interruption, task_id, step.step_id, retry_delay, lease=lease)
            if outcome.retry_in is None:
                message = outcome.step.error or "step failed"
                await io(self.ops.fail, task_id, outcome.error_name or "Error", message, lease=lease)
                return None
            await asyncio.sleep(outcome.retry_in)
            return step.attempts - step.attempt_base
        # FAILED: the step's failure was recorded but the task was not marked failed yet.
        error = (step.error or "step failed").partition(":")[0]
        await self.ops.io(self.ops.fail, task_id, error, step.error or "step failed", lease=lease)
        return None
