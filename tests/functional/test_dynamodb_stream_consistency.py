"""A stream over DynamoDB whose polling reads are eventually consistent, against reads that lag.

The stream's polling reads of the task item are eventually consistent (half the price); DynamoDB may
then answer with an older version of the item, even one older than a version it answered before.
``LaggingReads`` does exactly that, and hides from an eventually consistent Query the ``EVT#``
segments put after the version it pretends to read. A stream over it must still deliver every event
once, in order, and end with the terminal event.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from agentic.adapters import dynamodb_log
from agentic.adapters.dynamodb_codec import task_key
from agentic.adapters.dynamodb_store import DynamoDBTaskStore
from agentic.models import EventType, TaskStatus
from agentic.service import stream
from agentic.service.stream import tail_events
from tests.functional.conftest import TABLE_NAME
from tests.functional.test_store_contract import event, make_task, raw_items

pytestmark = pytest.mark.functional


class LaggingReads:
    """A client whose eventually consistent reads of a task see the table as it was 1-3 writes ago.

    ``versions`` holds the task's items after each write (``snapshot``); an eventually consistent
    GetItem of the task item answers with one of the last three versions but the newest (chosen at
    random, so a read can go back behind the one before it), and an eventually consistent Query
    leaves out the ``EVT#`` items written after the version it drew. Consistent reads see the table.
    """

    def __init__(self, client: Any, task_id: str, seed: int) -> None:
        self._client = client
        self._task_id = task_id
        self._rng = random.Random(seed)
        self.versions: list[tuple[dict[str, Any], set[str]]] = []
        self.eventual_reads = 0
        self.went_back = False
        self._last_drawn = 0

    def snapshot(self) -> None:
        items = {item["sk"]["S"]: item for item in self._all_items()}
        self.versions.append((items["TASK"], {sk for sk in items if sk.startswith("EVT#")}))

    def _all_items(self) -> list[dict[str, Any]]:
        return self._client.query(
            TableName=TABLE_NAME,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"TASK#{self._task_id}"}},
            ConsistentRead=True,
        )["Items"]

    def _draw(self) -> tuple[dict[str, Any], set[str]]:
        index = max(0, len(self.versions) - 1 - self._rng.randint(1, 3))
        self.went_back = self.went_back or index < self._last_drawn
        self._last_drawn = index
        self.eventual_reads += 1
        return self.versions[index]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "get_item":

            def get_item(**kwargs: Any) -> Any:
                if kwargs.get("ConsistentRead") or kwargs["Key"] != task_key(self._task_id) or not self.versions:
                    return attr(**kwargs)
                return {"Item": self._draw()[0]}

            return get_item
        if name == "query":

            def query(**kwargs: Any) -> Any:
                response = attr(**kwargs)
                if kwargs.get("ConsistentRead") or not self.versions:
                    return response
                known = self._draw()[1]
                items = [i for i in response["Items"] if not i["sk"]["S"].startswith("EVT#") or i["sk"]["S"] in known]
                return {**response, "Items": items}

            return query
        return attr


class ScriptedWriter:
    """The stream's waiter: each wait runs the writer's next step (a deterministic interleaving)."""

    def __init__(self, steps: list[Any], reads: LaggingReads) -> None:
        self._steps = iter(steps)
        self._reads = reads

    async def wait(self, task_id: str, after: int, timeout: float) -> None:
        step = next(self._steps, None)
        if step is not None:
            step()
            self._reads.snapshot()
        await asyncio.sleep(0)


def writer_steps(store: DynamoDBTaskStore, task_id: str, events: int) -> list[Any]:
    """Start the task, append ``events`` events a few at a time, complete it."""
    steps: list[Any] = [
        lambda: store.update(
            task_id,
            {TaskStatus.PENDING},
            status=TaskStatus.EXECUTING,
            events=[event(task_id, EventType.TASK_STARTED, key="task:started", n=1)],
        )
    ]
    for first in range(2, events + 1, 3):
        batch = range(first, min(first + 3, events + 1))
        steps.append(
            lambda batch=batch: store.update(
                task_id, {TaskStatus.EXECUTING}, events=[event(task_id, key=f"k{n}", n=n) for n in batch]
            )
        )
    steps.append(
        lambda: store.update(
            task_id,
            {TaskStatus.EXECUTING},
            status=TaskStatus.COMPLETED,
            final_output="done",
            events=[event(task_id, EventType.TASK_COMPLETED, key="task:completed", n=events + 1, final_output="done")],
        )
    )
    return steps


@pytest.mark.parametrize("seed", range(4))
def test_a_stream_whose_polling_reads_lag_delivers_every_event_once_in_order_and_ends(
    dynamodb_store, monkeypatch, seed
):
    # Given an inline log bound small enough that the writer flushes segments as it goes, and a
    # stream that checks the task's status whenever a read shows nothing new
    monkeypatch.setattr(dynamodb_log, "LOG_MAX_BYTES", 160)
    monkeypatch.setattr(stream, "STATUS_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(stream, "MIN_IDLE_SECONDS", 0.0)
    dynamodb_store.create(make_task("t-1"))
    reads = LaggingReads(dynamodb_store.client, "t-1", seed)
    reads.snapshot()
    reader = DynamoDBTaskStore(TABLE_NAME, reads)
    writer = DynamoDBTaskStore(TABLE_NAME, dynamodb_store.client)
    waiter = ScriptedWriter(writer_steps(writer, "t-1", 40), reads)

    # When a stream follows the task from the start while it runs, its eventually consistent reads
    # always 1-3 writes behind (so the last write is never seen by one)
    async def follow() -> list[dict[str, Any]]:
        lines = tail_events(reader, waiter, "t-1", max_wait_seconds=0.0)
        return [json.loads(line) async for chunk in lines for line in chunk.splitlines()]

    lines = asyncio.run(follow())

    # Then it sent every event once, in cursor order, and ended with the terminal event
    events = [line for line in lines if "cursor" in line and line["event_type"] != stream.KEEPALIVE]
    assert [line["cursor"] for line in events] == list(range(1, 42))
    assert [line["data"]["n"] for line in events] == list(range(1, 42))
    assert events[-1]["event_type"] == EventType.TASK_COMPLETED.value
    assert lines[-1] == events[-1]
    # And the reads did lag, and went back behind one another, over a log flushed into segments
    assert reads.eventual_reads > 10
    assert reads.went_back
    assert any(sk.startswith("EVT#") for sk in raw_items(dynamodb_store, "t-1"))


def test_an_eventually_consistent_read_is_not_remembered_for_updates(dynamodb_store):
    # Given a running task whose eventually consistent reads see an older version of it (same status)
    dynamodb_store.create(make_task("t-1"))
    reads = LaggingReads(dynamodb_store.client, "t-1", 0)
    store = DynamoDBTaskStore(TABLE_NAME, reads)
    store.update("t-1", {TaskStatus.PENDING}, status=TaskStatus.EXECUTING)
    reads.snapshot()
    store.update("t-1", {TaskStatus.EXECUTING}, events=[event("t-1", n=1)])
    assert len(reads.versions) == 1  # every eventually consistent read answers with the older one
    writes: list[str] = []
    original = reads._client.update_item

    def counted(**kwargs: Any) -> Any:
        writes.append(kwargs["ConditionExpression"])
        return original(**kwargs)

    # When the store reads the log eventually consistently, then updates the task
    assert store.read_events("t-1", consistent=False) == []
    reads._client.update_item = counted
    try:
        store.update("t-1", {TaskStatus.EXECUTING}, status=TaskStatus.COMPLETED)
    finally:
        del reads._client.update_item
    # Then the update started from the item it wrote itself, not the older one: one write, no refusal
    assert len(writes) == 1
