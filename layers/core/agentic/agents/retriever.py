"""Retriever: ranked passages (SQLite FTS5, bm25) from the knowledge base, each with its source.

The knowledge base is a port (``agentic.knowledge.base.KnowledgeBase``): the bundled documents by
default, a local folder (``KNOWLEDGE_DIR``) or the S3 index object, chosen by the wiring.
"""

from __future__ import annotations

from typing import Any

from agentic.agents.base import Agent, StepContext
from agentic.agents.passages import Passage, format_passages
from agentic.knowledge.base import KnowledgeBase, query_terms
from agentic.models import ExecutionStep

__all__ = ["TOP_K", "RetrieverAgent", "knowledge_index", "query_terms", "retrieve"]

TOP_K = 3
#: Passages scoring below this are not evidence (their terms are in most passages); settings override.
DEFAULT_MIN_SCORE = 0.1


def knowledge_index() -> KnowledgeBase:
    """The bundled documents' index (the knowledge base when none is configured)."""
    # Imported here, not above: the index (SQLite FTS5, the splitter, the extractors) is the
    # retriever's alone, and every other function imports this module through the agent catalog.
    from agentic.knowledge.builtin import shared_builtin_index

    return shared_builtin_index(DEFAULT_MIN_SCORE)


def retrieve(knowledge: KnowledgeBase, query: str, k: int = TOP_K) -> list[Passage]:
    """The ``k`` best passages for ``query``, numbered from 1 as a report cites them."""
    hits = knowledge.search(query, k)
    return [Passage(n, h.source, h.heading, h.text, h.score) for n, h in enumerate(hits, 1)]


class RetrieverAgent(Agent):
    agent_type = "retriever"
    base_latency = 0.1

    def __init__(self, latency_scale: float = 1.0, knowledge: KnowledgeBase | None = None) -> None:
        super().__init__(latency_scale)
        self._knowledge = knowledge

    @property
    def knowledge(self) -> KnowledgeBase:
        return self._knowledge if self._knowledge is not None else knowledge_index()

    def describe_step(self, task: str) -> tuple[str, dict[str, Any]]:
        return "Retrieve the most relevant passages from the knowledge base", {"query": task, "k": TOP_K}

    def run(self, step: ExecutionStep, context: StepContext) -> str:
        query = str(step.input_data.get("query") or context.task)
        k = int(step.input_data.get("k", TOP_K))
        return format_passages(query, retrieve(self.knowledge, query, k))
