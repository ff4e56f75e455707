"""The ports the core depends on. Adapters: SQLite/DynamoDB stores, local/Step Functions executors."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, TypeVar

from agentic.chat import ChatReply, ChatRequest, DeltaSink, StructuredSchema
from agentic.models import Lease, NewEvent, StreamEvent, TaskPage, TaskState, TaskStatus

T = TypeVar("T")

#: Given the task as currently stored, the changes to apply to it (see ``TaskStore.update``).
Mutation = Callable[[TaskState], dict[str, Any]]


class TaskStore(Protocol):
    """Task state and the per-task event log.

    Methods are synchronous (the Lambdas are). Async callers go through ``service.io.call_store``,
    which runs DynamoDB's calls (network round trips) in threads, and makes SQLite's on the loop's
    thread unless a write would wait for the lock (then on the store's writer thread, see
    ``sqlite_file``).
    """

    #: True when a call may wait (network I/O, a lock) and async callers should run it in a thread.
    blocking: bool

    def create(self, task: TaskState) -> TaskState:
        """Insert a new task; raise ``TaskAlreadyExists`` if its id is taken."""
        ...

    def get(self, task_id: str) -> TaskState | None: ...

    def get_as_written(self, task_id: str) -> TaskState | None:
        """The task as this process's last write (or claim) of it left it, if the store remembers
        that; else as stored (``get``). For decisions that end in a conditional write (a run's own,
        an execute's start, which the claim decides), never for answers: every write is conditional
        on the stored row, so a change another process made since is found by the write (a cancel, a
        lost lease), exactly as if it had landed a moment after a read."""
        ...

    def list(self, owner: str, *, limit: int, cursor: str | None = None, status: TaskStatus | None = None) -> TaskPage:
        """The owner's tasks, newest first. ``cursor`` is opaque; a bad one raises ``InvalidInput``."""
        ...

    def list_in_status(self, statuses: Collection[TaskStatus]) -> builtins.list[TaskState]:
        """Every task (any owner) in one of ``statuses``; used to recover after a restart."""
        ...

    def update(
        self,
        task_id: str,
        expect: Collection[TaskStatus],
        *,
        events: Sequence[NewEvent] = (),
        mutate: Mutation | None = None,
        **changes: Any,
    ) -> TaskState:
        """Apply ``changes`` only if the task's status is in ``expect``, then append ``events``.

        ``mutate``, if given, is called with the task as the store just read it, inside the same
        conditional write, and returns more changes (e.g. one step of the plan); whatever it raises
        aborts the update with nothing written. It may run more than once (a store that retries a
        write it lost to a concurrent one calls it again on the fresh read).

        Raise ``TaskNotFound`` for an unknown id and ``InvalidTransition`` when the status does not
        match (nothing is written then). ``changes`` are TaskState field names (status,
        execution_plan, current_step_index, final_output, error_message); ``updated_at`` is set by
        the store. The events follow the rules of ``append_event`` (a key written before is skipped);
        a store that can (SQLite) writes change and events in one transaction, so a stream never sees
        an event before the state it announces.
        """
        ...

    def append_event(self, event: NewEvent) -> StreamEvent | None:
        """Append to the task's log with the next cursor; return None if ``event.key`` was written."""
        ...

    def read_events(
        self, task_id: str, after: int = 0, limit: int = 500, *, consistent: bool = True
    ) -> builtins.list[StreamEvent]:
        """Events with cursor > ``after``, in cursor order, without a gap.

        ``consistent`` (the default): every event committed before the call is returned (up to
        ``limit``). ``consistent=False`` allows a cheaper read that may lag: it returns the events
        after ``after`` of SOME committed state of the log, possibly older than one read before
        (so possibly none), still in order and without a gap; a caller that decides something from
        an empty answer (that nothing more will come) must read consistently. Stores whose reads are
        always consistent (SQLite) ignore it.
        """
        ...


class LeaseStore(TaskStore, Protocol):
    """A store that local runners share through leases (SQLite; on AWS Step Functions owns runs).

    A lease is a conditional claim (runner, epoch, expiry). The epoch is the fencing token: it is
    written into the task, and every write of a run checks it inside the store's conditional write
    (``PipelineOps`` does this with a ``mutate``), so only the current holder's writes land.
    """

    def claim(self, task_id: str, runner: str, ttl_seconds: float) -> Lease | None:
        """Take the task if it is unfinished and nobody holds a live lease on it; None otherwise."""
        ...

    def claim_then(
        self, task_id: str, runner: str, ttl_seconds: float, first_write: Callable[[Lease], T]
    ) -> tuple[Lease, T | None] | None:
        """``claim``, and if it is won, ``first_write(lease)`` in the same commit: (the lease, what
        that returned). If it raises, nothing of it is kept and the claim is committed alone (None)."""
        ...

    def renew(self, runner: str, leases: dict[str, Lease], ttl_seconds: float) -> set[str]:
        """Extend the given leases of ``runner``; return the ids of those it no longer holds."""
        ...

    def release(self, runner: str, task_ids: Collection[str]) -> None:
        """Let the leases expire now, so any live process resumes those tasks at once."""
        ...

    def expired(self, limit: int) -> builtins.list[str]:
        """Unfinished tasks whose lease has expired (their runner stopped), oldest expiry first."""
        ...

    def purge_finished(self, older_than_seconds: float, batch: int = 500, max_batches: int | None = None) -> int:
        """Delete tasks that finished more than ``older_than_seconds`` ago, with their events
        (``batch`` tasks a transaction, at most ``max_batches`` transactions)."""
        ...

    def check_writable(self) -> str | None:
        """None if a write can be committed now, else the reason (cached for a few seconds)."""
        ...

    def free_pages(self, batch_pages: int = 1024, max_batches: int | None = None) -> int:
        """Give space that purged rows left free back to the file system, ``batch_pages`` pages a
        transaction, at most ``max_batches`` transactions; return the pages freed."""
        ...


class EventWaiter(Protocol):
    """How a stream waits for the next event: notified in-process, or by polling a remote store."""

    async def wait(self, task_id: str, after: int, timeout: float) -> None:
        """Return when the log may hold an event past ``after``, or after ``timeout`` seconds."""
        ...


class Executor(Protocol):
    """Runs tasks' pipelines. Starting a task that is already started is a no-op.

    The control calls come after the store has recorded the change (``service.control``); they do
    the wiring's part and must be safe to repeat.
    """

    async def start(self, task_id: str) -> None:
        """Raise ``Backpressure`` when the task cannot be accepted now (it stays pending)."""
        ...

    async def cancel(self, task: TaskState) -> None:
        """Stop the task's run now (the task is already ``cancelled`` in the store)."""
        ...

    async def resume(self, task: TaskState) -> None:
        """Continue a run that waited for approval (the task is ``executing`` again)."""
        ...

    async def reject(self, task: TaskState, reason: str | None) -> None:
        """End the wait of a rejected task's run (the task is already ``failed``)."""
        ...

    async def retry(self, task: TaskState, start_at: str) -> None:
        """Run a retried task again from ``start_at`` (a step id, or ``plan``)."""
        ...


class ModelClient(Protocol):
    """A chat model behind one provider (an OpenAI-compatible server, Bedrock).

    Errors leave as ``TransientAgentError`` (throttled, 5xx, timeout, connection lost: the pipeline's
    Retry policy decides) or ``PermanentAgentError`` (bad key, unknown model, context too long: the
    message names the setting to fix). The client makes no retries of its own. Cancelling the
    calling task closes the model's connection.
    """

    provider: str
    model_id: str

    async def structured(self, request: ChatRequest, schema: StructuredSchema) -> ChatReply:
        """One answer that should follow ``schema``; ``text`` is its JSON (validated by the caller)."""
        ...

    async def stream(self, request: ChatRequest, on_delta: DeltaSink) -> ChatReply:
        """Stream the answer: ``on_delta`` gets each piece as it arrives; the reply has it all."""
        ...

    async def aclose(self) -> None:
        """Release connections (a process stopping)."""
        ...
