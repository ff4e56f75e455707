"""The agents this system ships with, registered under their types.

Apart from ``registry`` so that the registry does not import the agents that import it.
"""

from __future__ import annotations

from agentic.agents.analyzer import AnalyzerAgent
from agentic.agents.registry import AgentRegistry
from agentic.agents.retriever import RetrieverAgent
from agentic.agents.writer import WriterAgent


def default_registry(latency_scale: float = 1.0) -> AgentRegistry:
    return AgentRegistry(
        [
            RetrieverAgent(latency_scale=latency_scale),
            AnalyzerAgent(latency_scale=latency_scale),
            WriterAgent(latency_scale=latency_scale),
        ]
    )
