"""The local stand-in for the S3 trigger: files dropped in a folder become tasks and run."""

from __future__ import annotations

import json

import pytest

from agentic.local.inbox import InboxWatcher
from tests.support import SEED_SEQUENCE

pytestmark = pytest.mark.functional


@pytest.fixture
def system(local_system):
    return local_system


async def test_txt_and_json_files_become_tasks_once(tmp_path, system):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("Explain NDJSON streaming\n")
    (inbox / "b.json").write_text(json.dumps({"description": "Explain exponential backoff"}))
    watcher = InboxWatcher(system.service, inbox, "local")
    for sub in ("done", "rejected"):
        (inbox / sub).mkdir()
    # When the folder is scanned
    started = await watcher.scan_once()
    await system.executor.drain()
    # Then each file made one task, which ran to completion, and the files moved to done/
    assert len(started) == 2
    tasks = {t.user_input: t for t in system.store.list("local", limit=10).items}
    assert set(tasks) == {"Explain NDJSON streaming", "Explain exponential backoff"}
    assert {t.source for t in tasks.values()} == {"inbox"}
    for task in tasks.values():
        assert [e.event_type.value for e in system.store.read_events(task.task_id)] == SEED_SEQUENCE
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.txt", "b.json"]
    # When the same file arrives again (a duplicate notification), no second task is made
    (inbox / "done" / "a.txt").replace(inbox / "a.txt")
    again = await watcher.scan_once()
    await system.executor.drain()
    assert again == [tasks["Explain NDJSON streaming"].task_id]
    assert len(system.store.list("local", limit=10).items) == 2


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"   \n", "blank"),
        ("bad.json", b"{oops", "not valid JSON"),
        ("nodesc.json", b'{"title": "x"}', "description"),
        ("binary.txt", b"\xff\xfe\x00", "UTF-8"),
        ("huge.txt", b"x" * 70_000, "limit"),
    ],
)
async def test_unusable_files_are_rejected_with_a_reason_and_never_retried(tmp_path, system, name, content, reason):
    inbox = tmp_path / "inbox"
    for sub in ("done", "rejected"):
        (inbox / sub).mkdir(parents=True)
    (inbox / name).write_bytes(content)
    watcher = InboxWatcher(system.service, inbox, "local")
    assert await watcher.scan_once() == []
    assert not (inbox / name).exists()
    assert (inbox / "rejected" / name).exists()
    assert reason in (inbox / "rejected" / f"{name}.reason").read_text()
    assert system.store.list("local", limit=10).items == []
    assert await watcher.scan_once() == []
