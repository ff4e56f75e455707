"""The OpenAI-compatible adapter against a real local HTTP server speaking Chat Completions with SSE.

No hosted model is called: ``tests/fake_openai.py`` serves scripted answers, injected errors, slow
and cut streams, and records what it was sent and when a client went away.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentic.adapters.openai_model import OpenAIChatModel
from agentic.agents.model_agents import ANALYSIS_SCHEMA
from agentic.chat import ChatMessage, ChatRequest
from agentic.errors import PermanentAgentError, TransientAgentError
from tests.fake_openai import Answer, FakeOpenAI

pytestmark = pytest.mark.functional

REQUEST = ChatRequest(system="be brief", messages=(ChatMessage("user", "hello"),), max_output_tokens=64)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def client(fake: FakeOpenAI, **kw) -> OpenAIChatModel:
    return OpenAIChatModel(fake.base_url, "fake-1", api_key="sk-test", **kw)


async def test_a_streamed_answer_arrives_piece_by_piece_with_its_usage(fake):
    # Given a server that streams an answer in pieces
    fake.queue("stream", Answer(chunks=["Hel", "lo, ", "wörld ✓"], usage=(12, 3)))
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    # When the client streams it
    model = client(fake)
    reply = await model.stream(REQUEST, on_delta)
    await model.aclose()
    # Then each piece reached the sink in order, and the reply holds all of it and the usage
    assert pieces == ["Hel", "lo, ", "wörld ✓"]
    assert reply.text == "Hello, wörld ✓"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 3)
    assert reply.finish_reason == "stop"
    # And the request was the streaming one, with usage asked for and the key as a bearer token
    (seen,) = fake.seen()
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["model"] == "fake-1"
    assert seen.body["max_tokens"] == 64
    assert seen.body["messages"][0] == {"role": "system", "content": "be brief"}
    assert seen.headers["Authorization"] == "Bearer sk-test"


async def test_a_structured_request_sends_the_json_schema(fake):
    model = client(fake)
    reply = await model.structured(REQUEST, ANALYSIS_SCHEMA)
    await model.aclose()
    (seen,) = fake.seen("structured")
    response_format = seen.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "task_analysis"
    assert response_format["json_schema"]["schema"]["required"] == [
        "intent",
        "sub_questions",
        "key_terms",
        "must_cover",
    ]
    assert reply.text.startswith("{")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_throttling_and_server_errors_are_transient_and_not_retried_by_the_client(fake, status):
    fake.queue("stream", Answer.error(status, "busy"))
    model = client(fake)
    with pytest.raises(TransientAgentError, match=rf"{status}: busy"):
        await model.stream(REQUEST, _ignore)
    await model.aclose()
    # One request: the pipeline's Retry policy is the only one in force
    assert len(fake.seen()) == 1


@pytest.mark.parametrize(
    ("status", "setting"),
    [(401, "MODEL_API_KEY"), (403, "MODEL_API_KEY"), (404, "MODEL_ID"), (400, "MODEL_ID")],
)
async def test_refusals_are_permanent_and_name_the_setting_to_fix(fake, status, setting):
    fake.queue("stream", Answer.error(status, "nope"))
    model = client(fake)
    with pytest.raises(PermanentAgentError, match=setting) as caught:
        await model.stream(REQUEST, _ignore)
    await model.aclose()
    assert f"({status})" in str(caught.value)
    assert len(fake.seen()) == 1


async def test_a_context_too_long_refusal_says_what_to_change(fake):
    fake.queue("stream", Answer.error(400, "This model's maximum context length is 8192 tokens"))
    model = client(fake)
    with pytest.raises(PermanentAgentError, match="MODEL_MAX_OUTPUT_TOKENS"):
        await model.stream(REQUEST, _ignore)
    await model.aclose()


async def test_a_stream_cut_mid_answer_is_transient(fake):
    fake.queue("stream", Answer(chunks=["a", "b", "c", "d"], cut_after=2))
    model = client(fake)
    with pytest.raises(TransientAgentError, match=r"broke|ended before"):
        await model.stream(REQUEST, _ignore)
    await model.aclose()


async def test_a_stream_that_ends_without_finishing_its_answer_is_transient(fake):
    # Given a server whose response ends cleanly mid-answer (no finish_reason, no [DONE])
    fake.queue("stream", Answer(chunks=["a", "b", "c", "d"], cut_after=2, cut_cleanly=True))
    model = client(fake)
    # Then the partial answer is not taken for a whole one
    with pytest.raises(TransientAgentError, match="ended before its answer did"):
        await model.stream(REQUEST, _ignore)
    await model.aclose()


async def test_no_answer_within_the_timeout_is_transient_and_names_the_setting(fake):
    fake.queue("stream", Answer(chunks=["late"], delay_before=5))
    model = client(fake, timeout_seconds=0.3)
    with pytest.raises(TransientAgentError, match=r"MODEL_TIMEOUT_SECONDS=0\.3"):
        await model.stream(REQUEST, _ignore)
    await model.aclose()


async def test_an_unreachable_server_is_transient_and_names_the_url():
    model = OpenAIChatModel("http://127.0.0.1:9/v1", "fake-1", timeout_seconds=2)
    with pytest.raises(TransientAgentError, match=r"MODEL_BASE_URL=http://127\.0\.0\.1:9/v1"):
        await model.stream(REQUEST, _ignore)
    await model.aclose()


async def test_cancelling_the_call_closes_the_connection(fake):
    # Given a slow stream (a chunk every 50 ms, 400 chunks)
    fake.queue("stream", Answer(chunks=["x"] * 400, delay_between=0.05))
    started = asyncio.Event()

    async def on_delta(text: str) -> None:
        started.set()

    model = client(fake)
    call = asyncio.create_task(model.stream(REQUEST, on_delta))
    await asyncio.wait_for(started.wait(), 5)
    # When the step's task is cancelled mid-answer
    cancelled_at = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Then the server sees the client go away within 2 s and stops sending
    seen = fake.seen()[0]
    assert await asyncio.to_thread(seen.gone.wait, 2), "the model server never saw the connection close"
    assert seen.gone_at is not None
    assert seen.gone_at - cancelled_at < 2
    assert seen.chunks_sent < 400
    await model.aclose()


async def _ignore(_: str) -> None:
    return None
