"""The local wiring with MODEL_PROVIDER=openai: the real runner, store and adapter against a real local
Chat Completions server (tests/fake_openai.py).

What a user relies on: the report streams as batched ``partial_output`` deltas that add up to the
final output; usage and cost are recorded; a throttled or cut model call is retried by the pipeline's
policy and the final output holds no duplicated text; a refused key fails the task at once with a
message naming the setting; an invalid analysis gets one repair request; a cancel closes the model's
connection.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime
from typing import Any

import pytest

from agentic.local.wiring import build_local_system
from tests.fake_openai import Answer, FakeOpenAI
from tests.support import local_settings

pytestmark = pytest.mark.functional

TASK = "Explain exponential backoff with jitter"


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def model_settings(tmp_path, fake: FakeOpenAI, **overrides: Any):
    values: dict[str, Any] = {
        "model_provider": "openai",
        "model_base_url": fake.base_url,
        "model_id": "fake-1",
        "model_api_key": "sk-test",
        "model_prices": {"fake-1": {"input": 0.5, "output": 1.5}},
    }
    values.update(overrides)
    return local_settings(tmp_path, **values)


async def run_task(settings, *, while_running=None) -> tuple[list[Any], Any]:
    system = build_local_system(settings)
    try:
        task, _ = await system.service.create("local", TASK)
        await system.service.execute("local", task.task_id)
        if while_running is not None:
            await while_running(system, task.task_id)
        await asyncio.wait_for(system.executor.drain(), 30)
        return system.store.read_events(task.task_id), system.store.get(task.task_id)
    finally:
        await system.executor.shutdown()
        if system.model is not None:
            await system.model.aclose()
        system.store.close()


def of_type(events: list[Any], kind: str, **match: Any) -> list[dict[str, Any]]:
    return [e.data for e in events if e.event_type.value == kind and all(e.data.get(k) == v for k, v in match.items())]


def deltas(events: list[Any], attempt: int | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in of_type(events, "partial_output", step_id="step_003")
        if "delta" in d and (attempt is None or d["attempt"] == attempt)
    ]


async def test_the_report_streams_as_deltas_that_add_up_to_the_final_output(tmp_path, fake):
    # Given a model that streams its report
    fake.queue("stream", Answer.text("Backoff doubles the wait [1]. Jitter spreads clients out [2].", usage=(300, 40)))
    # When a task runs
    events, task = await run_task(model_settings(tmp_path, fake))
    # Then it completed, and the writer's deltas, joined, are its whole output and the final output
    assert task.status.value == "completed"
    joined = "".join(d["delta"] for d in deltas(events))
    assert joined == task.final_output
    assert joined.startswith("Backoff doubles the wait [1]. Jitter spreads clients out [2].")
    # And the report ends with the sources the retriever gave the writer
    assert "\n## Sources\n[1] " in task.final_output
    # And the whole output is also written once, as the step's output event
    (whole,) = [d for d in of_type(events, "partial_output", step_id="step_003") if "output" in d]
    assert whole["output"] == task.final_output
    # And the writer's and the analyzer's step_completed carry the model, usage and cost
    (writer_done,) = of_type(events, "step_completed", step_id="step_003")
    assert writer_done["model_id"] == "fake-1"
    assert writer_done["usage"] == {"input_tokens": 300, "output_tokens": 40}
    assert writer_done["cost_usd"] == pytest.approx((300 * 0.5 + 40 * 1.5) / 1e6)
    (analyzer_done,) = of_type(events, "step_completed", step_id="step_002")
    assert analyzer_done["usage"] == {"input_tokens": 100, "output_tokens": 20}
    # And the status sums the task's usage and cost
    from agentic.models import TaskPublic

    public = TaskPublic.of(task)
    assert public.usage is not None
    assert (public.usage.input_tokens, public.usage.output_tokens) == (400, 60)
    assert public.cost_usd == pytest.approx((400 * 0.5 + 60 * 1.5) / 1e6)
    # And the template retriever's step records no usage
    (retriever_done,) = of_type(events, "step_completed", step_id="step_001")
    assert "usage" not in retriever_done


async def test_a_long_answer_is_tens_of_events_not_thousands(tmp_path, fake):
    # Given a model that streams 2,000 tokens as fast as it can
    fake.queue("stream", Answer.tokens(2000))
    # When a task runs with the default batching (100 ms or 1,000 characters)
    events, task = await run_task(model_settings(tmp_path, fake))
    assert task.status.value == "completed"
    batch = deltas(events)
    total = sum(len(d["delta"]) for d in batch)
    # Then far fewer events than tokens were written
    assert len(batch) <= total // 1000 + 15, len(batch)
    # And between two events either 100 ms passed or the earlier batch filled up
    stamps = [(e.timestamp, e.data) for e in events if e.event_type.value == "partial_output" and "delta" in e.data]
    for (t0, _), (t1, d1) in itertools.pairwise(stamps[:-1]):
        gap = (t1 - t0).total_seconds() if isinstance(t1, datetime) else 0
        assert gap >= 0.095 or len(d1["delta"]) >= 1000, (gap, len(d1["delta"]))
    # And their sequence numbers count up from 1 with nothing missing
    assert [d["seq"] for d in batch] == list(range(1, len(batch) + 1))


async def test_a_throttled_model_is_retried_by_the_pipeline_policy(tmp_path, fake):
    # Given a model that answers 429 to the writer's first request
    fake.queue("stream", Answer.error(429, "rate limit reached"), Answer.text("Second time lucky."))
    events, task = await run_task(model_settings(tmp_path, fake))
    # Then the writer's step was retried, visibly, and the task completed
    (retry,) = of_type(events, "step_retrying", step_id="step_003")
    assert retry["attempt"] == 2
    assert "TransientAgentError" in retry["error"]
    assert "429" in retry["error"]
    assert task.status.value == "completed"
    assert task.final_output.startswith("Second time lucky.")
    assert len(fake.seen("stream")) == 2


async def test_a_step_cut_mid_stream_runs_again_and_its_output_holds_no_duplicate(tmp_path, fake):
    # Given a model whose first answer breaks off after three pieces
    first = Answer(chunks=["Alpha ", "beta ", "gamma ", "delta ", "epsilon"], cut_after=3, delay_between=0.15)
    fake.queue("stream", first, Answer.text("Alpha beta gamma delta epsilon."))
    events, task = await run_task(model_settings(tmp_path, fake))
    # Then the client saw the first attempt's deltas, the step_retrying, then the second from its start
    kinds = [
        (e.event_type.value, e.data.get("attempt"))
        for e in events
        if e.data.get("step_id") == "step_003" and e.event_type.value in ("partial_output", "step_retrying")
    ]
    first_retry = kinds.index(("step_retrying", 2))
    assert any(k == ("partial_output", 1) for k in kinds[:first_retry])
    assert all(k[1] == 2 or k[1] is None for k in kinds[first_retry + 1 :])
    # And the final output is the second attempt's text, once
    assert task.status.value == "completed"
    assert task.final_output.count("Alpha") == 1
    assert task.final_output.startswith("Alpha beta gamma delta epsilon.")
    assert "".join(d["delta"] for d in deltas(events, attempt=2)) == task.final_output


async def test_a_refused_key_fails_the_task_at_once_naming_the_setting(tmp_path, fake):
    # Given a server that refuses the key
    fake.queue("structured", Answer.error(401, "Incorrect API key provided"))
    events, task = await run_task(model_settings(tmp_path, fake))
    # Then the task failed on the analyzer's first attempt, without retries
    assert task.status.value == "failed"
    assert not of_type(events, "step_retrying")
    assert len(fake.seen()) == 1
    (error,) = of_type(events, "error")
    assert error["error"] == "PermanentAgentError"
    assert "MODEL_API_KEY" in error["message"]
    assert "Incorrect API key provided" in error["message"]
    assert "Traceback" not in error["message"]
    assert "MODEL_API_KEY" in task.error_message


async def test_an_invalid_analysis_gets_one_repair_request(tmp_path, fake):
    # Given a model whose first analysis misses a required field
    fake.queue(
        "structured",
        Answer.json({"intent": "x", "sub_questions": ["a"], "key_terms": []}),
        Answer.json({"intent": "x", "sub_questions": ["a"], "key_terms": [], "must_cover": ["b"]}),
    )
    events, task = await run_task(model_settings(tmp_path, fake))
    # Then a second request told the model what was wrong, and the task completed with the repair
    _, second = fake.seen("structured")
    repair = second.body["messages"][-1]["content"]
    assert "must_cover" in repair
    assert second.body["messages"][-2]["role"] == "assistant"
    assert task.status.value == "completed"
    assert "The answer must cover:\n  - b" in task.execution_plan.steps[1].output
    # And the usage of both requests is counted
    (done,) = of_type(events, "step_completed", step_id="step_002")
    assert done["usage"] == {"input_tokens": 200, "output_tokens": 40}


async def test_an_analysis_invalid_twice_is_a_permanent_failure_saying_what_was_wrong(tmp_path, fake):
    fake.queue("structured", Answer.text("Sure! Here is my analysis."), Answer.json({"intent": ""}))
    events, task = await run_task(model_settings(tmp_path, fake))
    assert task.status.value == "failed"
    assert len(fake.seen("structured")) == 2
    assert not of_type(events, "step_retrying")
    assert "invalid twice" in task.error_message
    assert "sub_questions" in task.error_message


async def test_cancelling_a_task_closes_the_model_connection(tmp_path, fake):
    # Given a writer whose model streams slowly (a piece every 50 ms for 20 s)
    fake.queue("stream", Answer(chunks=["tick "] * 400, delay_between=0.05))
    cancelled_at: list[float] = []

    async def cancel_mid_stream(system, task_id: str) -> None:
        deadline = time.monotonic() + 10
        while not [e for e in system.store.read_events(task_id) if "delta" in e.data]:
            assert time.monotonic() < deadline, "the writer never streamed"
            await asyncio.sleep(0.02)
        cancelled_at.append(time.monotonic())
        await system.service.cancel("local", task_id, "changed my mind")

    events, task = await run_task(model_settings(tmp_path, fake), while_running=cancel_mid_stream)
    # Then the task is cancelled and the model server saw its client go away within 2 s
    assert task.status.value == "cancelled"
    seen = fake.seen("stream")[0]
    assert await asyncio.to_thread(seen.gone.wait, 2), "the model server never saw the connection close"
    assert seen.gone_at is not None
    assert seen.gone_at - cancelled_at[0] < 2
    # And no delta was written after the cancellation
    kinds = [e.event_type.value for e in events]
    after = kinds[kinds.index("task_cancelled") + 1 :]
    assert "partial_output" not in after


async def test_a_cancel_from_another_process_stops_the_model_through_the_fenced_delta_writes(tmp_path, fake):
    # Given a task whose writer streams slowly on system A (one server process)
    fake.queue("stream", Answer(chunks=["tock "] * 400, delay_between=0.05))
    settings = model_settings(tmp_path, fake)
    other = build_local_system(settings)  # system B: a second server on the same file
    cancelled_at: list[float] = []

    async def cancel_from_b(system, task_id: str) -> None:
        deadline = time.monotonic() + 10
        while not [e for e in system.store.read_events(task_id) if "delta" in e.data]:
            assert time.monotonic() < deadline, "the writer never streamed"
            await asyncio.sleep(0.02)
        cancelled_at.append(time.monotonic())
        await other.service.cancel("local", task_id, "from the other server")

    try:
        _, task = await run_task(settings, while_running=cancel_from_b)
    finally:
        await other.executor.shutdown()
        other.store.close()
    # Then A's next batch was refused (its lease was taken away) and the model's connection closed
    assert task.status.value == "cancelled"
    seen = fake.seen("stream")[0]
    assert await asyncio.to_thread(seen.gone.wait, 2), "the model server never saw the connection close"
    assert seen.gone_at is not None
    assert seen.gone_at - cancelled_at[0] < 2
