"""The AWS store: one DynamoDB table holding every task, its event log and its idempotency keys.

Table layout (``template.yaml`` declares the same table; ``create_table`` builds it for tests)::

    pk (S, hash)      sk (S, range)            attributes
    TASK#<task_id>    TASK                     doc (B: the TaskState as deflated JSON, without
                                               step outputs nor defaults: ``dynamodb_codec``),
                                               final_out (S, the sk of the output that is the
                                               final output), status, version (N), event_seq (N),
                                               ek (BS: 8-byte digests of up to 24 event keys
                                               written), kv = 1 (the task keeps keys in ek),
                                               gsi1pk = OWNER#<owner>,
                                               gsi2pk = OWNER#<owner>#STATUS#<status>
                                               gsi1sk = <created_at, fixed-width UTC>#<task_id>
    TASK#<task_id>    KEY#<event key>          expires_at (N): this idempotency key was written
                                               (a key past the 24 of ek, or of an older task)
    TASK#<task_id>    OUT#<step_id>#<attempts> text (S, raw UTF-8), expires_at (N): the output of
                                               the step's attempt that completed it
    TASK#<task_id>    EVT#<cursor, 12 digits>  event_type, timestamp, data (JSON), expires_at (N),
                                               ref + ref_field (S, S): data[ref_field] is the text
                                               of the OUT# item ref

    GSI gsi1: hash gsi1pk, range gsi1sk (an owner's tasks, newest first).
    GSI gsi2: hash gsi2pk, range gsi1sk (an owner's tasks in one status, newest first).
    Both project keys only: a list reads one bounded page of keys, then the page's task items
    (BatchGetItem), so a task document (up to 350 KB) is written once per update, not once per index.
    TTL on expires_at: events and keys expire event_ttl_days after they were written; the task item's
    expiry moves forward with every update, so a task never expires before the end of its log.
    On-demand billing.

Step outputs are stored once, as their own items (``dynamodb_outputs``): the transaction that completes a step puts its
``OUT#`` item (its text as a raw string, so a 3-byte character costs 3 bytes, not a 6-byte JSON
escape) and its ``partial_output`` event refers to it; the task item holds no output, and the final
output is a reference to the last step's ``OUT#`` item (the ``task_completed`` event refers to it
too). The task item therefore stays a few KB however long the outputs are, and every update, which
rewrites it, costs the same. ``get`` and ``read_events`` put the texts back (one BatchGetItem; an
output never changes once written, so a container keeps the ones it read); ``list`` and
``list_in_status`` put back the final output only, as the SQLite store's listings do. An ``OUT#``
item expires like the events, ``event_ttl_days`` after it was written; a retried task's kept
outputs (which its steps run again read) are given the task's expiry again by the retry's write.

How the contract of ``TaskStore`` holds here:

- A state change is an UpdateItem conditioned on the task existing, its status being one the
  caller expects and its ``version`` being the one read (optimistic concurrency: a concurrent write
  makes it read again and retry; a status that no longer matches raises ``InvalidTransition``).
  The item read may be the one this store last read or wrote (``ItemMemory``): the conditions make
  that safe, and a refusal is only ever decided on a fresh read.
- An event is written in one transaction with the task item's ``event_seq`` moving from the value
  read to the event's cursor, its key (when it has one) added to ``ek`` by the same write, or past
  the set's bound a ``KEY#`` item in the transaction. Cursors are therefore
  contiguous and strictly increasing, and cursor n is visible before n + 1 can be allocated, so a
  stream that has read up to n can never miss an event that commits later with a lower cursor
  (allocating with ``ADD`` and putting the event afterwards would allow exactly that).
- ``update`` writes the state change and its events in the same transaction, as SQLite does: a
  stream never sees an event before the state it announces, and a crash cannot keep one without the
  other.

- Every transaction carries a deterministic ``ClientRequestToken`` (``request_token``), so a write
  that committed but whose response was lost is answered as success when it is sent again.

Condition failures and cancelled transactions are recognised in one place (``conflict_codes``);
no ``ClientError`` for them leaves this module. Throttling, internal errors and lost connections
leave it as ``RetryableStoreError`` (``retryable``): nothing was applied, the caller may retry.
"""

from __future__ import annotations

import builtins
import json
import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

# Shared with the SQLite store: the cursor format and the payload bound (MAX_PAYLOAD_BYTES, 350 KB of
# a document or an event's data, leaving room in DynamoDB's 400 KB item for the other attributes).
from agentic.adapters.dynamodb_codec import (
    EVENT_PREFIX,
    KEY_SET_MARK,
    KEY_SET_MAX,
    MAX_CURSOR,
    TASK_SK,
    event_sk,
    gsi1pk,
    gsi1sk,
    gsi2pk,
    key_digest,
    key_set,
    key_sk,
    pack_doc,
    parse_task,
    task_key,
    task_pk,
)
from agentic.adapters.dynamodb_outputs import (
    OutputTexts,
    completed_outputs,
    dump_task,
    final_out,
    final_output_sk,
    output_expiry,
    output_put,
    reference,
)
from agentic.adapters.dynamodb_writes import ItemMemory, conflict_codes, request_token, retryable
from agentic.adapters.store_keys import check_payload_size, decode_cursor, encode_cursor, sort_key
from agentic.errors import (
    InvalidInput,
    InvalidTransition,
    RetryableStoreError,
    TaskAlreadyExists,
    TaskNotFound,
    WriteConflict,
)
from agentic.models import EventType, NewEvent, StreamEvent, TaskPage, TaskState, TaskStatus, utcnow
from agentic.ports import Mutation

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        KeysAndAttributesTypeDef,
        QueryInputTypeDef,
        ScanInputTypeDef,
        TransactWriteItemTypeDef,
        UpdateTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]

#: Read-modify-write attempts before giving up on a task that keeps changing underneath.
MAX_ATTEMPTS = 8
#: A TransactWriteItems call holds at most 100 items and 4 MB; stay below both.
_TRANSACTION_MAX_ITEMS = 100
_TRANSACTION_MAX_BYTES = 3_500_000
_ITEM_OVERHEAD_BYTES = 256
#: BatchGetItem reads at most 100 keys per call: the largest page.
_BATCH_GET_MAX_KEYS = 100


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the table exactly as ``template.yaml`` declares it (used by tests and local tools)."""
    client.create_table(
        TableName=table_name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "gsi1pk", "AttributeType": "S"},
            {"AttributeName": "gsi1sk", "AttributeType": "S"},
            {"AttributeName": "gsi2pk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "gsi1",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            {
                "IndexName": "gsi2",
                "KeySchema": [
                    {"AttributeName": "gsi2pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    client.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


# --- helpers --------------------------------------------------------------------------------------


def _number(item: Item, name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value is not None and "N" in value else None


def _invalid_cursor() -> InvalidInput:
    return InvalidInput("cursor is not valid: pass back the next_cursor of a previous page")


def _pause(attempt: int) -> None:
    """Full-jitter backoff between read-modify-write attempts (we run in a worker thread)."""
    time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))


@dataclass(frozen=True, eq=False)
class _PendingEvent:
    """An event checked and serialised, waiting for its cursor (compared by identity)."""

    event: NewEvent
    data: str
    #: (field, OUT# sk): ``data`` lacks that field, which is the text of that output item.
    ref: tuple[str, str] | None = None

    @classmethod
    def of(cls, event: NewEvent, ref: tuple[str, str] | None = None) -> _PendingEvent:
        stored = event.data if ref is None else {k: v for k, v in event.data.items() if k != ref[0]}
        data = json.dumps(stored, default=str, ensure_ascii=False)  # 3 bytes a CJK character, not 6
        check_payload_size(f"the data of a {event.event_type.value} event of task {event.task_id}", data)
        return cls(event, data, ref)

    @property
    def cost(self) -> tuple[int, int]:
        """(items, bytes) this event adds to a transaction."""
        return (1 if self.event.key is None else 2), len(self.data) + 2 * _ITEM_OVERHEAD_BYTES

    def written(self, cursor: int) -> StreamEvent:
        return StreamEvent(
            event_type=self.event.event_type,
            task_id=self.event.task_id,
            timestamp=self.event.timestamp,
            cursor=cursor,
            data=self.event.data,
        )


def _keys_for_set(batch: Sequence[_PendingEvent], known: set[bytes] | None) -> builtins.list[_PendingEvent]:
    """The keyed events of ``batch`` whose keys go into the task item's key set (while it has room).

    Writing a key there costs nothing more (the task item is written with the events anyway) where a
    ``KEY#`` item costs 2 WRU in the transaction. Every write of the set also moves ``event_seq``, on
    which every event write is conditioned, so checking the set read before the write is exact.
    """
    if known is None:
        return []
    room = KEY_SET_MAX - len(known)
    chosen: builtins.list[_PendingEvent] = []
    digests: set[bytes] = set()
    for pending in batch:
        key = pending.event.key
        if key is None or len(chosen) >= room:
            continue
        digest = key_digest(key)
        if digest not in digests:  # a key twice in one batch: the second one is a KEY# item, which fails
            digests.add(digest)
            chosen.append(pending)
    return chosen


# --- the store ------------------------------------------------------------------------------------


class DynamoDBTaskStore:
    blocking = True  # every call is a network round trip: async callers run it in a thread

    def __init__(self, table_name: str, client: Any | None = None, *, event_ttl_days: int = 30) -> None:
        if event_ttl_days < 1:
            raise ValueError("event_ttl_days must be at least 1")
        self.table_name = table_name
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

    # --- tasks ---------------------------------------------------------------------------------

    @retryable
    def create(self, task: TaskState) -> TaskState:
        doc = dump_task(task, None)  # a new task: no step has run, nothing is stored elsewhere yet
        check_payload_size(f"task {task.task_id}", doc)
        created_at = sort_key(task.created_at)
        item: dict[str, AttributeValueTypeDef] = {
            **task_key(task.task_id),
            "doc": pack_doc(doc),
            "status": {"S": TaskStatus(task.status).value},
            "version": {"N": "0"},
            "event_seq": {"N": "0"},
            KEY_SET_MARK: {"N": "1"},
            "gsi1pk": {"S": gsi1pk(task.owner)},
            "gsi2pk": {"S": gsi2pk(task.owner, task.status)},
            "gsi1sk": {"S": gsi1sk(created_at, task.task_id)},
            # A task expires with its events (every update moves both forward), so a stream never
            # finds a task whose log has expired under it.
            "expires_at": {"N": self._expires_at()},
        }
        for attempt in range(MAX_ATTEMPTS):
            codes = self._attempt(
                lambda: self.client.put_item(
                    TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
            )
            if codes is None:
                self._memory.keep(task.task_id, item)
                return task
            if "ConditionalCheckFailed" in codes:
                raise TaskAlreadyExists(task.task_id)
            _pause(attempt)
        raise WriteConflict(f"task {task.task_id} could not be created: the item kept changing")

    def _read_task_item(self, task_id: str) -> Item | None:
        response = self.client.get_item(TableName=self.table_name, Key=task_key(task_id), ConsistentRead=True)
        item = response.get("Item")
        if not item or "doc" not in item:
            self._memory.forget(task_id)
            return None
        self._memory.keep(task_id, item)
        return item

    @retryable
    def get(self, task_id: str) -> TaskState | None:
        # The whole item (a read is billed by its size, not by what it returns), remembered for update.
        item = self._read_task_item(task_id)
        return self._outputs.inflate(item)[0] if item is not None else None

    @retryable
    def list(self, owner: str, *, limit: int, cursor: str | None = None, status: TaskStatus | None = None) -> TaskPage:
        """One bounded page: one Query of at most ``limit + 1`` keys, then one BatchGetItem of the page.

        With a status, the owner-and-status index answers, so no call ever reads past a page.
        """
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        if limit > _BATCH_GET_MAX_KEYS:
            raise InvalidInput(f"limit must be at most {_BATCH_GET_MAX_KEYS}")
        if status is None:
            index, hash_name, hash_value = "gsi1", "gsi1pk", gsi1pk(owner)
        else:
            index, hash_name, hash_value = "gsi2", "gsi2pk", gsi2pk(owner, status)
        params: QueryInputTypeDef = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": "#hash = :hash",
            "ExpressionAttributeNames": {"#hash": hash_name},
            "ExpressionAttributeValues": {":hash": {"S": hash_value}},
            "ScanIndexForward": False,
            # One more than a page, to know whether another page exists (as the SQLite store does).
            "Limit": limit + 1,
        }
        if cursor:
            parts = decode_cursor(cursor)
            if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
                raise _invalid_cursor()
            created_at, task_id = parts
            params["ExclusiveStartKey"] = {
                hash_name: {"S": hash_value},
                "gsi1sk": {"S": gsi1sk(created_at, task_id)},
                **task_key(task_id),
            }
        try:
            response = self.client.query(**params)
        except ClientError as exc:
            if cursor and exc.response.get("Error", {}).get("Code") == "ValidationException":
                raise _invalid_cursor() from None
            raise
        keys = response.get("Items", [])
        page = keys[:limit]
        docs = self._batch_get_docs([item["pk"]["S"] for item in page])
        items = []
        for key in page:
            task = docs.get(key["pk"]["S"])
            # The index lags the table a little: skip a task gone or no longer in the status asked for.
            if task is not None and (status is None or task.status == status):
                items.append(task)
        next_cursor = None
        if len(keys) > limit:
            created_at, _, task_id = page[-1]["gsi1sk"]["S"].rpartition("#")
            next_cursor = encode_cursor([created_at, task_id])
        return TaskPage(items=items, next_cursor=next_cursor)

    def _batch_get_docs(self, pks: builtins.list[str]) -> dict[str, TaskState]:
        """The task documents of a page (strongly consistent), by pk."""
        docs: dict[str, TaskState] = {}
        if not pks:
            return docs
        request: dict[str, KeysAndAttributesTypeDef] = {
            self.table_name: {
                "Keys": [{"pk": {"S": pk}, "sk": {"S": TASK_SK}} for pk in pks],
                "ConsistentRead": True,
                "ProjectionExpression": "pk, #doc, final_out",
                "ExpressionAttributeNames": {"#doc": "doc"},
            }
        }
        stored: dict[str, tuple[TaskState, str | None]] = {}
        for attempt in range(MAX_ATTEMPTS):
            response = self.client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self.table_name, []):
                if "doc" in item:
                    stored[item["pk"]["S"]] = (parse_task(item), final_out(item))
            unprocessed = response.get("UnprocessedKeys", {})
            if not unprocessed:
                filled = self._outputs.fill(builtins.list(stored.values()), outputs=False)
                return {pk: task for pk, (task, _) in zip(stored, filled, strict=True)}
            request = cast("dict[str, KeysAndAttributesTypeDef]", unprocessed)  # throttled or over 16 MB
            _pause(attempt)
        raise RetryableStoreError("DynamoDB kept some of the page unread; try again")

    @retryable
    def list_in_status(self, statuses: Collection[TaskStatus]) -> builtins.list[TaskState]:
        wanted = [TaskStatus(s).value for s in statuses]
        if not wanted:
            return []
        marks = {f":s{i}": value for i, value in enumerate(wanted)}
        params: ScanInputTypeDef = {
            "TableName": self.table_name,
            "FilterExpression": f"sk = :task AND #status IN ({', '.join(marks)})",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":task": {"S": TASK_SK}, **{k: {"S": v} for k, v in marks.items()}},
            "ConsistentRead": True,
        }
        tasks: builtins.list[TaskState] = []
        while True:
            response = self.client.scan(**params)
            found = [(parse_task(item), final_out(item)) for item in response.get("Items", []) if "doc" in item]
            tasks.extend(task for task, _ in self._outputs.fill(found, outputs=False))
            last = response.get("LastEvaluatedKey")
            if not last:
                return tasks
            params["ExclusiveStartKey"] = last

    @retryable
    def update(
        self,
        task_id: str,
        expect: Collection[TaskStatus],
        *,
        events: Sequence[NewEvent] = (),
        mutate: Mutation | None = None,
        **changes: Any,
    ) -> TaskState:
        expected = {TaskStatus(s) for s in expect}
        remaining = [e for e in events if e.task_id == task_id]
        elsewhere = [e for e in events if e.task_id != task_id]
        for attempt in range(MAX_ATTEMPTS):
            # Read, check, write conditionally; a failed condition loops back here, where the
            # fresh read tells "gone", "moved to another state" and "changed concurrently" apart.
            remembered = self._memory.recall(task_id) if attempt == 0 else None
            item = remembered if remembered is not None else self._read_task_item(task_id)
            if item is None:
                raise TaskNotFound(task_id)
            task, stored = self._outputs.inflate(item)
            known = key_set(item)
            if known:  # events whose key the task item holds were written before: drop them
                remaining = [e for e in remaining if e.key is None or key_digest(e.key) not in known]
            if task.status not in expected:
                if remembered is not None:
                    continue  # a remembered item never refuses a write: read it afresh
                raise InvalidTransition.unexpected(task_id, task.status.value, (s.value for s in expected))
            try:
                applied = {**changes, **mutate(task)} if mutate is not None else changes
            except Exception:
                if remembered is not None:
                    continue
                raise
            updated = task.model_copy(update={**applied, "updated_at": utcnow()})
            # A step completed by this write: its output becomes an OUT# item, written with it.
            outputs = {sk: text for sk, text in completed_outputs(updated).items() if sk not in stored}
            for sk, text in outputs.items():
                check_payload_size(f"the output {sk} of task {task_id}", text)
            stored = stored | set(outputs)
            final_sk = final_output_sk(updated, stored)
            doc = dump_task(updated, final_sk)
            check_payload_size(f"task {task_id}", doc)
            packed = pack_doc(doc)
            pending = [_PendingEvent.of(e, reference(e, updated, final_sk, stored)) for e in remaining]
            output_puts = [
                output_put(self.table_name, task_id, sk, text, self._expires_at()) for sk, text in outputs.items()
            ]
            if task.status.is_terminal and not updated.status.is_terminal:
                # A retried task keeps the outputs of its completed steps, which the steps it runs
                # again read: they expire with the task from now on, not with the first run's log.
                kept = sorted(set(completed_outputs(updated)) - set(outputs))
                output_puts += [output_expiry(self.table_name, task_id, sk, self._expires_at()) for sk in kept]
            batch, rest = self._fit_transaction(
                pending, len(packed["B"]) + sum(len(text.encode()) for text in outputs.values()), len(output_puts)
            )
            version = _number(item, "version")
            seq = _number(item, "event_seq")
            names = {"#doc": "doc", "#status": "status", "#version": "version"}
            values: dict[str, AttributeValueTypeDef] = {
                ":doc": packed,
                ":status": {"S": TaskStatus(updated.status).value},
                ":next_version": {"N": str((version or 0) + 1)},
                **{f":e{i}": {"S": s.value} for i, s in enumerate(sorted(expected))},
            }
            sets = (
                "SET #doc = :doc, #status = :status, #version = :next_version, #expires = :expires, #gsi2pk = :gsi2pk"
            )
            names["#expires"] = "expires_at"
            values[":expires"] = {"N": self._expires_at()}
            names["#gsi2pk"] = "gsi2pk"
            values[":gsi2pk"] = {"S": gsi2pk(updated.owner, updated.status)}
            names["#final_out"] = "final_out"
            remove = ""
            if final_sk is None:
                remove = " REMOVE #final_out"
            else:
                sets += ", #final_out = :final_out"
                values[":final_out"] = {"S": final_sk}
            condition = f"attribute_exists(pk) AND #status IN ({', '.join(f':e{i}' for i in range(len(expected)))})"
            if version is None:
                condition += " AND attribute_not_exists(#version)"
            else:
                condition += " AND #version = :version"
                values[":version"] = {"N": str(version)}
            in_set = _keys_for_set(batch, known)
            if in_set:
                names["#ek"] = "ek"
                values[":ek"] = {"BS": [key_digest(p.event.key) for p in in_set if p.event.key is not None]}
            if batch:
                names["#seq"] = "event_seq"
                sets += ", #seq = :next_seq"
                values[":next_seq"] = {"N": str((seq or 0) + len(batch))}
                if seq is None:
                    condition += " AND attribute_not_exists(#seq)"
                else:
                    condition += " AND #seq = :seq"
                    values[":seq"] = {"N": str(seq)}
            change: UpdateTypeDef = {
                "TableName": self.table_name,
                "Key": task_key(task_id),
                "UpdateExpression": sets + remove + (" ADD #ek :ek" if in_set else ""),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            after = {
                **item,
                "doc": packed,
                "status": values[":status"],
                "version": values[":next_version"],
                "expires_at": values[":expires"],
                "gsi2pk": values[":gsi2pk"],
            }
            if final_sk is None:
                after.pop("final_out", None)
            else:
                after["final_out"] = values[":final_out"]
            if batch:
                after["event_seq"] = values[":next_seq"]
            if in_set:
                after["ek"] = {"BS": [*(known or ()), *values[":ek"]["BS"]]}
            if not batch and not output_puts:
                codes = self._attempt(partial(self.client.update_item, **change))
                if codes is None:
                    self._memory.keep(task_id, after)
                    break
                _pause(attempt)
                continue
            written, already = self._write_events(
                task_id, {"Update": change}, batch, seq or 0, output_puts, in_set=in_set
            )
            if written is not None:
                self._outputs.remember(updated, outputs)
                self._memory.keep(task_id, after)
                break
            if already:
                # Some keys were written before: drop those events and write at once.
                skipped = {id(p.event) for p in already}
                remaining = [e for e in remaining if id(e) not in skipped]
                continue
            _pause(attempt)
        else:
            raise WriteConflict(f"task {task_id} kept changing while it was updated; try again")
        for leftover in rest:
            self._append(leftover)
        for event in elsewhere:
            self.append_event(event)
        return updated

    @staticmethod
    def _fit_transaction(
        pending: builtins.list[_PendingEvent], doc_bytes: int, other_items: int = 0
    ) -> tuple[builtins.list[_PendingEvent], builtins.list[_PendingEvent]]:
        """The events that fit in one transaction with the task item (and ``other_items``), and the rest."""
        items, size = 1 + other_items, doc_bytes + (1 + other_items) * _ITEM_OVERHEAD_BYTES
        for index, event in enumerate(pending):
            more_items, more_bytes = event.cost
            items, size = items + more_items, size + more_bytes
            if items > _TRANSACTION_MAX_ITEMS or size > _TRANSACTION_MAX_BYTES:
                return pending[:index], pending[index:]
        return pending, []

    # --- events --------------------------------------------------------------------------------

    @retryable
    def append_event(self, event: NewEvent) -> StreamEvent | None:
        return self._append(self._pending_alone(event))

    def _pending_alone(self, event: NewEvent) -> _PendingEvent:
        """An event written on its own; one that repeats a stored output refers to its OUT# item."""
        data = event.data
        carries_text = (event.event_type is EventType.PARTIAL_OUTPUT and isinstance(data.get("output"), str)) or (
            event.event_type is EventType.TASK_COMPLETED and isinstance(data.get("final_output"), str)
        )
        if carries_text:
            item = self._read_task_item(event.task_id)
            if item is not None:
                task, stored = self._outputs.inflate(item)
                return _PendingEvent.of(event, reference(event, task, final_output_sk(task, stored), stored))
        return _PendingEvent.of(event)

    def _append(self, pending: _PendingEvent) -> StreamEvent | None:
        task_id = pending.event.task_id
        for attempt in range(MAX_ATTEMPTS):
            response = self.client.get_item(
                TableName=self.table_name,
                Key=task_key(task_id),
                ConsistentRead=True,
                ProjectionExpression="pk, #seq, #ek, #kv",
                ExpressionAttributeNames={"#seq": "event_seq", "#ek": "ek", "#kv": KEY_SET_MARK},
            )
            item = response.get("Item")
            if not item:
                raise TaskNotFound(task_id)
            known = key_set(item)
            key = pending.event.key
            if known and key is not None and key_digest(key) in known:
                return None  # this key was written before: an idempotent replay
            in_set = _keys_for_set([pending], known)
            seq = _number(item, "event_seq")
            counter: UpdateTypeDef = {
                "TableName": self.table_name,
                "Key": task_key(task_id),
                "UpdateExpression": "SET #seq = :next_seq",
                "ConditionExpression": "attribute_exists(pk) AND "
                + ("attribute_not_exists(#seq)" if seq is None else "#seq = :seq"),
                "ExpressionAttributeNames": {"#seq": "event_seq"},
                "ExpressionAttributeValues": {":next_seq": {"N": str((seq or 0) + 1)}},
            }
            if seq is not None:
                counter["ExpressionAttributeValues"] = {
                    ":next_seq": {"N": str(seq + 1)},
                    ":seq": {"N": str(seq)},
                }
            if in_set and key is not None:
                counter["UpdateExpression"] += " ADD #ek :ek"
                counter["ExpressionAttributeNames"] = {"#seq": "event_seq", "#ek": "ek"}
                counter["ExpressionAttributeValues"] = {
                    **counter["ExpressionAttributeValues"],
                    ":ek": {"BS": [key_digest(key)]},
                }
            self._memory.forget(task_id)  # its event_seq moves (and its key set may)
            written, already = self._write_events(task_id, {"Update": counter}, [pending], seq or 0, in_set=in_set)
            if written is not None:
                return written[0]
            if already:
                return None  # this key was written before: an idempotent replay
            _pause(attempt)
        raise WriteConflict(f"task {task_id} kept changing while an event was appended; try again")

    def _write_events(
        self,
        task_id: str,
        task_write: TransactWriteItemTypeDef,
        batch: builtins.list[_PendingEvent],
        seq: int,
        others: Sequence[TransactWriteItemTypeDef] = (),
        *,
        in_set: Sequence[_PendingEvent] = (),
    ) -> tuple[builtins.list[StreamEvent] | None, set[_PendingEvent]]:
        """One transaction: ``task_write`` (which moves event_seq past the batch), the events, ``others``.

        The keys of the events ``in_set`` are added to the task item's key set by ``task_write``; the
        other keyed events get a ``KEY#`` item each.

        Returns the written events, or None and the events whose key was already written.
        """
        if seq + len(batch) > MAX_CURSOR:
            raise InvalidInput(f"task {task_id} has too many events")
        expires_at = self._expires_at()
        items: builtins.list[TransactWriteItemTypeDef] = [task_write]
        key_slots: dict[int, _PendingEvent] = {}
        for cursor, pending in enumerate(batch, start=seq + 1):
            event = pending.event
            if event.key is not None and all(p is not pending for p in in_set):
                key_slots[len(items)] = pending
                items.append(
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {
                                "pk": {"S": task_pk(task_id)},
                                "sk": {"S": key_sk(event.key)},
                                "expires_at": {"N": expires_at},
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
            stored: dict[str, AttributeValueTypeDef] = {
                "pk": {"S": task_pk(task_id)},
                "sk": {"S": event_sk(cursor)},
                "event_type": {"S": event.event_type.value},
                "timestamp": {"S": event.timestamp.isoformat()},
                "data": {"S": pending.data},
                "expires_at": {"N": expires_at},
            }
            if pending.ref is not None:
                stored["ref_field"], stored["ref"] = {"S": pending.ref[0]}, {"S": pending.ref[1]}
            items.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": stored,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        items.extend(others)
        token = request_token(task_id, items)
        codes = self._attempt(lambda: self.client.transact_write_items(TransactItems=items, ClientRequestToken=token))
        if codes is None:
            return [p.written(cursor) for cursor, p in enumerate(batch, start=seq + 1)], set()
        already = {
            pending
            for slot, pending in key_slots.items()
            if slot < len(codes) and codes[slot] == "ConditionalCheckFailed"
        }
        return None, already

    @retryable
    def read_events(self, task_id: str, after: int = 0, limit: int = 500) -> builtins.list[StreamEvent]:
        start = max(after, 0) + 1
        if limit < 1 or start > MAX_CURSOR:
            return []
        params: QueryInputTypeDef = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": {"S": task_pk(task_id)},
                ":first": {"S": event_sk(start)},
                ":last": {"S": event_sk(MAX_CURSOR)},
            },
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        events: builtins.list[StreamEvent] = []
        refs: builtins.list[tuple[dict[str, Any], str, str]] = []
        while len(events) < limit:
            params["Limit"] = limit - len(events)
            response = self.client.query(**params)
            for item in response.get("Items", []):
                data = json.loads(item["data"]["S"])
                if "ref" in item:
                    refs.append((data, item["ref_field"]["S"], item["ref"]["S"]))
                # Items this store wrote itself: build them without validating again.
                events.append(
                    StreamEvent.model_construct(
                        event_type=EventType(item["event_type"]["S"]),
                        task_id=task_id,
                        timestamp=datetime.fromisoformat(item["timestamp"]["S"]),
                        cursor=int(item["sk"]["S"][len(EVENT_PREFIX) :]),
                        data=data,
                    )
                )
            last = response.get("LastEvaluatedKey")
            if not last:
                break
            params["ExclusiveStartKey"] = last
        if refs:
            texts = self._outputs.read([(task_id, sk) for _, _, sk in refs])
            for data, name, sk in refs:
                data[name] = texts.get((task_id, sk))
        return events[:limit]
