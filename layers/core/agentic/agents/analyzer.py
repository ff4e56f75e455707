"""Analyzer: plans the work (``analyze``) and analyses the task against the retrieved context."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from agentic.agents.base import Agent, StepContext
from agentic.agents.passages import parse_passages
from agentic.agents.registry import AgentRegistry
from agentic.knowledge.base import query_terms
from agentic.models import ExecutionPlan, ExecutionStep
from agentic.pipeline import PipelineDefinition

_INTENTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("troubleshooting", frozenset({"debug", "fix", "error", "failing", "fails", "broken", "bug", "crash"})),
    ("comparison", frozenset({"compare", "versus", "vs", "difference", "better", "tradeoffs"})),
    ("design", frozenset({"design", "build", "implement", "create", "architect", "plan", "set"})),
    ("explanation", frozenset({"explain", "what", "why", "how", "describe", "understand"})),
)
_CLAUSES = re.compile(r"[.?!;]+|\band\b|\bthen\b", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    #: The passage's heading.
    title: str
    #: Where the passage comes from: a file path, an S3 key or a built-in document's id.
    topic: str
    score: float


@dataclass(frozen=True)
class Analysis:
    intent: str
    key_terms: list[str]
    sub_tasks: list[str]
    complexity: str
    sources: list[Source]
    covered_terms: list[str]
    gaps: list[str]

    @property
    def coverage(self) -> float:
        return len(self.covered_terms) / len(self.key_terms) if self.key_terms else 0.0


def parse_sources(retrieved: str) -> list[Source]:
    """The ranked sources listed in the retriever's output."""
    return [Source(p.heading, p.source, p.score) for p in parse_passages(retrieved)]


@lru_cache(maxsize=1024)
def analyze_task(task: str, retrieved: str) -> Analysis:
    """A deterministic, structured reading of the task against the retrieved context.

    Cached: the writer needs the same analysis the analyzer made for the same inputs.
    """
    words = set(re.findall(r"[a-z]+", task.lower()))
    intent = next((name for name, cues in _INTENTS if words & cues), "general")
    terms = query_terms(task)
    counts = Counter(terms)
    key_terms = [t for t, _ in counts.most_common(8)]
    sub_tasks = [c.strip(" ,") for c in _CLAUSES.split(task) if len(c.strip(" ,").split()) >= 2][:6]
    if not sub_tasks:
        sub_tasks = [task.strip()]
    n_words = len(task.split())
    complexity = "high" if n_words > 60 or len(sub_tasks) > 3 else "medium" if n_words > 15 else "low"
    # The passages' own words: the output's title line repeats the query, which is no evidence.
    passages = parse_passages(retrieved)
    context_terms: set[str] = set().union(*(passage_terms(p.heading, p.text) for p in passages))
    covered = [t for t in key_terms if t in context_terms or t.rstrip("s") in context_terms]
    gaps = [t for t in key_terms if t not in covered]
    return Analysis(
        intent,
        key_terms,
        sub_tasks,
        complexity,
        [Source(p.heading, p.source, p.score) for p in passages],
        covered,
        gaps,
    )


@lru_cache(maxsize=1024)
def passage_terms(heading: str, text: str) -> frozenset[str]:
    """A passage's content words. Cached: the same passages come back for many tasks (a
    profile of 600 tasks over HTTP spent ~2% of the server's CPU re-reading them)."""
    return frozenset(query_terms(f"{heading} {text}", limit=1_000_000))


def format_analysis(a: Analysis) -> str:
    lines = [
        f"Intent: {a.intent}",
        f"Complexity: {a.complexity} ({len(a.sub_tasks)} sub-task{'s' if len(a.sub_tasks) != 1 else ''})",
        f"Key terms: {', '.join(a.key_terms) or '(none)'}",
        "Sub-tasks:",
        *[f"  {i}. {s}" for i, s in enumerate(a.sub_tasks, 1)],
        f"Evidence: {len(a.sources)} source(s); the context covers {a.coverage:.0%} of the key terms",
        *[f"  - {s.title} [{s.topic}] relevance {s.score:.2f}" for s in a.sources],
        f"Gaps: {', '.join(a.gaps) if a.gaps else 'none; the retrieved context covers every key term'}",
    ]
    return "\n".join(lines)


class AnalyzerAgent(Agent):
    agent_type = "analyzer"
    base_latency = 0.2

    def describe_step(self, task: str) -> tuple[str, dict[str, Any]]:
        return "Analyse the task against the retrieved context", {"focus": "intent, sub-tasks, evidence, gaps"}

    def analyze(self, task_id: str, task: str, pipeline: PipelineDefinition, registry: AgentRegistry) -> ExecutionPlan:
        """The execution plan: one step per agent step of the pipeline, described for this task."""
        steps = []
        for spec in pipeline.steps:
            description, input_data = registry.get(spec.agent_type).describe_step(task)
            steps.append(
                ExecutionStep(
                    step_id=spec.step_id,
                    agent_type=spec.agent_type,
                    description=description,
                    input_data=input_data,
                )
            )
        return ExecutionPlan(task_id=task_id, steps=steps)

    def run(self, step: ExecutionStep, context: StepContext) -> str:
        return format_analysis(analyze_task(context.task, context.outputs.get("retriever", "")))
