"""The DynamoDB store's event log: inline on the task item, flushed to segments, and the layout before it.

The contract tests (test_store_contract.py) hold for every store; these are about what only this
layout can get wrong: a flush racing another writer, a crash between a flush's put and its removal,
a reader crossing the inline/flushed boundary, items written by the previous layout, and the bytes
written as outputs grow.
"""

from __future__ import annotations

import json
import math
import random
import string
import threading
from typing import Any

import pytest

from agentic.adapters import dynamodb_log
from agentic.adapters.dynamodb_store import DynamoDBTaskStore
from agentic.models import LIST_PREVIEW_CHARS, EventType, TaskPublic, TaskStatus
from tests.functional.conftest import TABLE_NAME
from tests.functional.test_store_contract import (
    event,
    log_entries,
    make_task,
    raw_items,
    run_to_completion,
)

pytestmark = pytest.mark.functional


@pytest.fixture
def small_log(monkeypatch):
    """An inline log bound small enough that a few events make a write flush them."""
    monkeypatch.setattr(dynamodb_log, "LOG_MAX_BYTES", 160)


def cursors(store: DynamoDBTaskStore, task_id: str, after: int = 0, limit: int = 500) -> list[int]:
    return [e.cursor for e in store.read_events(task_id, after, limit)]


def whos(store: DynamoDBTaskStore, task_id: str) -> list[Any]:
    return [e.data.get("n") for e in store.read_events(task_id)]


def segments(store: DynamoDBTaskStore, task_id: str) -> list[str]:
    return sorted(sk for sk in raw_items(store, task_id) if sk.startswith("EVT#"))


def test_events_past_the_bound_are_flushed_and_read_back_whole(dynamodb_store, small_log):
    # Given a task with more events than its item holds inline
    dynamodb_store.create(make_task("t-1"))
    for n in range(1, 31):
        dynamodb_store.append_event(event("t-1", key=f"k{n}", n=n))
    # Then older events were flushed into segments, and the task item holds the newest ones only
    items = raw_items(dynamodb_store, "t-1")
    inline = json.loads(dynamodb_log.zlib.decompress(items["TASK"]["log"]["B"]))
    assert segments(dynamodb_store, "t-1")
    assert int(items["TASK"]["lf"]["N"]) == inline[0]["c"] > 1
    # And every event is in exactly one place, once (no orphan: nothing failed)
    assert sorted(e["c"] for e in log_entries(items)) == list(range(1, 31))
    # And the log reads back whole, in order
    assert whos(dynamodb_store, "t-1") == list(range(1, 31))


def test_a_reader_crosses_the_inline_and_flushed_boundary_without_gap_or_duplicate(dynamodb_store, small_log):
    # Given a log spread over several segments and the task item
    dynamodb_store.create(make_task("t-1"))
    for n in range(1, 41):
        dynamodb_store.append_event(event("t-1", key=f"k{n}", n=n))
    first_inline = int(raw_items(dynamodb_store, "t-1")["TASK"]["lf"]["N"])
    assert len(segments(dynamodb_store, "t-1")) >= 3
    # When it is read after every cursor, in pages of every size
    reader = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    for after in range(41):
        for limit in (1, 2, 3, 7, 500):
            # Then each read is exactly the next events, whichever side of the boundary they are
            assert cursors(reader, "t-1", after, limit) == list(range(after + 1, min(after + limit, 40) + 1)), (
                after,
                limit,
                first_inline,
            )
    # And a stream that follows it page by page, while it grows, sees every event once
    seen, after = [], 0
    for n in range(41, 61):
        dynamodb_store.append_event(event("t-1", key=f"k{n}", n=n))
        page = reader.read_events("t-1", after, limit=3)
        seen += [e.data["n"] for e in page]
        after = page[-1].cursor if page else after
    while page := reader.read_events("t-1", after, limit=3):
        seen += [e.data["n"] for e in page]
        after = page[-1].cursor
    assert seen == list(range(1, 61))


class Crash(Exception):
    """The writer's process dies here."""


class CrashAfterFlush:
    """A client whose writer dies right after it put a flushed segment, before its task item update."""

    def __init__(self, client) -> None:
        self._client = client
        self.flushed: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name == "put_item":

            def put(**kwargs):
                result = attr(**kwargs)
                if kwargs["Item"]["sk"]["S"].startswith("EVT#"):
                    self.flushed.append(kwargs["Item"]["sk"]["S"])
                return result

            return put
        if name in ("update_item", "transact_write_items") and self.flushed:

            def crash(**_kwargs):
                raise Crash

            return crash
        return attr


class RacingClient:
    """A client whose next task write (UpdateItem or TransactWriteItems) first lets ``before`` run."""

    def __init__(self, client, before) -> None:
        self._client = client
        self._before = before

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name not in ("update_item", "transact_write_items") or self._before is None:
            return attr

        def call(**kwargs):
            before, self._before = self._before, None
            before()
            return attr(**kwargs)

        return call


def test_a_crash_between_a_flush_and_its_removal_loses_and_repeats_nothing(dynamodb_store, small_log):
    # Given a task with events, and a writer that appends two events per write and dies after
    # putting a flushed segment, before its update of the task item (the one that would have
    # committed its two events and moved the inline log past the flushed ones)
    dynamodb_store.create(make_task("t-1"))
    crashing = CrashAfterFlush(dynamodb_store.client)
    doomed = DynamoDBTaskStore(TABLE_NAME, crashing)
    crashed_at = 0
    for n in range(1, 100, 2):
        try:
            doomed.update(
                "t-1",
                {TaskStatus.PENDING},
                events=[event("t-1", key=f"k{n}", n=n), event("t-1", key=f"k{n + 1}", n=n + 1)],
            )
        except Crash:
            crashed_at = n
            break
    assert crashed_at
    # Then the segment it put is there, but nothing of its write reached the task
    assert crashing.flushed[-1] in segments(dynamodb_store, "t-1")
    assert int(raw_items(dynamodb_store, "t-1")["TASK"]["lf"]["N"]) <= int(crashing.flushed[-1][4:])
    assert whos(dynamodb_store, "t-1") == list(range(1, crashed_at))
    # And the next writers, one event per write, commit OTHER events at the cursors the dead writer
    # had taken (so a segment holding anything but committed events would show in what is read),
    # flushing again on top of its segment; the log holds every committed event once, in order
    committed = list(range(1, crashed_at)) + [1000 + m for m in range(20)]
    for m in range(20):
        dynamodb_store.append_event(event("t-1", key=f"next{m}", n=1000 + m))
    assert whos(dynamodb_store, "t-1") == committed
    last = len(committed)
    for after in range(last + 1):
        page = dynamodb_store.read_events("t-1", after, 4)
        assert [e.cursor for e in page] == list(range(after + 1, min(after + 4, last) + 1))
        assert [e.data["n"] for e in page] == committed[after : after + 4]
    # And the keyed events are still written once
    assert dynamodb_store.append_event(event("t-1", key="k1", n=1)) is None


def test_concurrent_writers_on_one_task_keep_a_contiguous_log_with_each_event_once(dynamodb_store, small_log):
    # Given a task, and another writer that appends (and flushes) between our read and each of our writes
    dynamodb_store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    other = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    for n in range(1, 21):
        for ours_too in ("u", "a"):
            racing = RacingClient(
                dynamodb_store.client,
                lambda n=n, w=ours_too: other.append_event(event("t-1", key=f"o{w}{n}", n=f"o{w}{n}")),
            )
            ours = DynamoDBTaskStore(TABLE_NAME, racing)
            # When we write an event with a state change, or one on its own
            if ours_too == "u":
                ours.update(
                    "t-1", {TaskStatus.EXECUTING}, events=[event("t-1", key=f"u{n}", n=f"u{n}")], current_step_index=n
                )
            else:
                ours.append_event(event("t-1", key=f"a{n}", n=f"a{n}"))
    # Then every event of every writer is in the log once, with contiguous cursors
    log = dynamodb_store.read_events("t-1")
    assert [e.cursor for e in log] == list(range(1, len(log) + 1))
    names = [e.data["n"] for e in log]
    assert sorted(names) == sorted({f"{p}{n}" for p in ("ou", "oa", "u", "a") for n in range(1, 21)})
    assert dynamodb_store.get("t-1").current_step_index == 20
    assert segments(dynamodb_store, "t-1")  # flushes happened along the way


class AtomicCalls:
    """A client whose calls each run alone, as DynamoDB applies each request atomically (moto's
    conditional writes are not atomic across threads: two can pass the same condition)."""

    def __init__(self, client) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_") or name in ("meta", "exceptions"):
            return attr

        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return call


def test_threads_writing_one_task_at_once_lose_and_duplicate_nothing(dynamodb_store, small_log):
    # Given a task and four writers, each with its own store, appending and updating at the same time
    dynamodb_store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    failures: list[BaseException] = []

    atomic = AtomicCalls(dynamodb_store.client)

    def writer(w: int) -> None:
        store = DynamoDBTaskStore(TABLE_NAME, atomic)
        try:
            for n in range(12):
                if n % 3 == 0:
                    store.update("t-1", {TaskStatus.EXECUTING}, events=[event("t-1", key=f"{w}:{n}", n=f"{w}:{n}")])
                else:
                    store.append_event(event("t-1", key=f"{w}:{n}", n=f"{w}:{n}"))
                store.append_event(event("t-1", key=f"{w}:{n}", n=f"{w}:{n}"))  # a replay: written once
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then no writer failed, and the log holds each event once, in contiguous cursors
    assert failures == []
    log = dynamodb_store.read_events("t-1")
    assert [e.cursor for e in log] == list(range(1, 49))
    assert sorted(e.data["n"] for e in log) == sorted(f"{w}:{n}" for w in range(4) for n in range(12))


# --- the layout before the inline log -------------------------------------------------------------


def put_old_event(client, task_id: str, cursor: int, event_type: str, data: dict[str, Any], **extra: Any) -> None:
    """An event item as the layout before the inline log wrote it: one EVT# item per event."""
    client.put_item(
        TableName=TABLE_NAME,
        Item={
            "pk": {"S": f"TASK#{task_id}"},
            "sk": {"S": f"EVT#{cursor:012d}"},
            "event_type": {"S": event_type},
            "timestamp": {"S": "2026-11-24T14:50:24.331495+00:00"},
            "data": {"S": json.dumps(data)},
            "expires_at": {"N": "4102444800"},
            **extra,
        },
    )


def old_layout_task(store: DynamoDBTaskStore, task_id: str) -> None:
    """A task item with three events as separate items (no ``log``, no ``lf``), one referring to an output."""
    store.create(make_task(task_id, status=TaskStatus.EXECUTING))
    client = store.client
    client.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": "TASK"}},
        UpdateExpression="SET event_seq = :three",
        ExpressionAttributeValues={":three": {"N": "3"}},
    )
    client.put_item(
        TableName=TABLE_NAME,
        Item={"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": "OUT#step_001#1"}, "text": {"S": "the passages"}},
    )
    put_old_event(client, task_id, 1, "task_started", {"n": 1})
    put_old_event(client, task_id, 2, "step_started", {"n": 2})
    put_old_event(
        client,
        task_id,
        3,
        "partial_output",
        {"n": 3, "step_id": "step_001"},
        ref={"S": "OUT#step_001#1"},
        ref_field={"S": "output"},
    )


def test_a_log_written_by_the_layout_before_reads_and_grows_correctly(dynamodb_store):
    # Given a task whose events were written one item each, before the inline log
    old_layout_task(dynamodb_store, "t-1")
    store = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)  # one that never saw the task
    # When it is read / Then its events come back, the output reference filled in
    log = store.read_events("t-1")
    assert [(e.cursor, e.event_type.value, e.data.get("n")) for e in log] == [
        (1, "task_started", 1),
        (2, "step_started", 2),
        (3, "partial_output", 3),
    ]
    assert log[2].data["output"] == "the passages"
    # When new events are written on top of it / Then they follow, inline, and reads cross both layouts
    assert store.append_event(event("t-1", n=4)).cursor == 4
    store.update("t-1", {TaskStatus.EXECUTING}, events=[event("t-1", n=5)], current_step_index=1)
    assert int(raw_items(store, "t-1")["TASK"]["lf"]["N"]) == 4
    assert [e.data["n"] for e in store.read_events("t-1")] == [1, 2, 3, 4, 5]
    assert [e.cursor for e in store.read_events("t-1", after=2)] == [3, 4, 5]
    assert [e.cursor for e in store.read_events("t-1", after=1, limit=2)] == [2, 3]


def test_an_old_writer_appending_after_the_inline_log_is_read_and_continued(dynamodb_store):
    # Given a task with inline events, then an event item written by the previous version (a
    # deployment in progress: both run for a while) after them
    dynamodb_store.create(make_task("t-1"))
    for n in (1, 2):
        dynamodb_store.append_event(event("t-1", n=n))
    client = dynamodb_store.client
    client.update_item(
        TableName=TABLE_NAME,
        Key={"pk": {"S": "TASK#t-1"}, "sk": {"S": "TASK"}},
        UpdateExpression="SET event_seq = :three",
        ExpressionAttributeValues={":three": {"N": "3"}},
    )
    put_old_event(client, "t-1", 3, "step_started", {"n": 3})
    store = DynamoDBTaskStore(TABLE_NAME, client)
    # When it is read / Then both are there, in order
    assert [e.data["n"] for e in store.read_events("t-1")] == [1, 2, 3]
    # When the new version writes again / Then its event follows, and every event reads back once
    assert store.append_event(event("t-1", n=4)).cursor == 4
    assert [e.data["n"] for e in store.read_events("t-1")] == [1, 2, 3, 4]
    assert [e.cursor for e in store.read_events("t-1", after=1)] == [2, 3, 4]


def test_a_listing_of_a_task_completed_before_previews_reads_its_output(dynamodb_store):
    # Given a task completed by the layout before previews: its item names the output item only
    long_report = "report " * 1000
    run_to_completion(dynamodb_store, "t-1", ["passages", long_report])
    client = dynamodb_store.client
    client.update_item(
        TableName=TABLE_NAME, Key={"pk": {"S": "TASK#t-1"}, "sk": {"S": "TASK"}}, UpdateExpression="REMOVE fp"
    )
    # When it is listed / Then its preview is cut from the output item
    [listed] = DynamoDBTaskStore(TABLE_NAME, client).list("alice", limit=10).items
    shown = TaskPublic.of(listed).preview()
    assert (shown.final_output, shown.final_output_truncated) == (long_report[:LIST_PREVIEW_CHARS], True)


# --- sizes ------------------------------------------------------------------------------------------


class WriteMeter:
    """A client that counts the WRU of every write (1 per started KB of the larger of the item before
    and after, x2 in a transaction), as DynamoDB bills them, and the items a listing reads."""

    WRITES = frozenset({"put_item", "update_item", "transact_write_items"})

    def __init__(self, client) -> None:
        self._client = client
        self.wru = 0
        self.read_keys: list[str] = []

    def _size(self, key: dict[str, Any]) -> int:
        item = self._client.get_item(TableName=TABLE_NAME, Key=key, ConsistentRead=True).get("Item") or {}
        return sum(
            len(name.encode()) + sum(len(v if isinstance(v, bytes) else str(v).encode()) for v in value.values())
            for name, value in item.items()
        )

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name == "batch_get_item":

            def read(**kwargs):
                for request in kwargs["RequestItems"].values():
                    self.read_keys += [k["sk"]["S"] for k in request["Keys"]]
                return attr(**kwargs)

            return read
        if name not in self.WRITES:
            return attr

        def write(**kwargs):
            if name == "transact_write_items":
                targets = [(next(iter(t.values())), 2) for t in kwargs["TransactItems"]]
            else:
                targets = [(kwargs, 1)]
            keys = [(body.get("Key") or {k: body["Item"][k] for k in ("pk", "sk")}, factor) for body, factor in targets]
            before = [self._size(key) for key, _ in keys]
            result = attr(**kwargs)
            for (key, factor), size in zip(keys, before, strict=True):
                self.wru += factor * max(1, math.ceil(max(size, self._size(key)) / 1024))
            return result

        return write


def test_a_100000_character_output_adds_its_own_size_once(dynamodb_store):
    # Given two tasks run the same way, one whose report is 20 characters and one of 100,000 (random
    # letters: nothing for deflate to squeeze)
    text = "".join(random.Random(7).choices(string.ascii_letters + " ", k=100_000))
    small_meter, large_meter = WriteMeter(dynamodb_store.client), WriteMeter(dynamodb_store.client)
    run_to_completion(DynamoDBTaskStore(TABLE_NAME, small_meter), "t-small", ["passages", "analysis", "x" * 20])
    run_to_completion(DynamoDBTaskStore(TABLE_NAME, large_meter), "t-large", ["passages", "analysis", text])
    # Then the large one costs its output once (100 KB: 98 WRU) and its list preview once (a few KB),
    # not once per write
    extra = large_meter.wru - small_meter.wru
    assert math.ceil(100_000 / 1024) <= extra <= math.ceil(100_000 / 1024) + 4, extra
    # And a listing shows its preview without reading the output item
    listing = WriteMeter(dynamodb_store.client)
    page = DynamoDBTaskStore(TABLE_NAME, listing).list("alice", limit=10)
    assert listing.read_keys == ["TASK", "TASK"]
    shown = {t.task_id: TaskPublic.of(t).preview() for t in page.items}
    assert (shown["t-large"].final_output, shown["t-large"].final_output_truncated) == (
        text[:LIST_PREVIEW_CHARS],
        True,
    )
    assert (shown["t-small"].final_output, shown["t-small"].final_output_truncated) == ("x" * 20, False)


def test_many_delta_events_keep_the_task_item_bounded(dynamodb_store):
    # Given a model-backed step streaming 200 partial_output deltas of 1,000 characters each
    dynamodb_store.create(make_task("t-1", status=TaskStatus.EXECUTING))
    deltas = ["".join(random.Random(n).choices(string.ascii_letters, k=1000)) for n in range(200)]
    for seq, delta in enumerate(deltas, start=1):
        dynamodb_store.update(
            "t-1",
            {TaskStatus.EXECUTING},
            events=[event("t-1", EventType.PARTIAL_OUTPUT, key=f"step_001:0:delta:{seq}", seq=seq, delta=delta)],
        )
    # Then the task item stays a few KB, and the log reads back every delta once, in order
    items = raw_items(dynamodb_store, "t-1")
    assert len(items["TASK"]["log"]["B"]) <= dynamodb_log.LOG_MAX_BYTES + 1100
    assert [e.data["delta"] for e in dynamodb_store.read_events("t-1")] == deltas


def test_an_event_over_the_inline_bound_is_an_item_of_its_own_and_reads_back(dynamodb_store):
    # Given an event whose data is far larger than the inline log holds
    dynamodb_store.create(make_task("t-1"))
    big = "y" * 50_000
    dynamodb_store.append_event(event("t-1", EventType.ERROR, key="big", message=big))
    dynamodb_store.append_event(event("t-1", n=2))
    # Then its data is a DAT# item, the task item stays small, and the log reads it back whole
    items = raw_items(dynamodb_store, "t-1")
    assert [sk for sk in items if sk.startswith("DAT#")]
    assert len(items["TASK"]["log"]["B"]) < 1024
    log = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client).read_events("t-1")
    assert (log[0].data, log[1].data) == ({"message": big}, {"n": 2})
    # And written again it is a replay
    assert dynamodb_store.append_event(event("t-1", EventType.ERROR, key="big", message=big)) is None
