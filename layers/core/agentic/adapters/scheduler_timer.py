"""The approval timeout on AWS: a one-time EventBridge Scheduler schedule per wait.

An execution no longer waits for a person (Express cannot wait for a task token, and a Standard
wait is billed for nothing): the gated step's Lambda records the task ``awaiting_approval`` and the
execution ends. What stays is the deadline. At the gate this adapter creates a schedule
``at(<deadline>)`` that invokes the finalize function with ``{"action": "approval_timeout",
"task_id", "retries"}``; approve, reject and cancel delete it. A schedule that fires anyway (a
delete that failed) finds the task no longer waiting, or in another run, and does nothing.

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
        from botocore.exceptions import ClientError

        if task.approval_deadline is None:
            return  # the gate has no time limit
        at = datetime.datetime.fromtimestamp(task.approval_deadline, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        payload = {"action": APPROVAL_TIMEOUT_ACTION, "task_id": task.task_id, "retries": task.retries}
        try:
            self.client.create_schedule(
                Name=self.schedule_name(task),
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
            logger.info("approval timeout already scheduled", extra={"task_id": task.task_id})
            return
        logger.info("approval timeout scheduled", extra={"task_id": task.task_id, "at": at})

    def disarm(self, task: TaskState) -> None:
        """Delete the wait's schedule (a person decided, or the task was cancelled)."""
        from botocore.exceptions import ClientError

        try:
            self.client.delete_schedule(Name=self.schedule_name(task), GroupName=self.group)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
