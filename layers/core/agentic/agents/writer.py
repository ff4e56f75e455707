"""Writer: the final report from the task, the retrieved context and the analysis."""

from __future__ import annotations

from typing import Any

from agentic.agents.analyzer import Analysis, analyze_task
from agentic.agents.base import Agent, StepContext
from agentic.models import ExecutionStep

_INTENT_ADVICE = {
    "troubleshooting": "Reproduce the failure with the smallest input, then check the sources' failure modes first.",
    "comparison": "Tabulate the options against the same criteria before choosing; note the trade-offs.",
    "design": "Start from the invariants (idempotency, bounded queues, retries) and design the happy path last.",
    "explanation": "Walk through the concept with one concrete example before generalising.",
    "general": "Break the task into the sub-tasks above and tackle them in order.",
}


def recommendations(analysis: Analysis) -> list[str]:
    out = [_INTENT_ADVICE[analysis.intent]]
    if analysis.sources:
        out.append(f"Read '{analysis.sources[0].title}' first: it ranked most relevant.")
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
        retrieved = context.outputs.get("retriever", "(no context retrieved)")
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
                retrieved,
                "",
                "## Analysis",
                analysis_text,
                "",
                "## Execution summary",
                f"Steps completed before this report: {', '.join(done) or 'none'}; "
                f"{len(analysis.sources)} source(s) used; key-term coverage {analysis.coverage:.0%}.",
                "",
                "## Recommendations",
                *[f"- {r}" for r in recommendations(analysis)],
            ]
        )
