"""Pydantic models: the task, its plan and steps, stream events, and the API's output shapes (its
request bodies are in ``request_models.py``, handed out here on first access).

Every model here is built (its schema, validator and serializer) when first used, not at import
(``LazyModel``): a Lambda function builds only the models its requests read and write, and no
function's import builds any, which also keeps pydantic's plugin loader (``importlib.metadata``,
which botocore imports anyway at the first AWS call) out of the import. ``build_models`` builds
them ahead, for a SnapStart snapshot.
"""

# No ``from __future__ import annotations`` here: with it, defining a model compiles and evaluates
# each field's annotation from its string (about a tenth of this module's import).
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

if TYPE_CHECKING:
    from agentic.request_models import ApproveRequest as ApproveRequest
    from agentic.request_models import CancelRequest as CancelRequest
    from agentic.request_models import RejectRequest as RejectRequest
    from agentic.request_models import RetryRequest as RetryRequest
    from agentic.request_models import TaskCreate as TaskCreate

#: The request bodies, imported from ``request_models`` when first asked for (module ``__getattr__``).
REQUEST_MODELS = frozenset({"TaskCreate", "CancelRequest", "ApproveRequest", "RejectRequest", "RetryRequest"})


def __getattr__(name: str) -> Any:
    if name in REQUEST_MODELS:
        from agentic import request_models

        return getattr(request_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskStatus(StrEnum):
    PENDING = "pending"
    ANALYZING = "analyzing"
    EXECUTING = "executing"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STATUSES


# A set made once: the property is asked a few dozen times per task, and naming the members in it
# (enum attribute lookups, a tuple) cost ten times the membership test.
_TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


# The only legal moves. The stores enforce "from" with a conditional write; this table is what the
# service consults to decide which "from" states to demand.
ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # pending -> executing: the start and the plan in one write (it passes through analyzing, as its
    # task_started event says); pending -> analyzing: tasks started before that.
    TaskStatus.PENDING: frozenset(
        {TaskStatus.ANALYZING, TaskStatus.EXECUTING, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.ANALYZING: frozenset({TaskStatus.EXECUTING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.EXECUTING: frozenset(
        {TaskStatus.AWAITING_APPROVAL, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.AWAITING_APPROVAL: frozenset({TaskStatus.EXECUTING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.COMPLETED: frozenset(),
    # A retry: back to the step that did not complete (or to the start, if nothing was planned).
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING, TaskStatus.EXECUTING}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.PENDING, TaskStatus.EXECUTING}),
}

#: The states a task can be cancelled from, and those it can be retried from.
LIVE_STATUSES = frozenset(
    {TaskStatus.PENDING, TaskStatus.ANALYZING, TaskStatus.EXECUTING, TaskStatus.AWAITING_APPROVAL}
)
RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})


def sources_of(target: TaskStatus) -> frozenset[TaskStatus]:
    """The states from which ``target`` may be entered."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


class EventType(StrEnum):
    TASK_QUEUED = "task_queued"
    TASK_STARTED = "task_started"
    PLAN_CREATED = "plan_created"
    STEP_STARTED = "step_started"
    STEP_RETRYING = "step_retrying"
    PARTIAL_OUTPUT = "partial_output"
    STEP_COMPLETED = "step_completed"
    TASK_COMPLETED = "task_completed"
    ERROR = "error"
    TASK_FAILED = "task_failed"
    TASK_CANCELLED = "task_cancelled"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_REJECTED = "approval_rejected"
    TASK_RETRIED = "task_retried"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_EVENTS


_TERMINAL_EVENTS = frozenset({EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_CANCELLED})


class LazyModel(BaseModel):
    """Built on first use (validation, serialization, ``model_json_schema``), not when defined."""

    model_config = ConfigDict(defer_build=True)


class ExecutionStep(LazyModel):
    step_id: str
    agent_type: str
    description: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    # Attempts made by earlier runs of the task (a retry continues their numbering, and gets its
    # own retry budget): an attempt index a run passes in is relative to this.
    attempt_base: int = 0
    error: str | None = None
    # Not part of the stored document: each store keeps a step's output apart (SQLite in the step's
    # partial_output event, DynamoDB in an OUT# item) and puts it back when it reads the task. Left
    # out by the field itself, not by each dump: an exclude argument cost a quarter of the dump.
    output: str | None = Field(default=None, exclude=True)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # A model-backed step: the model, the tokens of its completed attempt, and their price (when
    # MODEL_PRICES lists the model).
    model_id: str | None = None
    usage: dict[str, int] | None = None
    cost_usd: float | None = None


class ExecutionPlan(LazyModel):
    task_id: str
    steps: list[ExecutionStep]
    created_at: datetime = Field(default_factory=utcnow)


class Lease(LazyModel):
    """Who runs a task locally: a runner (one server process) and the claim's epoch (fencing token).

    Every write of a run is conditional on the task still holding this exact lease, so a runner that
    lost it (its process stalled past the expiry and another claimed the task) cannot write. The
    expiry lives beside the task in the store, where renewing it does not rewrite the document. On AWS
    Step Functions owns runs and tasks carry no lease.
    """

    runner: str
    epoch: int


class TaskState(LazyModel):
    task_id: str
    owner: str
    user_input: str
    status: TaskStatus = TaskStatus.PENDING
    execution_plan: ExecutionPlan | None = None
    current_step_index: int = 0
    final_output: str | None = None
    error_message: str | None = None
    source: str = "api"
    request_hash: str | None = None
    lease: Lease | None = None
    # Human approval before the final step: asked for, granted, and (AWS) the wait's task token.
    approval: bool = False
    approval_granted: bool = False
    approval_token: str | None = None
    # Wall-clock time (epoch seconds) after which an approval no longer counts (local runs).
    approval_deadline: float | None = None
    #: How many times the task was retried (POST /tasks/{id}/retry).
    retries: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


#: Cursors fit 12 decimal digits (the DynamoDB sort key pads them to that width).
MAX_CURSOR = 10**12 - 1


class ApiModel(LazyModel):
    """A body of the HTTP API (or of a stream's line): the functions that never answer HTTP (the
    agents, finalize) never build it."""


class StreamEvent(LazyModel):
    """One NDJSON line of a task's stream; ``cursor`` strictly increases within a task."""

    event_type: EventType
    task_id: str
    timestamp: datetime
    cursor: int
    data: dict[str, Any] = Field(default_factory=dict)

    def to_line(self) -> str:
        return self.model_dump_json() + "\n"


class StreamLine(ApiModel):
    """One line of ``/tasks/{id}/execute`` and ``/tasks/{id}/events`` (documentation of the NDJSON stream).

    An event (one of ``EventType``, with its ``cursor``), or a control line without a cursor that is
    not stored: ``keepalive``, ``task_pending``, ``stream_timeout`` or ``store_unavailable`` (the last
    two name the cursor to resume from in ``data.cursor``).
    """

    event_type: str = Field(
        description="An event (`task_started`, `plan_created`, `step_started`, `step_retrying`, "
        "`partial_output`, `step_completed`, `error`, `approval_requested`, `approval_granted`, "
        "`approval_rejected`, `task_retried`, `task_queued`, and the ends `task_completed`, `task_failed`, "
        "`task_cancelled`) or a control line (`keepalive`, `task_pending`, `stream_timeout`, "
        "`store_unavailable`).",
        examples=["step_started"],
    )
    task_id: str
    timestamp: datetime
    cursor: int | None = Field(
        default=None, description="Events only: strictly increasing; resume after it with `?after=` or Last-Event-ID."
    )
    data: dict[str, Any] = Field(default_factory=dict, description="What happened: depends on `event_type`.")


class NewEvent(LazyModel):
    """An event before the store gives it a cursor. ``key`` makes the write idempotent."""

    task_id: str
    event_type: EventType
    data: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)


# --- API shapes -----------------------------------------------------------------------------------


class StepPublic(ApiModel):
    step_id: str
    agent_type: str
    description: str
    status: StepStatus
    attempts: int
    error: str | None = None
    started_at: datetime | None = Field(default=None, description="When the step's first attempt started.")
    completed_at: datetime | None = Field(default=None, description="When the step completed.")
    model_id: str | None = None
    usage: dict[str, int] | None = Field(default=None, description="input_tokens and output_tokens of a model step")
    cost_usd: float | None = Field(default=None, description="the step's tokens at MODEL_PRICES (null if unpriced)")

    @computed_field(description="Seconds from the step's start to its completion (null until it completes).")
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return round((self.completed_at - self.started_at).total_seconds(), 3)


class TaskUsage(ApiModel):
    input_tokens: int = 0
    output_tokens: int = 0


#: A listing (``GET /tasks``) shows this many characters of each final output, the status route all
#: of it: a page of 100 tasks then stays far below Lambda's 6 MB response, whatever the outputs.
LIST_PREVIEW_CHARS = 2000


class TaskPublic(ApiModel):
    task_id: str
    user_input: str
    status: TaskStatus
    steps: list[StepPublic]
    current_step_index: int
    final_output: str | None
    final_output_truncated: bool = Field(
        default=False,
        description=f"true in a listing when final_output is its first {LIST_PREVIEW_CHARS} characters only: "
        "GET /tasks/{task_id}/status returns it whole",
    )
    error_message: str | None
    source: str
    approval: bool = False
    retries: int = 0
    usage: TaskUsage | None = Field(default=None, description="tokens of the task's model steps, summed")
    cost_usd: float | None = Field(default=None, description="the task's model cost at MODEL_PRICES")
    created_at: datetime
    updated_at: datetime

    @computed_field(description="Seconds from the task's creation to its end (null while it is not finished).")
    def duration_seconds(self) -> float | None:
        if not self.status.is_terminal:
            return None
        return round((self.updated_at - self.created_at).total_seconds(), 3)

    @classmethod
    def of(cls, task: TaskState) -> "TaskPublic":
        steps = task.execution_plan.steps if task.execution_plan else []
        used = [s.usage for s in steps if s.usage]
        costs = [s.cost_usd for s in steps if s.cost_usd is not None]
        return cls(
            usage=TaskUsage(
                input_tokens=sum(u.get("input_tokens", 0) for u in used),
                output_tokens=sum(u.get("output_tokens", 0) for u in used),
            )
            if used
            else None,
            cost_usd=round(sum(costs), 6) if costs else None,
            task_id=task.task_id,
            user_input=task.user_input,
            status=task.status,
            steps=[StepPublic.model_validate(s, from_attributes=True) for s in steps],
            current_step_index=task.current_step_index,
            final_output=task.final_output,
            error_message=task.error_message,
            source=task.source,
            approval=task.approval,
            retries=task.retries,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )

    def preview(self) -> "TaskPublic":
        """This task as a listing shows it: the final output cut to ``LIST_PREVIEW_CHARS`` characters."""
        if self.final_output is None or len(self.final_output) <= LIST_PREVIEW_CHARS:
            return self
        return self.model_copy(
            update={"final_output": self.final_output[:LIST_PREVIEW_CHARS], "final_output_truncated": True}
        )


class TaskPage(LazyModel):
    """A page of tasks, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[TaskState]
    next_cursor: str | None = None


class TaskList(ApiModel):
    items: list[TaskPublic]
    next_cursor: str | None = None


def build_models() -> None:
    """Build every model of this module now (a SnapStart snapshot then holds them built)."""
    models = (ExecutionStep, ExecutionPlan, Lease, TaskState, StreamEvent, NewEvent, TaskPage)
    for model in (*models, StreamLine, StepPublic, TaskUsage, TaskPublic, TaskList):
        model.model_rebuild()
