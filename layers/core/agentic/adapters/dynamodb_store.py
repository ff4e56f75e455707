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

What a task costs (``make cost``, the seed's agents, Express): 31 WRU and about 20 RRU. Each write
of a task is ONE UpdateItem of its task item (about 2 KB: the deflated document and its newest
events), no transaction; each output is one put; a read of the log is one GetItem of the task item
(a stream that follows the task reads nothing else, eventually consistently while it runs). Before
the inline log: 65 WRU (9 transactions, each the task item and an item per event, billed twice).

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

How the contract of ``TaskStore`` holds (conditional writes, cursors, idempotent events, a lost
answer): ``dynamodb_update``; the one conditional write of the task item: ``dynamodb_commit``.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from typing import TYPE_CHECKING, cast

from agentic.adapters.dynamodb_codec import (
    KEY_SET_MARK,
    TASK_SK,
    gsi1pk,
    gsi1sk,
    gsi2pk,
    index_shard,
    pack_doc,
    parse_task,
    task_key,
)
from agentic.adapters.dynamodb_log import (
    read_log,
)
from agentic.adapters.dynamodb_outputs import (
    PREVIEW_ATTR,
    dump_task,
    final_out,
    preview,
)
from agentic.adapters.dynamodb_writes import (
    retryable,
)

# Shared with the SQLite store: the cursor format and the payload bound (MAX_PAYLOAD_BYTES, 350 KB of
# a document or an event's data, leaving room in DynamoDB's 400 KB item for the other attributes).
from agentic.adapters.store_codec import check_payload_size, encode_cursor, sort_key
from agentic.errors import (
    InvalidInput,
    RetryableStoreError,
    TaskAlreadyExists,
    WriteConflict,
)
from agentic.models import StreamEvent, TaskPage, TaskState, TaskStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        KeysAndAttributesTypeDef,
        ScanInputTypeDef,
    )

    Item = Mapping[str, AttributeValueTypeDef]
from agentic.adapters.dynamodb_commit import MAX_ATTEMPTS, _pause
from agentic.adapters.dynamodb_update import TaskItemWrites

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


class DynamoDBTaskStore(TaskItemWrites):
    blocking = True  # every call is a network round trip: async callers run it in a thread

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

    @retryable
    def get(self, task_id: str) -> TaskState | None:
        # The whole item (a read is billed by its size, not by what it returns), remembered for update.
        item = self._read_task_item(task_id)
        return self._outputs.inflate(item)[0] if item is not None else None

    def get_as_written(self, task_id: str) -> TaskState | None:
        """Always the stored task: a Lambda serves one state's call and remembers nothing of another's."""
        return self.get(task_id)

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
