"""A folder of documents, kept in an index file beside the data and followed while the server runs.

``sync`` compares the folder with the index: files whose size and mtime match the index are not
read; a changed file is read and hashed, and re-indexed only if its content changed; files that are
gone lose their passages. Bad files (binary, undecodable, too large, unreadable) are recorded as
skipped with their reason and logged once. Several processes may sync one index file: each change is
one ``BEGIN IMMEDIATE`` transaction that re-checks the content hash, so they take turns and agree.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
import threading
from dataclasses import dataclass, field
from pathlib import Path

from agentic.knowledge.base import Hit, Skipped, SourceInfo
from agentic.knowledge.extract import Unusable, extract, is_document
from agentic.knowledge.index import PassageIndex
from agentic.knowledge.split import PASSAGE_WORDS, split_sections
from agentic.observability import logger


@dataclass
class SyncReport:
    """What one pass did (``read`` counts the files whose bytes were read)."""

    read: int = 0
    indexed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def index_document(
    index: PassageIndex, source: str, data: bytes, *, version: str, words: int = PASSAGE_WORDS
) -> bool | str:
    """Index one document's bytes; True if its passages changed, False if not, or the skip reason."""
    try:
        chunks = split_sections(extract(source, data), words)
    except Unusable as exc:
        reason = str(exc)
        if index.skip(source, version=version, reason=reason, size=len(data)):
            logger.warning("knowledge file skipped", extra={"source": source, "reason": reason})
        return reason
    return index.replace(
        source, version=version, sha256=hashlib.sha256(data).hexdigest(), size=len(data), chunks=chunks
    )


def _version(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class FolderKnowledge:
    """The knowledge base of a local folder (``KNOWLEDGE_DIR``)."""

    def __init__(
        self,
        folder: Path,
        index_path: Path,
        *,
        max_file_bytes: int,
        min_score: float = 0.0,
        passage_words: int = PASSAGE_WORDS,
        busy_timeout_seconds: float = 10.0,
    ) -> None:
        self.folder = folder
        self.max_file_bytes = max_file_bytes
        self.passage_words = passage_words
        self.index = PassageIndex(index_path, min_score=min_score, busy_timeout_seconds=busy_timeout_seconds)
        self._sync_lock = threading.Lock()
        self._missing_warned = False
        #: Whether the index may hold segments to merge (a file opened as it is, or a pass that changed it).
        self._unmerged = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the port ----------------------------------------------------------------------------------

    def search(self, query: str, k: int) -> list[Hit]:
        return self.index.search(query, k)

    def sources(self) -> list[SourceInfo]:
        return self.index.sources()

    def skipped(self) -> list[Skipped]:
        return self.index.skipped()

    # --- following the folder ------------------------------------------------------------------------

    def _files(self) -> dict[str, Path]:
        """Documents under the folder by their relative POSIX path (hidden files and folders left out)."""
        found: dict[str, Path] = {}
        for root, dirs, files in os.walk(self.folder, onerror=None, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if not name.startswith(".") and is_document(name):
                    path = Path(root, name)
                    found[path.relative_to(self.folder).as_posix()] = path
        return found

    def _skip(self, report: SyncReport, source: str, version: str, reason: str, size: int) -> None:
        report.skipped.append(source)
        if self.index.skip(source, version=version, reason=reason, size=size):
            logger.warning("knowledge file skipped", extra={"source": source, "reason": reason})

    def sync(self) -> SyncReport:
        """One pass: bring the index in line with the folder."""
        with self._sync_lock:
            report = SyncReport()
            if not self.folder.is_dir():  # unmounted or not made yet: keep what is indexed
                if not self._missing_warned:
                    logger.warning("knowledge folder not found", extra={"folder": str(self.folder)})
                    self._missing_warned = True
                return report
            self._missing_warned = False
            known = self.index.known()
            files = self._files()
            for source, path in files.items():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # removed since the walk: the next pass forgets it
                except OSError as exc:
                    self._skip(report, source, "stat-error", f"unreadable: {exc.strerror}", 0)
                    continue
                version = _version(stat)
                if not stat_module.S_ISREG(stat.st_mode):
                    self._skip(report, source, version, "not a regular file", 0)
                    continue
                if source in known and known[source].version == version:
                    continue
                if stat.st_size > self.max_file_bytes:
                    reason = f"larger than KNOWLEDGE_MAX_FILE_BYTES ({self.max_file_bytes} bytes)"
                    self._skip(report, source, version, reason, stat.st_size)
                    continue
                try:
                    data = path.read_bytes()
                    after = path.stat()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    self._skip(report, source, version, f"unreadable: {exc.strerror}", stat.st_size)
                    continue
                report.read += 1
                if _version(after) != version:
                    continue  # written to while we read it: the next pass takes the settled file
                outcome = index_document(self.index, source, data, version=version, words=self.passage_words)
                if isinstance(outcome, str):
                    report.skipped.append(source)
                elif outcome:
                    report.indexed.append(source)
            for source in known.keys() - files.keys():
                if self.index.remove(source):
                    report.removed.append(source)
            if report.indexed or report.removed:
                logger.info(
                    "knowledge index updated",
                    extra={"indexed": len(report.indexed), "removed": len(report.removed), "folder": str(self.folder)},
                )
                self._unmerged = True
            if self._unmerged:
                # One bounded step a pass: a large index is merged over several passes, never in one
                # long hold of its write lock.
                self._unmerged = self.index.merge_segments()
            return report

    def start(self, poll_seconds: float) -> None:
        """Follow the folder in a thread (a first pass at once, then every ``poll_seconds``)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.sync()
                except Exception:  # a full disk or a locked index must not end the following
                    logger.exception("knowledge folder sync failed; trying again")
                self._stop.wait(poll_seconds)

        self._thread = threading.Thread(target=loop, name="knowledge-folder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.index.close()
