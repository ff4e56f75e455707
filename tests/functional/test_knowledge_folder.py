"""A local knowledge folder and its index file: incremental sync, bad files, several processes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from agentic.agents.passages import parse_passages
from agentic.agents.retriever import RetrieverAgent
from agentic.knowledge import folder as folder_module
from agentic.knowledge.folder import FolderKnowledge
from agentic.models import ExecutionStep

pytestmark = pytest.mark.functional

DEPLOY = (
    "# Deploy\n\nShip with sam deploy after the canary passes.\n\n"
    "## Rollback\n\nRevert the alias to the previous version.\n"
)
ONCALL = (
    "<html><body><h1>On-call</h1><p>Page the database owner when replication lag exceeds a minute.</p></body></html>"
)
NOTES = "Plain notes about the quarterly budget review and hiring plans."


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def bump_mtime(path: Path) -> None:
    """A later mtime than the index saw (file systems with coarse timestamps may not move it)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    write(root / "runbooks" / "deploy.md", DEPLOY)
    write(root / "oncall.html", ONCALL)
    write(root / "notes.txt", NOTES)
    write(root / ".hidden" / "secret.md", "# Secret\n\nnever indexed")
    write(root / "logo.png", b"\x89PNG\x00")
    return root


def knowledge(docs: Path, **kw) -> FolderKnowledge:
    kw.setdefault("max_file_bytes", 10_000)
    return FolderKnowledge(docs, docs.parent / "data" / "knowledge.db", **kw)


def test_documents_are_indexed_as_passages_that_keep_file_and_heading(docs):
    kb = knowledge(docs)
    report = kb.sync()
    assert sorted(report.indexed) == ["notes.txt", "oncall.html", "runbooks/deploy.md"]
    hits = kb.search("rollback previous version", 3)
    assert (hits[0].source, hits[0].heading) == ("runbooks/deploy.md", "Rollback")
    assert kb.search("replication lag", 3)[0].heading == "On-call"
    assert {s.source: s.passages for s in kb.sources()} == {"notes.txt": 1, "oncall.html": 1, "runbooks/deploy.md": 2}
    assert kb.search("secret", 3) == []  # hidden folders are left out, other types ignored


def test_the_retriever_cites_the_folders_passages(docs):
    kb = knowledge(docs)
    kb.sync()
    step = ExecutionStep(step_id="s", agent_type="retriever", description="", input_data={"query": "how to rollback"})
    from agentic.agents.base import StepContext

    out = RetrieverAgent(0, knowledge=kb).run(step, StepContext("t", "how to rollback"))
    [first, *_] = parse_passages(out)
    assert (first.number, first.source, first.heading) == (1, "runbooks/deploy.md", "Rollback")
    assert "Revert the alias" in first.text


def test_unchanged_files_are_not_read_again(docs):
    kb = knowledge(docs)
    assert kb.sync().read == 3
    # When nothing changed, Then the next pass reads no file
    again = kb.sync()
    assert (again.read, again.indexed, again.removed) == (0, [], [])


def test_a_changed_file_is_reindexed_and_a_touched_one_is_read_but_kept(docs):
    kb = knowledge(docs)
    kb.sync()
    # Given one file touched (same bytes) and one whose content changed
    bump_mtime(docs / "notes.txt")
    write(docs / "oncall.html", ONCALL.replace("database owner", "storage lead"))
    bump_mtime(docs / "oncall.html")
    report = kb.sync()
    # Then both are read, only the changed one is re-indexed, and search follows the new text
    assert report.read == 2
    assert report.indexed == ["oncall.html"]
    assert kb.search("storage lead", 3)[0].source == "oncall.html"
    assert kb.search("database owner", 3) == []
    assert kb.sync().read == 0


def test_a_removed_file_is_no_longer_searched(docs):
    kb = knowledge(docs)
    kb.sync()
    (docs / "runbooks" / "deploy.md").unlink()
    assert kb.sync().removed == ["runbooks/deploy.md"]
    assert kb.search("rollback", 3) == []
    assert "runbooks/deploy.md" not in {s.source for s in kb.sources()}


def test_bad_files_are_skipped_with_one_warning_each_and_listed(docs, monkeypatch):
    warnings = []
    monkeypatch.setattr(folder_module.logger, "warning", lambda msg, extra=None: warnings.append(extra["source"]))
    write(docs / "binary.md", b"# Title\n\x00\x01\x02")
    write(docs / "latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"))
    write(docs / "huge.md", "# Big\n\n" + "word " * 5000)
    (docs / "loop.md").symlink_to(docs / "loop.md")  # unreadable: a symlink to itself (root reads any mode)
    kb = knowledge(docs, max_file_bytes=10_000)
    kb.sync()
    kb.sync()  # a second pass warns about nothing new
    reasons = {s.source: s.reason for s in kb.skipped()}
    assert reasons["binary.md"] == "binary content"
    assert reasons["latin1.txt"].startswith("not UTF-8 text")
    assert reasons["huge.md"] == "larger than KNOWLEDGE_MAX_FILE_BYTES (10000 bytes)"
    assert reasons["loop.md"].startswith("unreadable: ")
    assert sorted(warnings) == ["binary.md", "huge.md", "latin1.txt", "loop.md"]
    # and the good files are searched all the same
    assert kb.search("canary", 3)[0].source == "runbooks/deploy.md"
    # Given the bad file fixed, Then it is indexed and leaves the skipped list
    write(docs / "binary.md", "# Title\n\nfixed text about canary")
    bump_mtime(docs / "binary.md")
    kb.sync()
    assert "binary.md" not in {s.source for s in kb.skipped()}
    assert "binary.md" in {s.source for s in kb.sources()}


def test_a_missing_folder_keeps_the_index(docs, tmp_path):
    kb = knowledge(docs)
    kb.sync()
    docs.rename(tmp_path / "elsewhere")
    assert kb.sync().removed == []
    assert kb.search("canary", 3)


def test_the_folder_is_followed_in_a_thread(docs):
    kb = knowledge(docs)
    kb.start(poll_seconds=0.05)
    try:
        write(docs / "new.md", "# Fresh\n\nA brand new zebra runbook.")
        for _ in range(200):
            if kb.search("zebra", 3):
                break
            import time

            time.sleep(0.05)
        assert kb.search("zebra", 3)[0].source == "new.md"
    finally:
        kb.close()


def _sync_many(folder: str, index: str, rounds: int) -> int:
    kb = FolderKnowledge(Path(folder), Path(index), max_file_bytes=100_000)
    for _ in range(rounds):
        kb.sync()
    return kb.index.passage_count()


def test_several_processes_share_one_index_file(tmp_path):
    # Given a folder of 60 documents and three processes syncing it into one index file at once
    docs = tmp_path / "docs"
    for i in range(60):
        write(docs / f"doc{i:02}.md", f"# Doc {i}\n\nParagraph one of doc {i}.\n\n## More\n\nParagraph two, term{i}.")
    index = tmp_path / "knowledge.db"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        counts = pool.starmap(_sync_many, [(str(docs), str(index), 3)] * 3)
    # Then they agree, and every document is indexed once
    assert counts == [120, 120, 120]
    kb = FolderKnowledge(docs, index, max_file_bytes=100_000)
    assert len(kb.sources()) == 60
    assert kb.search("term7", 5)[0].source == "doc07.md"
    assert kb.sync().read == 0


def test_a_word_most_passages_share_is_no_evidence():
    from agentic.knowledge.index import THRESHOLD_MIN_PASSAGES, PassageIndex
    from agentic.knowledge.split import Chunk

    # Given an index large enough for the threshold, where every passage mentions "system"
    index = PassageIndex(None, min_score=0.1)
    for i in range(THRESHOLD_MIN_PASSAGES):
        index.replace(f"d{i}.md", version="1", sha256=str(i), size=1, chunks=[Chunk("", f"the system part{i} word")])
    # Then a question sharing only that word cites nothing, and a specific one still finds its passage
    assert index.search("how is the system", 3) == []
    assert index.search("system part7", 3)[0].source == "d7.md"
    assert PassageIndex(None, min_score=0).search("x", 3) == []
