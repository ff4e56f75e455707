"""The knowledge indexer Lambda and the retriever's knowledge base on AWS.

S3 sends ``s3:ObjectCreated:*`` and ``s3:ObjectRemoved:*`` notifications for keys under the
knowledge prefix to an SQS queue; this function takes them in batches and brings the index object in
line with the named objects (``S3KnowledgeIndexer``: current state, conditional put, retried when
another indexer wins). A batch is applied as a whole, so a failure raises and every message of it
comes back after the visibility timeout (until the queue's ``maxReceiveCount`` moves it to the
dead-letter queue); applying it again is idempotent. A direct S3 notification (no queue) works too.

Uploads under ``knowledge/`` never become tasks: the S3 trigger's notification is filtered to
``tasks/`` and ``triggers.start_task_from_s3_object`` refuses any other key.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

from agentic.adapters.s3_knowledge import IndexReport, S3Knowledge, S3KnowledgeIndexer, S3Objects
from agentic.observability import logger
from agentic.settings import Settings, get_settings

from .powertools import LambdaEvent, LambdaHandler, instrumented


def s3_keys(event: LambdaEvent) -> list[str]:
    """The object keys an SQS batch of S3 notifications (or one S3 notification) names, in order."""
    keys: list[str] = []
    for record in event.get("Records", []):
        if "s3" in record:
            keys.append(unquote_plus(record["s3"]["object"]["key"]))  # notification keys are URL-encoded
            continue
        try:
            body = json.loads(record.get("body", ""))
        except ValueError:
            logger.warning("knowledge message ignored: not JSON", extra={"message_id": record.get("messageId")})
            continue
        if not isinstance(body, dict) or "Records" not in body:  # e.g. the s3:TestEvent
            logger.info("knowledge message ignored: no S3 records", extra={"message_id": record.get("messageId")})
            continue
        keys.extend(s3_keys(body))
    return list(dict.fromkeys(keys))


def build_indexer(settings: Settings, client: Any | None = None) -> S3KnowledgeIndexer:
    if not settings.knowledge_bucket:
        raise ValueError("KNOWLEDGE_BUCKET is not set: the indexer has no bucket to index")
    return S3KnowledgeIndexer(
        S3Objects(settings.knowledge_bucket, client),
        prefix=settings.knowledge_prefix,
        index_key=settings.knowledge_index_key,
        max_file_bytes=settings.knowledge_max_file_bytes,
        passage_words=settings.knowledge_passage_words,
        work_dir=settings.knowledge_cache_dir if settings.knowledge_cache_dir.is_dir() else None,
    )


def build_s3_knowledge(settings: Settings, client: Any | None = None) -> S3Knowledge:
    if not settings.knowledge_bucket:
        raise ValueError("KNOWLEDGE_BUCKET is not set")
    return S3Knowledge(
        S3Objects(settings.knowledge_bucket, client),
        index_key=settings.knowledge_index_key,
        cache_dir=settings.knowledge_cache_dir,
        refresh_seconds=settings.knowledge_refresh_seconds,
        min_score=settings.knowledge_min_score,
    )


@lru_cache(maxsize=1)
def _indexer() -> S3KnowledgeIndexer:
    return build_indexer(get_settings())


def handle_knowledge_event(
    event: LambdaEvent, context: Any, indexer: S3KnowledgeIndexer | None = None
) -> dict[str, Any]:
    """Apply the batch; ``{"indexed", "removed", "skipped", "unchanged", "ignored", "attempts"}``."""
    indexer = indexer or _indexer()
    keys = s3_keys(event)
    ignored = [k for k in keys if indexer.source_of(k) is None]
    if ignored:
        logger.info("keys outside the knowledge prefix ignored", extra={"keys": ignored[:20]})
    report: IndexReport = indexer.apply(keys)
    return {
        "indexed": report.indexed,
        "removed": report.removed,
        "skipped": report.skipped,
        "unchanged": report.unchanged,
        "ignored": ignored,
        "attempts": report.attempts,
    }


def knowledge_indexer_handler() -> LambdaHandler:
    """The Lambda handler of the knowledge indexer function."""

    def handle(event: LambdaEvent, context: Any) -> dict[str, Any]:
        return handle_knowledge_event(event, context)

    return instrumented(handle, correlation_id=lambda event: None)


def reset_indexer() -> None:
    _indexer.cache_clear()
