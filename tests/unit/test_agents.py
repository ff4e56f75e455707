"""The agents: ranked retrieval, planning from the pipeline, structured analysis, the report."""

from __future__ import annotations

import pytest

from agentic.agents.analyzer import AnalyzerAgent, analyze_task, parse_sources
from agentic.agents.base import StepContext
from agentic.agents.catalog import default_registry
from agentic.agents.passages import Passage, format_passages
from agentic.agents.registry import AgentRegistry
from agentic.agents.retriever import knowledge_index, query_terms
from agentic.errors import PermanentAgentError
from agentic.knowledge.builtin import load_documents
from agentic.models import ExecutionStep
from agentic.pipeline import load_pipeline

pytestmark = pytest.mark.unit


def test_the_knowledge_base_has_at_least_30_distinct_documents_on_the_seed_topics():
    docs = load_documents()
    assert len(docs) >= 30
    assert len({d.doc_id for d in docs}) == len(docs)
    topics = {d.topic for d in docs}
    assert {"task_execution", "ai_systems", "async_programming", "retries", "streaming"} <= topics
    assert all(len(d.body.split()) >= 30 for d in docs)


@pytest.mark.parametrize(
    ("query", "title_word"),
    [
        ("exponential backoff with jitter", "backoff"),
        ("stream events as newline-delimited JSON", "ndjson"),
        ("asyncio event loop blocking", "event loop"),
        ("DynamoDB conditional write", "dynamodb"),
    ],
)
def test_retrieval_ranks_the_relevant_document_first(query, title_word):
    hits = knowledge_index().search(query, 3)
    assert 1 <= len(hits) <= 3
    assert title_word in hits[0].heading.lower()
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_broad_query_returns_the_top_three_best_first():
    hits = knowledge_index().search("retry failed tasks with backoff and stream their events", 3)
    assert len(hits) == 3
    assert hits[0].score > hits[-1].score


def test_queries_are_sanitised_and_may_match_nothing():
    assert query_terms('the "AND" OR (NEAR) *') == ["near"]
    assert knowledge_index().search("", 3) == []
    assert knowledge_index().search("zzqx qqvv", 3) == []


def test_analyze_plans_one_step_per_agent_state_of_the_pipeline():
    registry = default_registry(latency_scale=0)
    analyzer = registry.get("analyzer")
    assert isinstance(analyzer, AnalyzerAgent)
    plan = analyzer.analyze("t1", "Explain retries", load_pipeline(), registry)
    assert [(s.step_id, s.agent_type) for s in plan.steps] == [
        ("step_001", "retriever"),
        ("step_002", "analyzer"),
        ("step_003", "writer"),
    ]
    assert plan.steps[0].input_data["query"] == "Explain retries"


async def test_the_three_agents_chain_into_a_report():
    registry = default_registry(latency_scale=0)
    task = "Compare exponential backoff and fixed delays for retries, then design a retry policy"
    ctx = StepContext(task_id="t1", task=task)
    plan = registry.get("analyzer").analyze("t1", task, load_pipeline(), registry)  # type: ignore[attr-defined]
    for step in plan.steps:
        ctx.outputs[step.agent_type] = await registry.get(step.agent_type).execute(step, ctx)
    sources = parse_sources(ctx.outputs["retriever"])
    assert len(sources) == 3
    assert "Intent: comparison" in ctx.outputs["analyzer"]
    assert "Sub-tasks:" in ctx.outputs["analyzer"]
    report = ctx.outputs["writer"]
    for section in (
        "# Report",
        "## Task",
        "## Retrieved context",
        "## Analysis",
        "## Execution summary",
        "## Recommendations",
    ):
        assert section in report
    assert task in report
    assert sources[0].title in report
    # and it cites its sources inline and lists them at the end
    assert "[1]" in report.split("## Retrieved context")[1].split("## Analysis")[0]
    assert report.rstrip().endswith(f"[3] {sources[2].topic} — {sources[2].title}")


async def test_a_task_nothing_matches_says_so_instead_of_citing():
    registry = default_registry(latency_scale=0)
    ctx = StepContext(task_id="t1", task="bake sourdough bread at home")
    plan = registry.get("analyzer").analyze("t1", ctx.task, load_pipeline(), registry)  # type: ignore[attr-defined]
    for step in plan.steps:
        ctx.outputs[step.agent_type] = await registry.get(step.agent_type).execute(step, ctx)
    assert parse_sources(ctx.outputs["retriever"]) == []
    assert "Nothing in the knowledge base matches this task" in ctx.outputs["writer"]
    assert "[1]" not in ctx.outputs["writer"]
    assert "Gaps: bake, sourdough, bread" in ctx.outputs["analyzer"]


def test_analysis_reports_gaps_the_context_does_not_cover():
    analysis = analyze_task("Explain quantum chromodynamics", "")
    assert analysis.sources == []
    assert "quantum" in analysis.gaps
    assert analysis.coverage == 0


def test_analysis_counts_the_words_of_the_passages_it_was_given_as_covered():
    # Given a retriever output whose passages hold one of the task's words in a heading, one in a text
    retrieved = format_passages(
        "lease renewal checkpoints",
        [
            Passage(1, "guide.md", "Lease", "A runner renews its claim.", 1.5),
            Passage(2, "ops.md", "", "Checkpoints keep the log short.", 1.0),
        ],
    )
    # When the same passages are analysed for two tasks (the second reads them from the cache)
    first = analyze_task("lease renewal checkpoints", retrieved)
    second = analyze_task("checkpoints of leases, and recovery", retrieved)
    # Then words found in the passages are covered and the others are gaps, both times
    assert first.covered_terms == ["lease", "checkpoints"]
    assert first.gaps == ["renewal"]
    assert second.covered_terms == ["checkpoints", "leases"]
    assert second.gaps == ["recovery"]


def test_unknown_agent_types_fail_permanently():
    with pytest.raises(PermanentAgentError):
        AgentRegistry().get("translator")


async def test_a_new_agent_type_needs_only_registration():
    from agentic.agents.base import Agent

    class Echo(Agent):
        agent_type = "echo"
        base_latency = 0

        def run(self, step, context):
            return context.task.upper()

    registry = AgentRegistry([Echo()])
    step = ExecutionStep(step_id="s", agent_type="echo", description="echo")
    assert await registry.get("echo").execute(step, StepContext(task_id="t", task="hi")) == "HI"
