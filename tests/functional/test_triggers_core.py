"""The trigger logic (S3 object / SQS message -> one task), independent of the Lambda handlers."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from agentic.adapters.s3_reader import S3DocumentReader
from agentic.service.intake import UnusableInput
from agentic.triggers import start_task_from_message, start_task_from_s3_object
from tests.support import SEED_SEQUENCE

pytestmark = pytest.mark.functional


@pytest.fixture
def system(local_system):
    return local_system


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="inbox")
        client.put_bucket_versioning(Bucket="inbox", VersioningConfiguration={"Status": "Enabled"})
        yield client


async def from_s3(system, s3, key, body):
    put = s3.put_object(Bucket="inbox", Key=key, Body=body)
    return await start_task_from_s3_object(
        system.service,
        S3DocumentReader(s3),
        "owner-1",
        bucket="inbox",
        key=key,
        version_id=put.get("VersionId"),
        etag=put["ETag"].strip('"'),
        max_bytes=65536,
    )


async def test_an_uploaded_task_document_becomes_one_task_even_if_notified_twice(system, s3):
    put = s3.put_object(Bucket="inbox", Key="tasks/a.json", Body=json.dumps({"description": "Explain NDJSON"}))
    args = dict(
        bucket="inbox", key="tasks/a.json", version_id=put["VersionId"], etag=put["ETag"].strip('"'), max_bytes=65536
    )
    first = await start_task_from_s3_object(system.service, S3DocumentReader(s3), "owner-1", **args)
    second = await start_task_from_s3_object(system.service, S3DocumentReader(s3), "owner-1", **args)
    await system.executor.drain()
    assert first == second
    assert [t.task_id for t in system.store.list("owner-1", limit=10).items] == [first]
    assert [e.event_type.value for e in system.store.read_events(first)] == SEED_SEQUENCE
    assert system.store.get(first).source == "s3"


async def test_a_new_version_of_the_same_key_is_a_new_task(system, s3):
    a = await from_s3(system, s3, "tasks/b.txt", b"first version")
    b = await from_s3(system, s3, "tasks/b.txt", b"second version")
    assert a != b


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("tasks/empty.txt", b""),
        ("tasks/blank.txt", b"  \n"),
        ("tasks/bad.json", b"{nope"),
        ("tasks/huge.txt", b"x" * 70_000),
        ("other/a.txt", b"not under tasks/"),
        ("tasks/a.csv", b"wrong,kind"),
    ],
)
async def test_unusable_objects_are_dropped_without_a_task(system, s3, key, body):
    assert await from_s3(system, s3, key, body) is None
    assert system.store.list("owner-1", limit=10).items == []


async def test_a_deleted_object_is_dropped(system, s3):
    result = await start_task_from_s3_object(
        system.service,
        S3DocumentReader(s3),
        "owner-1",
        bucket="inbox",
        key="tasks/gone.txt",
        version_id=None,
        etag=None,
        max_bytes=65536,
    )
    assert result is None


async def test_a_message_becomes_one_task_keyed_by_its_idempotency_key(system):
    body = json.dumps({"description": "Explain backpressure", "idempotency_key": "order-7"})
    a = await start_task_from_message(system.service, "owner-1", body, "msg-1")
    b = await start_task_from_message(system.service, "owner-1", body, "msg-2")  # redelivered as a new message
    await system.executor.drain()
    assert a == b
    assert system.store.get(a).status.value == "completed"


async def test_without_a_key_the_message_id_deduplicates(system):
    body = json.dumps({"description": "Explain retries"})
    a = await start_task_from_message(system.service, "owner-1", body, "msg-1")
    b = await start_task_from_message(system.service, "owner-1", body, "msg-1")
    c = await start_task_from_message(system.service, "owner-1", body, "msg-2")
    assert a == b != c


@pytest.mark.parametrize("body", ["not json", "{}", '{"description": ""}', '{"description": 5}', "[1]"])
async def test_poison_messages_raise_unusable_input(system, body):
    with pytest.raises(UnusableInput):
        await start_task_from_message(system.service, "owner-1", body, "msg-1")
    assert system.store.list("owner-1", limit=10).items == []
