"""Listing an owner's tasks on DynamoDB reads a bounded number of items per call (issue 8, items 5 and 14)."""

from __future__ import annotations

from typing import Any

import pytest

from agentic.adapters.dynamodb_store import DynamoDBTaskStore
from agentic.models import TaskState, TaskStatus
from tests.functional.aws.support import TABLE_NAME

pytestmark = pytest.mark.functional

OWNER = "arn:aws:iam::123456789012:user/alice"


class CountingClient:
    """The moto client, counting the items each read returns or scans."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def query(self, **kwargs: Any) -> Any:
        response = self._client.query(**kwargs)
        self.reads.append(("query", response["ScannedCount"]))
        return response

    def batch_get_item(self, **kwargs: Any) -> Any:
        response = self._client.batch_get_item(**kwargs)
        self.reads.append(("batch_get_item", sum(len(v) for v in response["Responses"].values())))
        return response


@pytest.fixture
def store(moto_table: Any) -> tuple[DynamoDBTaskStore, CountingClient]:
    counting = CountingClient(moto_table)
    return DynamoDBTaskStore(TABLE_NAME, counting), counting


def test_a_status_filter_reads_one_page_however_many_tasks_the_owner_has(store):
    # Given an owner with one failed task, older than 150 pending ones
    dynamo, counting = store
    dynamo.create(TaskState(task_id="failed-1", owner=OWNER, user_input="oldest"))
    dynamo.update("failed-1", {TaskStatus.PENDING}, status=TaskStatus.FAILED, error_message="boom")
    for n in range(150):
        dynamo.create(TaskState(task_id=f"pending-{n:03d}", owner=OWNER, user_input=f"task {n}"))
    counting.reads.clear()
    # When the failed ones are listed
    page = dynamo.list(OWNER, limit=5, status=TaskStatus.FAILED)
    # Then one query of at most a page (plus one) and one read of the page's documents found it
    assert [t.task_id for t in page.items] == ["failed-1"]
    assert page.next_cursor is None
    assert [name for name, _ in counting.reads] == ["query", "batch_get_item"]
    assert all(count <= 6 for _, count in counting.reads)


def test_pages_by_status_follow_each_other_and_moved_tasks_leave_the_status(store):
    dynamo, counting = store
    for n in range(7):
        dynamo.create(TaskState(task_id=f"t-{n}", owner=OWNER, user_input=f"task {n}"))
    dynamo.update("t-3", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)
    seen: list[str] = []
    cursor = None
    while True:
        counting.reads.clear()
        page = dynamo.list(OWNER, limit=2, status=TaskStatus.PENDING, cursor=cursor)
        assert all(count <= 3 for _, count in counting.reads)
        seen += [t.task_id for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == [f"t-{n}" for n in range(7) if n != 3]
    assert [t.task_id for t in dynamo.list(OWNER, limit=10, status=TaskStatus.ANALYZING).items] == ["t-3"]


def test_the_indexes_hold_keys_only(store):
    # the task document (up to 350 KB) is written once per update, not again into each index
    dynamo, _ = store
    table = dynamo.client.describe_table(TableName=TABLE_NAME)["Table"]
    assert {i["IndexName"]: i["Projection"]["ProjectionType"] for i in table["GlobalSecondaryIndexes"]} == {
        "gsi1": "KEYS_ONLY",
        "gsi2": "KEYS_ONLY",
    }
