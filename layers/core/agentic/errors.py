"""Domain errors. Each maps to one HTTP status in ``api.errors``; never match on message strings."""

from __future__ import annotations

from collections.abc import Iterable


class AgenticError(Exception):
    """Base class of every error the core raises on purpose."""

    code = "error"


class TaskNotFound(AgenticError):
    code = "task_not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class TaskAlreadyExists(AgenticError):
    """A conditional create found the id taken (an idempotent replay or a key reused)."""

    code = "task_exists"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} already exists")
        self.task_id = task_id


class IdempotencyConflict(AgenticError):
    code = "idempotency_conflict"


class InvalidTransition(AgenticError):
    """A state change was asked from a state that does not allow it (a conditional write failed)."""

    code = "invalid_transition"

    @classmethod
    def unexpected(cls, task_id: str, status: str, expected: Iterable[str]) -> InvalidTransition:
        return cls(f"task {task_id} is {status}; this needs it to be " + " or ".join(sorted(expected)))


class Backpressure(AgenticError):
    """Too many executions are running or waiting; the task stays pending and can be executed later."""

    code = "too_many_executions"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class InputTooLarge(AgenticError):
    code = "input_too_large"


class InvalidInput(AgenticError):
    code = "invalid_input"


class Unauthorized(AgenticError):
    code = "unauthorized"


class WriteConflict(AgenticError):
    """A task kept changing while a conditional write was retried; the caller may try again."""

    code = "write_conflict"


class StoreUnavailable(AgenticError):
    """The store cannot be written or read now (disk full, read-only file, locked past the busy timeout).

    Nothing of the failed operation was kept; the caller may try again later (503 with Retry-After).
    """

    code = "store_unavailable"


class StoreBusy(Exception):
    """A call made without waiting found the store's write lock taken; nothing of it was kept.

    Not an error anyone sees: ``service.io.call_store`` then makes the same call again, on the loop
    after a short pause (``may_retry_here``) or where a wait stalls nothing (the store's writer
    thread). Deliberately not an ``AgenticError``: no handler may turn it into an answer or a
    recorded failure.
    """

    def __init__(self, reason: str, *, may_retry_here: bool = True) -> None:
        super().__init__(reason)
        #: False: the call is never made without waiting (it commits more than once): no retries.
        self.may_retry_here = may_retry_here


class LeaseLost(InvalidTransition):
    """This run no longer owns the task: another runner claimed it after this run's lease expired."""

    code = "lease_lost"


# --- agent failures -------------------------------------------------------------------------------
# Step Functions names an error by the bare class name of the Python exception, and the pipeline's
# Retry clauses match on that name; the local runner applies the same rule, so keep the names stable.


class AgentError(AgenticError):
    code = "agent_error"


class TransientAgentError(AgentError):
    """Worth retrying: a timeout, a throttle, a flaky dependency."""

    code = "transient_agent_error"


class PermanentAgentError(AgentError):
    """Retrying cannot help (invalid input, a bug): the task fails at once."""

    code = "permanent_agent_error"


# --- store errors that are safe to retry ------------------------------------------------------------
# One name for the pipeline's Retry clauses (statemachine/pipeline.asl.json): the store was throttled,
# had an internal error, or a conditional write kept conflicting. Nothing was applied, so the same
# step attempt can simply run again.


class RetryableStoreError(WriteConflict):
    """The store could not do the call now (throttled, an internal error, a write that kept conflicting).

    A ``WriteConflict``, so the API answers it the same way (503 with Retry-After).
    """

    code = "store_unavailable"
