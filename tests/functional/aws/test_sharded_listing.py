"""An owner's index keys spread over shards (issue 16): triggered tasks, which all share one owner,
write their index keys over ``INDEX_SHARDS`` partitions, and a list reads every shard and returns
exactly the pages one unsharded index gives (same order, same cursors), items written before the
keys were sharded included."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from agentic.adapters.dynamodb_codec import gsi1pk, gsi2pk, index_shard
from agentic.adapters.dynamodb_store import DynamoDBTaskStore, create_table
from agentic.models import TaskState, TaskStatus
from tests.functional.aws.support import (
    REGION,
    TABLE_NAME,
    create_trivial_state_machine,
    http_event,
    invoke,
    load_event,
)

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

TRIGGERS = "arn:aws:iam::123456789012:role/agentic-TriggeredTasksRole-Q1"
OTHER = "arn:aws:iam::123456789012:user/bob"
SHARDS = 8
BASE = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
PLAIN_TABLE = "agentic-unsharded"
#: Where the tasks end (every path is a legal move; the index keys of each status are visited).
PATHS: list[list[TaskStatus]] = [
    [],
    [TaskStatus.ANALYZING],
    [TaskStatus.ANALYZING, TaskStatus.EXECUTING, TaskStatus.COMPLETED],
    [TaskStatus.FAILED],
    [TaskStatus.ANALYZING, TaskStatus.EXECUTING],
]


def index_items(client: Any, table: str = TABLE_NAME) -> dict[str, dict[str, str]]:
    """task id -> its index key attributes, as stored."""
    found: dict[str, dict[str, str]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            if item["sk"]["S"] == "TASK":
                task_id = item["pk"]["S"].removeprefix("TASK#")
                found[task_id] = {k: item[k]["S"] for k in ("gsi1pk", "gsi2pk", "gsi1sk") if k in item}
    return found


def pages(store: DynamoDBTaskStore, owner: str, limit: int, status: TaskStatus | None = None):
    """Every page as (task ids, next cursor), following the cursors."""
    out, cursor = [], None
    while True:
        page = store.list(owner, limit=limit, cursor=cursor, status=status)
        out.append(([t.task_id for t in page.items], page.next_cursor))
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor
        assert len(out) < 200, "pagination does not terminate"


def make(task_id: str, second: int, owner: str = TRIGGERS) -> TaskState:
    created = BASE + timedelta(seconds=second)
    return TaskState(task_id=task_id, owner=owner, user_input=f"do {task_id}", created_at=created, updated_at=created)


def move(store: DynamoDBTaskStore, task_id: str, path: list[TaskStatus]) -> None:
    current = TaskStatus.PENDING
    for status in path:
        store.update(task_id, {current}, status=status)
        current = status


def newest_first(tasks: list[TaskState]) -> list[str]:
    return [t.task_id for t in sorted(tasks, key=lambda t: (t.created_at, t.task_id), reverse=True)]


@pytest.fixture
def stores(moto_table: Any) -> tuple[DynamoDBTaskStore, DynamoDBTaskStore]:
    """A sharded store and an unsharded one, each on its own table, given the same tasks."""
    create_table(moto_table, PLAIN_TABLE)
    return (
        DynamoDBTaskStore(TABLE_NAME, moto_table, index_shards=SHARDS),
        DynamoDBTaskStore(PLAIN_TABLE, moto_table),
    )


# --- the keys written -------------------------------------------------------------------------------


def test_triggered_tasks_spread_their_index_keys_over_every_shard(moto_table, aws_env):
    # Given the deployed functions' settings (four shards) and 60 SQS messages, in batches of 10
    aws_env.setenv("INDEX_SHARDS", "4")
    aws_env.setenv("TRIGGER_OWNER", TRIGGERS)
    aws_env.setenv("STATE_MACHINE_ARN", create_trivial_state_machine("pipeline"))
    record = load_event("sqs_trigger_batch.json")["Records"][0]
    for batch in range(6):
        records = []
        for n in range(10):
            body = {"description": f"triggered task {batch}-{n}", "idempotency_key": f"order-{batch}-{n}"}
            records.append({**record, "messageId": f"m-{batch}-{n}", "body": json.dumps(body)})
        # When the SQS trigger takes them
        assert invoke("SqsTriggerFunction", {"Records": records}) == {"batchItemFailures": []}
    # Then the 60 tasks, all the triggers' owner's, have their keys in the 4 shards, by task id
    keys = index_items(moto_table)
    assert len(keys) == 60
    shards = Counter()
    for task_id, item in keys.items():
        shard = index_shard(task_id, 4)
        assert item["gsi1pk"] == gsi1pk(TRIGGERS, shard)
        assert item["gsi2pk"] == gsi2pk(TRIGGERS, TaskStatus.PENDING, shard)
        shards[shard] += 1
    assert sorted(shards) == [0, 1, 2, 3]
    assert min(shards.values()) >= 8  # 15 each on average
    # And the triggers' owner pages through them all through the API, newest first, each once
    seen: list[str] = []
    query = ""
    while True:
        event = http_event("query_tasks_list.json", owner=TRIGGERS, rawQueryString=query)
        event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&")) if query else {}
        event["queryStringParameters"]["limit"] = "7"
        body = json.loads(invoke("QueryTasksFunction", event)["body"])
        seen += [t["task_id"] for t in body["items"]]
        if not body.get("next_cursor"):
            break
        query = f"cursor={body['next_cursor']}"
    assert sorted(seen) == sorted(keys)
    assert len(seen) == 60
    created = {t: keys[t]["gsi1sk"] for t in keys}
    assert seen == sorted(seen, key=created.__getitem__, reverse=True)


def test_a_status_change_moves_the_status_key_within_the_tasks_shard(stores):
    # Given 40 tasks of one owner taken along every path
    sharded, _ = stores
    for n in range(40):
        sharded.create(make(f"t-{n:02d}", n))
        move(sharded, f"t-{n:02d}", PATHS[n % len(PATHS)])
    # Then each task's status key sits in the shard of its owner key, which its id decides
    keys = index_items(sharded.client)
    for n in range(40):
        task_id, status = f"t-{n:02d}", (PATHS[n % len(PATHS)] or [TaskStatus.PENDING])[-1]
        shard = index_shard(task_id, SHARDS)
        assert keys[task_id]["gsi1pk"] == gsi1pk(TRIGGERS, shard)
        assert keys[task_id]["gsi2pk"] == gsi2pk(TRIGGERS, status, shard)
    assert len({index_shard(f"t-{n:02d}", SHARDS) for n in range(40)}) == SHARDS


# --- the pages read ---------------------------------------------------------------------------------


def given_the_same_tasks(*stores: DynamoDBTaskStore) -> list[TaskState]:
    """90 tasks of the triggers' owner (threes created in the same microsecond: the id breaks the
    tie) along every path, and 10 of another owner's between them; the same in every store."""
    tasks = []
    for n in range(90):
        task = make(f"task-{(n * 37) % 90:03d}", n // 3)
        tasks.append(task)
        for store in stores:
            store.create(task)
            move(store, task.task_id, PATHS[n % len(PATHS)])
        if n % 9 == 0:
            for store in stores:
                store.create(make(f"bob-{n:03d}", n // 3, owner=OTHER))
    return tasks


def test_every_page_is_the_unsharded_page(stores):
    # Given the same tasks in a sharded and an unsharded store
    sharded, plain = stores
    tasks = given_the_same_tasks(sharded, plain)
    final = {t.task_id: (PATHS[n % len(PATHS)] or [TaskStatus.PENDING])[-1] for n, t in enumerate(tasks)}
    cases = [(None, 4), (None, 20), (None, 100), (TaskStatus.PENDING, 1), (TaskStatus.COMPLETED, 7)]
    for status, limit in [*cases, (TaskStatus.CANCELLED, 5)]:
        # When both are listed page by page (all, or one status)
        got, expected = pages(sharded, TRIGGERS, limit, status), pages(plain, TRIGGERS, limit, status)
        # Then the pages and their cursors are the same, and together give each task once, newest first
        assert got == expected, (status, limit)
        listed = [task_id for ids, _ in got for task_id in ids]
        assert listed == [t for t in newest_first(tasks) if status is None or final[t] == status]
        assert all(len(ids) == limit for ids, _ in got[:-1])


def test_a_cursor_from_any_page_reads_the_page_after_it(stores):
    # Given the pages of 90 tasks, 9 at a time, and the cursors they gave
    sharded, plain = stores
    given_the_same_tasks(sharded, plain)
    first = pages(sharded, TRIGGERS, 9)
    # When another container (a new store) is handed the cursor of page N, or a cursor the unsharded
    # store gave (a client that paged before the upgrade)
    later = DynamoDBTaskStore(TABLE_NAME, sharded.client, index_shards=SHARDS)
    for n, (_, cursor) in enumerate(first[:-1]):
        page = later.list(TRIGGERS, limit=9, cursor=cursor)
        # Then it reads page N + 1
        assert ([t.task_id for t in page.items], page.next_cursor) == first[n + 1]
    plain_cursor = plain.list(TRIGGERS, limit=9).next_cursor
    assert plain_cursor == first[0][1]
    assert [t.task_id for t in later.list(TRIGGERS, limit=9, cursor=plain_cursor).items] == first[1][0]


def test_tasks_written_before_sharding_list_with_the_new_ones(moto_table):
    # Given 30 tasks written by the previous version (one plain key per owner and status)
    before = DynamoDBTaskStore(TABLE_NAME, moto_table)  # index_shards=1 writes what it wrote
    old = [make(f"old-{n:02d}", 2 * n) for n in range(30)]
    for n, task in enumerate(old):
        before.create(task)
        move(before, task.task_id, PATHS[n % len(PATHS)])
    assert {k["gsi1pk"] for k in index_items(moto_table).values()} == {f"OWNER#{TRIGGERS}"}
    # When the table is used with 8 shards: 30 new tasks created between and after the old ones, and
    # the old pending tasks move on
    after = DynamoDBTaskStore(TABLE_NAME, moto_table, index_shards=SHARDS)
    new = [make(f"new-{n:02d}", 2 * n + 1 + (20 if n >= 15 else 0)) for n in range(30)]
    for n, task in enumerate(new):
        after.create(task)
        move(after, task.task_id, PATHS[n % len(PATHS)])
    for n, task in enumerate(old):
        if not PATHS[n % len(PATHS)]:
            after.update(task.task_id, {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    # Then old and new list together, each once, newest first, 4 a page
    listed = [task_id for ids, _ in pages(after, TRIGGERS, 4) for task_id in ids]
    assert listed == newest_first(old + new)
    # And by status too: the old tasks' status keys moved within their plain key
    keys = index_items(moto_table)
    assert {keys[t.task_id]["gsi2pk"].split("#STATUS#")[0] for t in old} == {f"OWNER#{TRIGGERS}"}
    analyzing = [task_id for ids, _ in pages(after, TRIGGERS, 3, TaskStatus.ANALYZING) for task_id in ids]
    expected = [t for t in newest_first(old + new) if after.get(t).status is TaskStatus.ANALYZING]  # type: ignore[union-attr]
    assert analyzing == expected
    assert {t for t in analyzing if t.startswith("old")}
    assert {t for t in analyzing if t.startswith("new")}


def test_every_shard_is_read_in_one_bounded_query(stores):
    # Given 90 tasks over 8 shards
    sharded, _ = stores
    given_the_same_tasks(sharded)
    counted: list[tuple[str, int]] = []
    client = sharded.client

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def query(self, **kwargs: Any) -> Any:
            response = client.query(**kwargs)
            counted.append((kwargs["ExpressionAttributeValues"][":hash"]["S"], response["ScannedCount"]))
            return response

    store = DynamoDBTaskStore(TABLE_NAME, Counting(), index_shards=SHARDS)
    # When one page of 10 is read / Then each shard was queried once for at most 11 keys
    store.list(TRIGGERS, limit=10)
    assert sorted(h for h, _ in counted) == sorted(gsi1pk(TRIGGERS, k) for k in range(SHARDS))
    assert all(scanned <= 11 for _, scanned in counted)


def test_the_table_is_unchanged(moto_table):
    # sharding changes key values only: a deployed table is upgraded in place
    table = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=TABLE_NAME)["Table"]
    assert {a["AttributeName"] for a in table["AttributeDefinitions"]} == {"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk"}
    assert {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]] for i in table["GlobalSecondaryIndexes"]} == {
        "gsi1": ["gsi1pk", "gsi1sk"],
        "gsi2": ["gsi2pk", "gsi1sk"],
    }
