"""The knowledge port and its records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

#: How much more a match in a passage's heading counts than one in its text (bm25 column weights).
HEADING_WEIGHT = 2.0
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
class Hit:
    """A passage that matched a query, best first; ``score`` is higher-is-better."""

    source: str
    heading: str
    text: str
    score: float


@dataclass(frozen=True)
class SourceInfo:
    source: str
    passages: int
    size: int
    indexed_at: float


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str
    size: int


class KnowledgeBase(Protocol):
    """What the retriever (and GET /knowledge) asks of a knowledge base."""

    def search(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best passages whose score reaches the base's threshold ([] if none does)."""
        ...

    def sources(self) -> list[SourceInfo]: ...

    def skipped(self) -> list[Skipped]:
        """Files that are not searched, with the reason (binary, too large, unreadable...)."""
        ...


def query_terms(text: str, limit: int = 32) -> list[str]:
    """Distinct content words of ``text``, in order (FTS5 syntax characters never pass through)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:limit]
