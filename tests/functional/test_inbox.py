"""The local stand-in for the S3 trigger: files dropped in a folder become tasks and run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agentic.local.inbox import InboxWatcher
from tests.support import SEED_SEQUENCE

pytestmark = pytest.mark.functional


@pytest.fixture
def system(local_system):
    return local_system


def dropped_a_while_ago(path: Path, content: bytes) -> None:
    """A file written a minute ago and untouched since: complete, whoever wrote it."""
    path.write_bytes(content)
    minute_ago = time.time() - 60
    os.utime(path, (minute_ago, minute_ago))


class Clock:
    """The watcher's clock, moved by the test (wall-clock seconds, like file modification times)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def append(path: Path, data: bytes, at: float) -> None:
    """Append ``data`` as a writer would at time ``at`` (the file's modification time)."""
    with path.open("ab") as f:
        f.write(data)
    os.utime(path, (at, at))


@pytest.fixture
def inbox(tmp_path):
    folder = tmp_path / "inbox"
    for sub in ("done", "rejected"):
        (folder / sub).mkdir(parents=True)
    return folder


async def test_txt_and_json_files_become_tasks_once(tmp_path, system):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    dropped_a_while_ago(inbox / "a.txt", b"Explain NDJSON streaming\n")
    dropped_a_while_ago(inbox / "b.json", json.dumps({"description": "Explain exponential backoff"}).encode())
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
    dropped_a_while_ago(inbox / name, content)
    watcher = InboxWatcher(system.service, inbox, "local")
    assert await watcher.scan_once() == []
    assert not (inbox / name).exists()
    assert (inbox / "rejected" / name).exists()
    assert reason in (inbox / "rejected" / f"{name}.reason").read_text()
    assert system.store.list("local", limit=10).items == []
    assert await watcher.scan_once() == []


async def test_a_file_being_appended_to_is_taken_whole_once_it_stops_changing(inbox, system):
    # Given a writer that wrote "partial " and pauses (as `(printf 'partial '; sleep 2; echo rest) > f`)
    clock = Clock()
    watcher = InboxWatcher(system.service, inbox, "local", settle_seconds=1.0, clock=clock)
    slow = inbox / "slow.txt"
    append(slow, b"partial ", at=clock.now)
    # When the folder is scanned before the file has been quiet for the settle interval
    clock.now += 0.5
    # Then it is not taken
    assert await watcher.scan_once() == []
    # When the writer appends the rest, and scans follow before the file has been quiet long enough
    append(slow, b"rest\n", at=clock.now + 0.1)
    clock.now += 0.8  # 1.3 s after the first write, 0.7 s after the second
    assert await watcher.scan_once() == []
    clock.now += 0.5  # seen changed at the previous scan: 0.5 s quiet by the watcher's own account
    assert await watcher.scan_once() == []
    assert slow.exists()
    assert system.store.list("local", limit=10).items == []
    # When it has been quiet for the settle interval
    clock.now += 0.6
    started = await watcher.scan_once()
    await system.executor.drain()
    # Then it became one task with the whole content, which ran
    assert len(started) == 1
    tasks = system.store.list("local", limit=10).items
    assert [t.user_input for t in tasks] == ["partial rest"]
    assert [e.event_type.value for e in system.store.read_events(started[0])] == SEED_SEQUENCE
    assert (inbox / "done" / "slow.txt").exists()


async def test_a_large_file_written_in_chunks_is_taken_whole(inbox, system):
    # Given a 60 KB JSON document written in chunks, starting from an empty file
    clock = Clock()
    watcher = InboxWatcher(system.service, inbox, "local", settle_seconds=1.0, clock=clock)
    description = "Summarise the attached notes " + "n" * 3000
    document = json.dumps({"description": description, "notes": "x" * 60_000}).encode()
    big = inbox / "big.json"
    append(big, b"", at=clock.now)
    chunk = 16 * 1024
    for offset in range(0, len(document), chunk):
        # When the folder is scanned while the file grows (each chunk 0.3 s after the last)
        clock.now += 0.3
        assert await watcher.scan_once() == []
        append(big, document[offset : offset + chunk], at=clock.now)
    clock.now += 0.3
    assert await watcher.scan_once() == []  # the last chunk, seen changed by this scan
    # Then nothing was taken or rejected while it was being written
    assert list((inbox / "rejected").iterdir()) == []
    assert system.store.list("local", limit=10).items == []
    # When it has stopped changing for the settle interval
    clock.now += 1.0
    started = await watcher.scan_once()
    # Then the whole document became one task
    assert len(started) == 1
    assert [t.user_input for t in system.store.list("local", limit=10).items] == [description]
    await system.executor.drain()


async def test_an_oversized_file_written_in_chunks_is_rejected_for_its_size_not_as_empty(inbox, system):
    # Given a 70 KB text file written in chunks by a shell redirect
    clock = Clock()
    watcher = InboxWatcher(system.service, inbox, "local", settle_seconds=1.0, clock=clock)
    huge = inbox / "huge.txt"
    append(huge, b"", at=clock.now)
    for _ in range(7):
        clock.now += 0.2
        assert await watcher.scan_once() == []
        append(huge, b"x" * 10_000, at=clock.now)
    clock.now += 0.2
    assert await watcher.scan_once() == []
    assert list((inbox / "rejected").iterdir()) == []
    # When it is complete and quiet
    clock.now += 1.0
    assert await watcher.scan_once() == []
    # Then it is rejected with its real size
    assert "70000 bytes" in (inbox / "rejected" / "huge.txt.reason").read_text()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
async def test_a_file_still_open_for_writing_is_not_taken_however_long_it_is_quiet(inbox, system):
    # Given a writer that holds the file open and has not written for a minute
    watcher = InboxWatcher(system.service, inbox, "local", settle_seconds=1.0)
    path = inbox / "held.txt"
    with path.open("w") as writer:
        writer.write("partial ")
        writer.flush()
        minute_ago = time.time() - 60
        os.utime(path, (minute_ago, minute_ago))
        # When the folder is scanned
        # Then the file is left alone
        assert await watcher.scan_once() == []
        assert path.exists()
    # When the writer closes it
    started = await watcher.scan_once()
    await system.executor.drain()
    # Then it is taken
    assert len(started) == 1
    assert [t.user_input for t in system.store.list("local", limit=10).items] == ["partial"]


async def test_files_under_a_temporary_name_wait_for_their_rename(inbox, system):
    # Given a document written under a dot name and a .tmp name, and quiet for a minute
    watcher = InboxWatcher(system.service, inbox, "local", settle_seconds=1.0)
    dropped_a_while_ago(inbox / ".draft.txt", b"Explain hidden files")
    dropped_a_while_ago(inbox / "report.txt.tmp", b"Explain temporary files")
    # When the folder is scanned, then neither is taken
    assert await watcher.scan_once() == []
    # When the writer renames them to their final names
    (inbox / ".draft.txt").replace(inbox / "draft.txt")
    (inbox / "report.txt.tmp").replace(inbox / "report.txt")
    started = await watcher.scan_once()
    await system.executor.drain()
    # Then both become tasks
    assert len(started) == 2
    inputs = {t.user_input for t in system.store.list("local", limit=10).items}
    assert inputs == {"Explain hidden files", "Explain temporary files"}
