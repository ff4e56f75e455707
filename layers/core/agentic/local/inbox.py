"""The local stand-in for the S3 trigger: files dropped in a folder become tasks and start.

A ``.txt`` file's content is the description; a ``.json`` file holds ``{"description": ...}``. The
task id derives from the file name and content, so a file seen twice makes one task. Processed files
move to ``done/``; unusable ones to ``rejected/`` with a ``.reason`` file beside them.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from agentic.errors import AgenticError
from agentic.observability import logger
from agentic.service.intake import UnusableInput, description_from_document
from agentic.service.tasks import TaskService


class InboxWatcher:
    def __init__(
        self, service: TaskService, folder: Path, owner: str, *, poll_seconds: float = 0.5, max_bytes: int = 64 * 1024
    ) -> None:
        self.max_bytes = max_bytes
        self.service = service
        self.folder = folder
        self.owner = owner
        self.poll_seconds = poll_seconds
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

    async def scan_once(self) -> list[str]:
        """Turn every ready file into a task; return the task ids started."""
        started = []
        for path in sorted(await asyncio.to_thread(list, self.folder.iterdir())):
            if not path.is_file() or path.suffix not in (".txt", ".json") or path.name.startswith("."):
                continue
            try:
                task_id = await self._ingest(path)
            except Exception:  # one bad file must not stop the watcher
                logger.exception("inbox file failed", extra={"file": path.name})
                continue
            if task_id:
                started.append(task_id)
        return started

    def _reject(self, path: Path, reason: str) -> None:
        path.replace(self.folder / "rejected" / path.name)
        (self.folder / "rejected" / f"{path.name}.reason").write_text(reason + "\n")

    async def _ingest(self, path: Path) -> str | None:
        try:
            raw = await asyncio.to_thread(path.read_bytes)
            description = description_from_document(path.name, raw, self.max_bytes)
        except (OSError, UnusableInput) as exc:
            reason = str(exc).splitlines()[0]
            logger.warning("inbox file rejected", extra={"file": path.name, "reason": reason})
            await asyncio.to_thread(self._reject, path, reason)
            return None
        key = "inbox:" + hashlib.sha256(path.name.encode() + b"\0" + raw).hexdigest()
        task, _ = await self.service.create(self.owner, description, idempotency_key=key, source="inbox")
        try:
            await self.service.execute(self.owner, task.task_id)
        except AgenticError as exc:  # backpressure: leave the file for the next scan
            logger.warning("inbox task not started yet", extra={"task_id": task.task_id, "reason": str(exc)})
            return None
        await asyncio.to_thread(path.replace, self.folder / "done" / path.name)
        logger.info("inbox task started", extra={"task_id": task.task_id, "file": path.name})
        return task.task_id
