"""The pipeline definition, read from the state-machine file that Step Functions runs.

The local runner takes its step order, step timeouts and retry policy from
``statemachine/pipeline.asl.json`` so no retry number is duplicated in Python. Only the subset of
ASL the pipeline uses is read: a chain of Task states from ``StartAt`` following ``Next``, whose
``Parameters`` say what each does (``action``: plan | step, plus ``step_id`` and ``agent_type`` for
agent steps, and ``approval_timeout_seconds`` on the step an approval gate stands before).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from agentic.errors import AgenticError

ASL_FILE_NAME = "pipeline.asl.json"
# A development checkout keeps the file at the top level; the Lambda layer build copies it into the
# package (see layers/core/Makefile).
_REPO_COPY = Path(__file__).resolve().parents[3] / "statemachine" / ASL_FILE_NAME

#: ASL's catch-all error names.
STATES_ALL = "States.ALL"
STATES_TIMEOUT = "States.Timeout"


class PipelineDefinitionError(AgenticError):
    code = "pipeline_definition_error"


@dataclass(frozen=True)
class Retrier:
    """One ASL ``Retry`` entry. ``max_attempts`` counts retries, as in ASL."""

    error_equals: frozenset[str]
    interval_seconds: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_seconds: float | None = None
    full_jitter: bool = False

    def matches(self, error_name: str) -> bool:
        # States.ALL matches everything; Step Functions excludes States.Runtime from it, which a
        # Python pipeline never raises.
        return STATES_ALL in self.error_equals or error_name in self.error_equals

    def delay_before_retry(self, retry_number: int) -> float:
        """The wait before retry ``retry_number`` (1-based), before jitter, in ASL seconds."""
        delay = self.interval_seconds * self.backoff_rate ** (retry_number - 1)
        if self.max_delay_seconds is not None:
            delay = min(delay, self.max_delay_seconds)
        return delay


@dataclass(frozen=True)
class StepSpec:
    state_name: str
    step_id: str
    agent_type: str
    retriers: tuple[Retrier, ...] = ()
    timeout_seconds: float | None = None

    def retry_delay(
        self, error_name: str, attempt: int, *, time_scale: float = 1.0, jitter: bool = False
    ) -> float | None:
        """Seconds to wait before retrying after ``attempt`` (0-based) failed, or None: give up.

        Attempts are counted across retriers (the pipeline has one retrier per step).
        """
        for retrier in self.retriers:
            if retrier.matches(error_name):
                if attempt >= retrier.max_attempts:
                    return None
                delay = retrier.delay_before_retry(attempt + 1)
                if jitter and retrier.full_jitter:
                    delay = random.uniform(0, delay)
                return delay * time_scale
        return None


@dataclass(frozen=True)
class ApprovalGate:
    """Tasks created with ``approval`` stop before a step until a person decides: the step's state
    names the wait's limit in its ``Parameters`` (``approval_timeout_seconds``, 0 for none)."""

    state_name: str
    before_step: str
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class PipelineDefinition:
    steps: tuple[StepSpec, ...]
    plan_state: str
    source: str = field(default="", compare=False)
    approval: ApprovalGate | None = None

    def step(self, step_id: str) -> StepSpec:
        for spec in self.steps:
            if spec.step_id == step_id:
                return spec
        raise PipelineDefinitionError(f"the pipeline has no step {step_id!r}")


def _retriers(state: dict[str, Any]) -> tuple[Retrier, ...]:
    out = []
    for entry in state.get("Retry", []):
        out.append(
            Retrier(
                error_equals=frozenset(entry["ErrorEquals"]),
                interval_seconds=float(entry.get("IntervalSeconds", 1)),
                max_attempts=int(entry.get("MaxAttempts", 3)),
                backoff_rate=float(entry.get("BackoffRate", 2.0)),
                max_delay_seconds=(float(entry["MaxDelaySeconds"]) if "MaxDelaySeconds" in entry else None),
                full_jitter=entry.get("JitterStrategy", "NONE") == "FULL",
            )
        )
    return tuple(out)


def parse_pipeline(definition: dict[str, Any], source: str = "") -> PipelineDefinition:
    states: dict[str, Any] = definition.get("States", {})
    name: str | None = definition.get("StartAt")
    steps: list[StepSpec] = []
    plan_state: str | None = None
    approval: ApprovalGate | None = None
    seen: set[str] = set()
    while name is not None:
        if name in seen or name not in states:
            raise PipelineDefinitionError(f"{source}: state {name!r} is missing or loops")
        seen.add(name)
        state = states[name]
        params = state.get("Parameters", {})
        action = params.get("action")
        if state.get("Type") == "Task" and action == "plan":
            plan_state = name
        elif state.get("Type") == "Task" and action == "step":
            steps.append(
                StepSpec(
                    state_name=name,
                    step_id=params["step_id"],
                    agent_type=params["agent_type"],
                    retriers=_retriers(state),
                    timeout_seconds=(float(state["TimeoutSeconds"]) if "TimeoutSeconds" in state else None),
                )
            )
            if "approval_timeout_seconds" in params:
                approval = ApprovalGate(
                    state_name=name,
                    before_step=params["step_id"],
                    timeout_seconds=float(params["approval_timeout_seconds"]) or None,
                )
        if state.get("Type") == "Choice":
            # Routing (where a retry or an approved task enters): the local runner follows the
            # default path; it decides where to start from the task, not from the input.
            name = state.get("Default")
            continue
        name = None if state.get("End") else state.get("Next")
    if plan_state is None or not steps:
        raise PipelineDefinitionError(f"{source}: the pipeline needs a plan state and agent steps")
    return PipelineDefinition(steps=tuple(steps), plan_state=plan_state, source=source, approval=approval)


def default_definition_text() -> tuple[str, str]:
    packaged = resources.files("agentic").joinpath(ASL_FILE_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8"), str(packaged)
    return _REPO_COPY.read_text(encoding="utf-8"), str(_REPO_COPY)


@lru_cache(maxsize=4)
def load_pipeline(path: Path | None = None) -> PipelineDefinition:
    """Read and parse the state-machine file (the packaged copy unless ``path`` is given)."""
    if path is None:
        text, source = default_definition_text()
    else:
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        return parse_pipeline(json.loads(text), source)
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineDefinitionError(f"{source}: not a valid pipeline definition: {exc}") from exc
