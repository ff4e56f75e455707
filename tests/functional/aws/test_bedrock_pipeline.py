"""A task on the AWS path with MODEL_PROVIDER=bedrock: the real state machine in moto, the real handlers,
and boto3 calling a local bedrock-runtime (tests/fake_bedrock.py) that answers in AWS's event-stream
encoding. Bedrock's errors reach the state machine as the core's errors: transient ones are retried
by the ASL's Retry (``step_retrying``), permanent ones fail the task with the setting to fix.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import pytest

from agentic.aws import powertools
from agentic.aws.wiring import get_system
from agentic.models import LIST_PREVIEW_CHARS
from tests.fake_bedrock import FakeBedrock, Reply, analysis
from tests.functional.aws.support import OWNER, Pipeline, http_event, invoke
from tests.support import SEED_SEQUENCE

pytestmark = [
    pytest.mark.functional,
    pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning"),
]

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
REPORT = "Backoff spaces retries out. Jitter keeps clients apart, so that they never retry in step."


def on_bedrock(pipeline: Pipeline) -> None:
    pipeline.configure(
        MODEL_PROVIDER="bedrock",
        MODEL_ID=MODEL_ID,
        MODEL_TIMEOUT_SECONDS="10",
        STREAM_DELTA_CHARS="30",
        MODEL_PRICES=json.dumps({MODEL_ID: {"input": 0.25, "output": 1.25}}),
    )


def run_task(pipeline: Pipeline) -> tuple[str, list[Any]]:
    event = http_event(
        "create_task_post.json", body=json.dumps({"description": "Explain backoff with jitter", "execute": True})
    )
    del event["headers"]["idempotency-key"]
    response = invoke("CreateTaskFunction", event)
    assert response["statusCode"] == 201, response["body"]
    task_id: str = json.loads(response["body"])["task_id"]
    pipeline.wait(task_id)
    return task_id, get_system().store.read_events(task_id)


def types(events: list[Any]) -> list[str]:
    return [e.event_type.value for e in events if not (e.event_type.value == "partial_output" and "delta" in e.data)]


def emf_metrics(stdout: str) -> list[dict[str, Any]]:
    """The EMF documents the functions printed (what CloudWatch turns into metrics)."""
    documents = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"_aws"')]
    return [d for d in documents if d["_aws"]["CloudWatchMetrics"]]


def test_a_task_on_bedrock_streams_its_report_and_records_the_tokens(
    pipeline, fake_bedrock: FakeBedrock, capsys: pytest.CaptureFixture[str]
):
    # Given Bedrock answering the analyzer's tool call, then streaming the writer's report
    on_bedrock(pipeline)
    powertools.metrics.clear_metrics()  # what local runs of earlier tests recorded in the same process
    fake_bedrock.script(Reply(tool_input=analysis(), usage=(300, 50)), Reply(text=REPORT, chunk=10, usage=(900, 120)))
    # When a task runs through the state machine
    task_id, events = run_task(pipeline)
    # Then it completed with the seed's events, the writer's text in deltas before its whole output
    assert types(events) == SEED_SEQUENCE
    deltas = [e.data for e in events if e.event_type.value == "partial_output" and "delta" in e.data]
    assert "".join(d["delta"] for d in deltas) + "" == get_system().store.get(task_id).final_output
    assert get_system().store.get(task_id).final_output.startswith(REPORT)
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert len(deltas) > 1
    # And each model step's step_completed names the model, its tokens and their cost
    completed = {e.data["step_id"]: e.data for e in events if e.event_type.value == "step_completed"}
    assert completed["step_002"]["usage"] == {"input_tokens": 300, "output_tokens": 50}
    assert completed["step_003"]["usage"] == {"input_tokens": 900, "output_tokens": 120}
    assert completed["step_003"]["model_id"] == MODEL_ID
    assert completed["step_003"]["cost_usd"] == pytest.approx((900 * 0.25 + 120 * 1.25) / 1e6)
    # And the functions published the tokens as EMF metrics, in the tests' namespace
    published = [
        (d["ModelInputTokens"], d["ModelOutputTokens"])
        for d in emf_metrics(capsys.readouterr().out)
        if "ModelInputTokens" in d and d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AgenticTests"
    ]
    assert published == [([300.0], [50.0]), ([900.0], [120.0])]
    # And the analyzer and the writer each made one ConverseStream call
    assert [("toolConfig" in r.body) for r in fake_bedrock.requests] == [True, False]


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "ModelNotReadyException", "ServiceUnavailableException", "ModelTimeoutException"]
)
def test_a_transient_bedrock_error_is_retried_by_the_state_machine(pipeline, fake_bedrock: FakeBedrock, code):
    # Given Bedrock refusing the writer's first call with a transient error
    on_bedrock(pipeline)
    fake_bedrock.script(Reply(tool_input=analysis()), Reply(error=code, message="busy"), Reply(text=REPORT))
    # When the task runs
    _, events = run_task(pipeline)
    # Then the writer's attempt was retried by the ASL's policy, visible as step_retrying, and the task completed
    retrying = [e.data for e in events if e.event_type.value == "step_retrying"]
    assert [(r["step_id"], r["attempt"]) for r in retrying] == [("step_003", 2)]
    assert retrying[0]["error"].startswith(f"TransientAgentError: Bedrock {code}")
    assert types(events)[-1] == "task_completed"
    # And each attempt was one request: boto3 did not retry behind the state machine's back
    assert len(fake_bedrock.requests) == 3
    assert len(pipeline.retry_sleeps) == 1


@pytest.mark.parametrize(
    ("code", "message", "setting"),
    [
        ("AccessDeniedException", "You don't have access to the model with the specified model ID.", "MODEL_ID="),
        ("ResourceNotFoundException", "Model not found.", "MODEL_ID="),
        ("ValidationException", "Input is too long for requested model.", "MODEL_MAX_OUTPUT_TOKENS"),
    ],
)
def test_a_permanent_bedrock_error_fails_the_task_naming_the_setting(
    pipeline, fake_bedrock: FakeBedrock, code, message, setting
):
    on_bedrock(pipeline)
    fake_bedrock.script(Reply(error=code, message=message))
    task_id, events = run_task(pipeline)
    assert types(events)[-2:] == ["error", "task_failed"]
    task = get_system().store.get(task_id)
    assert task.status.value == "failed"
    assert task.error_message.startswith(f"PermanentAgentError: Bedrock {code}: {message}")
    assert setting in task.error_message
    assert len(fake_bedrock.requests) == 1  # no retry of a permanent error
    assert "step_retrying" not in types(events)


# --- outputs of any realistic size -------------------------------------------------------------------

#: 100,000 characters of 3 bytes each (CJK): 300,000 bytes of UTF-8, 600,000 as JSON \u escapes.
CJK_REPORT = "".join(("指数退避与抖动" * 9 + "\n") if n % 50 == 0 else "重试" for n in range(50_000))[:100_000]


def raw_items(task_id: str) -> dict[str, dict[str, Any]]:
    client = get_system().store.client
    items = client.query(
        TableName=get_system().settings.table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"TASK#{task_id}"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings as UTF-8)."""
    return sum(len(name.encode()) + len(_raw(next(iter(value.values())))) for name, value in item.items())


def _raw(value: str | bytes | list[str] | list[bytes]) -> bytes:
    """An attribute's bytes: strings as UTF-8, binaries as they are, sets as their members."""
    if isinstance(value, list):
        return b"".join(_raw(v) for v in value)
    return value if isinstance(value, bytes) else value.encode()


def test_a_100k_character_cjk_report_completes_and_the_task_item_stays_flat(pipeline, fake_bedrock: FakeBedrock):
    # Given Bedrock streaming a 10-character report for one task, 100,000 CJK characters for another
    on_bedrock(pipeline)
    pipeline.configure(STREAM_DELTA_CHARS="1000")
    fake_bedrock.script(Reply(tool_input=analysis()), Reply(text="short text"))
    small_id, _ = run_task(pipeline)
    fake_bedrock.script(Reply(tool_input=analysis()), Reply(text=CJK_REPORT, chunk=2000))
    # When the second task runs through the real state machine and handlers
    task_id, events = run_task(pipeline)
    # Then it completed with the whole report, in the task (as the status API shows it) and in the log
    assert types(events) == SEED_SEQUENCE
    response = invoke("QueryTasksFunction", http_event("query_tasks_status.json", task_id=task_id))
    final = json.loads(response["body"])["final_output"]
    assert final.startswith(CJK_REPORT)
    assert final == get_system().store.get(task_id).final_output
    writer_partial = [e.data for e in events if e.event_type.value == "partial_output" and "output" in e.data][-1]
    assert writer_partial["output"] == final
    assert events[-1].data["final_output"] == final
    assert "".join(e.data["delta"] for e in events if "delta" in e.data) == final
    # And every item is under DynamoDB's 400 KB, and the task item did not grow with the report
    items, small = raw_items(task_id), raw_items(small_id)
    assert max(item_bytes(item) for item in items.values()) < 400 * 1024
    assert item_bytes(items["TASK"]) < 8 * 1024
    # (apart from its bounded parts: the newest events inline, and the listing's preview)
    bounded = {"log", "fp"}
    large_item, small_item = ({k: v for k, v in i["TASK"].items() if k not in bounded} for i in (items, small))
    assert abs(item_bytes(large_item) - item_bytes(small_item)) < 256
    assert len(zlib.decompress(items["TASK"]["fp"]["B"]).decode()) == LIST_PREVIEW_CHARS + 1
    # And no Step Functions payload carried it: the whole execution history is far under 256 KB
    assert len(json.dumps(pipeline.history(task_id), default=str).encode()) < 256 * 1024


# --- cancel on AWS: the writer's next write is refused, which hangs up its Bedrock call ---------------


def test_cancelling_a_task_on_aws_hangs_up_the_writers_bedrock_call(pipeline, fake_bedrock: FakeBedrock):
    # Given a writer whose model sends one delta, thinks for 3 s, then streams for another 4 s
    on_bedrock(pipeline)
    long_tail = "word " * 400
    fake_bedrock.script(Reply(tool_input=analysis()), Reply(text="first " + long_tail, chunk=5, stall=3.0, delay=0.01))
    event = http_event("create_task_post.json", body=json.dumps({"description": "Explain backoff", "execute": True}))
    del event["headers"]["idempotency-key"]
    task_id = json.loads(invoke("CreateTaskFunction", event)["body"])["task_id"]
    store = get_system().store
    deadline = time.monotonic() + 20
    while not any("delta" in e.data for e in store.read_events(task_id)) and time.monotonic() < deadline:
        time.sleep(0.05)  # polls the log; the writer's Lambda is idle in the model's 3 s pause meanwhile
    # When the task is cancelled in the store during the pause (what the cancel route records first)
    get_system().service.control.cancel(store.get(task_id), "changed my mind", OWNER)
    pipeline.wait(task_id)
    # Then the writer's Bedrock call was hung up at its next delta, long before the answer's end
    assert fake_bedrock.disconnects
    task = store.get(task_id)
    assert task.status.value == "cancelled"
    writer_deltas = "".join(e.data.get("delta", "") for e in store.read_events(task_id))
    assert len(writer_deltas) < len(long_tail) // 2
    assert "step_completed" not in [e.event_type.value for e in store.read_events(task_id)][-3:]
