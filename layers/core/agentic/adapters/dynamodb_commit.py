"""The DynamoDB store's base: its client, its read of a task item, and the commit of one write of it.

Every write of a task goes through here: the task item is read (or recalled from ``ItemMemory``:
the item this store last read or wrote), and a write is ONE conditional UpdateItem of it, after the
plain puts of the items it will refer to (``_commit``). The read-check-write loops that use them are
in ``dynamodb_update``; the table layout is described in ``dynamodb_store``.

Condition failures and cancelled transactions are recognised in one place (``conflict_codes``);
no ``ClientError`` for them leaves this module. Throttling, internal errors and lost connections
leave it as ``RetryableStoreError`` (``retryable``): nothing was applied, the caller may retry.
"""

from __future__ import annotations

import builtins
import random
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from agentic.adapters.dynamodb_codec import (
    MAX_CURSOR,
    key_sk,
    task_key,
    task_pk,
)
from agentic.adapters.dynamodb_listing import ShardedIndex
from agentic.adapters.dynamodb_log import (
    InlineLog,
    LogWrite,
    PendingEvent,
    plan_append,
)
from agentic.adapters.dynamodb_outputs import (
    OutputTexts,
)
from agentic.adapters.dynamodb_writes import (
    ItemMemory,
    conflict_codes,
    request_token,
)
from agentic.errors import (
    InvalidInput,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        TransactWriteItemTypeDef,
        UpdateTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]

#: Read-modify-write attempts before giving up on a task that keeps changing underneath. Eight let
#: one of four threads writing one task lose every round about once in fifteen runs on a loaded
#: 2-core machine (tests/functional/test_dynamodb_event_log.py); twelve, none in thirty. The
#: backoff between them (full jitter, at most 0.5 s) bounds the wait to a few seconds.
MAX_ATTEMPTS = 12


def _number(item: Item, name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value is not None and "N" in value else None


def _pause(attempt: int) -> None:
    """Full-jitter backoff between read-modify-write attempts (we run in a worker thread)."""
    time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))


def _seq_condition(seq: int | None, values: dict[str, AttributeValueTypeDef]) -> str:
    """The condition that ``event_seq`` is still ``seq`` (every write of the log is conditioned on it)."""
    if seq is None:
        return "attribute_not_exists(#seq)"
    values[":seq"] = {"N": str(seq)}
    return "#seq = :seq"


class TaskItemCommits:
    """The client, the task item's read and remembered version, and the commit of one write of it."""

    def __init__(
        self, table_name: str, client: Any | None = None, *, event_ttl_days: int = 30, index_shards: int = 1
    ) -> None:
        if event_ttl_days < 1:
            raise ValueError("event_ttl_days must be at least 1")
        self.table_name = table_name
        # Every owner's index keys are spread over this many shards (dynamodb_listing).
        self._index = ShardedIndex(table_name, lambda: self.client, index_shards)
        self.event_ttl_seconds = event_ttl_days * 86400
        self._client: DynamoDBClient | None = client
        self._client_lock = threading.Lock()
        self._memory = ItemMemory()
        self._outputs = OutputTexts(table_name, lambda: self.client, attempts=MAX_ATTEMPTS, pause=_pause)

    @property
    def client(self) -> DynamoDBClient:
        """The boto3 client, built on first use (never at import: it costs cold-start time)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3  # deferred on purpose: importing and building it costs cold-start time

                    self._client = boto3.client("dynamodb")
        return self._client

    def _attempt(self, call: Callable[[], object]) -> builtins.list[str] | None:
        """Run one conditional write: None if it succeeded, else the per-item conflict codes."""
        try:
            call()
        except ClientError as exc:
            codes = conflict_codes(exc)
            if codes is None:
                raise
            return codes
        return None

    def _expires_at(self) -> str:
        return str(int(time.time()) + self.event_ttl_seconds)

    def _read_task_item(self, task_id: str, *, consistent: bool = True) -> Item | None:
        response = self.client.get_item(TableName=self.table_name, Key=task_key(task_id), ConsistentRead=consistent)
        item = response.get("Item")
        if not consistent:
            # Possibly an older version: never remembered (an update would start from it and fail its
            # condition, a billed write) and never a reason to forget the item remembered.
            return item if item and "doc" in item else None
        if not item or "doc" not in item:
            self._memory.forget(task_id)
            return None
        self._memory.keep(task_id, item)
        return item

    def _plan_append(self, task_id: str, item: Item, batch: Sequence[PendingEvent], expires: str) -> LogWrite:
        seq = _number(item, "event_seq") or 0
        if seq + len(batch) > MAX_CURSOR:
            raise InvalidInput(f"task {task_id} has too many events")
        return plan_append(self.table_name, task_id, InlineLog.of(item), batch, expires)

    def _commit(
        self,
        task_id: str,
        change: UpdateTypeDef,
        batch: Sequence[PendingEvent],
        in_set: Sequence[PendingEvent],
        before: Sequence[TransactWriteItemTypeDef],
        log_write: LogWrite | None,
    ) -> tuple[bool, set[PendingEvent]]:
        """Write what must precede the task item, then the task item's conditional update.

        First the items the update will refer to (outputs, spilled event data, a flushed segment of
        committed events): plain puts, harmless when the update does not follow. Then ONE
        conditional UpdateItem of the task item, its state and its new events together; only a
        keyed event past the task item's key set makes it a transaction (with that ``KEY#`` item,
        which must be written together with the event, or a replay would write the event again).

        Returns whether the update applied, else the events whose key was already written.
        """
        for write in before:
            if "Put" in write:
                self.client.put_item(**cast("Any", write["Put"]))
            else:
                self.client.update_item(**cast("Any", write["Update"]))
        for put in log_write.puts if log_write is not None else ():
            self.client.put_item(**put)
        items: builtins.list[TransactWriteItemTypeDef] = [{"Update": change}]
        key_slots: dict[int, PendingEvent] = {}
        for pending in batch:
            key = pending.event.key
            if key is not None and all(p is not pending for p in in_set):
                key_slots[len(items)] = pending
                items.append(
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {
                                "pk": {"S": task_pk(task_id)},
                                "sk": {"S": key_sk(key)},
                                "expires_at": {"N": self._expires_at()},
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
        if len(items) == 1:
            codes = self._attempt(partial(self.client.update_item, **change))
        else:
            token = request_token(task_id, items)
            codes = self._attempt(
                lambda: self.client.transact_write_items(TransactItems=items, ClientRequestToken=token)
            )
        if codes is None:
            return True, set()
        already = {
            pending
            for slot, pending in key_slots.items()
            if slot < len(codes) and codes[slot] == "ConditionalCheckFailed"
        }
        return False, already
