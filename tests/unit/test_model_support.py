"""The pieces around model calls that need no I/O: delta batching, prompts, settings, the analysis
schema and the error table."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from agentic.adapters.openai_model import status_error
from agentic.agents.catalog import check_model_settings
from agentic.agents.model_agents import parse_analysis
from agentic.agents.prompts import Prompts
from agentic.errors import InvalidInput, PermanentAgentError, TransientAgentError
from agentic.pipeline import load_pipeline
from agentic.service.deltas import DeltaBatcher
from agentic.settings import Settings

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batcher(clock: Clock, **kw) -> tuple[DeltaBatcher, list[tuple[str, int]]]:
    written: list[tuple[str, int]] = []

    async def write(text: str, seq: int) -> None:
        written.append((text, seq))

    return DeltaBatcher(write, interval=0.1, max_chars=10, clock=clock, **kw), written


async def test_the_first_piece_is_written_at_once_then_pieces_wait_for_the_interval():
    clock = Clock()
    deltas, written = batcher(clock)
    await deltas.add("a")
    assert written == [("a", 1)]  # no delay before the first token reaches the client
    clock.now += 0.05
    await deltas.add("b")
    await deltas.add("c")
    assert written == [("a", 1)]  # inside the interval: buffered
    clock.now += 0.06
    await deltas.add("d")
    assert written == [("a", 1), ("bcd", 2)]
    await deltas.close()


async def test_a_full_buffer_is_written_before_the_interval():
    clock = Clock()
    deltas, written = batcher(clock)
    await deltas.add("x")
    await deltas.add("0123456789")
    assert written == [("x", 1), ("0123456789", 2)]
    await deltas.close()


async def test_close_writes_the_rest_and_the_pieces_add_up():
    clock = Clock()
    deltas, written = batcher(clock)
    pieces = [f"p{i}" for i in range(25)]
    for piece in pieces:
        clock.now += 0.01
        await deltas.add(piece)
    await deltas.close()
    assert "".join(text for text, _ in written) == "".join(pieces)
    assert [seq for _, seq in written] == list(range(1, len(written) + 1))
    assert len(written) < len(pieces)


async def test_a_paused_model_s_buffer_is_written_by_the_timer():
    written: list[tuple[str, int]] = []

    async def write(text: str, seq: int) -> None:
        written.append((text, seq))

    # a model that sends "b" at once after "a", then nothing: only the timer can write "b"
    deltas = DeltaBatcher(write, interval=0.05, max_chars=1000, clock=time.monotonic)
    await deltas.add("a")
    await deltas.add("b")
    assert written == [("a", 1)]
    await asyncio.sleep(0.1)
    assert written == [("a", 1), ("b", 2)]
    await deltas.close()


async def test_a_refused_timed_write_stops_the_next_piece():
    calls = 0

    async def write(text: str, seq: int) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the task was cancelled")

    deltas = DeltaBatcher(write, interval=0.01, max_chars=1000, clock=time.monotonic)
    await deltas.add("a")
    await deltas.add("b")
    await asyncio.sleep(0.05)  # the timer's write is refused
    with pytest.raises(RuntimeError, match="cancelled"):
        await deltas.add("c")


def test_prompts_come_from_the_package_unless_a_file_replaces_them(tmp_path):
    packaged = Prompts()
    assert "$task" in packaged.template("writer_user").template
    (tmp_path / "writer_system.md").write_text("Answer like a pirate about $task.")
    custom = Prompts(tmp_path)
    assert custom.render("writer_system", task="{weird} $dollars") == "Answer like a pirate about {weird} $dollars."
    # the others stay packaged
    assert custom.template("analyzer_system").template == packaged.template("analyzer_system").template


def test_a_prompts_dir_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="PROMPTS_DIR"):
        Prompts(tmp_path / "missing")


def test_a_model_provider_needs_a_model_id():
    with pytest.raises(ValidationError, match="MODEL_ID"):
        Settings(model_provider="openai")
    with pytest.raises(ValidationError, match="MODEL_BASE_URL"):
        Settings(model_provider="openai", model_id="m", model_base_url="localhost:11434/v1")
    Settings(model_provider="bedrock", model_id="anthropic.claude-3-haiku-20240307-v1:0")


def test_the_model_timeout_must_stay_below_the_steps_timeout():
    pipeline = load_pipeline()
    writer = next(s for s in pipeline.steps if s.agent_type == "writer")
    assert writer.timeout_seconds is not None
    check_model_settings(Settings(model_provider="openai", model_id="m"), pipeline)
    too_long = Settings(model_provider="openai", model_id="m", model_timeout_seconds=writer.timeout_seconds)
    with pytest.raises(ValueError, match="MODEL_TIMEOUT_SECONDS"):
        check_model_settings(too_long, pipeline)
    # the template agents call no model: nothing to check
    check_model_settings(Settings(model_timeout_seconds=10_000), pipeline)


def test_model_prices_are_read_from_json(monkeypatch):
    monkeypatch.setenv("MODEL_PRICES", '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}')
    prices = Settings().model_prices
    assert (prices["gpt-4o-mini"].input, prices["gpt-4o-mini"].output) == (0.15, 0.6)


def test_an_analysis_in_a_code_fence_is_accepted_and_bounds_are_checked():
    text = '```json\n{"intent": "i", "sub_questions": ["q"], "key_terms": [], "must_cover": ["m"]}\n```'
    assert parse_analysis(text).intent == "i"
    with pytest.raises(ValidationError):
        parse_analysis('{"intent": "i", "sub_questions": [], "key_terms": [], "must_cover": ["m"]}')
    with pytest.raises(ValidationError):
        parse_analysis('{"intent": "i", "sub_questions": ["q"], "key_terms": [], "must_cover": ["m"], "x": 1}')


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, TransientAgentError), (500, TransientAgentError), (503, TransientAgentError), (408, TransientAgentError)]
    + [(s, PermanentAgentError) for s in (400, 401, 403, 404, 422)],
)
def test_each_status_maps_to_one_kind_of_error(status, kind):
    assert isinstance(status_error(status, "x", model_id="m", base_url="u"), kind)
