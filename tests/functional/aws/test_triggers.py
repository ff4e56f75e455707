"""Tasks started by S3 uploads and SQS messages, on the AWS path without AWS.

The trigger handlers run in-process with the files in events/ against moto's S3, SQS and DynamoDB;
the executions they start run the real statemachine/pipeline.asl.json in moto's interpreter, whose
Lambda invocations call the real agent and finalize handlers (the ``pipeline`` fixture).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from unittest import mock
from urllib.parse import unquote_plus

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from cfnlint.decode import decode

from agentic.aws.trigger_handlers import trigger_owner
from agentic.errors import Backpressure
from agentic.models import TaskStatus
from agentic.service.tasks import task_id_for
from agentic.settings import Settings
from agentic.triggers import s3_idempotency_key
from tests.functional.aws.support import (
    EVENTS,
    OWNER,
    REGION,
    ROOT,
    FakeLambdaContext,
    Pipeline,
    http_event,
    invoke,
    load_event,
    system,
)
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

S3_PUT = load_event("s3_trigger_put.json")
BUCKET = S3_PUT["Records"][0]["s3"]["bucket"]["name"]
#: The uploaded document events/s3_trigger_put.json announces (its eTag is this content's MD5).
S3_PUT_DOCUMENT = (
    b'{\n  "description": "Summarise the release notes of the agentic task system for the support team"\n}\n'
)
SQS_BATCH = load_event("sqs_trigger_batch.json")
MESSAGE_IDS = [record["messageId"] for record in SQS_BATCH["Records"]]
_template, _ = decode(str(ROOT / "template.yaml"))
assert _template is not None
MAX_RECEIVE_COUNT = int(_template["Resources"]["TaskQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"])


def test_every_trigger_event_file_is_replayed_here():
    files = {p.name for pattern in ("s3_trigger_*.json", "sqs_trigger_*.json") for p in EVENTS.glob(pattern)}
    assert files == {"s3_trigger_put.json", "s3_trigger_put_ignored.json", "sqs_trigger_batch.json"}


@dataclass
class Triggers:
    pipeline: Pipeline
    s3: Any
    sqs: Any
    queue_url: str
    queue_arn: str
    dlq_url: str

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        response: dict[str, Any] = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return response

    def executions(self) -> list[str]:
        listed = self.pipeline.sfn.list_executions(stateMachineArn=self.pipeline.state_machine_arn)
        return sorted(e["name"] for e in listed["executions"])

    def owner_tasks(self) -> list[str]:
        return [t.task_id for t in system().store.list(OWNER, limit=100).items]


@pytest.fixture
def triggers(pipeline: Pipeline) -> Triggers:
    """The pipeline, the tasks bucket of the event files (versioned) and the queue with its DLQ."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    sqs = boto3.client("sqs", region_name=REGION)
    dlq_url = sqs.create_queue(QueueName="task-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    queue_url = sqs.create_queue(QueueName="task-queue", Attributes={"RedrivePolicy": json.dumps(redrive)})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pipeline.configure(TRIGGER_OWNER=OWNER)
    return Triggers(pipeline, s3, sqs, queue_url, queue_arn, dlq_url)


def s3_event(base: dict[str, Any], *, key: str | None = None, put: dict[str, Any] | None = None) -> dict[str, Any]:
    """An events/ S3 notification for another key and/or for the version moto assigned."""
    event = json.loads(json.dumps(base))
    obj = event["Records"][0]["s3"]["object"]
    if key is not None:
        obj["key"] = key.replace(" ", "+")
    if put is not None:
        obj["versionId"] = put["VersionId"]
        obj["eTag"] = put["ETag"].strip('"')
    return event


def assert_completed(triggers: Triggers, task_id: str) -> None:
    assert triggers.pipeline.wait(task_id)["status"] == "SUCCEEDED"
    task = system().store.get(task_id)
    assert task is not None
    assert task.status is TaskStatus.COMPLETED
    assert [e.event_type.value for e in system().store.read_events(task_id)] == SEED_SEQUENCE


# --- S3 -----------------------------------------------------------------------------------------------


def test_the_s3_put_event_file_starts_one_task_even_when_notified_twice(triggers):
    record = S3_PUT["Records"][0]["s3"]["object"]
    key = unquote_plus(record["key"])  # "tasks/release notes summary.json"
    put = triggers.put(key, S3_PUT_DOCUMENT)
    assert put["ETag"].strip('"') == record["eTag"] == hashlib.md5(S3_PUT_DOCUMENT).hexdigest()
    event = s3_event(S3_PUT, put=put)  # moto picks its own version ids

    first = invoke("S3TriggerFunction", event)
    second = invoke("S3TriggerFunction", event)  # a duplicate notification

    assert first == second == {"task_ids": first["task_ids"], "dropped": 0}
    [task_id] = first["task_ids"]
    assert task_id == task_id_for("s3", OWNER, s3_idempotency_key(BUCKET, key, put["VersionId"], record["eTag"]))
    assert_completed(triggers, task_id)
    assert triggers.executions() == [task_id]
    task = system().store.get(task_id)
    assert task is not None
    assert (task.source, task.owner) == ("s3", OWNER)
    assert task.user_input == json.loads(S3_PUT_DOCUMENT)["description"]
    # the trigger owner sees it through the API
    listed = json.loads(invoke("QueryTasksFunction", http_event("query_tasks_list.json"))["body"])
    assert [t["task_id"] for t in listed["items"]] == [task_id]


def test_a_new_version_of_the_object_is_a_new_task(triggers):
    key = "tasks/weekly.txt"
    ids = []
    for text in (b"Explain the retry table", b"Explain the retry table again"):
        ids += invoke("S3TriggerFunction", s3_event(S3_PUT, key=key, put=triggers.put(key, text)))["task_ids"]
    assert len(set(ids)) == 2
    for task_id in ids:
        triggers.pipeline.wait(task_id)
    assert triggers.executions() == sorted(ids)


def test_the_same_content_uploaded_twice_is_two_tasks_and_each_version_one(triggers):
    """The object version names the task: the ETag alone (same bytes) would merge two uploads."""
    key = "tasks/nightly.txt"
    first = triggers.put(key, b"Explain the nightly report")
    second = triggers.put(key, b"Explain the nightly report")
    assert first["ETag"] == second["ETag"]
    assert first["VersionId"] != second["VersionId"]
    # each version notified twice (at-least-once delivery)
    ids = [
        invoke("S3TriggerFunction", s3_event(S3_PUT, key=key, put=put))["task_ids"]
        for put in (first, first, second, second)
    ]
    assert ids[0] == ids[1]
    assert ids[2] == ids[3]
    assert len({*ids[0], *ids[2]}) == 2
    for [task_id] in (ids[0], ids[2]):
        triggers.pipeline.wait(task_id)
    assert triggers.executions() == sorted([*ids[0], *ids[2]])


def test_the_ignored_s3_event_file_creates_no_task(triggers):
    event = load_event("s3_trigger_put_ignored.json")
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    assert not key.startswith("tasks/")
    event = s3_event(event, put=triggers.put(key, S3_PUT_DOCUMENT))
    assert invoke("S3TriggerFunction", event) == {"task_ids": [], "dropped": 1}
    assert triggers.owner_tasks() == []
    assert triggers.executions() == []


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("tasks/empty.json", b""),
        ("tasks/blank.txt", b" \n\t\n"),
        ("tasks/not-json.json", b"description: not JSON"),
        ("tasks/no-description.json", b'{"title": "no description"}'),
        ("tasks/huge.txt", b"x" * (Settings().max_document_bytes + 1)),
        ("tasks/binary.txt", b"\xff\xfe\x00"),
        ("tasks/table.csv", b"a,b\n1,2\n"),
        ("inbox/elsewhere.json", b'{"description": "outside tasks/"}'),
    ],
)
def test_unusable_objects_are_dropped_without_an_error(triggers, key, body):
    # returning normally is what keeps Lambda from retrying the event
    assert invoke("S3TriggerFunction", s3_event(S3_PUT, key=key, put=triggers.put(key, body))) == {
        "task_ids": [],
        "dropped": 1,
    }
    assert triggers.owner_tasks() == []
    assert triggers.executions() == []


def test_an_object_deleted_before_it_is_read_is_dropped(triggers):
    key = "tasks/gone.json"
    put = triggers.put(key, b'{"description": "Explain deletes"}')
    triggers.s3.delete_object(Bucket=BUCKET, Key=key, VersionId=put["VersionId"])
    assert invoke("S3TriggerFunction", s3_event(S3_PUT, key=key, put=put)) == {"task_ids": [], "dropped": 1}


def test_a_key_of_any_length_makes_one_task(triggers):
    key = "tasks/" + "deeply/nested/" * 60 + "task.txt"  # the raw idempotency key would exceed 255 chars
    event = s3_event(S3_PUT, key=key, put=triggers.put(key, b"Explain long keys"))
    [task_id] = invoke("S3TriggerFunction", event)["task_ids"]
    assert invoke("S3TriggerFunction", event)["task_ids"] == [task_id]
    assert_completed(triggers, task_id)


def test_non_creation_records_and_the_s3_test_event_are_ignored(triggers):
    removed = s3_event(S3_PUT)
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert invoke("S3TriggerFunction", removed) == {"task_ids": [], "dropped": 1}
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET, "RequestId": "R1"}
    assert invoke("S3TriggerFunction", test_event) == {"task_ids": [], "dropped": 0}


def test_an_aws_error_fails_the_invocation_after_the_other_records(triggers):
    """Throttling is worth Lambda's asynchronous retry; the records that worked are idempotent."""
    good = s3_event(S3_PUT, key="tasks/good.txt", put=triggers.put("tasks/good.txt", b"Explain partial failures"))
    slow = s3_event(S3_PUT, key="tasks/slow.txt", put=triggers.put("tasks/slow.txt", b"Explain throttling"))
    event = {"Records": slow["Records"] + good["Records"]}
    reader = system().documents
    real_get = reader.client.get_object

    def throttled(**kwargs: Any) -> Any:
        if kwargs["Key"] == "tasks/slow.txt":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"}}, "GetObject")
        return real_get(**kwargs)

    with mock.patch.object(reader.client, "get_object", side_effect=throttled), pytest.raises(ClientError):
        invoke("S3TriggerFunction", event)
    [started] = triggers.owner_tasks()
    # Lambda's retry of the same event: the good object's task is not repeated, the other one starts
    retried = invoke("S3TriggerFunction", event)
    assert started in retried["task_ids"]
    assert len(retried["task_ids"]) == 2
    for task_id in retried["task_ids"]:
        triggers.pipeline.wait(task_id)
    assert triggers.executions() == sorted(retried["task_ids"])


# --- SQS ----------------------------------------------------------------------------------------------


def test_the_sqs_batch_event_file_fails_only_the_malformed_records(triggers):
    bodies = [record["body"] for record in SQS_BATCH["Records"]]
    assert bodies[0] == bodies[2]  # the duplicate: same idempotency_key, another message id
    keyed = task_id_for("sqs", OWNER, json.loads(bodies[0])["idempotency_key"])
    unkeyed = task_id_for("sqs", OWNER, MESSAGE_IDS[3])  # no key: the message id is the key

    response = invoke("SqsTriggerFunction", SQS_BATCH)

    assert response == {"batchItemFailures": [{"itemIdentifier": MESSAGE_IDS[1]}, {"itemIdentifier": MESSAGE_IDS[4]}]}
    assert triggers.executions() == sorted([keyed, unkeyed])
    for task_id in (keyed, unkeyed):
        assert_completed(triggers, task_id)
        task = system().store.get(task_id)
        assert task is not None
        assert (task.source, task.owner) == ("sqs", OWNER)
    # the whole batch delivered again: still one task and one execution per message
    assert invoke("SqsTriggerFunction", SQS_BATCH) == response
    assert sorted(triggers.owner_tasks()) == triggers.executions() == sorted([keyed, unkeyed])


def test_a_batch_of_only_poison_messages_fails_the_invocation(triggers):
    """Powertools' default: a fully failed batch raises, so Lambda backs off polling."""
    event = {"Records": [SQS_BATCH["Records"][1], SQS_BATCH["Records"][4]]}
    with pytest.raises(BatchProcessingError):
        invoke("SqsTriggerFunction", event)
    assert triggers.owner_tasks() == []


def test_a_key_reused_for_another_description_is_poison(triggers):
    first = {**SQS_BATCH["Records"][0]}
    other = {
        **first,
        "messageId": "other-message",
        "body": json.dumps({"description": "Something else entirely", "idempotency_key": "order-1001"}),
    }
    response = invoke("SqsTriggerFunction", {"Records": [first, other]})
    assert response == {"batchItemFailures": [{"itemIdentifier": "other-message"}]}
    assert len(triggers.executions()) == 1


def test_a_start_refused_for_now_is_retried_by_redelivery(triggers):
    """Step Functions busy: the message fails alone, its task stays pending, redelivery starts it."""
    record = SQS_BATCH["Records"][3]
    task_id = task_id_for("sqs", OWNER, record["messageId"])
    busy = Backpressure("Step Functions refused a new execution now (ExecutionLimitExceeded)", 1)
    executor = system().executor
    real_start = executor.start_sync

    def start(started: str) -> str | None:
        if started == task_id:
            raise busy
        return real_start(started)

    with mock.patch.object(executor, "start_sync", side_effect=start):
        response = invoke("SqsTriggerFunction", {"Records": [record, SQS_BATCH["Records"][0]]})
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    task = system().store.get(task_id)
    assert task is not None
    assert task.status is TaskStatus.PENDING
    keyed = task_id_for("sqs", OWNER, "order-1001")
    assert triggers.executions() == [keyed]  # the other message of the batch started
    assert invoke("SqsTriggerFunction", {"Records": [record]}) == {"batchItemFailures": []}
    assert_completed(triggers, task_id)
    triggers.pipeline.wait(keyed)
    assert triggers.executions() == sorted([task_id, keyed])


def receive_and_invoke(triggers: Triggers) -> int:
    """One poll of the event source mapping: receive, invoke, delete what succeeded.

    Received with a 0 s visibility timeout, so what is not deleted is visible again at once (as it
    would be after the queue's VisibilityTimeout). Returns how many messages were received.
    """
    messages = triggers.sqs.receive_message(
        QueueUrl=triggers.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"]
    ).get("Messages", [])
    if not messages:
        return 0
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m["Attributes"],
            "messageAttributes": {},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": triggers.queue_arn,
            "awsRegion": REGION,
        }
        for m in messages
    ]
    try:
        response = invoke("SqsTriggerFunction", {"Records": records})
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    except BatchProcessingError:  # a function error: the whole batch comes back
        failed = {r["messageId"] for r in records}
    for record in records:
        if record["messageId"] not in failed:
            triggers.sqs.delete_message(QueueUrl=triggers.queue_url, ReceiptHandle=record["receiptHandle"])
    return len(messages)


def test_a_poison_message_ends_in_the_dead_letter_queue_and_good_ones_complete(triggers):
    good = json.dumps({"description": "Explain dead-letter queues", "idempotency_key": "order-2001"})
    poison = '{"description": ""}'
    triggers.sqs.send_message(QueueUrl=triggers.queue_url, MessageBody=good)
    triggers.sqs.send_message(QueueUrl=triggers.queue_url, MessageBody=poison)
    triggers.sqs.send_message(QueueUrl=triggers.queue_url, MessageBody=good)  # sent twice by the producer

    polls = []
    while received := receive_and_invoke(triggers):
        polls.append(received)
        assert len(polls) <= MAX_RECEIVE_COUNT + 1, polls
    assert polls == [3] + [1] * (MAX_RECEIVE_COUNT - 1)  # the poison message, received maxReceiveCount times

    dead = triggers.sqs.receive_message(QueueUrl=triggers.dlq_url, MaxNumberOfMessages=10, AttributeNames=["All"])
    assert [m["Body"] for m in dead["Messages"]] == [poison]
    assert int(dead["Messages"][0]["Attributes"]["ApproximateReceiveCount"]) >= MAX_RECEIVE_COUNT
    attributes = triggers.sqs.get_queue_attributes(QueueUrl=triggers.queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"

    task_id = task_id_for("sqs", OWNER, "order-2001")
    assert triggers.executions() == [task_id]
    assert_completed(triggers, task_id)


# --- the owner of triggered tasks ---------------------------------------------------------------------


def test_without_a_trigger_owner_the_account_root_owns_the_tasks(triggers):
    triggers.pipeline.configure(TRIGGER_OWNER="")
    record = SQS_BATCH["Records"][3]
    assert invoke("SqsTriggerFunction", {"Records": [record]}) == {"batchItemFailures": []}
    root = "arn:aws:iam::123456789012:root"
    task = system().store.get(task_id_for("sqs", root, record["messageId"]))
    assert task is not None
    assert task.owner == root
    triggers.pipeline.wait(task.task_id)


def test_trigger_owner_resolution():
    context = FakeLambdaContext("SqsTriggerFunction")
    assert trigger_owner(Settings(trigger_owner=OWNER), context) == OWNER
    assert trigger_owner(Settings(trigger_owner=""), context) == "arn:aws:iam::123456789012:root"
    assert trigger_owner(Settings(trigger_owner=""), None) == "triggers"
