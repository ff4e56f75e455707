"""The AWS store: one DynamoDB table holding every task, its event log and its idempotency keys.

Table layout (``template.yaml`` declares the same table; ``create_table`` builds it for tests)::

    pk (S, hash)      sk (S, range)            attributes
    TASK#<task_id>    TASK                     doc (B: the TaskState as deflated JSON, without
                                               step outputs nor defaults: ``dynamodb_codec``),
                                               final_out (S, the sk of the output that is the
                                               final output), fp (B: its list preview), status,
                                               version (N), event_seq (N: the last cursor),
                                               log (B) + lf (N): the newest events, inline
                                               (``dynamodb_log``), w (S: the last write's id),
                                               ek (BS: 8-byte digests of up to 24 event keys
                                               written), kv = 1 (the task keeps keys in ek),
                                               gsi1pk = [S<shard>#]OWNER#<owner>,
                                               gsi2pk = [S<shard>#]OWNER#<owner>#STATUS#<status>
                                               (shard 0 unprefixed; dynamodb_codec.index_shard)
                                               gsi1sk = <created_at, fixed-width UTC>#<task_id>
    TASK#<task_id>    KEY#<event key>          expires_at (N): this idempotency key was written
                                               (a key past the 24 of ek, or of an older task)
    TASK#<task_id>    OUT#<step_id>#<attempts> text (S, raw UTF-8), expires_at (N): the output of
                                               the step's attempt that completed it
    TASK#<task_id>    EVT#<cursor, 12 digits>  log (B): older events flushed from the task item,
                                               the sk the last one's cursor; or (written before the
                                               inline log) one event: event_type, timestamp, data
                                               (JSON), ref + ref_field: data[ref_field] is the text
                                               of the OUT# item ref
    TASK#<task_id>    DAT#<digest>             text (S): the data of an event over 4 KB

    GSI gsi1: hash gsi1pk, range gsi1sk (an owner's tasks, newest first).
    GSI gsi2: hash gsi2pk, range gsi1sk (an owner's tasks in one status, newest first).
    An owner's keys are spread over ``index_shards`` shards by task id, so a busy owner's index writes
    share out over that many partitions; a list reads every shard and merges (``dynamodb_listing``).
    Both project keys only: a list reads one bounded page of keys, then the page's task items
    (BatchGetItem), so a task document (up to 350 KB) is written once per update, not once per index.
    TTL on expires_at: events and keys expire event_ttl_days after they were written; the task item's
    expiry moves forward with every update, so a task never expires before the end of its log.
    On-demand billing.

What a task costs (``make cost``, the seed's agents, Express): 31 WRU and about 27 RRU. Each write
of a task is ONE UpdateItem of its task item (about 2 KB: the deflated document and its newest
events), no transaction; each output is one put; a read of the log is one GetItem of the task item
(a stream that follows the task reads nothing else). Before the inline log: 65 WRU (9 transactions,
each the task item and an item per event, billed twice).

Step outputs are stored once, as their own items (``dynamodb_outputs``): the write that completes a
step first puts its ``OUT#`` item (its text as a raw string, so a 3-byte character costs 3 bytes,
not a 6-byte JSON escape; an ``OUT#`` item no write refers to, after a crash, is harmless and
expires), and its ``partial_output`` event refers to it; the task item holds no output, and the
final output is a reference to the last step's ``OUT#`` item (the ``task_completed`` event refers to
it too) plus its first ``LIST_PREVIEW_CHARS + 1`` characters (``fp``), which is what ``list`` shows:
a listing reads no output item. The task item therefore stays a few KB however long the outputs
are, and every update, which rewrites it, costs the same. ``get`` and ``read_events`` put the texts
back (an output never changes once written, so a container keeps the ones it read);
``list_in_status`` puts back the final output only, as the SQLite store's listings do. An ``OUT#``
item expires like the events, ``event_ttl_days`` after it was written; a retried task's kept
outputs (which its steps run again read) are given the task's expiry again by the retry's write.

How the contract of ``TaskStore`` holds here:

- A state change is an UpdateItem conditioned on the task existing, its status being one the
  caller expects and its ``version`` being the one read (optimistic concurrency: a concurrent write
  makes it read again and retry; a status that no longer matches raises ``InvalidTransition``).
  The item read may be the one this store last read or wrote (``ItemMemory``): the conditions make
  that safe, and a refusal is only ever decided on a fresh read.
- An event is written by the UpdateItem that moves the task item's ``event_seq`` from the value
  read to the event's cursor and puts the event in the item's inline log, its key (when it has
  one) added to ``ek`` by the same write. Cursors are therefore contiguous and strictly increasing,
  and cursor n is visible before n + 1 can be allocated, so a stream that has read up to n can
  never miss an event that commits later with a lower cursor. Events flushed out of the task item
  were committed before (``dynamodb_log``): their segment is put before the update that removes
  them, so a reader, which reads the task item first, always finds them.
- ``update`` writes the state change and its events in that same single-item write, as SQLite does
  in one transaction: a stream never sees an event before the state it announces, and a crash
  cannot keep one without the other.
- A keyed event past the 24 keys of ``ek`` needs its ``KEY#`` item written with it: only that write
  is a transaction (the task item's update and the ``KEY#`` put, conditioned on its absence), with
  a deterministic ``ClientRequestToken`` (``request_token``). Every other write sets a random ``w``
  on the task item: a writer whose answer was lost finds its ``w`` on the fresh read and knows its
  write landed.

Condition failures and cancelled transactions are recognised in one place (``conflict_codes``);
no ``ClientError`` for them leaves this module. Throttling, internal errors and lost connections
leave it as ``RetryableStoreError`` (``retryable``): nothing was applied, the caller may retry.
"""

from __future__ import annotations

import builtins
import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

# Shared with the SQLite store: the cursor format and the payload bound (MAX_PAYLOAD_BYTES, 350 KB of
# a document or an event's data, leaving room in DynamoDB's 400 KB item for the other attributes).
from agentic.adapters.dynamodb_codec import (
    KEY_SET_MARK,
    KEY_SET_MAX,
    MAX_CURSOR,
    TASK_SK,
    gsi1pk,
    gsi1sk,
    gsi2pk,
    index_shard,
    item_shard,
    key_digest,
    key_set,
    key_sk,
    pack_doc,
    parse_task,
    task_key,
    task_pk,
)
from agentic.adapters.dynamodb_listing import ShardedIndex
from agentic.adapters.dynamodb_log import (
    InlineLog,
    LogWrite,
    PendingEvent,
    after_write,
    fit_write,
    plan_append,
    read_log,
)
from agentic.adapters.dynamodb_outputs import (
    PREVIEW_ATTR,
    OutputTexts,
    completed_outputs,
    dump_task,
    final_out,
    final_output_sk,
    output_expiry,
    output_put,
    pack_preview,
    preview,
    reference,
)
from agentic.adapters.dynamodb_writes import (
    WRITE_ID_ATTR,
    ItemMemory,
    conflict_codes,
    new_write_id,
    request_token,
    retryable,
)
from agentic.adapters.store_codec import check_payload_size, encode_cursor, sort_key
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
        ScanInputTypeDef,
        TransactWriteItemTypeDef,
        UpdateTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]

#: Read-modify-write attempts before giving up on a task that keeps changing underneath.
MAX_ATTEMPTS = 8
#: Events one write carries at most: with a KEY# item each past the key set, a transaction stays
#: under TransactWriteItems' 100 items.
_WRITE_MAX_EVENTS = 90
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


def _pause(attempt: int) -> None:
    """Full-jitter backoff between read-modify-write attempts (we run in a worker thread)."""
    time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))


@dataclass(frozen=True)
class _Tried:
    """The last write ``update`` sent: if a fresh read shows its write id, it landed."""

    write_id: str
    result: TaskState
    rest: builtins.list[PendingEvent]
    outputs: dict[str, str]

    def applied(self, item: Item) -> bool:
        return item.get(WRITE_ID_ATTR) == {"S": self.write_id}


def _seq_condition(seq: int | None, values: dict[str, AttributeValueTypeDef]) -> str:
    """The condition that ``event_seq`` is still ``seq`` (every write of the log is conditioned on it)."""
    if seq is None:
        return "attribute_not_exists(#seq)"
    values[":seq"] = {"N": str(seq)}
    return "#seq = :seq"


def _keys_for_set(batch: Sequence[PendingEvent], known: set[bytes] | None) -> builtins.list[PendingEvent]:
    """The keyed events of ``batch`` whose keys go into the task item's key set (while it has room).

    Writing a key there costs nothing more (the task item is written with the events anyway) where a
    ``KEY#`` item makes the write a transaction (every item billed twice). Every write of the set
    also moves ``event_seq``, on which every event write is conditioned, so checking the set read
    before the write is exact.
    """
    if known is None:
        return []
    room = KEY_SET_MAX - len(known)
    chosen: builtins.list[PendingEvent] = []
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

    # --- tasks ---------------------------------------------------------------------------------

    @retryable
    def create(self, task: TaskState) -> TaskState:
        doc = dump_task(task, None)  # a new task: no step has run, nothing is stored elsewhere yet
        check_payload_size(f"task {task.task_id}", doc)
        created_at = sort_key(task.created_at)
        shard = index_shard(task.task_id, self._index.shards)
        item: dict[str, AttributeValueTypeDef] = {
            **task_key(task.task_id),
            "doc": pack_doc(doc),
            "status": {"S": TaskStatus(task.status).value},
            "version": {"N": "0"},
            "event_seq": {"N": "0"},
            KEY_SET_MARK: {"N": "1"},
            "gsi1pk": {"S": gsi1pk(task.owner, shard)},
            "gsi2pk": {"S": gsi2pk(task.owner, task.status, shard)},
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

    @retryable
    def get(self, task_id: str) -> TaskState | None:
        # The whole item (a read is billed by its size, not by what it returns), remembered for update.
        item = self._read_task_item(task_id)
        return self._outputs.inflate(item)[0] if item is not None else None

    @retryable
    def list(self, owner: str, *, limit: int, cursor: str | None = None, status: TaskStatus | None = None) -> TaskPage:
        """One bounded page: one Query per shard of the owner's keys (in parallel) for at most
        ``limit + 1`` keys each, merged newest first (``dynamodb_listing``), then one BatchGetItem of
        the page. With a status, the owner-and-status index answers, so no call ever reads past a page.
        """
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        if limit > _BATCH_GET_MAX_KEYS:
            raise InvalidInput(f"limit must be at most {_BATCH_GET_MAX_KEYS}")
        keys = self._index.page_keys(owner, limit=limit, cursor=cursor, status=status)
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
        """The task documents of a page (strongly consistent), by pk.

        A task's final output is its preview (``fp``: the first ``LIST_PREVIEW_CHARS + 1``
        characters, what a listing shows and one more to tell it was cut): a page reads no output
        item. A task completed before previews were written has its output item read instead.
        """
        docs: dict[str, TaskState] = {}
        if not pks:
            return docs
        request: dict[str, KeysAndAttributesTypeDef] = {
            self.table_name: {
                "Keys": [{"pk": {"S": pk}, "sk": {"S": TASK_SK}} for pk in pks],
                "ConsistentRead": True,
                "ProjectionExpression": "pk, #doc, final_out, #preview",
                "ExpressionAttributeNames": {"#doc": "doc", "#preview": PREVIEW_ATTR},
            }
        }
        stored: dict[str, tuple[TaskState, str | None]] = {}
        for attempt in range(MAX_ATTEMPTS):
            response = self.client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self.table_name, []):
                if "doc" in item:
                    task, shown = parse_task(item), preview(item)
                    if shown is not None and task.final_output is None:
                        stored[item["pk"]["S"]] = (task.model_copy(update={"final_output": shown}), None)
                    else:
                        stored[item["pk"]["S"]] = (task, final_out(item))
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
        tried: _Tried | None = None
        rest: builtins.list[PendingEvent] = []
        for attempt in range(MAX_ATTEMPTS):
            # Read, check, write conditionally; a failed condition loops back here, where the
            # fresh read tells "gone", "moved to another state" and "changed concurrently" apart.
            remembered = self._memory.recall(task_id) if attempt == 0 else None
            item = remembered if remembered is not None else self._read_task_item(task_id)
            if item is None:
                raise TaskNotFound(task_id)
            if tried is not None and tried.applied(item):  # our write landed, its answer was lost
                updated, rest = tried.result, tried.rest
                self._outputs.remember(updated, tried.outputs)
                break
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
            # A step completed by this write: its output becomes an OUT# item, put before the write
            # that refers to it (an OUT# item no write refers to is harmless and expires).
            outputs = {sk: text for sk, text in completed_outputs(updated).items() if sk not in stored}
            for sk, text in outputs.items():
                check_payload_size(f"the output {sk} of task {task_id}", text)
            stored = stored | set(outputs)
            final_sk = final_output_sk(updated, stored)
            doc = dump_task(updated, final_sk)
            check_payload_size(f"task {task_id}", doc)
            packed = pack_doc(doc)
            expires = self._expires_at()
            pending = [PendingEvent.of(e, reference(e, updated, final_sk, stored)) for e in remaining]
            before: builtins.list[TransactWriteItemTypeDef] = [
                output_put(self.table_name, task_id, sk, text, expires) for sk, text in outputs.items()
            ]
            if task.status.is_terminal and not updated.status.is_terminal:
                # A retried task keeps the outputs of its completed steps, which the steps it runs
                # again read: they expire with the task from now on, not with the first run's log.
                kept = sorted(set(completed_outputs(updated)) - set(outputs))
                before += [output_expiry(self.table_name, task_id, sk, expires) for sk in kept]
            batch, rest = fit_write(pending, _WRITE_MAX_EVENTS)
            version = _number(item, "version")
            seq = _number(item, "event_seq")
            write_id = new_write_id()
            names = {
                "#doc": "doc",
                "#status": "status",
                "#version": "version",
                "#expires": "expires_at",
                "#gsi2pk": "gsi2pk",
                "#final_out": "final_out",
                "#preview": PREVIEW_ATTR,
                "#w": WRITE_ID_ATTR,
            }
            values: dict[str, AttributeValueTypeDef] = {
                ":doc": packed,
                ":status": {"S": TaskStatus(updated.status).value},
                ":next_version": {"N": str((version or 0) + 1)},
                ":expires": {"N": expires},
                # the status key moves within the shard the task was created in
                ":gsi2pk": {"S": gsi2pk(updated.owner, updated.status, item_shard(item, task_id, self._index.shards))},
                ":w": {"S": write_id},
                **{f":e{i}": {"S": s.value} for i, s in enumerate(sorted(expected))},
            }
            sets = (
                "SET #doc = :doc, #status = :status, #version = :next_version, #expires = :expires,"
                " #gsi2pk = :gsi2pk, #w = :w"
            )
            remove = ""
            if final_sk is None:
                remove = " REMOVE #final_out, #preview"
            else:
                sets += ", #final_out = :final_out, #preview = :preview"
                values[":final_out"] = {"S": final_sk}
                values[":preview"] = pack_preview(updated.final_output or "")
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
            log_write: LogWrite | None = None
            if batch:
                log_write = self._plan_append(task_id, item, batch, expires)
                sets += ", " + LogWrite.SET
                names.update(LogWrite.names())
                values.update(log_write.values())
                condition += " AND " + _seq_condition(seq, values)
            change: UpdateTypeDef = {
                "TableName": self.table_name,
                "Key": task_key(task_id),
                "UpdateExpression": sets + remove + (" ADD #ek :ek" if in_set else ""),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            after: dict[str, AttributeValueTypeDef] = {
                **item,
                "doc": packed,
                "status": values[":status"],
                "version": values[":next_version"],
                "expires_at": values[":expires"],
                "gsi2pk": values[":gsi2pk"],
                WRITE_ID_ATTR: values[":w"],
            }
            if final_sk is None:
                after.pop("final_out", None)
                after.pop(PREVIEW_ATTR, None)
            else:
                after["final_out"], after[PREVIEW_ATTR] = values[":final_out"], values[":preview"]
            if log_write is not None:
                after = after_write(after, log_write)
            if in_set:
                after["ek"] = {"BS": [*(known or ()), *values[":ek"]["BS"]]}
            tried = _Tried(write_id, updated, rest, outputs)
            committed, already = self._commit(task_id, change, batch, in_set, before, log_write)
            if committed:
                self._outputs.remember(updated, outputs)
                self._memory.keep(task_id, after)
                break
            if already:
                # Some keys were written before: drop those events and write at once.
                skipped = {id(p.event) for p in already}
                remaining = [e for e in remaining if id(e) not in skipped]
                continue
            if remembered is None:
                _pause(attempt)
        else:
            raise WriteConflict(f"task {task_id} kept changing while it was updated; try again")
        for leftover in rest:
            self._append(leftover.event, leftover)
        for event in elsewhere:
            self.append_event(event)
        return updated

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

    # --- events --------------------------------------------------------------------------------

    @retryable
    def append_event(self, event: NewEvent) -> StreamEvent | None:
        return self._append(event)

    def _pending_for(self, event: NewEvent, item: Item) -> PendingEvent:
        """An event written on its own; one that repeats a stored output refers to its OUT# item."""
        data = event.data
        carries_text = (event.event_type is EventType.PARTIAL_OUTPUT and isinstance(data.get("output"), str)) or (
            event.event_type is EventType.TASK_COMPLETED and isinstance(data.get("final_output"), str)
        )
        if carries_text:
            task, stored = self._outputs.inflate(item)
            return PendingEvent.of(event, reference(event, task, final_output_sk(task, stored), stored))
        return PendingEvent.of(event)

    def _append(self, event: NewEvent, pending: PendingEvent | None = None) -> StreamEvent | None:
        """One event on its own: one conditional UpdateItem of the task item (moving ``event_seq``)."""
        task_id = event.task_id
        tried: tuple[str, StreamEvent] | None = None
        for attempt in range(MAX_ATTEMPTS):
            remembered = self._memory.recall(task_id) if attempt == 0 else None
            item = remembered if remembered is not None else self._read_task_item(task_id)
            if item is None:
                raise TaskNotFound(task_id)
            if tried is not None and item.get(WRITE_ID_ATTR) == {"S": tried[0]}:
                return tried[1]  # our write landed, its answer was lost
            known = key_set(item)
            key = event.key
            if known and key is not None and key_digest(key) in known:
                return None  # this key was written before (keys are never removed): an idempotent replay
            if pending is None:
                pending = self._pending_for(event, item)
            in_set = _keys_for_set([pending], known)
            seq = _number(item, "event_seq")
            expires = self._expires_at()
            log_write = self._plan_append(task_id, item, [pending], expires)
            write_id = new_write_id()
            names = {**LogWrite.names(), "#w": WRITE_ID_ATTR}
            values: dict[str, AttributeValueTypeDef] = {**log_write.values(), ":w": {"S": write_id}}
            update = f"SET {LogWrite.SET}, #w = :w"
            if in_set and key is not None:
                update += " ADD #ek :ek"
                names["#ek"] = "ek"
                values[":ek"] = {"BS": [key_digest(key)]}
            counter: UpdateTypeDef = {
                "TableName": self.table_name,
                "Key": task_key(task_id),
                "UpdateExpression": update,
                "ConditionExpression": "attribute_exists(pk) AND " + _seq_condition(seq, values),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            written = pending.written(log_write.next_seq)
            tried = (write_id, written)
            committed, already = self._commit(task_id, counter, [pending], in_set, (), log_write)
            if committed:
                after = {**after_write(item, log_write), WRITE_ID_ATTR: values[":w"]}
                if in_set:
                    after["ek"] = {"BS": [*(known or ()), *values[":ek"]["BS"]]}
                self._memory.keep(task_id, after)
                return written
            if already:
                return None  # this key was written before: an idempotent replay
            if remembered is None:
                _pause(attempt)
        raise WriteConflict(f"task {task_id} kept changing while an event was appended; try again")

    @retryable
    def read_events(
        self, task_id: str, after: int = 0, limit: int = 500, *, consistent: bool = True
    ) -> builtins.list[StreamEvent]:
        """One GetItem of the task item (its inline events), and a Query only for older events.

        ``consistent=False`` reads the task item eventually consistently (0.5 RRU instead of 1: a
        polling stream's reads are nearly all of a task's reads). Such a read may return an older
        version of the item, even one older than a version read before; what it returns is still
        right, only possibly short:

        - every version of the item holds a committed prefix of the log: its inline events run
          without a gap from ``lf`` to its ``event_seq``, and everything below ``lf`` was put into
          ``EVT#`` segments before the write that moved ``lf``. So the events after ``after`` that
          an older version shows are the log's events, in order, gapless, ending early; an older
          version than one seen before shows nothing past a cursor the reader already has.
        - the reads that follow the item stay strongly consistent: the Query of segments below the
          item's ``lf`` (an eventual Query could miss a segment the item's version relies on, a gap
          that would lose events) and the reads of ``OUT#`` and ``DAT#`` texts (put before the write
          that refers to them, so a consistent read finds them whatever version referred to them).
        - a lagging read's only cost is that the caller sees the events a round later. A caller
          that concludes from an empty answer that nothing more will come (a stream that has seen
          its task's terminal status) must read with ``consistent=True``.
        """
        item = self._read_task_item(task_id, consistent=consistent)
        if item is None:
            return []
        return read_log(self.client, self.table_name, task_id, item, after, limit, self._outputs.read)
