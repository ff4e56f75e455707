"""An owner's page of task keys from the DynamoDB indexes, over every shard of the owner's keys.

An owner's index keys are spread over ``shards`` partitions (``dynamodb_codec.index_shard``), so
the writes of one busy owner (the S3/SQS triggers' owner takes every triggered task) share out over
that many index partitions instead of queueing on one (~1,000 writes/s each). A page then reads
every shard: one Query per shard, in parallel, each for at most ``limit + 1`` keys newest first
after the cursor (any one shard may hold the whole page), merged by ``gsi1sk``
(``created_at#task_id``, unique per task) and cut at ``limit + 1``. The sort key decides the order
in every shard as it does in one, so the merged keys are exactly those one unsharded Query returns,
in the same order, and the cursor keeps its format (created_at, task_id). Shard 0 is the plain key,
so items written before the keys were sharded are read with it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from agentic.adapters.dynamodb_codec import gsi1pk, gsi1sk, gsi2pk
from agentic.adapters.store_codec import decode_cursor
from agentic.errors import InvalidInput
from agentic.models import TaskStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, QueryInputTypeDef

    Item = Mapping[str, AttributeValueTypeDef]

#: The most shards an owner's keys may be spread over (a page reads each of them).
MAX_INDEX_SHARDS = 32
#: Queries in flight at once: below botocore's default pool of 10 connections per client.
_PARALLEL = 8


def invalid_cursor() -> InvalidInput:
    return InvalidInput("cursor is not valid: pass back the next_cursor of a previous page")


def cursor_sort_key(cursor: str) -> str:
    """The ``gsi1sk`` a page's cursor points after (raises InvalidInput for anything else)."""
    parts = decode_cursor(cursor)
    if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
        raise invalid_cursor()
    created_at, task_id = parts
    return gsi1sk(created_at, task_id)


class ShardedIndex:
    """Reads pages of an owner's task keys from ``gsi1`` (all) or ``gsi2`` (one status)."""

    def __init__(self, table_name: str, client: Callable[[], DynamoDBClient], shards: int) -> None:
        if not 1 <= shards <= MAX_INDEX_SHARDS:
            raise ValueError(f"index shards must be between 1 and {MAX_INDEX_SHARDS}")
        self.table_name = table_name
        self.shards = shards
        self._client = client
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def page_keys(self, owner: str, *, limit: int, cursor: str | None, status: TaskStatus | None) -> list[Item]:
        """The first ``limit + 1`` index items after the cursor, newest first (one more than a page,
        to know whether another page exists)."""
        after = cursor_sort_key(cursor) if cursor else None
        if status is None:
            index, hash_name, hashes = "gsi1", "gsi1pk", [gsi1pk(owner, k) for k in range(self.shards)]
        else:
            index, hash_name, hashes = "gsi2", "gsi2pk", [gsi2pk(owner, status, k) for k in range(self.shards)]

        def query(hash_value: str) -> list[Item]:
            return self._query(index, hash_name, hash_value, limit + 1, after)

        if len(hashes) == 1:
            return query(hashes[0])
        shards = list(self._executor().map(query, hashes))
        merged = heapq.merge(*shards, key=lambda item: item["gsi1sk"]["S"], reverse=True)
        return list(itertools.islice(merged, limit + 1))

    def _query(self, index: str, hash_name: str, hash_value: str, limit: int, after: str | None) -> list[Item]:
        condition = "#hash = :hash"
        values: dict[str, AttributeValueTypeDef] = {":hash": {"S": hash_value}}
        if after is not None:
            # gsi1sk is unique per task, so "below the cursor's" is exactly "after it, newest first".
            condition += " AND #sort < :after"
            values[":after"] = {"S": after}
        params: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#hash": hash_name, **({"#sort": "gsi1sk"} if after is not None else {})},
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit,
        }
        try:
            response = self._client().query(**params)
        except ClientError as exc:
            if after is not None and exc.response.get("Error", {}).get("Code") == "ValidationException":
                raise invalid_cursor() from None  # e.g. a key longer than DynamoDB takes
            raise
        items: list[Any] = response.get("Items", [])
        return items

    def _executor(self) -> ThreadPoolExecutor:
        """One pool per store, built on first use (boto3 clients are thread-safe)."""
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=min(self.shards, _PARALLEL), thread_name_prefix="dynamodb-list"
                    )
        return self._pool
