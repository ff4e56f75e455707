"""Writer: the final report from the task, the retrieved context and the analysis."""

from __future__ import annotations

from typing import Any

from agentic.agents.analyzer import Analysis, analyze_task
from agentic.agents.base import Agent, StepContext
from agentic.agents.passages import Passage, format_sources, parse_passages
from agentic.models import ExecutionStep

_INTENT_ADVICE = {
    "troubleshooting": "Reproduce the failure with the smallest input, then check the sources' failure modes first.",
    "comparison": "Tabulate the options against the same criteria before choosing; note the trade-offs.",
    "design": "Start from the invariants (idempotency, bounded queues, retries) and design the happy path last.",
    "explanation": "Walk through the concept with one concrete example before generalising.",
    "general": "Break the task into the sub-tasks above and tackle them in order.",
}


#: How much of a passage the template report quotes.
QUOTE_WORDS = 60


def quote(passage: Passage, words: int = QUOTE_WORDS) -> str:
    """The passage's opening words, on one line."""
    tokens = passage.text.split(maxsplit=words)  # the rest stays one token: not split for nothing
    return " ".join(tokens[:words]) + (" …" if len(tokens) > words else "")


def cited_context(passages: list[Passage]) -> list[str]:
    """One quoted line per passage, cited inline as [n]; a plain statement when nothing matched."""
    if not passages:
        return ["Nothing in the knowledge base matches this task, so this report cites no source."]
    return [f'- {p.heading or p.source}: "{quote(p)}" [{p.number}]' for p in passages]


def recommendations(analysis: Analysis, passages: list[Passage] | None = None) -> list[str]:
    out = [_INTENT_ADVICE[analysis.intent]]
    if passages:
        out.append(f"Read {passages[0].label} first: it ranked most relevant [{passages[0].number}].")
    if analysis.gaps:
        out.append(f"Find more material on: {', '.join(analysis.gaps)} (not covered by the knowledge base).")
    if analysis.complexity == "high":
        out.append("The task is large: deliver it in increments, one sub-task at a time.")
    return out


class WriterAgent(Agent):
    agent_type = "writer"
    base_latency = 0.1

    def describe_step(self, task: str) -> tuple[str, dict[str, Any]]:
        return "Write the final report", {"format": "markdown"}

    def run(self, step: ExecutionStep, context: StepContext) -> str:
        passages = parse_passages(context.outputs.get("retriever", ""))
        analysis_text = context.outputs.get("analyzer", "(no analysis)")
        analysis = analyze_task(context.task, context.outputs.get("retriever", ""))
        done = [t for t in context.outputs if t != self.agent_type]
        return "\n".join(
            [
                "# Report",
                "",
                "## Task",
                context.task,
                "",
                "## Retrieved context",
                *cited_context(passages),
                "",
                "## Analysis",
                analysis_text,
                "",
                "## Execution summary",
                f"Steps completed before this report: {', '.join(done) or 'none'}; "
                f"{len(analysis.sources)} source(s) used; key-term coverage {analysis.coverage:.0%}.",
                "",
                "## Recommendations",
                *[f"- {r}" for r in recommendations(analysis, passages)],
                "",
                format_sources(passages),
            ]
        )
