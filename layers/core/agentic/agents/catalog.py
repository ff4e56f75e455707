"""The agents this system ships with, registered under their types.

Apart from ``registry`` so that the registry does not import the agents that import it.
"""

from __future__ import annotations

from agentic.agents.analyzer import AnalyzerAgent
from agentic.agents.registry import AgentRegistry
from agentic.agents.retriever import RetrieverAgent
from agentic.agents.writer import WriterAgent
from agentic.knowledge.base import KnowledgeBase


def default_registry(latency_scale: float = 1.0, knowledge: KnowledgeBase | None = None) -> AgentRegistry:
    """``knowledge``: what the retriever searches (None: the bundled documents)."""
    return AgentRegistry(
        [
            RetrieverAgent(latency_scale=latency_scale, knowledge=knowledge),
            AnalyzerAgent(latency_scale=latency_scale),
            WriterAgent(latency_scale=latency_scale),
        ]
    )
