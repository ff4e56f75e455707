"""Tasks started by events: an object uploaded to S3, a message on SQS.

At-least-once delivery is expected: the task id derives from the event (bucket/key/version or the
message's idempotency key), creation is conditional and starting is idempotent, so a duplicate makes
one task and one run. Input that can never become a task raises ``UnusableInput``; the S3 handler
logs and drops it, the SQS handler reports it as a failed item so it ends in the dead-letter queue.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from agentic.observability import logger
from agentic.service.intake import UnusableInput, description_from_document, parse_task_message
from agentic.service.tasks import MAX_IDEMPOTENCY_KEY_CHARS, TaskService

S3_TASK_PREFIX = "tasks/"
S3_TASK_SUFFIXES = (".txt", ".json")


class DocumentReader(Protocol):
    def read(self, bucket: str, key: str, version_id: str | None, max_bytes: int) -> bytes:
        """The object's bytes; ``UnusableInput`` if it is gone or larger than ``max_bytes``."""
        ...


def s3_idempotency_key(bucket: str, key: str, version_id: str | None, etag: str | None) -> str:
    """The object version's key; hashed when longer than an idempotency key may be (S3 keys reach 1024 bytes)."""
    identity = f"s3://{bucket}/{key}?version={version_id or ''}&etag={etag or ''}"
    if len(identity) <= MAX_IDEMPOTENCY_KEY_CHARS:
        return identity
    return "s3-sha256:" + hashlib.sha256(identity.encode()).hexdigest()


async def start_task_from_s3_object(
    service: TaskService,
    reader: DocumentReader,
    owner: str,
    *,
    bucket: str,
    key: str,
    version_id: str | None,
    etag: str | None,
    max_bytes: int,
) -> str | None:
    """Create and start the task an uploaded object describes; None if the object is not a task."""
    where = {"bucket": bucket, "key": key, "version_id": version_id}
    if not key.startswith(S3_TASK_PREFIX) or not key.endswith(S3_TASK_SUFFIXES):
        logger.info("s3 object ignored: not tasks/*.txt or tasks/*.json", extra=where)
        return None
    try:
        description = description_from_document(key, reader.read(bucket, key, version_id, max_bytes), max_bytes)
    except UnusableInput as exc:
        # Logged with the reason and dropped: retrying cannot make the object usable.
        logger.warning("s3 object rejected", extra={**where, "reason": str(exc)})
        return None
    task, created = await service.create(
        owner, description, idempotency_key=s3_idempotency_key(bucket, key, version_id, etag), source="s3"
    )
    await service.execute(owner, task.task_id)
    logger.info("task from s3 object", extra={**where, "task_id": task.task_id, "duplicate": not created})
    return task.task_id


async def start_task_from_message(service: TaskService, owner: str, body: str, message_id: str) -> str:
    """Create and start the task an SQS message describes (``UnusableInput`` for a poison message)."""
    message = parse_task_message(body)
    key = message.idempotency_key or message_id
    task, created = await service.create(owner, message.description, idempotency_key=key, source="sqs")
    await service.execute(owner, task.task_id)
    logger.info(
        "task from sqs message", extra={"task_id": task.task_id, "message_id": message_id, "duplicate": not created}
    )
    return task.task_id
