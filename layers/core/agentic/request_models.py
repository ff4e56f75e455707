"""The HTTP API's request bodies (and the triggers' task input): ``agentic.models`` hands them out on
first access, so the functions that never read a request (the agents, finalize) do not build them.

Not deferred (``defer_build``), unlike the other models: FastAPI wraps a body's model when a route is
declared, and a deferred one would be built again at the first request.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        min_length=1,
        max_length=4000,
        description="What the agents should work on (1-4000 characters).",
        examples=["Explain how exponential backoff with jitter prevents retry storms"],
    )
    execute: bool = Field(
        default=False,
        strict=True,  # JSON true/false only: "yes", "1" or 1 is a 422, not a silent true
        description="Start the task at once (then stream it with GET /tasks/{id}/events).",
    )
    approval: bool | None = Field(
        default=None,
        strict=True,
        description="Wait for a person's approval (POST /tasks/{id}/approve) before the final step. "
        "Default: the deployment's REQUIRE_APPROVAL.",
    )

    @field_validator("description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("description must not be blank")
        return stripped


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000, description="Why (shown in task_cancelled).")


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=1000, description="Shown in approval_granted.")


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000, description="Shown in approval_rejected.")


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_step: str | None = Field(
        default=None,
        max_length=64,
        description="Re-run from this step (e.g. step_002); default: the step that did not complete.",
        examples=["step_002"],
    )
