"""The approval timeout on AWS: a one-time EventBridge Scheduler schedule per wait.

An execution no longer waits for a person (Express cannot wait for a task token, and a Standard
wait is billed for nothing): the gated step's Lambda records the task ``awaiting_approval`` and the
execution ends. What stays is the deadline. At the gate this adapter creates a schedule
``at(<deadline>)`` that invokes the finalize function with ``{"action": "approval_timeout",
"task_id", "retries"}``; approve, reject and cancel delete it. A schedule that fires anyway (a
delete that failed) finds the task no longer waiting, or in another run, and does nothing.

The same mechanism watches Express executions, which nothing else reports when they die (no
execution status events, no DescribeExecution): ``watch`` schedules ``{"action":
"execution_watchdog", "task_id", "execution"}`` a little past the 5 minutes an Express execution may
run; if that execution is still the task's current run and the task is still live, it died.

Both calls may be repeated: creating a schedule that exists (``ConflictException``) and deleting
one that is gone (``ResourceNotFoundException``) are no-ops. A fired schedule deletes itself
(``ActionAfterCompletion: DELETE``).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from agentic.models import TaskState
from agentic.observability import logger

APPROVAL_TIMEOUT_ACTION = "approval_timeout"
WATCHDOG_ACTION = "execution_watchdog"
#: An Express execution runs for at most 5 minutes; its watchdog looks a minute later.
EXPRESS_WATCH_SECONDS = 300 + 60


class SchedulerApprovalTimer:
    def __init__(self, target_arn: str, role_arn: str, group: str = "default", client: Any | None = None) -> None:
        self.target_arn = target_arn
        self.role_arn = role_arn
        self.group = group
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:  # built on first use, never at import (cold start)
            import boto3
            from botocore.config import Config

            self._client = boto3.client("scheduler", config=Config(retries={"mode": "standard"}))
        return self._client

    @staticmethod
    def schedule_name(task: TaskState) -> str:
        """One schedule per wait: the task and its run (a retried task may wait again)."""
        return f"approval-{task.task_id}-{task.retries}"

    def arm(self, task: TaskState) -> None:
        """Fail the task with States.Timeout at its ``approval_deadline`` unless a person decides first."""
        if task.approval_deadline is None:
            return  # the gate has no time limit
        payload = {"action": APPROVAL_TIMEOUT_ACTION, "task_id": task.task_id, "retries": task.retries}
        self._create(self.schedule_name(task), task.approval_deadline, payload, task.task_id)

    def watch(self, task_id: str, execution: str, *, now: float | None = None) -> None:
        """Look at the task once the Express execution ``execution`` must have ended."""
        import time

        at = (now if now is not None else time.time()) + EXPRESS_WATCH_SECONDS
        payload = {"action": WATCHDOG_ACTION, "task_id": task_id, "execution": execution}
        self._create(f"run-{execution}", at, payload, task_id)

    def _create(self, name: str, when: float, payload: dict[str, Any], task_id: str) -> None:
        from botocore.exceptions import ClientError

        at = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        try:
            self.client.create_schedule(
                Name=name,
                GroupName=self.group,
                ScheduleExpression=f"at({at})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={
                    "Arn": self.target_arn,
                    "RoleArn": self.role_arn,
                    "Input": json.dumps(payload, separators=(",", ":")),
                    "RetryPolicy": {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 86400},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConflictException":
                raise
            logger.info("already scheduled", extra={"task_id": task_id, "schedule": name})
            return
        logger.info("scheduled", extra={"task_id": task_id, "schedule": name, "at": at})

    def disarm(self, task: TaskState) -> None:
        """Delete the wait's schedule (a person decided, or the task was cancelled)."""
        from botocore.exceptions import ClientError

        try:
            self.client.delete_schedule(Name=self.schedule_name(task), GroupName=self.group)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
