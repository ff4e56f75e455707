"""The Lambdas the state machine invokes: one per agent, plus finalize (fail, and the timers).

Their inputs are the Task states' ``Parameters`` in ``statemachine/pipeline.asl.json``:

- ``{"action": "plan", "task_id", "attempt"}``                          (the analyzer function)
- ``{"action": "step", "task_id", "step_id", "agent_type", "attempt"}`` (each agent's function); the
  last step's invocation also completes the task, and the step behind the approval gate ends the
  run there (``awaiting_approval``, its timeout scheduled) until someone approves
- ``{"action": "fail", "task_id", "error": {Error, Cause}}``            (finalize, the Catch)

and, outside the state machine, to finalize:

- ``{"action": "approval_timeout", "task_id", "retries"}``: the approval's one-time schedule fired
- an EventBridge "Step Functions Execution Status Change" event (FAILED, TIMED_OUT, ABORTED;
  Standard only): an execution ended without finishing its task (``MarkFailedFailed``, a timeout),
  which is failed now rather than when someone next executes it
- ``{"action": "execution_watchdog", "task_id", "execution"}``: an Express execution's 5 minutes
  are over (Express sends no status events); if it was the task's current run and left the task
  live, the task is failed

Payloads carry ids only; the task, its plan and the step outputs live in the store. A failed step
attempt is recorded in the store (``step_retrying`` when the state's Retry will try again) and its
exception is re-raised, so Step Functions sees the exception's class name (``TransientAgentError``)
and applies the same Retry / Catch clauses the local runner read from the same file.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from agentic.adapters.scheduler_timer import APPROVAL_TIMEOUT_ACTION, WATCHDOG_ACTION
from agentic.errors import InvalidInput, InvalidTransition, PermanentAgentError, RetryableStoreError, WriteConflict
from agentic.models import LIVE_STATUSES, TaskStatus
from agentic.observability import logger
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
        return {"task_id": task_id, "status": task.status.value}
    if action != "step":
        raise PermanentAgentError(f"unknown action {action!r} for the {agent_type} function")
    step_id = _field(event, "step_id")
    spec = ops.definition.step(step_id)
    if spec.agent_type != agent_type or event.get("agent_type", agent_type) != agent_type:
        raise PermanentAgentError(f"step {step_id} runs the {spec.agent_type} agent, not {agent_type}")
    annotate("step_id", step_id)
    gate = ops.definition.approval
    if gate is not None and gate.before_step == step_id and stop_at_gate(ops, task_id):
        return {"task_id": task_id, "step_id": step_id, "status": TaskStatus.AWAITING_APPROVAL.value}
    # Real seconds: the un-jittered upper bound of the wait Step Functions applies before the retry.
    retry_delay = functools.partial(spec.retry_delay, time_scale=1.0)
    import asyncio  # a step's first call only: planning and finalize never run a loop

    try:
        outcome = asyncio.run(ops.run_step(task_id, step_id, _attempt(event), retry_delay, None))
    except InvalidTransition:
        current = ops.store.get(task_id)
        if current is not None and current.status is TaskStatus.COMPLETED:
            # A second delivery of a state (Express runs each at least once) or a second execution
            # of a finished task: everything it would do is done.
            return {"task_id": task_id, "step_id": step_id, "status": current.status.value}
        raise
    if outcome.error is not None:
        raise outcome.error  # its class name is the error Step Functions' Retry and Catch match
    if spec == ops.definition.steps[-1]:
        # The end of the pipeline, in the same invocation: a state of its own would be one more
        # billed transition per task. A repeat (a retried Lambda, a second delivery) writes nothing.
        task = ops.complete(task_id)
        return {"task_id": task_id, "step_id": step_id, "status": task.status.value}
    return {"task_id": task_id, "step_id": step_id, "status": outcome.step.status.value}


def stop_at_gate(ops: PipelineOps, task_id: str) -> bool:
    """At the approval gate: True when the run ends here, the task awaiting a person (recorded, its
    timeout scheduled; both repeatable), False when it goes on (approved, or never asked)."""
    task = ops.store.get(task_id)
    if task is None:
        return False  # run_step reports it
    if task.status is TaskStatus.EXECUTING and ops.needs_approval(task):
        task = ops.request_approval(task_id)
    elif task.status is not TaskStatus.AWAITING_APPROVAL:
        return False
    timer = get_system().timer
    if timer is not None:
        timer.arm(task)
    return True


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


def approval_timeout_message(ops: PipelineOps) -> str:
    """The message of a task nobody approved in time (the local runner words it the same way)."""
    gate = ops.definition.approval
    waited = f" within {gate.timeout_seconds:g} s" if gate is not None and gate.timeout_seconds else ""
    return f"{STATES_TIMEOUT}: nobody approved the task{waited}"


def handle_approval_timeout(event: LambdaEvent, ops: PipelineOps) -> dict[str, Any]:
    """The approval's schedule fired: fail the task if that wait is still on (same run, deadline past)."""
    import time

    task_id = _field(event, "task_id")
    task = ops.store.get(task_id)
    if task is None:
        return {"task_id": task_id, "status": "unknown"}
    waiting = (
        task.status is TaskStatus.AWAITING_APPROVAL
        and task.retries == event.get("retries", task.retries)
        and (task.approval_deadline is None or task.approval_deadline <= time.time() + 1)
    )
    if not waiting:
        return {"task_id": task_id, "status": task.status.value}
    try:
        task = ops.fail(task_id, STATES_TIMEOUT, approval_timeout_message(ops), expect={TaskStatus.AWAITING_APPROVAL})
    except InvalidTransition:  # a person decided meanwhile
        task = _reload(ops, task_id)
    return {"task_id": task_id, "status": task.status.value}


def _reload(ops: PipelineOps, task_id: str) -> Any:
    task = ops.store.get(task_id)
    assert task is not None  # it was read a moment ago, and tasks are never deleted while live
    return task


#: Execution statuses of the status-change events the template's rule sends (not SUCCEEDED).
_DEAD = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})


def handle_execution_ended(event: LambdaEvent, ops: PipelineOps) -> dict[str, Any]:
    """An execution ended badly (EventBridge): fail its task if that run left it live."""
    from agentic.adapters.sfn_executor import ExecutionEnd

    detail = event.get("detail") or {}
    status, name = str(detail.get("status", "")), str(detail.get("name", ""))
    try:
        task_id = str(json.loads(detail.get("input") or "{}").get("task_id") or "")
    except ValueError:
        task_id = ""
    if status not in _DEAD or not task_id:
        return {"task_id": task_id or None, "status": "ignored"}
    end = ExecutionEnd(status, str(detail.get("error") or f"Execution{status.title()}"), str(detail.get("cause") or ""))
    return fail_dead_run(ops, task_id, name, end)


def fail_dead_run(ops: PipelineOps, task_id: str, name: str, end: Any) -> dict[str, Any]:
    """Fail the task if the ended execution ``name`` is its current run and left it live.

    A cancelled task's aborted run, a retried task's earlier run, the run that ended at the approval
    gate (an approved task runs in its continuation) and a task awaiting approval (no execution
    runs it) are left alone.
    """
    from agentic.adapters.sfn_executor import StepFunctionsExecutor

    from .service import dead_execution_message

    annotate("task_id", task_id)
    task = ops.store.get(task_id)
    if task is None:
        return {"task_id": task_id, "status": "unknown"}
    current = (
        name == StepFunctionsExecutor.current_name(task)
        and task.status in LIVE_STATUSES
        and task.status is not TaskStatus.AWAITING_APPROVAL
    )
    if not current:
        return {"task_id": task_id, "status": task.status.value}
    logger.error("an execution ended without finishing its task; the task is failed", extra={"task_id": task_id})
    try:
        task = ops.fail(task_id, end.error, dead_execution_message(end))
    except InvalidTransition:
        task = _reload(ops, task_id)
    return {"task_id": task_id, "status": task.status.value}


def handle_watchdog(event: LambdaEvent, ops: PipelineOps) -> dict[str, Any]:
    """An Express execution's time is up: whatever it did, it runs no more."""
    from agentic.adapters.sfn_executor import ExecutionEnd

    end = ExecutionEnd("TIMED_OUT", STATES_TIMEOUT, "the Express execution did not finish the task within 5 minutes")
    return fail_dead_run(ops, _field(event, "task_id"), _field(event, "execution"), end)


def handle_finalize_event(event: LambdaEvent, ops: PipelineOps | None = None) -> dict[str, Any]:
    """``fail``: record the caught error, the task fails. ``approval_timeout``: the approval's
    schedule fired. An EventBridge execution status change: a run that died."""
    ops = ops or get_system().ops
    if event.get("source") == "aws.states":
        return handle_execution_ended(event, ops)
    task_id = _field(event, "task_id")
    annotate("task_id", task_id)
    action = event.get("action")
    if action == "complete":  # an execution started before the last step completed tasks itself
        task = ops.complete(task_id)
    elif action == APPROVAL_TIMEOUT_ACTION:
        return handle_approval_timeout(event, ops)
    elif action == WATCHDOG_ACTION:
        return handle_watchdog(event, ops)
    elif action == "fail":
        name, message = describe_caught_error(event.get("error"))
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
