"""The task lifecycle as the API and the triggers see it: create, read, list, execute, stream."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

from agentic.errors import IdempotencyConflict, InvalidInput, TaskAlreadyExists, TaskNotFound
from agentic.models import StepStatus, TaskPage, TaskState, TaskStatus
from agentic.observability import logger, record_metric
from agentic.pipeline import load_pipeline
from agentic.ports import EventWaiter, Executor, TaskStore
from agentic.service.control import TaskControl
from agentic.service.io import call_store
from agentic.service.pipeline_ops import PipelineOps
from agentic.service.stream import MAX_WAIT_SECONDS, tail_events
from agentic.settings import Settings

# Task ids derived from idempotency keys: the same key always names the same task.
TASK_ID_NAMESPACE = uuid.UUID("5d0f3c1e-7c2a-4f0e-9a53-5b1f7e0c2d41")
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_LIST_LIMIT = 100


def task_id_for(source: str, owner: str, idempotency_key: str) -> str:
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{source}\x1f{owner}\x1f{idempotency_key}"))


def request_hash(description: str) -> str:
    return hashlib.sha256(description.encode()).hexdigest()


class TaskService:
    def __init__(
        self,
        store: TaskStore,
        executor: Executor,
        waiter: EventWaiter,
        settings: Settings,
        ops: PipelineOps | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.waiter = waiter
        self.settings = settings
        self.ops = ops
        definition = ops.definition if ops is not None else load_pipeline(settings.pipeline_definition)
        self.control = TaskControl(store, definition, max_retries=settings.max_task_retries)

    async def create(
        self,
        owner: str,
        description: str,
        *,
        idempotency_key: str | None = None,
        source: str = "api",
        approval: bool | None = None,
    ) -> tuple[TaskState, bool]:
        """Create a pending task; with a key, a repeat returns the first task (``created`` False)."""
        if idempotency_key is not None:
            if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS:
                raise InvalidInput(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} characters")
            task_id = task_id_for(source, owner, idempotency_key)
        else:
            task_id = str(uuid.uuid4())
        task = TaskState(
            task_id=task_id,
            owner=owner,
            user_input=description,
            source=source,
            request_hash=request_hash(description),
            approval=self.settings.require_approval if approval is None else approval,
        )
        try:
            await call_store(self.store, self.store.create, task)
        except TaskAlreadyExists:
            existing = await call_store(self.store, self.store.get, task_id)
            if existing is None or existing.owner != owner:
                raise
            if existing.request_hash != task.request_hash:
                raise IdempotencyConflict(
                    "this Idempotency-Key was already used for a task with a different description"
                ) from None
            return existing, False
        record_metric("TasksCreated", 1)
        logger.info("task created", extra={"task_id": task_id, "source": source})
        return task, True

    async def get(self, owner: str, task_id: str) -> TaskState:
        task = await call_store(self.store, self.store.get, task_id)
        # Another owner's task is reported exactly like a missing one: ids leak nothing.
        if task is None or task.owner != owner:
            raise TaskNotFound(task_id)
        return task

    async def list(
        self, owner: str, *, limit: int = 20, cursor: str | None = None, status: TaskStatus | None = None
    ) -> TaskPage:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        return await call_store(self.store, self.store.list, owner, limit=limit, cursor=cursor, status=status)

    async def execute(self, owner: str, task_id: str) -> TaskState:
        """Start the task if it is pending; a started or finished task is left as it is (attach)."""
        # As this process last wrote it, when it did (a task created here a moment ago): the start
        # is decided again by the claim, under the write lock, and the stream by the log, so a
        # change another process made since costs nothing but a claim not won (a read saved).
        task = await call_store(self.store, self.store.get_as_written, task_id)
        # Another owner's task is reported exactly like a missing one: ids leak nothing.
        if task is None or task.owner != owner:
            raise TaskNotFound(task_id)
        if task.status is TaskStatus.PENDING:
            await self.executor.start(task_id)
        return task

    async def stream(self, owner: str, task_id: str, after: int = 0) -> AsyncIterator[str]:
        """Check access now (so errors are HTTP errors), then return the NDJSON line iterator."""
        task = await self.get(owner, task_id)
        # Pending with no lease: nobody executed it (a queued task holds its runner's lease).
        return self._tail(task, after, not_started=task.status is TaskStatus.PENDING and task.lease is None)

    async def execute_and_stream(self, owner: str, task_id: str, after: int = 0) -> AsyncIterator[str]:
        """``execute`` then ``stream``, reading the task once (a network round trip on DynamoDB)."""
        return self._tail(await self.execute(owner, task_id), after)

    def _tail(self, task: TaskState, after: int, *, not_started: bool = False) -> AsyncIterator[str]:
        task_id = task.task_id
        if after < 0:
            raise InvalidInput("after must be a cursor >= 0")
        return tail_events(
            self.store,
            self.waiter,
            task_id,
            after,
            keepalive_seconds=self.settings.stream_keepalive_seconds,
            max_seconds=self.settings.stream_max_seconds,
            finished=task.status.is_terminal,
            not_started=not_started,
            # A polling waiter decides how often to read (it backs off when idle); a notified one
            # is woken, and re-reads at least every MAX_WAIT_SECONDS.
            max_wait_seconds=getattr(self.waiter, "max_wait_seconds", MAX_WAIT_SECONDS),
            pause_seconds=self.settings.stream_approval_pause_seconds,
            awaiting=task.status is TaskStatus.AWAITING_APPROVAL,
        )

    # --- task control --------------------------------------------------------------------------

    # A repeated control request finishes what a failed one left: the store's change is made once,
    # and the executor's part (stop the run, start the rest, drop the approval timer) is done again
    # whenever the task shows it may be missing; each of those calls is safe to repeat.

    async def cancel(self, owner: str, task_id: str, reason: str | None = None) -> TaskState:
        """Cancel a live task and stop its run; a cancelled task answers the same again."""
        task = await self.get(owner, task_id)
        updated, _ = await call_store(self.store, self.control.cancel, task, reason, owner)
        await self.executor.cancel(updated)
        return updated

    async def approve(self, owner: str, task_id: str, comment: str | None = None) -> TaskState:
        """Let a task awaiting approval go on to its gated step."""
        task = await self.get(owner, task_id)
        updated, changed = await call_store(self.store, self.control.approve, task, comment, owner)
        if changed or self._rest_not_started(updated):
            await self.executor.resume(updated)
        return updated

    def _rest_not_started(self, task: TaskState) -> bool:
        """An approved task whose gated step has not started: its run may never have been resumed."""
        gate = self.control.definition.approval
        if task.status is not TaskStatus.EXECUTING or not task.approval_granted or gate is None:
            return False
        plan = task.execution_plan
        step = next((s for s in plan.steps if s.step_id == gate.before_step), None) if plan else None
        return step is not None and step.status is StepStatus.PENDING

    async def reject(self, owner: str, task_id: str, reason: str | None = None) -> TaskState:
        """End a task awaiting approval as failed (``ApprovalRejected``)."""
        task = await self.get(owner, task_id)
        updated, _ = await call_store(self.store, self.control.reject, task, reason, owner)
        await self.executor.reject(updated, reason)
        return updated

    async def retry(self, owner: str, task_id: str, from_step: str | None = None) -> TaskState:
        """Run a failed or cancelled task again from the step that did not complete (or ``from_step``)."""
        task = await self.get(owner, task_id)
        updated, start_at = await call_store(self.store, self.control.retry, task, from_step, owner)
        await self.executor.retry(updated, start_at)
        return updated
