"""What a ``GET /tasks`` page costs on DynamoDB per number of index shards, under moto (prints only).

    python -m bench.listing [--tasks N]

One owner's ``--tasks`` tasks (a quarter of them completed) are created in a moto table with the
production schema, once per shard count; then the first page, a page deep in the list and a
``status=completed`` page are read at 20 and 100 tasks a page. Every DynamoDB request is counted
and its read units priced as ``bench.cost`` does (from item sizes: an index Query is eventually
consistent, 0.5 RRU per started 4 KB; the page's BatchGetItem is strongly consistent, 1 RRU per item
up to 4 KB). moto answers in-process, so times are not printed: on AWS the shards' queries run in
parallel, so a page waits for the slowest of them, not for their sum.
"""

from __future__ import annotations

import os

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import argparse
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws

from agentic.adapters.dynamodb_store import DynamoDBTaskStore, create_table
from agentic.models import TaskState, TaskStatus
from bench.cost import item_size, read_units

OWNER = "arn:aws:iam::123456789012:role/triggers"
BASE = datetime(2026, 12, 1, tzinfo=UTC)


class Metered:
    """The moto client, counting requests and the read units of Query and BatchGetItem."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.rru = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **kwargs: Any) -> Any:
        response = self._client.query(**kwargs)
        units = read_units(sum(item_size(i) for i in response.get("Items", [])), bool(kwargs.get("ConsistentRead")))
        with self._lock:
            self.requests["Query"] += 1
            self.rru += units
        return response

    def batch_get_item(self, **kwargs: Any) -> Any:
        response = self._client.batch_get_item(**kwargs)
        units = sum(read_units(item_size(i), True) for items in response["Responses"].values() for i in items)
        with self._lock:
            self.requests["BatchGetItem"] += 1
            self.rru += units
        return response

    def reset(self) -> None:
        self.requests.clear()
        self.rru = 0.0


def measure(shards: int, tasks: int) -> list[tuple[str, str]]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = f"bench-{shards}"
        create_table(client, table)
        metered = Metered(client)
        store = DynamoDBTaskStore(table, metered, index_shards=shards)
        for n in range(tasks):
            created = BASE + timedelta(seconds=n)
            store.create(TaskState(task_id=f"task-{n:05d}", owner=OWNER, user_input=f"task {n}", created_at=created))
            if n % 4 == 0:
                store.update(f"task-{n:05d}", {TaskStatus.PENDING}, status=TaskStatus.COMPLETED)
        rows = []
        for limit in (20, 100):
            deep = store.list(OWNER, limit=limit)
            for _ in range(3):
                assert deep.next_cursor is not None
                deep = store.list(OWNER, limit=limit, cursor=deep.next_cursor)
            for label, cursor, status in (
                ("first page", None, None),
                ("4th page", deep.next_cursor, None),
                ("status=completed", None, TaskStatus.COMPLETED),
            ):
                metered.reset()
                page = store.list(OWNER, limit=limit, cursor=cursor, status=status)
                assert len(page.items) == limit
                calls = " + ".join(f"{n} {op}" for op, n in sorted(metered.requests.items(), reverse=True))
                rows.append((f"limit {limit:3d}, {label}", f"{calls}, {metered.rru:.1f} RRU"))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    for shards in (1, 4, 8, 16):
        print(f"INDEX_SHARDS={shards} ({args.tasks} tasks of one owner)")
        for label, cost in measure(shards, args.tasks):
            print(f"  {label:30s} {cost}")


if __name__ == "__main__":
    main()
