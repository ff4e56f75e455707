"""The local stand-in for the S3 trigger: files dropped in a folder become tasks and start.

A ``.txt`` file's content is the description; a ``.json`` file holds ``{"description": ...}``. The
task id derives from the file name and content, so a file seen twice makes one task. Processed files
move to ``done/``; unusable ones to ``rejected/`` with a ``.reason`` file beside them.

A file is taken only once it is complete. S3 makes an object visible only once it is whole; a folder
shows a file while it is being written, so the watcher waits until the file has stopped changing:

- its size, modification time and inode have not changed for ``settle_seconds`` (judged by its
  modification time when first seen, then by what successive scans observe), and
- on Linux, no process holds it open for writing (``/proc/<pid>/fd``), so a writer that pauses
  longer than the settle interval is still waited for.

Names starting with a dot and names not ending in ``.txt``/``.json`` (``report.txt.tmp``) are never
taken: a writer that writes under such a name and renames the file when done needs no settling at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentic.errors import AgenticError
from agentic.observability import logger
from agentic.service.intake import UnusableInput, description_from_document
from agentic.service.tasks import TaskService

_PROC = Path("/proc")


@dataclass(frozen=True)
class _Sighting:
    """What a scan saw of a file, and since when (by the watcher's clock) it has looked like that."""

    signature: tuple[int, int, int]  # (size, mtime_ns, inode)
    quiet_since: float


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def open_for_writing(path: Path) -> bool:
    """Whether any process we may inspect holds ``path`` open for writing (Linux ``/proc``; else False)."""
    if not (_PROC / "self" / "fd").is_dir():
        return False
    target = os.path.realpath(path)
    try:
        pids = [entry for entry in os.listdir(_PROC) if entry.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = _PROC / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) != target:
                    continue
                info = (_PROC / pid / "fdinfo" / fd).read_text()
            except OSError:
                continue
            flags = next((line.split()[1] for line in info.splitlines() if line.startswith("flags:")), "0")
            if (int(flags, 8) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


class InboxWatcher:
    def __init__(
        self,
        service: TaskService,
        folder: Path,
        owner: str,
        *,
        poll_seconds: float = 0.5,
        max_bytes: int = 64 * 1024,
        settle_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.service = service
        self.folder = folder
        self.owner = owner
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        # Wall-clock seconds: a file's modification time is compared with it.
        self.clock = clock
        self._seen: dict[str, _Sighting] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for sub in ("done", "rejected"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._loop(), name="inbox-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self.scan_once()
            await asyncio.sleep(self.poll_seconds)

    def _candidates(self) -> list[tuple[Path, os.stat_result]]:
        found = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or path.suffix not in (".txt", ".json"):
                continue
            try:
                st = path.stat()
            except OSError:  # gone since the listing
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((path, st))
        return found

    def _settled(self, name: str, st: os.stat_result, now: float) -> bool:
        """Record this sighting; True once the file has looked the same for the settle interval."""
        signature = _signature(st)
        seen = self._seen.get(name)
        if seen is None:  # first sight: quiet since it was last modified (never since the future)
            seen = _Sighting(signature, min(st.st_mtime_ns / 1e9, now))
        elif seen.signature != signature:  # it changed since the last scan: quiet from now on
            seen = _Sighting(signature, now)
        self._seen[name] = seen
        return now - seen.quiet_since >= self.settle_seconds

    async def scan_once(self) -> list[str]:
        """Turn every complete file into a task; return the task ids started."""
        started = []
        now = self.clock()
        candidates = await asyncio.to_thread(self._candidates)
        present = {path.name for path, _ in candidates}
        for name in set(self._seen) - present:  # moved away or deleted: forget it
            del self._seen[name]
        for path, st in candidates:
            if not self._settled(path.name, st, now):
                continue
            if await asyncio.to_thread(open_for_writing, path):
                continue
            try:
                task_id = await self._ingest(path, st)
            except Exception:  # one bad file must not stop the watcher
                logger.exception("inbox file failed", extra={"file": path.name})
                continue
            if task_id:
                started.append(task_id)
        return started

    def _reject(self, path: Path, reason: str) -> None:
        path.replace(self.folder / "rejected" / path.name)
        (self.folder / "rejected" / f"{path.name}.reason").write_text(reason + "\n")
        self._seen.pop(path.name, None)

    async def _ingest(self, path: Path, st: os.stat_result) -> str | None:
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            await self._rejected(path, str(exc))
            return None
        if len(raw) != st.st_size:  # written to after all: wait for it to settle again
            self._seen.pop(path.name, None)
            return None
        try:
            description = description_from_document(path.name, raw, self.max_bytes)
        except UnusableInput as exc:
            await self._rejected(path, str(exc))
            return None
        key = "inbox:" + hashlib.sha256(path.name.encode() + b"\0" + raw).hexdigest()
        task, _ = await self.service.create(self.owner, description, idempotency_key=key, source="inbox")
        try:
            await self.service.execute(self.owner, task.task_id)
        except AgenticError as exc:  # backpressure: leave the file for the next scan
            logger.warning("inbox task not started yet", extra={"task_id": task.task_id, "reason": str(exc)})
            return None
        await asyncio.to_thread(path.replace, self.folder / "done" / path.name)
        self._seen.pop(path.name, None)
        logger.info("inbox task started", extra={"task_id": task.task_id, "file": path.name})
        return task.task_id

    async def _rejected(self, path: Path, message: str) -> None:
        reason = message.splitlines()[0]
        logger.warning("inbox file rejected", extra={"file": path.name, "reason": reason})
        await asyncio.to_thread(self._reject, path, reason)
