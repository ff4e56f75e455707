"""The full-text index's segments are merged after it changes: searches read one segment, not one
per write, and a large index is merged in bounded steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentic.knowledge.builtin import builtin_index
from agentic.knowledge.folder import FolderKnowledge
from agentic.knowledge.index import PassageIndex
from agentic.knowledge.split import Chunk

pytestmark = pytest.mark.functional

TOPICS = ["leases", "checkpoints", "retries", "streams", "approvals", "backpressure", "retention", "workers"]


def fill(index: PassageIndex, sources: int) -> None:
    """``sources`` sources written one by one (each write adds segments to the full-text index)."""
    for n in range(sources):
        topic = TOPICS[n % len(TOPICS)]
        text = f"How {topic} work in release {n}: " + " ".join(f"{topic}{k} detail{n}" for k in range(60))
        index.replace(f"doc{n}.md", version="1", sha256=str(n), size=len(text), chunks=[Chunk(topic.title(), text)])


def data_rows(index: PassageIndex) -> int:
    return int(index._db.execute("SELECT count(*) FROM passage_fts_data").fetchone()[0])


def ranked(index: PassageIndex) -> list[list[tuple[str, float]]]:
    return [[(h.source, h.score) for h in index.search(f"{t} release", 5)] for t in TOPICS]


def test_merging_leaves_nothing_to_merge_and_the_same_hits():
    # Given an index written source by source
    index = PassageIndex(None)
    fill(index, 40)
    before, rows = ranked(index), data_rows(index)
    # When its segments are merged
    index.merge_all_segments()
    # Then nothing is left to merge, the index holds fewer records, and every search finds the same
    assert index.merge_segments() is False
    assert data_rows(index) < rows
    assert ranked(index) == before


def test_a_merge_step_is_bounded_and_says_whether_more_remains():
    # Given an index with many segments
    index = PassageIndex(None)
    fill(index, 40)
    # When it is merged one page at a time
    steps = 0
    while index.merge_segments(pages=1):
        steps += 1
        assert steps < 10_000
    # Then it took several steps, each saying that more remained, and the last that none did
    assert steps > 1
    assert index.merge_segments(pages=1) is False


def test_the_bundled_documents_index_is_merged_when_built():
    assert builtin_index().merge_segments() is False


def test_a_folder_pass_that_changes_the_index_merges_it(tmp_path: Path):
    # Given a folder of a dozen documents
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(12):
        (docs / f"doc{n}.md").write_text(f"# Doc {n}\n\nNotes on {TOPICS[n % len(TOPICS)]}, part {n}.\n")
    kb = FolderKnowledge(docs, tmp_path / "data" / "knowledge.db", max_file_bytes=10_000)
    # When a pass indexes them, and a later one indexes one more
    assert len(kb.sync().indexed) == 12
    assert kb.index.merge_segments() is False
    (docs / "late.md").write_text("# Late\n\nNotes on workers.\n")
    assert kb.sync().indexed == ["late.md"]
    # Then after each pass nothing is left to merge, and the new document is found
    assert kb.index.merge_segments() is False
    assert kb.search("workers late", 1)[0].source == "late.md"
    kb.close()
