"""The Executor port on AWS: a task runs as a Step Functions execution named by the task id.

A Standard workflow's execution names are unique per state machine (for 90 days after the run), so
``StartExecution(name=task_id)`` runs a task at most once: a repeat while it runs returns the same
execution, and a repeat after it finished raises ``ExecutionAlreadyExists``; both are a no-op here.
The payload carries the id only; the task itself lives in the store.

``ended_execution`` tells whether a task's execution is over (``DescribeExecution``): an execution
that died without recording the task's end (``MarkFailedFailed``, an abort) leaves the task live in
the store, and the AWS service (``agentic.aws.service``) then fails the task with the execution's
error instead of attaching a stream to a task nothing runs.

The approval gate is no wait inside an execution: the run ends at the gate (the task
``awaiting_approval``), ``resume`` starts the rest as a new execution named ``<run>-approved`` that
enters at the gated step, and the wait's time limit is a schedule (``SchedulerApprovalTimer``) that
approve, reject and cancel delete. An Express workflow can neither be described nor stopped: there
``cancel`` leaves the run to the store's fencing (its next write finds the task cancelled) and
``ended_execution`` knows nothing (the service judges by the task's age instead).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentic.errors import AgenticError, Backpressure
from agentic.models import StepStatus, TaskState
from agentic.observability import logger

if TYPE_CHECKING:
    from agentic.adapters.scheduler_timer import SchedulerApprovalTimer

#: StartExecution errors that mean "not now": the task stays pending and can be executed later.
_BUSY_CODES = frozenset({"ExecutionLimitExceeded", "ThrottlingException", "TooManyRequestsException"})


#: Execution statuses of an execution that may still change the task.
_ALIVE = frozenset({"RUNNING", "PENDING_REDRIVE"})


@dataclass(frozen=True)
class ExecutionEnd:
    """How a task's execution ended (``status`` FAILED, TIMED_OUT, ABORTED or SUCCEEDED)."""

    status: str
    error: str
    cause: str


class ExecutorNotConfigured(AgenticError):
    """This function has no state machine to start (a read-only function asked to execute)."""

    code = "executor_not_configured"


class StepFunctionsExecutor:
    def __init__(
        self,
        state_machine_arn: str,
        client: Any | None = None,
        *,
        retry_after_seconds: int = 1,
        workflow_type: str = "STANDARD",
        timer: SchedulerApprovalTimer | None = None,
    ) -> None:
        self.state_machine_arn = state_machine_arn
        self.retry_after_seconds = retry_after_seconds
        self.express = workflow_type == "EXPRESS"
        self.timer = timer
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:  # built on first use, never at import (cold start)
            import boto3
            from botocore.config import Config

            self._client = boto3.client("stepfunctions", config=Config(retries={"mode": "standard"}))
        return self._client

    @staticmethod
    def execution_input(task_id: str) -> str:
        # Always the same string for a task: Step Functions treats a repeated start with the same
        # name and the same input as the same execution.
        return json.dumps({"task_id": task_id}, separators=(",", ":"))

    def start_sync(self, task_id: str) -> str | None:
        """Start the task's execution; its ARN, or None when it had been started before."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.start_execution(
                stateMachineArn=self.state_machine_arn, name=task_id, input=self.execution_input(task_id)
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ExecutionAlreadyExists":
                logger.info("execution already started", extra={"task_id": task_id})
                return None
            if code in _BUSY_CODES:
                raise Backpressure(
                    f"Step Functions refused a new execution now ({code}); the task stays pending: execute it "
                    "again later",
                    self.retry_after_seconds,
                ) from exc
            raise
        arn: str = response["executionArn"]
        logger.info("execution started", extra={"task_id": task_id, "execution_arn": arn})
        self._watch(task_id, task_id)
        return arn

    def _watch(self, task_id: str, execution: str) -> None:
        """An Express execution that dies is reported by nobody: a schedule looks after it."""
        if self.express and self.timer is not None:
            self.timer.watch(task_id, execution)

    async def start(self, task_id: str) -> None:
        await asyncio.to_thread(self.start_sync, task_id)

    # --- task control ---------------------------------------------------------------------------

    @staticmethod
    def execution_name(task: TaskState) -> str:
        """The execution of the task's current run: its id, then ``<id>-retry-<n>`` per retry.

        Named, so that a repeated retry request starts nothing twice (the name is taken).
        """
        return task.task_id if task.retries == 0 else f"{task.task_id}-retry-{task.retries}"

    def _call_ignoring(self, ignore: frozenset[str], call: Callable[[], object], what: str, task_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ignore:
                raise
            logger.info(f"{what}: nothing to do ({code})", extra={"task_id": task_id})

    @staticmethod
    def continuation_name(task: TaskState) -> str:
        """The execution that runs an approved task's rest: its run's name, ``-approved``."""
        return f"{StepFunctionsExecutor.execution_name(task)}-approved"

    @staticmethod
    def current_name(task: TaskState) -> str:
        """The execution that runs the task now: an approved run's continuation, else the run's own.

        (A retry from the gated step of an approved task keeps the approval and runs as the retry's
        own execution; this names its continuation, which never starts: such a run is not watched.)
        """
        if task.approval_granted:
            return StepFunctionsExecutor.continuation_name(task)
        return StepFunctionsExecutor.execution_name(task)

    def _stop(self, name: str, task_id: str) -> None:
        """StopExecution of ``name`` if it runs: a repeated cancel (finishing what a failed one left)
        asks again, and a run that ended (at the approval gate, or done) is left as it ended."""
        from botocore.exceptions import ClientError

        arn = self.execution_arn(name)
        try:
            status = self.client.describe_execution(executionArn=arn).get("status")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") != "ExecutionDoesNotExist":
                raise
            return
        if status != "RUNNING":
            return
        self._call_ignoring(
            frozenset({"ExecutionDoesNotExist"}),
            lambda: self.client.stop_execution(executionArn=arn, error="TaskCancelled", cause="cancelled by a user"),
            "stop execution",
            task_id,
        )

    def _disarm(self, task: TaskState) -> None:
        if self.timer is not None:
            self.timer.disarm(task)

    async def cancel(self, task: TaskState) -> None:
        """Delete the approval timer and StopExecution (Standard); late writes of agent Lambdas still
        running are refused by the store (on Express that is all there is: it cannot be stopped)."""

        def stop() -> None:
            self._disarm(task)
            if self.express:
                return
            if task.approval_granted:
                self._stop(self.continuation_name(task), task.task_id)
            self._stop(self.execution_name(task), task.task_id)

        await asyncio.to_thread(stop)

    async def resume(self, task: TaskState) -> None:
        """Start the rest of an approved task: a new execution entering at the gated step (the first
        step not completed). Named, so a repeated approval starts it at most once on Standard; on
        Express a second start would find the steps done and change nothing."""
        plan = task.execution_plan
        step = next((s.step_id for s in plan.steps if s.status is not StepStatus.COMPLETED), None) if plan else None
        body = {"task_id": task.task_id, "start_at": step}

        def start() -> None:
            self._disarm(task)
            self._call_ignoring(
                frozenset({"ExecutionAlreadyExists"}),
                lambda: self.client.start_execution(
                    stateMachineArn=self.state_machine_arn,
                    name=self.continuation_name(task),
                    input=json.dumps(body, separators=(",", ":")),
                ),
                "start approved execution",
                task.task_id,
            )
            self._watch(task.task_id, self.continuation_name(task))

        await asyncio.to_thread(start)

    async def reject(self, task: TaskState, reason: str | None) -> None:
        """Nothing runs while a task waits: only its approval timer goes."""
        await asyncio.to_thread(self._disarm, task)

    async def retry(self, task: TaskState, start_at: str) -> None:
        """A new execution for the retry, entering the pipeline at ``start_at`` (the ASL's Route).

        Not RedriveExecution: every failure of this pipeline is caught into MarkFailed and ends in
        a Fail state, which is where a redrive would restart, and cancelled runs are aborted ones.
        """
        body = {"task_id": task.task_id, "start_at": start_at}

        def start() -> None:
            self.client.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=self.execution_name(task),
                input=json.dumps(body, separators=(",", ":")),
            )
            self._watch(task.task_id, self.execution_name(task))

        await asyncio.to_thread(
            self._call_ignoring, frozenset({"ExecutionAlreadyExists"}), start, "start retry execution", task.task_id
        )

    def execution_arn(self, task_id: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{task_id}"

    def ended_execution(self, name: str, fallback: str | None = None) -> ExecutionEnd | None:
        """How the execution ``name`` ended (``execution_name(task)``: a task's current run), or None
        while it runs (or may be redriven, or cannot be described: Express). ``fallback``: the
        execution to describe when ``name`` was never started (an approved run's continuation)."""
        from botocore.exceptions import ClientError

        if self.express:
            return None
        try:
            response = self.client.describe_execution(executionArn=self.execution_arn(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") != "ExecutionDoesNotExist":
                raise
            if fallback is not None:
                return self.ended_execution(fallback)
            # Started once (the name is taken) but no longer described: its history has expired.
            return ExecutionEnd("UNKNOWN", "ExecutionNotFound", "the task's execution no longer exists")
        status = str(response.get("status", ""))
        if status in _ALIVE:
            return None
        return ExecutionEnd(
            status,
            str(response.get("error") or f"Execution{status.title().replace('_', '')}"),
            str(response.get("cause") or f"the execution ended {status}"),
        )


class UnconfiguredExecutor:
    """The executor of a function deployed without a state machine: starting anything is an error."""

    async def start(self, task_id: str) -> None:
        raise ExecutorNotConfigured("this function cannot start tasks: STATE_MACHINE_ARN is not set")

    async def cancel(self, task: TaskState) -> None:
        raise ExecutorNotConfigured("this function cannot stop tasks: STATE_MACHINE_ARN is not set")

    async def resume(self, task: TaskState) -> None:
        raise ExecutorNotConfigured("this function cannot resume tasks: STATE_MACHINE_ARN is not set")

    async def reject(self, task: TaskState, reason: str | None) -> None:
        raise ExecutorNotConfigured("this function cannot end approvals: STATE_MACHINE_ARN is not set")

    async def retry(self, task: TaskState, start_at: str) -> None:
        raise ExecutorNotConfigured("this function cannot retry tasks: STATE_MACHINE_ARN is not set")
