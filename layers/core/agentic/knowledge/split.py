"""Sections into passages: paragraphs gathered up to a few hundred words, never across a heading."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from agentic.knowledge.extract import Section

#: Passages aim at this many words; one grows to 1.5x before it is closed, and a longer paragraph is
#: cut at sentence ends (or, failing those, at this many words).
PASSAGE_WORDS = 200
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    heading: str
    text: str


def _pieces(paragraph: str, words: int) -> Iterator[str]:
    """A paragraph, or cuts of a long one at sentence ends (at ``words`` words if a sentence is longer)."""
    if len(paragraph.split()) <= words * 3 // 2:
        yield paragraph
        return
    current: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        tokens = sentence.split()
        while len(tokens) > words:
            if current:
                yield " ".join(current)
                current = []
            yield " ".join(tokens[:words])
            tokens = tokens[words:]
        if current and len(current) + len(tokens) > words:
            yield " ".join(current)
            current = []
        current.extend(tokens)
    if current:
        yield " ".join(current)


def split_sections(sections: list[Section], words: int = PASSAGE_WORDS) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in sections:
        current: list[str] = []
        count = 0
        for raw in _PARAGRAPHS.split(section.text):
            paragraph = "\n".join(line.rstrip() for line in raw.strip("\n").splitlines()).strip()
            if not paragraph:
                continue
            for piece in _pieces(paragraph, words):
                n = len(piece.split())
                if current and count + n > words * 3 // 2:
                    chunks.append(Chunk(section.heading, "\n\n".join(current)))
                    current, count = [], 0
                current.append(piece)
                count += n
                if count >= words:
                    chunks.append(Chunk(section.heading, "\n\n".join(current)))
                    current, count = [], 0
        if current:
            chunks.append(Chunk(section.heading, "\n\n".join(current)))
    return chunks
