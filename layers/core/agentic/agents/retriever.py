"""Retriever: ranked full-text search (SQLite FTS5, bm25) over the bundled knowledge base."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

from agentic.agents.base import Agent, StepContext
from agentic.models import ExecutionStep

TOP_K = 3
# Title matches count twice as much as body matches.
_BM25_WEIGHTS = (2.0, 1.0)
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "that",
        "the",
        "their",
        "this",
        "to",
        "us",
        "use",
        "using",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "please",
        "explain",
        "describe",
        "tell",
        "about",
        "make",
        "write",
    ]
)


@dataclass(frozen=True)
class Document:
    doc_id: str
    topic: str
    title: str
    body: str


@dataclass(frozen=True)
class SearchHit:
    document: Document
    score: float


def load_documents() -> list[Document]:
    raw = resources.files("agentic.agents").joinpath("knowledge_base.json").read_text(encoding="utf-8")
    return [Document(d["id"], d["topic"], d["title"], d["body"]) for d in json.loads(raw)]


def query_terms(text: str, limit: int = 32) -> list[str]:
    """Distinct content words of ``text``, in order (FTS5 syntax characters never pass through)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:limit]


class KnowledgeIndex:
    """An in-memory FTS5 index, built once per process (a few ms for the bundled documents)."""

    def __init__(self, documents: list[Document]) -> None:
        self._documents = {d.doc_id: d for d in documents}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE VIRTUAL TABLE docs USING fts5(doc_id UNINDEXED, title, body, tokenize='porter unicode61')"
        )
        self._db.executemany(
            "INSERT INTO docs(doc_id, title, body) VALUES (?, ?, ?)",
            [(d.doc_id, d.title, d.body) for d in documents],
        )

    def __len__(self) -> int:
        return len(self._documents)

    def search(self, text: str, k: int = TOP_K) -> list[SearchHit]:
        terms = query_terms(text)
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        with self._lock:
            rows = self._db.execute(
                "SELECT doc_id, bm25(docs, 0.0, ?, ?) AS rank FROM docs WHERE docs MATCH ? ORDER BY rank LIMIT ?",
                (*_BM25_WEIGHTS, match, k),
            ).fetchall()
        # bm25() is lower-is-better and negative; report a positive, higher-is-better score.
        return [SearchHit(self._documents[doc_id], round(-rank, 4)) for doc_id, rank in rows]


_index: KnowledgeIndex | None = None
_index_lock = threading.Lock()


def knowledge_index() -> KnowledgeIndex:
    global _index
    with _index_lock:
        if _index is None:
            _index = KnowledgeIndex(load_documents())
        return _index


def format_hits(query: str, hits: list[SearchHit]) -> str:
    if not hits:
        return f'No document in the knowledge base matches "{query}".'
    lines = [f'Top {len(hits)} document{"s" if len(hits) != 1 else ""} for "{query}":']
    for rank, hit in enumerate(hits, 1):
        doc = hit.document
        lines.append(f"{rank}. {doc.title} [{doc.topic}] (score {hit.score:.2f})")
        lines.append(f"   {doc.body}")
    return "\n".join(lines)


class RetrieverAgent(Agent):
    agent_type = "retriever"
    base_latency = 0.1

    def describe_step(self, task: str) -> tuple[str, dict[str, Any]]:
        return "Retrieve the most relevant documents from the knowledge base", {"query": task, "k": TOP_K}

    def run(self, step: ExecutionStep, context: StepContext) -> str:
        query = str(step.input_data.get("query") or context.task)
        k = int(step.input_data.get("k", TOP_K))
        return format_hits(query, knowledge_index().search(query, k))
