"""The Lambdas that start tasks from events: objects uploaded to S3 and messages on SQS.

Both call the trigger core (``agentic.triggers``), which derives the task id from the event, creates
the task conditionally and starts the execution named by that id. At-least-once delivery therefore
makes one task and one run.

- **S3** (asynchronous invocation, ``s3:ObjectCreated:*`` under ``tasks/``): every record becomes
  ``start_task_from_s3_object``. An object that can never be a task (empty, unreadable, too large,
  not ``tasks/*.txt|json``) is logged with the reason and dropped: the handler returns normally, so
  Lambda does not retry it. AWS errors (throttling, 5xx, Step Functions refusing a start) propagate
  after every record has been tried, so Lambda's asynchronous retries apply
  (``MaximumRetryAttempts``) and an event that still fails lands in the on-failure queue.
- **SQS** (event source mapping with ``ReportBatchItemFailures``): Powertools ``BatchProcessor``
  runs each record on its own. A record that raises (a poison message, ``UnusableInput``; or an AWS
  error) is reported in ``batchItemFailures`` and comes back after the visibility timeout, until the
  queue's ``maxReceiveCount`` moves it to the dead-letter queue; the other records of the batch
  succeed. When every record fails, ``BatchProcessor`` raises (Powertools' default), so a fully
  failed batch is a function error and Lambda backs off polling.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from agentic.errors import IdempotencyConflict
from agentic.observability import logger, record_metric
from agentic.service.intake import UnusableInput
from agentic.settings import Settings
from agentic.triggers import start_task_from_message, start_task_from_s3_object

from .identity import task_owner
from .powertools import LambdaEvent, LambdaHandler, instrumented
from .wiring import AwsSystem, get_system

#: Errors that no retry can fix: the message is reported failed at once and ends in the DLQ.
_POISON = (UnusableInput, IdempotencyConflict)


def trigger_owner(settings: Settings, context: Any) -> str:
    """Who owns triggered tasks: ``TRIGGER_OWNER`` as an owner (``identity.task_owner``).

    The template always sets it (the TriggerOwner parameter, or the stack's TriggeredTasksRole, which
    callers assume to read these tasks). Unset, it falls back to the account's root ARN, taken from
    the function's own ARN (the Lambda context).
    """
    if settings.trigger_owner:
        return task_owner(settings.trigger_owner, settings.owner_identity)
    arn = str(getattr(context, "invoked_function_arn", "") or "")
    parts = arn.split(":")
    if len(parts) < 5 or not parts[4]:
        return "triggers"
    return f"arn:{parts[1]}:iam::{parts[4]}:root"


# --- S3 ---------------------------------------------------------------------------------------------


def handle_s3_event(event: LambdaEvent, context: Any, system: AwsSystem | None = None) -> dict[str, Any]:
    """Start the task of every created object; ``{"task_ids": [...], "dropped": n}``.

    Raises the first AWS error after trying every record, so the asynchronous invocation is retried
    (records that succeeded are idempotent on the retry).
    """
    system = system or get_system()
    settings = system.settings
    owner = trigger_owner(settings, context)
    task_ids: list[str] = []
    dropped = 0
    errors: list[Exception] = []
    if "Records" not in event:  # e.g. the s3:TestEvent S3 sends when notifications are configured
        logger.info("s3 event without records ignored", extra={"event": event.get("Event")})
        return {"task_ids": task_ids, "dropped": dropped}
    for record in S3Event(event).records:
        s3 = record.s3
        obj = s3.get_object
        key = unquote_plus(obj.key)  # notification keys are URL-encoded ("my+task.json")
        where = {"bucket": s3.bucket.name, "key": key, "version_id": obj.version_id, "event_name": record.event_name}
        logger.set_correlation_id(f"s3://{s3.bucket.name}/{key}")
        if not record.event_name.startswith("ObjectCreated:"):
            logger.info("s3 record ignored: not an object creation", extra=where)
            dropped += 1
            continue
        try:
            task_id = asyncio.run(
                start_task_from_s3_object(
                    system.service,
                    system.documents,
                    owner,
                    bucket=s3.bucket.name,
                    key=key,
                    version_id=obj.version_id,
                    etag=obj.etag.strip('"') or None,
                    max_bytes=settings.max_document_bytes,
                )
            )
        except Exception as exc:  # AWS errors: the invocation fails after the other records
            logger.exception("s3 object not processed; the event will be retried", extra=where)
            errors.append(exc)
            continue
        if task_id is None:  # unusable; the core logged the reason. Not retried.
            record_metric("TriggerInputRejected", 1)
            dropped += 1
        else:
            task_ids.append(task_id)
    if errors:
        raise errors[0]
    return {"task_ids": task_ids, "dropped": dropped}


# --- SQS --------------------------------------------------------------------------------------------


def handle_sqs_event(event: LambdaEvent, context: Any, system: AwsSystem | None = None) -> PartialItemFailureResponse:
    """Start one task per message; failed messages are listed in ``batchItemFailures``."""
    system = system or get_system()
    owner = trigger_owner(system.settings, context)

    def start(record: SQSRecord) -> str:
        logger.set_correlation_id(record.message_id)
        try:
            return asyncio.run(start_task_from_message(system.service, owner, record.body, record.message_id))
        except _POISON as exc:
            record_metric("TriggerInputRejected", 1)
            logger.warning(
                "sqs message rejected; it is reported failed and ends in the dead-letter queue",
                extra={
                    "message_id": record.message_id,
                    "receive_count": record.attributes.approximate_receive_count,
                    "reason": str(exc),
                },
            )
            raise
        except Exception:
            logger.exception(
                "sqs message failed; it is reported failed and comes back after the visibility timeout",
                extra={"message_id": record.message_id, "receive_count": record.attributes.approximate_receive_count},
            )
            raise

    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(event=event, record_handler=start, processor=processor, context=context)


# --- the Lambda handlers ----------------------------------------------------------------------------


def s3_trigger_handler() -> LambdaHandler:
    """The Lambda handler of the S3 trigger function."""

    def handle(event: LambdaEvent, context: Any) -> dict[str, Any]:
        return handle_s3_event(event, context)

    return instrumented(handle)


def sqs_trigger_handler() -> LambdaHandler:
    """The Lambda handler of the SQS trigger function."""

    def handle(event: LambdaEvent, context: Any) -> PartialItemFailureResponse:
        return handle_sqs_event(event, context)

    return instrumented(handle)
