"""The Bedrock adapter through boto3 and botocore's real bedrock-runtime model, against a local server.

``tests/fake_bedrock.py`` answers ``ConverseStream`` in AWS's binary event-stream encoding, so what
is tested here is what runs in Lambda: the request botocore builds, the frames it decodes, the errors
it raises, and how the adapter maps them (one table) and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from agentic.adapters.bedrock_model import BedrockChatModel
from agentic.agents.model_agents import ANALYSIS_SCHEMA, parse_analysis
from agentic.chat import ChatMessage, ChatRequest
from agentic.errors import PermanentAgentError, TransientAgentError
from agentic.local.wiring import build_local_system
from tests.fake_bedrock import FakeBedrock, Reply, analysis
from tests.support import local_settings

pytestmark = pytest.mark.functional

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
REQUEST = ChatRequest("You write reports.", (ChatMessage("user", "Explain backoff"),), max_output_tokens=300)


def model(timeout: float = 10.0) -> BedrockChatModel:
    return BedrockChatModel(MODEL_ID, timeout_seconds=timeout)


def stream(client: BedrockChatModel, pieces: list[str] | None = None):
    async def sink(text: str) -> None:
        if pieces is not None:
            pieces.append(text)

    return asyncio.run(client.stream(REQUEST, sink))


def test_a_streamed_answer_arrives_in_order_with_its_usage(fake_bedrock: FakeBedrock):
    # Given a model that streams a 95-character answer in 20-character deltas
    text = "Exponential backoff spaces retries out; jitter spreads them so that clients do not retry at once."
    fake_bedrock.script(Reply(text=text, chunk=20, usage=(120, 40)))
    pieces: list[str] = []
    # When the adapter streams it
    reply = stream(model(), pieces)
    # Then every delta reached the sink in order, and the reply holds the text, usage and stop reason
    assert pieces == [text[i : i + 20] for i in range(0, len(text), 20)]
    assert (reply.text, reply.usage.as_dict(), reply.finish_reason) == (
        text,
        {"input_tokens": 120, "output_tokens": 40},
        "end_turn",
    )
    # And botocore sent one ConverseStream request for the model, built from the ChatRequest
    (request,) = fake_bedrock.requests
    assert request.path == f"/model/{MODEL_ID.replace(':', '%3A')}/converse-stream"
    assert request.body == {
        "system": [{"text": "You write reports."}],
        "messages": [{"role": "user", "content": [{"text": "Explain backoff"}]}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2},
    }
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256")  # signed like any AWS call


def test_a_structured_answer_is_the_input_of_the_forced_tool(fake_bedrock: FakeBedrock):
    # Given a model that answers the structured call with a toolUse block, its JSON in pieces
    fake_bedrock.script(Reply(tool_input=analysis(intent="plan the answer"), chunk=16))
    # When the analyzer's schema is asked for
    reply = asyncio.run(model().structured(REQUEST, ANALYSIS_SCHEMA))
    # Then the reply is the tool's input, valid for the analysis model
    assert parse_analysis(reply.text).intent == "plan the answer"
    assert reply.finish_reason == "tool_use"
    # And the request offered that one tool and made the model call it
    tool_config = fake_bedrock.requests[0].body["toolConfig"]
    assert tool_config["toolChoice"] == {"tool": {"name": "task_analysis"}}
    assert tool_config["tools"][0]["toolSpec"]["inputSchema"] == {"json": ANALYSIS_SCHEMA.schema}


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "ModelNotReadyException", "ServiceUnavailableException", "ModelTimeoutException"]
)
def test_a_transient_call_error_is_a_transient_agent_error_after_one_request(fake_bedrock: FakeBedrock, code):
    # Given a service that refuses the call with a retryable error
    fake_bedrock.script(Reply(error=code, message="try later"))
    # When the adapter calls it
    with pytest.raises(TransientAgentError, match=code):
        stream(model())
    # Then boto3 sent exactly one request: the state machine's Retry is the one retry policy
    assert len(fake_bedrock.requests) == 1


@pytest.mark.parametrize(
    ("code", "message", "setting"),
    [
        ("AccessDeniedException", "You don't have access to the model", "MODEL_ID="),
        ("ResourceNotFoundException", "Model not found", "MODEL_ID="),
        ("ValidationException", "The provided model identifier is invalid.", "MODEL_ID="),
        ("ValidationException", "Input is too long for requested model.", "MODEL_MAX_OUTPUT_TOKENS"),
    ],
)
def test_a_permanent_call_error_names_the_setting_to_fix(fake_bedrock: FakeBedrock, code, message, setting):
    fake_bedrock.script(Reply(error=code, message=message))
    with pytest.raises(PermanentAgentError) as raised:
        stream(model())
    assert code in str(raised.value)
    assert message in str(raised.value)
    assert setting in str(raised.value)
    assert len(fake_bedrock.requests) == 1


@pytest.mark.parametrize("code", ["throttlingException", "serviceUnavailableException", "modelStreamErrorException"])
def test_an_exception_frame_inside_the_stream_is_transient(fake_bedrock: FakeBedrock, code):
    # Given a stream that sends some text, then an exception frame
    fake_bedrock.script(Reply(text="The first part", stream_error=code, message="stream broke"))
    # Then the call fails as transient (the partial text is not an answer)
    with pytest.raises(TransientAgentError, match="stream broke"):
        stream(model())


def test_a_validation_exception_frame_inside_the_stream_is_permanent(fake_bedrock: FakeBedrock):
    fake_bedrock.script(Reply(text="x", stream_error="validationException", message="bad request"))
    with pytest.raises(PermanentAgentError, match="MODEL_ID="):
        stream(model())


@pytest.mark.parametrize("how", ["cut", "ends_early"])
def test_a_stream_that_stops_mid_answer_is_transient(fake_bedrock: FakeBedrock, how):
    # Given a connection dropped mid-answer, or a body that ends before the answer does
    fake_bedrock.script(Reply(text="half an answer " * 10, **{how: True}))
    # Then the half answer is not taken for the answer: the attempt fails and is retried
    with pytest.raises(TransientAgentError):
        stream(model())


def test_a_slow_stream_times_out_and_the_connection_is_closed(fake_bedrock: FakeBedrock):
    # Given a model that streams a delta every 0.2 s, for longer than MODEL_TIMEOUT_SECONDS
    fake_bedrock.script(Reply(text="slow " * 200, chunk=5, delay=0.2))
    # When the adapter waits at most 0.6 s
    started = time.monotonic()
    with pytest.raises(TransientAgentError, match=r"MODEL_TIMEOUT_SECONDS=0\.6"):
        stream(model(timeout=0.6))
    # Then the server sees the client go away (it does not keep streaming to nobody)
    assert wait_for(lambda: fake_bedrock.disconnects)
    assert fake_bedrock.disconnects[0] - started < 0.6 + 2


def test_cancelling_the_call_closes_the_connection_within_2_seconds(fake_bedrock: FakeBedrock):
    # Given a model that sends one delta, then thinks for 10 s
    fake_bedrock.script(Reply(text="word " * 200, chunk=5, stall=10.0))

    async def scenario() -> float:
        first = asyncio.Event()

        async def sink(_: str) -> None:
            first.set()

        call = asyncio.create_task(model().stream(REQUEST, sink))
        await first.wait()
        # When the step running it is cancelled after the first delta
        call.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await call
        return cancelled_at

    cancelled_at = asyncio.run(scenario())
    # Then the server sees the client close the connection within 2 s
    assert wait_for(lambda: fake_bedrock.disconnects, seconds=2.0)
    assert fake_bedrock.disconnects[0] - cancelled_at < 2.0


def test_the_client_is_built_without_retries_and_on_first_use(fake_bedrock: FakeBedrock):
    client = model()
    assert client._client is None  # nothing built at construction (cold start)
    fake_bedrock.script(Reply(text="ok"))
    stream(client)
    config = client.client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert json.loads(json.dumps(config.read_timeout)) == 10.0


def wait_for(condition, seconds: float = 5.0) -> bool:
    """Poll a condition the server's thread makes true (no fixed sleep decides the outcome)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_cancelling_a_task_hangs_up_its_running_bedrock_step_within_2_seconds(tmp_path, fake_bedrock: FakeBedrock):
    # Given a local server on Bedrock whose writer gets one delta, then a model that thinks for 30 s
    fake_bedrock.script(Reply(tool_input=analysis()), Reply(text="word " * 100, chunk=5, stall=30.0))
    system = build_local_system(local_settings(tmp_path, model_provider="bedrock", model_id=MODEL_ID))

    async def scenario() -> float:
        task, _ = await system.service.create("alice", "Explain backoff with jitter")
        await system.service.execute("alice", task.task_id)
        for _ in range(500):  # until the writer's first delta is in the log (at most 10 s)
            if any("delta" in e.data for e in system.store.read_events(task.task_id)):
                break
            await asyncio.sleep(0.02)
        # When the task is cancelled while the writer's step waits on the model
        await system.service.cancel("alice", task.task_id, reason="changed my mind")
        cancelled_at = time.monotonic()
        await system.executor.drain()
        return cancelled_at

    try:
        cancelled_at = asyncio.run(scenario())
    finally:
        system.store.close()
    # Then the model's server sees its client go away within 2 s, not after the 30 s answer
    assert wait_for(lambda: fake_bedrock.disconnects, seconds=2.0)
    assert fake_bedrock.disconnects[0] - cancelled_at < 2.0
