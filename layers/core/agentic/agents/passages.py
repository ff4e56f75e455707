"""The retrieved passages, as the retriever writes them and the analyzer and writer read them back.

The retriever's output is text (stored, streamed and shown as it is), so it is also the contract:
``parse_passages(format_passages(q, ps)) == ps`` for every passage whose score is rounded to
``SCORE_DIGITS`` places and its source and heading on one line. A source that could be misread (it
holds `` — `` or starts with a quote) is written as a JSON string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SCORE_DIGITS = 4
_INDENT = "    "
_DASH = " — "
_HEADER = re.compile(r"^\[(?P<number>\d+)\] (?P<rest>.+) \(score (?P<score>-?\d+(?:\.\d+)?)\)$")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Passage:
    #: 1-based rank, the number a report cites it by ([1], [2], ...).
    number: int
    #: Where it comes from: a file path relative to the knowledge folder, an S3 key relative to the
    #: knowledge prefix, or a built-in document's id.
    source: str
    heading: str
    text: str
    score: float

    @property
    def label(self) -> str:
        """``path — heading`` (the path alone when the passage has no heading)."""
        return f"{self.source}{_DASH}{self.heading}" if self.heading else self.source


def _one_line(value: str) -> str:
    return " ".join(value.split())


def format_passages(query: str, passages: list[Passage]) -> str:
    """The retriever step's output: a title line, then per passage a header and its indented text."""
    query = _one_line(query)
    if not passages:
        return f'No passage in the knowledge base matches "{query}".'
    lines = [f'Top {len(passages)} passage{"s" if len(passages) != 1 else ""} for "{query}":']
    for p in passages:
        source, heading = _one_line(p.source), _one_line(p.heading)
        if _DASH in source or source.startswith('"'):
            source = json.dumps(source, ensure_ascii=False)
        label = f"{source}{_DASH}{heading}" if heading else source
        lines.append(f"[{p.number}] {label} (score {round(p.score, SCORE_DIGITS)})")
        lines.extend(_INDENT + line if line else _INDENT for line in p.text.split("\n"))
    return "\n".join(lines)


def parse_passages(retrieved: str) -> list[Passage]:
    """The passages ``format_passages`` wrote, in order; [] for a no-match output or other text."""
    out: list[Passage] = []
    header: re.Match[str] | None = None
    body: list[str] = []

    def flush() -> None:
        if header is not None:
            source, heading = _split_label(header["rest"])
            out.append(
                Passage(
                    number=int(header["number"]),
                    source=source,
                    heading=heading,
                    text="\n".join(body),
                    score=float(header["score"]),
                )
            )

    for line in retrieved.split("\n"):
        if line.startswith(_INDENT):
            if header is not None:
                body.append(line[len(_INDENT) :])
            continue
        if m := _HEADER.match(line):
            flush()
            header, body = m, []
    flush()
    return out


def _split_label(label: str) -> tuple[str, str]:
    if label.startswith('"'):
        try:
            source, end = _DECODER.raw_decode(label)
        except ValueError:
            source, end = None, 0
        if isinstance(source, str):
            rest = label[end:]
            return source, rest[len(_DASH) :] if rest.startswith(_DASH) else ""
    source, _, heading = label.partition(_DASH)
    return source, heading


def format_sources(passages: list[Passage]) -> str:
    """The report's closing "## Sources" section: one ``[n] path — heading`` line per passage."""
    if not passages:
        return "## Sources\nNone: nothing in the knowledge base matches this task, so nothing is cited."
    return "\n".join(["## Sources", *(f"[{p.number}] {_one_line(p.label)}" for p in passages)])
