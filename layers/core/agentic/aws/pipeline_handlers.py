"""The Lambdas the state machine invokes: one per agent, plus finalize (complete / fail).

Their inputs are the Task states' ``Parameters`` in ``statemachine/pipeline.asl.json``:

- ``{"action": "plan", "task_id", "attempt"}``                          (the analyzer function)
- ``{"action": "step", "task_id", "step_id", "agent_type", "attempt"}`` (each agent's function)
- ``{"action": "complete", "task_id"}`` / ``{"action": "fail", "task_id", "error": {Error, Cause}}``
- ``{"action": "await_approval", "task_id", "token"}`` (finalize, through ``lambda:invoke.waitForTaskToken``)

Payloads carry ids only; the task, its plan and the step outputs live in the store. A failed step
attempt is recorded in the store (``step_retrying`` when the state's Retry will try again) and its
exception is re-raised, so Step Functions sees the exception's class name (``TransientAgentError``)
and applies the same Retry / Catch clauses the local runner read from the same file.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from agentic.errors import InvalidInput, PermanentAgentError, RetryableStoreError, WriteConflict
from agentic.models import TaskStatus
from agentic.pipeline import STATES_TIMEOUT
from agentic.service.pipeline_ops import PipelineOps

from .powertools import LambdaEvent, LambdaHandler, annotate, instrumented
from .wiring import get_system

#: Longest error message recorded on a failed task (a Lambda's Cause may hold a stack trace).
MAX_ERROR_MESSAGE_CHARS = 2000

_DEFAULT_MESSAGES = {
    "States.Timeout": "the step did not finish within the state's TimeoutSeconds",
    "States.TaskFailed": "the step failed",
}


def _field(event: LambdaEvent, name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"the event has no {name!r}")
    return value


def _attempt(event: LambdaEvent) -> int:
    value = event.get("attempt", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"attempt must be an integer >= 0 (got {value!r})")
    return value


def handle_agent_event(agent_type: str, event: LambdaEvent, ops: PipelineOps | None = None) -> dict[str, Any]:
    """Run what the state machine asked of ``agent_type``'s function; raise to fail the state."""
    ops = ops or get_system().ops
    task_id = _field(event, "task_id")
    annotate("task_id", task_id)
    action = event.get("action")
    if action == "plan":
        if agent_type != "analyzer":
            raise PermanentAgentError(f"the {agent_type} function does not plan; the analyzer does")
        task = ops.plan(task_id)
        # The state machine's NeedsApproval Choice reads this (ResultSelector -> $.planned.approval).
        return {"task_id": task_id, "status": task.status.value, "approval": ops.needs_approval(task)}
    if action != "step":
        raise PermanentAgentError(f"unknown action {action!r} for the {agent_type} function")
    step_id = _field(event, "step_id")
    spec = ops.definition.step(step_id)
    if spec.agent_type != agent_type or event.get("agent_type", agent_type) != agent_type:
        raise PermanentAgentError(f"step {step_id} runs the {spec.agent_type} agent, not {agent_type}")
    annotate("step_id", step_id)
    # Real seconds: the un-jittered upper bound of the wait Step Functions applies before the retry.
    retry_delay = functools.partial(spec.retry_delay, time_scale=1.0)
    outcome = asyncio.run(ops.run_step(task_id, step_id, _attempt(event), retry_delay, None))
    if outcome.error is not None:
        raise outcome.error  # its class name is the error Step Functions' Retry and Catch match
    return {"task_id": task_id, "step_id": step_id, "status": outcome.step.status.value}


def describe_caught_error(error: Any) -> tuple[str, str]:
    """(error name, message) from a Catch's ``{"Error", "Cause"}``.

    For a Lambda error the Cause is the function's error payload as a JSON string
    (``{"errorType", "errorMessage", ...}``); the message becomes ``"<Error>: <errorMessage>"``, the
    same form the local runner records.
    """
    if not isinstance(error, dict):
        return "Error", "the pipeline failed without an error description"
    name = str(error.get("Error") or "Error")
    cause = error.get("Cause")
    detail: str | None = None
    if isinstance(cause, str) and cause.strip():
        try:
            parsed = json.loads(cause)
        except ValueError:
            parsed = cause
        if isinstance(parsed, dict):
            message = parsed.get("errorMessage")
            detail = str(message) if message else None
        elif isinstance(parsed, str):
            detail = parsed
        else:
            detail = cause
    detail = detail or _DEFAULT_MESSAGES.get(name)
    message = f"{name}: {detail}" if detail else name
    return name, message[:MAX_ERROR_MESSAGE_CHARS]


def approval_timeout_message(ops: PipelineOps, task_id: str) -> str | None:
    """The message of a task whose approval wait (AwaitApproval's TimeoutSeconds) ran out, or None
    when the timeout was another state's. The local runner words it the same way."""
    gate = ops.definition.approval
    task = ops.store.get(task_id)
    if gate is None or task is None or task.status is not TaskStatus.AWAITING_APPROVAL:
        return None
    waited = f" within {gate.timeout_seconds:g} s" if gate.timeout_seconds else ""
    return f"{STATES_TIMEOUT}: nobody approved the task{waited}"


def handle_finalize_event(event: LambdaEvent, ops: PipelineOps | None = None) -> dict[str, Any]:
    """``complete``: executing -> completed. ``fail``: record the caught error, the task fails.
    ``await_approval``: executing -> awaiting_approval, keeping the wait's task token."""
    ops = ops or get_system().ops
    task_id = _field(event, "task_id")
    annotate("task_id", task_id)
    action = event.get("action")
    if action == "complete":
        task = ops.complete(task_id)
    elif action == "await_approval":
        # Invoked with .waitForTaskToken: record the token and return; the execution waits until
        # the approve or reject handler answers with that token (or the state's TimeoutSeconds).
        task = ops.request_approval(task_id, _field(event, "token"))
    elif action == "fail":
        name, message = describe_caught_error(event.get("error"))
        if name == STATES_TIMEOUT:
            message = approval_timeout_message(ops, task_id) or message
        task = ops.fail(task_id, name, message)
    else:
        raise InvalidInput(f"unknown action {action!r} for the finalize function")
    return {"task_id": task_id, "status": task.status.value}


def retryable_store_errors(fn: LambdaHandler) -> LambdaHandler:
    """Every store error that is safe to retry leaves the function as one name, ``RetryableStoreError``.

    The DynamoDB store already raises it for throttling and internal errors; a ``WriteConflict`` (a
    conditional write that kept conflicting) is renamed here, so the states' Retry lists one name.
    """

    @functools.wraps(fn)
    def handle(event: LambdaEvent, context: Any) -> Any:
        try:
            return fn(event, context)
        except RetryableStoreError:
            raise
        except WriteConflict as exc:
            raise RetryableStoreError(str(exc)) from exc

    return handle


def agent_handler(agent_type: str) -> LambdaHandler:
    """The Lambda handler of one agent's function."""

    @retryable_store_errors
    def handle(event: LambdaEvent, context: Any) -> dict[str, Any]:
        return handle_agent_event(agent_type, event)

    handle.__name__ = f"{agent_type}_handler"
    return instrumented(handle)


def finalize_handler() -> LambdaHandler:
    """The Lambda handler of the finalize function."""

    @retryable_store_errors
    def handle(event: LambdaEvent, context: Any) -> dict[str, Any]:
        return handle_finalize_event(event)

    return instrumented(handle)
