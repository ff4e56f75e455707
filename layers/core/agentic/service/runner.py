"""The local runner: the same steps as the state machine, in-process, with its retry policy."""

from __future__ import annotations

import asyncio
import functools

from agentic.errors import InvalidTransition
from agentic.models import TaskStatus
from agentic.observability import logger
from agentic.service.pipeline_ops import PipelineOps, error_name


class LocalRunner:
    """Runs a task through the pipeline read from the state-machine file.

    ``time_scale`` shrinks the ASL's retry intervals (0.1 gives the seed's 0.1/0.2/0.4 s);
    ``jitter`` applies the file's FULL jitter, off by default so the seed's table holds exactly.
    """

    def __init__(self, ops: PipelineOps, *, time_scale: float = 0.1, jitter: bool = False) -> None:
        self.ops = ops
        self.time_scale = time_scale
        self.jitter = jitter

    async def run(self, task_id: str) -> None:
        try:
            task = self.ops.plan(task_id)
            if task.status is not TaskStatus.EXECUTING:
                return
            for spec in self.ops.definition.steps:
                retry_delay = functools.partial(spec.retry_delay, time_scale=self.time_scale, jitter=self.jitter)
                attempt = 0
                while True:
                    outcome = await self.ops.run_step(task_id, spec.step_id, attempt, retry_delay, spec.timeout_seconds)
                    if outcome.ok:
                        break
                    if outcome.retry_in is None:
                        self.ops.fail(task_id, outcome.error_name or "Error", outcome.step.error or "step failed")
                        return
                    await asyncio.sleep(outcome.retry_in)
                    attempt += 1
            self.ops.complete(task_id)
        except asyncio.CancelledError:
            raise  # shutdown: the restart recovery marks the task failed
        except InvalidTransition as exc:  # the task left its running state under us (recovered, failed)
            logger.info("runner stops: the task is no longer running", extra={"task_id": task_id, "reason": str(exc)})
        except Exception as exc:  # a fault of the pipeline itself, not of an agent: never leave it hanging
            logger.exception("pipeline error", extra={"task_id": task_id})
            try:
                self.ops.fail(task_id, error_name(exc), f"internal error: {exc}")
            except Exception:
                logger.exception("could not mark the task failed", extra={"task_id": task_id})
