"""The SQLite file's upkeep, beside its transactions (``SQLiteFile`` is built on it): the log kept
short by a checkpoint thread, the log shrunk after a full disk, the health probe, and free pages given
back to the file system."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from agentic.errors import StoreUnavailable

#: How often the background thread moves the write-ahead log into the database file.
CHECKPOINT_INTERVAL_SECONDS = 0.2
#: Pages freed per transaction of the incremental vacuum (4 MB: tens of milliseconds of lock).
VACUUM_BATCH_PAGES = 1024
#: How long /health's write probe waits for the lock: it reports, it does not queue.
PROBE_WAIT_SECONDS = 1.0


class FileUpkeep:
    """What keeps the file healthy; the connections, locks and transactions are ``SQLiteFile``'s."""

    path: Path
    probe_seconds: float
    _db: sqlite3.Connection
    _clock: Callable[[], float]
    _closed: threading.Event
    _written: threading.Event
    _probe: tuple[float, str | None]
    _probing: threading.Lock
    _last_failure: tuple[float, str] | None
    _wal_to_shrink: bool

    def _write(self, wait_seconds: float | None = None) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # SQLiteFile's

    def _checkpoint_in_background(self) -> None:
        """Keep the write-ahead log short without making any commit wait for a checkpoint.

        SQLite's automatic checkpoint runs inside the commit that crosses its threshold and fsyncs
        there, stalling the writer that committed; with one commit per write that happened every
        few dozen writes. A checkpoint from another connection runs beside the writers (PASSIVE: it
        never blocks them), and keeps the log small, which matters on a nearly full disk.

        It runs only after this process committed something, at most every
        ``CHECKPOINT_INTERVAL_SECONDS``: an idle server does not wake for it (other processes
        sharing the file checkpoint their own writes).
        """
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, timeout=1)
        except sqlite3.Error:
            return
        try:
            while True:
                self._written.wait()
                if self._closed.is_set():
                    break
                self._written.clear()
                with suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if self._closed.wait(CHECKPOINT_INTERVAL_SECONDS):
                    break
        finally:
            db.close()

    def _shrink_wal(self) -> None:
        """After a full disk, move the write-ahead log into the database file and truncate it.

        The log only shrinks at a checkpoint, and the automatic one waits for 1000 pages (4 MB): on
        a nearly full disk the log takes every byte freed and fills it again before that, and the
        store stays stuck. So once the disk was full, each write first tries a truncating checkpoint
        (it needs room for the database to grow), until one completes; while the disk is still too
        full for it, writes fail at once rather than grow the log into the space the checkpoint needs.
        """
        try:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise  # still full: fail this write before it takes the room the checkpoint needs
            return
        self._wal_to_shrink = bool(busy)

    # --- health and disk space -------------------------------------------------------------------

    def check_writable(self) -> str | None:
        """None if a write commits now, else why not. Probes at most every ``probe_seconds``.

        A failure is reported until a write succeeds (any write clears it at once) or the next
        probe; a probe waits for the lock at most ``PROBE_WAIT_SECONDS``, and a caller that finds a
        probe under way takes the last verdict rather than queue behind it.
        """
        now = self._clock()
        if self._last_failure is not None and now - self._last_failure[0] < self.probe_seconds:
            return self._last_failure[1]
        checked_at, reason = self._probe
        if now - checked_at < self.probe_seconds or not self._probing.acquire(blocking=False):
            return reason
        try:
            with self._write(wait_seconds=PROBE_WAIT_SECONDS) as db:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('health_probe', ?)", (str(now),))
            reason = None
        except StoreUnavailable as exc:
            reason = str(exc.__cause__ or exc)
        finally:
            self._probing.release()
        self._probe = (now, reason)
        return reason

    def free_pages(self, batch_pages: int = VACUUM_BATCH_PAGES, max_batches: int | None = None) -> int:
        """Give the file's free pages back to the file system; return how many were freed.

        ``PRAGMA incremental_vacuum`` frees one page per step of its statement, and Python steps a
        statement without result columns once: so it is executed once per page, ``batch_pages``
        times per write transaction, and no transaction holds the lock long enough to stall other
        writers. At most ``max_batches`` transactions.
        """
        freed = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            batches += 1
            with self._write() as db:
                (before,) = db.execute("PRAGMA freelist_count").fetchone()
                if before == 0:
                    break
                for _ in range(min(batch_pages, before)):
                    db.execute("PRAGMA incremental_vacuum")
                (after,) = db.execute("PRAGMA freelist_count").fetchone()
            freed += before - after
            if after == 0 or after >= before:  # done, or a file without incremental auto-vacuum
                break
        return freed
