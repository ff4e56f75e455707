"""The DynamoDB store's event log: recent events inline on the task item, older ones in ``EVT#`` items.

A task's newest events live on its task item (``log``: Binary, the events as deflated JSON, the first
of them at cursor ``lf``), so a state change and the events that announce it are ONE conditional
UpdateItem of one item: no transaction (which bills every item twice) and no item per event. When
the inline log would grow past ``LOG_MAX_BYTES`` deflated, the write that appends first puts the
events already inline (committed by earlier writes) as one segment item, then, in its own
conditional update, leaves only its new events inline (``lf`` moves past the flushed ones). The
segment put is a plain put of committed events: a crash after it and before the update leaves an
orphan segment that changes nothing (readers only read segments below ``lf``; the next write puts
the same or a longer one); a repeated put writes the same content again.

Items of the log::

    TASK#<id>  TASK                   ..., event_seq (N: the last cursor given), lf (N: the cursor of
                                      the first inline event), log (B: deflated JSON list of entries)
    TASK#<id>  EVT#<last cursor>      log (B): a flushed segment, the entries of cursors up to its sk;
                                      or, written before the inline log (``event_type``, ``timestamp``,
                                      ``data``, ``ref``/``ref_field``): one event, its cursor the sk
    TASK#<id>  DAT#<digest>           text (S): the data (JSON) of one event over ``SPILL_BYTES``, put
                                      before the write that commits the event; orphans are harmless

An entry is ``{"c": cursor, "t": event type, "at": timestamp, "d": data}``, with ``"x": <DAT# sk>``
instead of ``"d"`` for a spilled event, and ``"r": [field, OUT# sk]`` when ``data[field]`` is the
text of a step output item.

Reading after cursor ``n``: one GetItem of the task item (strongly consistent, or eventually
consistent for a polling stream: ``DynamoDBTaskStore.read_events`` says why that is safe), which answers alone when
``n + 1 >= lf`` (a stream that follows a task reads nothing else: the GetItem replaces the empty
Query a polling stream made before). Otherwise one Query of ``EVT#`` items from ``n + 1`` to
``lf - 1`` (a segment's sk is its LAST cursor, so the segment holding ``n + 1`` is found). Orphan
segments may overlap others; an event of a cursor is the same wherever it is stored, so events are
merged by cursor. The segments that moved ``lf`` cover every cursor below it without a gap, each put
before its removal, so the items read up to any sk hold every event up to it: a page cut by
``Limit`` returns the events up to the last sk read. An item written before the inline log (no
``log``) is read as an empty inline log starting past ``event_seq``: every event is an ``EVT#``
item, as it was written; the next write starts the inline log after them.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentic.adapters.dynamodb_codec import EVENT_PREFIX, MAX_CURSOR, event_sk, task_pk
from agentic.adapters.store_codec import check_payload_size
from agentic.models import EventType, NewEvent, StreamEvent

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, PutItemInputTypeDef, QueryInputTypeDef

    Item = Mapping[str, AttributeValueTypeDef]

LOG_ATTR = "log"
FROM_ATTR = "lf"
DATA_PREFIX = "DAT#"
#: The inline log's bound, deflated: past it a write flushes the inline events to a segment first.
#: The task item (under 1 KB without it) is billed 1 WRU per started KB on every write, and 1 RRU
#: per 4 KB on every read: this keeps it near 2-3 KB.
LOG_MAX_BYTES = 1536
#: An event whose data (JSON) is longer than this is stored as its own DAT# item, referred to inline,
#: so a few large events never crowd the task item (a partial_output delta, <= 1,000 characters, stays inline).
SPILL_BYTES = 4096
#: One write carries at most this many bytes of new events' data (the rest are appended after it).
WRITE_MAX_BYTES = 96 * 1024
_LEVEL = 9


@dataclass(frozen=True, eq=False)
class PendingEvent:
    """An event checked and serialised, waiting for its cursor (compared by identity)."""

    event: NewEvent
    data: str
    #: (field, OUT# sk): ``data`` lacks that field, which is the text of that output item.
    ref: tuple[str, str] | None = None

    @classmethod
    def of(cls, event: NewEvent, ref: tuple[str, str] | None = None) -> PendingEvent:
        stored = event.data if ref is None else {k: v for k, v in event.data.items() if k != ref[0]}
        data = json.dumps(stored, default=str, ensure_ascii=False)  # 3 bytes a CJK character, not 6
        check_payload_size(f"the data of a {event.event_type.value} event of task {event.task_id}", data)
        return cls(event, data, ref)

    @property
    def spilled(self) -> bool:
        return len(self.data) > SPILL_BYTES or len(self.data.encode()) > SPILL_BYTES

    @property
    def data_sk(self) -> str:
        """The DAT# item of a spilled event: by content, so that a repeated put writes the same item."""
        event = self.event
        digest = hashlib.sha256(
            f"{event.event_type.value}\x1f{event.timestamp.isoformat()}\x1f{self.data}".encode()
        ).hexdigest()
        return f"{DATA_PREFIX}{digest[:40]}"

    def entry(self, cursor: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "c": cursor,
            "t": self.event.event_type.value,
            "at": self.event.timestamp.isoformat(),
        }
        if self.spilled:
            entry["x"] = self.data_sk
        else:
            entry["d"] = json.loads(self.data)
        if self.ref is not None:
            entry["r"] = list(self.ref)
        return entry

    def written(self, cursor: int) -> StreamEvent:
        return StreamEvent(
            event_type=self.event.event_type,
            task_id=self.event.task_id,
            timestamp=self.event.timestamp,
            cursor=cursor,
            data=self.event.data,
        )


def fit_write(pending: Sequence[PendingEvent], max_events: int) -> tuple[list[PendingEvent], list[PendingEvent]]:
    """The events one write carries (at least one), and the rest."""
    size = 0
    for index, event in enumerate(pending):
        size += 64 if event.spilled else len(event.data)
        if index and (index >= max_events or size > WRITE_MAX_BYTES):
            return list(pending[:index]), list(pending[index:])
    return list(pending), []


def pack(entries: Sequence[Mapping[str, Any]]) -> bytes:
    return zlib.compress(json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode(), _LEVEL)


def unpack(blob: bytes) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(zlib.decompress(blob))
    return entries


def _number(item: Item, name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value is not None and "N" in value else None


@dataclass(frozen=True)
class InlineLog:
    """The events a task item holds: ``entries`` from cursor ``first``; ``seq`` is the item's event_seq."""

    first: int
    entries: list[dict[str, Any]]
    seq: int

    @classmethod
    def of(cls, item: Item) -> InlineLog:
        seq = _number(item, "event_seq") or 0
        blob = item.get(LOG_ATTR)
        if blob is None or "B" not in blob:  # written before the inline log: every event is an EVT# item
            return cls(seq + 1, [], seq)
        return cls(_number(item, FROM_ATTR) or seq + 1, unpack(blob["B"]), seq)

    @property
    def whole(self) -> bool:
        """Whether the entries run without a gap from ``first`` to ``seq``.

        Always, unless a writer of the layout before this one appended EVT# items after them (while
        both ran during a deployment): then the inline events are flushed and the log starts again.
        """
        return [e["c"] for e in self.entries] == list(range(self.first, self.seq + 1))


@dataclass(frozen=True)
class LogWrite:
    """What appending a batch at ``seq`` writes: puts first (spilled data, a flushed segment), then
    the task item's ``log``, ``lf`` and ``event_seq`` (in the caller's conditional update)."""

    puts: list[PutItemInputTypeDef]
    blob: bytes
    first: int
    next_seq: int

    def values(self) -> dict[str, AttributeValueTypeDef]:
        return {":log": {"B": self.blob}, ":lf": {"N": str(self.first)}, ":next_seq": {"N": str(self.next_seq)}}

    @staticmethod
    def names() -> dict[str, str]:
        return {"#log": LOG_ATTR, "#lf": FROM_ATTR, "#seq": "event_seq"}

    SET = "#log = :log, #lf = :lf, #seq = :next_seq"


def plan_append(
    table_name: str, task_id: str, inline: InlineLog, batch: Sequence[PendingEvent], expires_at: str
) -> LogWrite:
    """The write that appends ``batch`` after ``inline.seq`` (flushing the inline events when due)."""
    puts: list[PutItemInputTypeDef] = []
    pk = {"S": task_pk(task_id)}
    for pending in batch:
        if pending.spilled:
            puts.append(
                {
                    "TableName": table_name,
                    "Item": {
                        "pk": pk,
                        "sk": {"S": pending.data_sk},
                        "text": {"S": pending.data},
                        "expires_at": {"N": expires_at},
                    },
                }
            )
    new = [p.entry(cursor) for cursor, p in enumerate(batch, start=inline.seq + 1)]
    kept, first = (inline.entries, inline.first) if inline.whole else ([], inline.seq + 1)
    blob = pack([*kept, *new])
    if inline.entries and (not inline.whole or len(blob) > LOG_MAX_BYTES):
        # Committed events only: the put may be repeated or orphaned, never wrong.
        puts.append(
            {
                "TableName": table_name,
                "Item": {
                    "pk": pk,
                    "sk": {"S": event_sk(inline.entries[-1]["c"])},
                    LOG_ATTR: {"B": pack(inline.entries)},
                    "expires_at": {"N": expires_at},
                },
            }
        )
        blob, first = pack(new), inline.seq + 1
    return LogWrite(puts, blob, first, inline.seq + len(batch))


def after_write(item: Mapping[str, AttributeValueTypeDef], write: LogWrite) -> dict[str, AttributeValueTypeDef]:
    """The task item once ``write`` is applied (for the store's item memory)."""
    return {
        **item,
        LOG_ATTR: {"B": write.blob},
        FROM_ATTR: {"N": str(write.first)},
        "event_seq": {"N": str(write.next_seq)},
    }


# --- reading ----------------------------------------------------------------------------------------


def _stored_event(task_id: str, entry: Mapping[str, Any], refs: list[tuple[dict[str, Any], str, str]]) -> StreamEvent:
    data: dict[str, Any] = entry.get("d") or {}
    if "x" in entry:
        data = {}
        refs.append((data, "", entry["x"]))  # the whole data, read from its DAT# item
    if "r" in entry:
        refs.append((data, entry["r"][0], entry["r"][1]))
    # Entries this store wrote itself: built without validating again.
    return StreamEvent.model_construct(
        event_type=EventType(entry["t"]),
        task_id=task_id,
        timestamp=datetime.fromisoformat(entry["at"]),
        cursor=int(entry["c"]),
        data=data,
    )


def _item_events(item: Item) -> list[tuple[int, Mapping[str, Any] | Item]]:
    """(cursor, entry or old-layout item) of one EVT# item."""
    if LOG_ATTR in item:
        return [(int(e["c"]), e) for e in unpack(item[LOG_ATTR]["B"])]
    return [(int(item["sk"]["S"][len(EVENT_PREFIX) :]), item)]


def _old_event(task_id: str, item: Item, refs: list[tuple[dict[str, Any], str, str]]) -> StreamEvent:
    data = json.loads(item["data"]["S"])
    if "ref" in item:
        refs.append((data, item["ref_field"]["S"], item["ref"]["S"]))
    return StreamEvent.model_construct(
        event_type=EventType(item["event_type"]["S"]),
        task_id=task_id,
        timestamp=datetime.fromisoformat(item["timestamp"]["S"]),
        cursor=int(item["sk"]["S"][len(EVENT_PREFIX) :]),
        data=data,
    )


def read_log(
    client: DynamoDBClient,
    table_name: str,
    task_id: str,
    item: Item,
    after: int,
    limit: int,
    texts: Callable[[Collection[tuple[str, str]]], Mapping[tuple[str, str], str]],
) -> list[StreamEvent]:
    """The events after ``after`` (at most ``limit``) of the task whose item (read just now) is ``item``.

    ``texts`` reads items' ``text`` by (task_id, sk): step outputs and spilled data.
    """
    start = max(after, 0) + 1
    if limit < 1 or start > MAX_CURSOR:
        return []
    inline = InlineLog.of(item)
    found: dict[int, Mapping[str, Any] | Item] = {}
    bound = MAX_CURSOR
    if start < inline.first or not inline.whole:
        # Older events: segments and single events (the layout before the inline log), by last cursor.
        params: QueryInputTypeDef = {
            "TableName": table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": {"S": task_pk(task_id)},
                ":first": {"S": event_sk(start)},
                ":last": {"S": event_sk(inline.first - 1 if inline.whole else MAX_CURSOR)},
            },
            # Always consistent, even after an eventually consistent read of the item: the segments
            # below its lf were put before the write that moved lf, and only a consistent Query is
            # sure to see them (an eventual one could leave a gap, and lose the events in it).
            "ConsistentRead": True,
            "ScanIndexForward": True,
        }
        while True:
            # Each item holds at least one event: ``limit`` items hold at least ``limit`` events.
            params["Limit"] = limit
            response = client.query(**params)
            for stored in response.get("Items", []):
                for cursor, entry in _item_events(stored):
                    found.setdefault(cursor, entry)
            more = response.get("LastEvaluatedKey")
            if not more:
                break
            if sum(1 for c in found if c >= start) >= limit:
                # The items read, up to this sk, hold every event up to it (the segments removed
                # from the task item cover its cursors without a gap, and each is put before its
                # removal); nothing past it is known yet.
                bound = int(more["sk"]["S"][len(EVENT_PREFIX) :])
                break
            params["ExclusiveStartKey"] = more
    if bound == MAX_CURSOR:
        for entry in inline.entries:
            found.setdefault(int(entry["c"]), entry)
    events: list[StreamEvent] = []
    refs: list[tuple[dict[str, Any], str, str]] = []
    # By cursor: a cursor may be in several items (an orphan segment); it is the same event in each.
    # A gap is an event expired by TTL (a task item outlives its first events when it is retried a
    # month later): skipped, as DynamoDB's Query skipped it in the layout before this one.
    for cursor in sorted(c for c in found if start <= c <= bound)[:limit]:
        entry = found[cursor]
        if "c" in entry:
            events.append(_stored_event(task_id, entry, refs))
        else:
            events.append(_old_event(task_id, entry, refs))
    if refs:
        read = texts([(task_id, sk) for _, _, sk in refs])
        for data, name, sk in refs:
            text = read.get((task_id, sk))
            if name:
                data[name] = text
            elif text is not None:
                data.update(json.loads(text))
    return events
