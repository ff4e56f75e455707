"""The retriever's output contract: passages written as text and read back exactly; the Sources list."""

from __future__ import annotations

import pytest

from agentic.agents.analyzer import parse_sources
from agentic.agents.passages import Passage, format_passages, format_sources, parse_passages

pytestmark = pytest.mark.unit

PASSAGES = [
    Passage(
        1, "runbooks/deploy.md", "Rollback", "Roll back with `sam deploy`.\n\n    indented code\n[2] not a header", 3.5
    ),
    Passage(2, "notes/plain.txt", "", "A plain text file has no heading.", 1.25),
    Passage(4, '"quoted".md', "", "x", 2.0),
    Passage(3, "design (v2)/queue — old.html", "Queue (FIFO) — why", "line one\n\nline three", 0.1234),
]


def test_format_then_parse_is_the_identity():
    # Given passages whose text has blank lines, indentation and a line that looks like a header
    text = format_passages('why did "deploy" fail?', PASSAGES)
    # When the output is read back, Then every field comes back as it was
    parsed = parse_passages(text)
    assert [(p.number, p.heading, p.text, p.score) for p in parsed] == [
        (p.number, p.heading, p.text, p.score) for p in PASSAGES
    ]
    assert [p.source for p in parsed] == [p.source for p in PASSAGES]


def test_the_output_names_each_source_and_heading():
    text = format_passages("deploy", PASSAGES[:1])
    assert text.splitlines()[:2] == ['Top 1 passage for "deploy":', "[1] runbooks/deploy.md — Rollback (score 3.5)"]


def test_no_passages_reads_back_as_none():
    text = format_passages("bread", [])
    assert "No passage" in text
    assert parse_passages(text) == []
    assert parse_sources(text) == []
    assert parse_passages("free text from some other retriever\n1. x [y] (score 2)") == []


def test_scores_are_written_rounded():
    [p] = parse_passages(format_passages("q", [Passage(1, "a.md", "h", "t", 1.234567)]))
    assert p.score == 1.2346


def test_sources_section_lists_path_and_heading_per_passage():
    assert format_sources(PASSAGES[:2]) == "## Sources\n[1] runbooks/deploy.md — Rollback\n[2] notes/plain.txt"
    assert format_sources([]).startswith("## Sources\nNone")


def test_analyzer_sources_come_from_the_passages():
    sources = parse_sources(format_passages("q", PASSAGES[:2]))
    assert [(s.title, s.topic, s.score) for s in sources] == [
        ("Rollback", "runbooks/deploy.md", 3.5),
        ("", "notes/plain.txt", 1.25),
    ]
