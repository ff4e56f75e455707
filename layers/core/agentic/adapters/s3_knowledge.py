"""The knowledge index as one S3 object: the indexer that writes it and the loader the retriever uses.

- ``S3KnowledgeIndexer`` brings the index object in line with the objects under the knowledge prefix
  that an event names. It reads each named object's current state (not the event's claim), so events
  that arrive late, twice or out of order converge. It downloads the index, applies the changes and
  puts it back *conditionally* on the ETag it downloaded (``If-Match``; ``If-None-Match: *`` for the
  first index): two indexers at once never lose each other's passages, the loser starts again from
  the winner's index.
- ``S3Knowledge`` is the retriever's knowledge base: the index object downloaded into the cache
  folder (Lambda's /tmp) once per container, its ETag checked at most every ``refresh_seconds``.

Existence is asked with ListObjectsV2 on the object's own key as prefix: the IAM grant is
``s3:ListBucket`` conditioned on those prefixes, and a GetObject of a missing key without
ListBucket would answer 403, which must not be read as "deleted".
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentic.errors import TransientAgentError
from agentic.knowledge.base import Hit, Skipped, SourceInfo
from agentic.knowledge.folder import index_document
from agentic.knowledge.index import PassageIndex
from agentic.knowledge.split import PASSAGE_WORDS
from agentic.observability import logger

#: How often an indexer starts again after losing the conditional put to another one.
MAX_PUT_ATTEMPTS = 8
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


class IndexConflict(Exception):
    """Another indexer replaced the index object since we downloaded it."""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Objects:
    """The few S3 calls both sides make (the client is built on first use, never at import)."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def stat(self, key: str) -> tuple[str, int] | None:
        """(ETag, size) of ``key``, or None if it does not exist."""
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        for obj in listed.get("Contents", []):
            if obj["Key"] == key:
                return str(obj["ETag"]).strip('"'), int(obj["Size"])
        return None

    def _get(self, key: str) -> Any | None:
        """The ``GetObject`` answer for ``key``, or None if it does not exist."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def download(self, key: str, dest: Path) -> str | None:
        """Write ``key`` to ``dest``; its ETag, or None (nothing written) if it does not exist."""
        obj = self._get(key)
        if obj is None:
            return None
        with dest.open("wb") as out:
            for chunk in obj["Body"].iter_chunks(1 << 20):
                out.write(chunk)
        return str(obj["ETag"]).strip('"')

    def read(self, key: str, max_bytes: int) -> bytes | None:
        obj = self._get(key)
        if obj is None:
            return None
        data: bytes = obj["Body"].read(max_bytes + 1)
        return data

    def put_if(self, key: str, path: Path, etag: str | None) -> str:
        """Put ``path`` at ``key`` only if the object still has ``etag`` (None: only if it is absent)."""
        condition = {"IfMatch": f'"{etag}"'} if etag else {"IfNoneMatch": "*"}
        try:
            with path.open("rb") as body:
                put = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **condition)
        except Exception as exc:
            if _code(exc) in _CONFLICT_CODES:
                raise IndexConflict(key) from None
            raise
        return str(put["ETag"]).strip('"')


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    attempts: int = 0
    etag: str | None = None


class S3KnowledgeIndexer:
    def __init__(
        self,
        objects: S3Objects,
        *,
        prefix: str,
        index_key: str,
        max_file_bytes: int,
        passage_words: int = PASSAGE_WORDS,
        work_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.objects = objects
        self.prefix = prefix
        self.index_key = index_key
        self.max_file_bytes = max_file_bytes
        self.passage_words = passage_words
        self.work_dir = work_dir
        self._sleep = sleep

    def source_of(self, key: str) -> str | None:
        """The source name of a knowledge object's key; None for keys outside the prefix (or the index)."""
        if not key.startswith(self.prefix) or key == self.index_key or key.endswith("/"):
            return None
        return key[len(self.prefix) :]

    def apply(self, keys: Iterable[str]) -> IndexReport:
        """Reconcile the index object with the current state of ``keys``; retried on a lost put."""
        sources = {s: k for k in keys if (s := self.source_of(k)) is not None}
        for attempt in range(1, MAX_PUT_ATTEMPTS + 1):
            try:
                report = self._apply_once(sources)
            except IndexConflict:
                logger.info("knowledge index changed under us; applying again", extra={"attempt": attempt})
                self._sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # full jitter
                continue
            report.attempts = attempt
            return report
        # Lambda (the SQS message) retries later, from the then-current index.
        raise TransientAgentError(f"the knowledge index kept changing: {MAX_PUT_ATTEMPTS} conditional puts lost")

    def _apply_once(self, sources: dict[str, str]) -> IndexReport:
        report = IndexReport()
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            path = Path(tmp) / "index.sqlite"
            etag = self.objects.download(self.index_key, path)
            index = PassageIndex(path, wal=False)
            try:
                known = index.known()
                for source, key in sorted(sources.items()):
                    self._reconcile(index, known.get(source), source, key, report)
                if report.indexed or report.removed or report.skipped:
                    index.merge_segments()  # one bounded step a write: every reader searches fewer segments
            finally:
                index.close()
            if not (report.indexed or report.removed or report.skipped):
                report.etag = etag
                return report  # nothing to write
            report.etag = self.objects.put_if(self.index_key, path, etag)
        logger.info(
            "knowledge index written",
            extra={"indexed": report.indexed, "removed": report.removed, "skipped": report.skipped},
        )
        return report

    def _reconcile(self, index: PassageIndex, known: Any, source: str, key: str, report: IndexReport) -> None:
        current = self.objects.stat(key)
        if current is None:
            (report.removed if index.remove(source) else report.unchanged).append(source)
            return
        etag, size = current
        if known is not None and known.version == etag:
            report.unchanged.append(source)
            return
        if size > self.max_file_bytes:
            reason = f"larger than KNOWLEDGE_MAX_FILE_BYTES ({self.max_file_bytes} bytes)"
            if index.skip(source, version=etag, reason=reason, size=size):
                logger.warning("knowledge file skipped", extra={"source": source, "reason": reason})
            report.skipped.append(source)
            return
        data = self.objects.read(key, self.max_file_bytes)
        if data is None:  # deleted between the listing and the read
            (report.removed if index.remove(source) else report.unchanged).append(source)
            return
        outcome = index_document(index, source, data, version=etag, words=self.passage_words)
        if isinstance(outcome, str):
            report.skipped.append(source)
        else:
            # A re-upload of the same bytes under a new ETag records the ETag: that is a write too.
            report.indexed.append(source)


class S3Knowledge:
    """The retriever's view of the index object: loaded once per container, refreshed by ETag."""

    def __init__(
        self,
        objects: S3Objects,
        *,
        index_key: str,
        cache_dir: Path,
        refresh_seconds: float,
        min_score: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.index_key = index_key
        self.cache_dir = cache_dir
        self.refresh_seconds = refresh_seconds
        self.min_score = min_score
        self._clock = clock
        self._lock = threading.Lock()
        self._index: PassageIndex | None = None
        self._etag: str | None = None
        self._checked_at: float | None = None
        #: How many times the index object was downloaded (a cold load, then one per new ETag).
        self.loads = 0

    @property
    def etag(self) -> str | None:
        return self._etag

    def current(self) -> PassageIndex:
        with self._lock:
            now = self._clock()
            fresh = self._checked_at is not None and now - self._checked_at < self.refresh_seconds
            if self._index is not None and fresh:
                return self._index
            self._checked_at = now
            stat = self.objects.stat(self.index_key)
            etag = stat[0] if stat else None
            if self._index is not None and etag == self._etag:
                return self._index
            self._load(etag)
            assert self._index is not None
            return self._index

    def _load(self, etag: str | None) -> None:
        old, old_path = self._index, self.path_for(self._etag)
        if etag is None:  # nothing indexed yet: an empty index
            self._index, self._etag = PassageIndex(None, min_score=self.min_score), None
        else:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            partial = self.cache_dir / f"download-{os.getpid()}.part"
            loaded = self.objects.download(self.index_key, partial)
            if loaded is None:
                partial.unlink(missing_ok=True)
                self._index, self._etag = PassageIndex(None, min_score=self.min_score), None
            else:
                final = self.path_for(loaded)
                assert final is not None
                partial.replace(final)
                self._index = PassageIndex(final, min_score=self.min_score, read_only=True)
                self._etag = loaded
                self.loads += 1
                logger.info("knowledge index loaded", extra={"etag": loaded, "bytes": final.stat().st_size})
        if old is not None:
            old.close()
            if old_path is not None and old_path != self.path_for(self._etag):
                old_path.unlink(missing_ok=True)  # /tmp is small: keep one copy

    def path_for(self, etag: str | None) -> Path | None:
        return self.cache_dir / f"index-{etag}.sqlite" if etag else None

    # --- the port ----------------------------------------------------------------------------------

    def search(self, query: str, k: int) -> list[Hit]:
        return self.current().search(query, k)

    def sources(self) -> list[SourceInfo]:
        return self.current().sources()

    def skipped(self) -> list[Skipped]:
        return self.current().skipped()
