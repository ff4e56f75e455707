"""The SQLite file under the task store: its connections, its transactions, and how work reaches them.

One writer connection (a lock serialises this process's writers; ``BEGIN IMMEDIATE`` serialises
processes) and one read connection per thread. In WAL mode a reader never waits for a writer, so a
transaction held by another process (or a server frozen inside one) delays only writes: status,
health and streams keep answering.

Async callers (``service.io.call_store``) make each call on the event loop's own thread first, without
waiting (``attempt``): a read never waits in WAL mode, and a write whose lock is free commits there
and then (~50 µs; no thread hop, no GIL handed over). A write that would have to wait for the lock
(another process holds it, or this process's writer thread) raises ``StoreBusy`` before it has
changed anything; the call is made again on the loop after a short pause a few times, then where
``route`` says: writes on one writer thread, reads on a pool of reader threads (``service.io``).
So the event loop never waits on the file. A write waits for the lock at most
``busy_timeout_seconds`` from the moment it reached the writer thread's queue (time queued behind
other writes included), then fails with ``StoreUnavailable`` (503 with Retry-After).

With ``group_commit`` (``SQLITE_GROUP_COMMIT``) the writes made on the loop's thread in one turn share
one transaction instead (``sqlite_group``), each caller waiting for its commit.

Every SQLite failure other than a constraint (disk full, read-only file, locked past the busy
timeout, I/O error) is raised as ``StoreUnavailable``: nothing of that operation was kept.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from agentic.adapters.sqlite_group import OpenTransaction, commit_held, hold, let_go, running_loop, until_committed
from agentic.adapters.sqlite_schema import open_schema
from agentic.adapters.sqlite_upkeep import FileUpkeep
from agentic.errors import StoreBusy, StoreUnavailable

T = TypeVar("T")

#: Reader threads for async callers: reads run beside each other and beside the writer.
READ_THREADS = 4
#: A write's busy timeout may be this much longer than its deadline allows (saves a statement per write).
BUSY_TIMEOUT_SLACK_MS = 50


class _OpenWrite:
    """A write whose transaction is open on this thread, as writes nested in it see it."""

    __slots__ = ("callbacks", "nested")

    def __init__(self, callbacks: list[Callable[[], None]]) -> None:
        self.callbacks = callbacks  # run after its commit
        self.nested = False  # a write was made inside it


class _Locked(sqlite3.OperationalError):
    """This process's writer lock was not free within the write's deadline."""


class SQLiteFile(FileUpkeep):
    """Connections to one SQLite file and the transaction discipline; the store builds on it."""

    blocking = True  # async callers run calls on the threads ``route`` names: the loop never waits on the file
    #: Methods that only read: they run on a reader thread and never wait for a writer.
    read_methods: frozenset[str] = frozenset()
    #: Methods that may commit more than once: a ``StoreBusy`` after a commit could not be made again
    #: from the start, so async callers run them on the writer thread only (background work).
    multi_commit_methods: frozenset[str] = frozenset({"free_pages"})

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_seconds: float,
        probe_seconds: float,
        clock: Callable[[], float],
        synchronous: str,
        group_commit: bool = False,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.synchronous = synchronous
        #: Writes an event loop makes in one turn share one commit (``sqlite_group``).
        self.group_commit = group_commit
        self.path = Path(path)
        self.in_memory = str(path) == ":memory:"
        if not self.in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_seconds = busy_timeout_seconds
        self.probe_seconds = probe_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._local = threading.local()  # per thread: its read connection and its write deadline
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._probe: tuple[float, str | None] = (float("-inf"), None)
        self._probing = threading.Lock()
        self._last_failure: tuple[float, str] | None = None
        self._wal_to_shrink = False
        self._closed = threading.Event()
        #: Set by each commit: the checkpoint thread sleeps while nothing is written (idle costs nothing).
        self._written = threading.Event()
        self._busy_ms = -1  # the busy timeout set on the write connection
        #: The event loop's open transaction (``sqlite_group``): it holds ``_lock`` until it commits.
        self._group: OpenTransaction | None = None
        self._read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sqlite-read")
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        with self._guard():
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_seconds
            )
            open_schema(self._db, self.synchronous, self._clock())
        self._checkpointer: threading.Thread | None = None
        if not self.in_memory:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_in_background, name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def close(self) -> None:
        if self._group is not None and self._group.thread == threading.get_ident():
            self._commit_group()  # stopping on the loop's thread: what it wrote is committed first
        self._closed.set()
        self._written.set()
        # A checkpoint still under way when close returns would make the next opener's checkpoint
        # (another process, or a test reading the file's size) find the file busy.
        if self._checkpointer is not None:
            self._checkpointer.join()
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._write_pool.shutdown(wait=True, cancel_futures=True)
        with self._readers_lock:
            for reader in self._readers:
                with suppress(sqlite3.Error):
                    reader.close()
            self._readers.clear()
        with self._lock:
            self._db.close()

    # --- async callers ---------------------------------------------------------------------------

    def attempt(self, method: Callable[..., Any], call: Callable[[], T]) -> T:
        """Make ``call`` here and now, its writes without waiting for the lock: ``StoreBusy`` if a
        write would have to wait (nothing of that write was kept; see the module's docstring).

        ``call`` must be safe to make again from the start after ``StoreBusy``: a store method that
        commits once, or an operation whose every write is conditional and keyed (``PipelineOps``).
        """
        if getattr(method, "__name__", "") in self.multi_commit_methods:
            raise StoreBusy("made on the writer thread only", may_retry_here=False)
        if getattr(self._local, "no_wait", False):  # nested: the outer attempt decides
            return call()
        self._local.no_wait = True
        # With group commit, on an event loop's thread the call's writes go into the loop's
        # transaction; a call made while it is open (a read of what a write in it left) waits for it too.
        if self.group_commit and not self.in_memory:
            loop = self._local.loop = running_loop()
            group = self._group
            # Only this loop's own transaction: another thread's or loop's is not ours to wait for.
            mine = group is not None and group.open and group.thread == threading.get_ident()
            self._local.joined = group if mine and group is not None and group.loop is loop else None
        try:
            return call()
        finally:
            self._local.no_wait = False
            self._local.loop = None

    def pending_commit(self) -> Awaitable[None] | None:
        """What the last ``attempt`` of this thread must wait for before its caller goes on: the
        commit of the loop's transaction its writes went into (None: nothing to wait for)."""
        if not self.group_commit:
            return None
        group: OpenTransaction | None = getattr(self._local, "joined", None)
        self._local.joined = None
        if group is None or (not group.open and group.error is None):
            return None
        return until_committed(group, group.waiter())

    def route(self, method: Callable[..., Any], call: Callable[[], T]) -> tuple[Executor, Callable[[], T]]:
        """Where a call of ``method`` runs for an async caller: reads on a reader thread, writes on
        the writer thread (``call`` is what to run there).

        A write's deadline starts now, so one queued behind a write that waits for the lock fails
        when its own time is up instead of waiting in turn.
        """
        if getattr(method, "__name__", "") in self.read_methods | {"check_writable"}:
            return self._read_pool, call  # the health probe too: it waits briefly, never in the queue
        deadline = time.monotonic() + self.busy_timeout_seconds
        return self._write_pool, functools.partial(self._with_deadline, deadline, call)

    def _with_deadline(self, deadline: float, call: Callable[[], T]) -> T:
        self._local.deadline = deadline
        try:
            return call()
        finally:
            self._local.deadline = None

    # --- transactions and failures --------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite's operational failures into ``StoreUnavailable`` (constraints pass through)."""
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            reason = str(exc) or type(exc).__name__
            self._last_failure = (self._clock(), reason)
            raise StoreUnavailable(f"the task store cannot be used now: {reason}") from exc

    @contextmanager
    def _write(
        self, wait_seconds: float | None = None, *, after_commit: list[Callable[[], None]] | None = None
    ) -> Iterator[sqlite3.Connection]:
        """One transaction, committed before the caller goes on; on any error nothing is kept.

        It waits for the lock until the write's deadline (``route``), or ``wait_seconds``, or the
        busy timeout; past it, ``StoreUnavailable``. Inside ``attempt`` it does not wait at all: a
        lock that is not free at once is ``StoreBusy``. ``after_commit`` (filled by the caller in
        the transaction) runs after the commit while this process's writers are still held off: a
        write of this process (a lease renewal) never sees a commit before what follows it did.
        """
        if (outer := getattr(self._local, "open_write", None)) is not None:
            # A write made inside another write of this thread (``claim_then``): part of its
            # transaction, committed with it, undone alone if it fails.
            with self._guard(), self._nested(outer, after_commit) as db:
                yield db
            return
        no_wait = getattr(self._local, "no_wait", False)
        group = self._group
        if no_wait and group is not None and group.thread == threading.get_ident():
            if group.loop is getattr(self._local, "loop", None):
                # An ``attempt`` on the loop's thread: into the loop's transaction.
                callbacks = after_commit if after_commit is not None else []
                with self._guard(), self._in_group(group, callbacks) as db, self._open(callbacks):
                    yield db
                return
            self._commit_group()  # left open by a loop that stopped before its turn ended
        if not no_wait:
            commit_held()  # a write that may wait: never on a transaction this thread holds
        deadline = time.monotonic() + (self.busy_timeout_seconds if wait_seconds is None else wait_seconds)
        if (queued := getattr(self._local, "deadline", None)) is not None:
            deadline = min(deadline, queued)
        with self._guard():
            if no_wait:
                if not self._lock.acquire(blocking=False):
                    raise StoreBusy("another write of this process holds the lock")
            elif not self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                raise _Locked("database is locked (another write of this process holds it)")
            try:
                # SQLite's busy handler waits for other processes' transactions: not at all without
                # waiting, else only until the deadline (set again only when that moved by more than
                # BUSY_TIMEOUT_SLACK_MS: a statement less).
                if no_wait:
                    busy_ms = 0
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Locked("database is locked")
                    busy_ms = max(int(remaining * 1000), 1)
                if busy_ms != self._busy_ms and (
                    busy_ms == 0 or self._busy_ms <= 0 or abs(busy_ms - self._busy_ms) > BUSY_TIMEOUT_SLACK_MS
                ):
                    self._db.execute(f"PRAGMA busy_timeout = {busy_ms}")
                    self._busy_ms = busy_ms
                if self._wal_to_shrink:
                    self._shrink_wal()
                loop = getattr(self._local, "loop", None) if no_wait else None
                callbacks = after_commit if after_commit is not None else []
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    if loop is None:
                        with self._open(callbacks):  # (a failed commit too forgets what nested writes remembered)
                            yield self._db
                            self._db.execute("COMMIT")
                except BaseException as exc:
                    # SQLite rolls some failures back by itself (a full disk, an I/O error); the rest here.
                    if self._db.in_transaction:
                        with suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    code = getattr(exc, "sqlite_errorcode", None)
                    if code == sqlite3.SQLITE_FULL:
                        self._wal_to_shrink = True
                    if no_wait and code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                        raise StoreBusy("another process holds the write lock") from exc
                    raise
                if loop is not None:
                    # The loop's transaction is open: it holds the lock (one more level of the
                    # RLock) until it commits, once the loop has run what is ready now.
                    group = self._group = OpenTransaction(loop)
                    self._lock.acquire()
                    group.commit = functools.partial(self._commit_group, group)
                    hold(group.commit)
                    loop.call_soon(group.commit)
                    with self._in_group(group, callbacks) as db, self._open(callbacks):
                        yield db
                    return
                self._written.set()
                for announce in callbacks:
                    announce()
            finally:
                self._lock.release()
        # The store can be written: a failure seen before (and /health's verdict on it) is over.
        self._last_failure = None
        self._probe = (self._clock(), None)

    @contextmanager
    def _open(self, callbacks: list[Callable[[], None]]) -> Iterator[None]:
        """While a write's transaction is open on this thread, writes made in it join it (``_nested``);
        what they announce goes into ``callbacks``, run after its commit. If it is rolled back after
        such writes, what they remembered of their rows is forgotten."""
        outer = self._local.open_write = _OpenWrite(callbacks)
        try:
            yield
        except BaseException:
            if outer.nested:
                self._forget_uncommitted()
            raise
        finally:
            self._local.open_write = None

    @contextmanager
    def _nested(self, outer: _OpenWrite, after_commit: list[Callable[[], None]] | None) -> Iterator[sqlite3.Connection]:
        """One write inside the open transaction of another: undone alone if it fails (a savepoint);
        its announcements wait for that transaction's commit."""
        outer.nested = True
        db = self._db
        db.execute("SAVEPOINT nested")
        try:
            yield db
            db.execute("RELEASE nested")
        except BaseException:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK TO nested")
                    db.execute("RELEASE nested")
            raise
        outer.callbacks.extend(after_commit or ())

    @contextmanager
    def _in_group(
        self, group: OpenTransaction, after_commit: list[Callable[[], None]] | None
    ) -> Iterator[sqlite3.Connection]:
        """One write in the loop's transaction: undone alone if it fails (a savepoint)."""
        self._local.joined = group
        db = self._db
        db.execute("SAVEPOINT write")
        try:
            yield db
            db.execute("RELEASE write")
        except BaseException as exc:
            undone = False
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    undone = True
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                self._wal_to_shrink = True
            if not undone:
                # SQLite rolled the whole transaction back (a full disk, an I/O error): the writes
                # before this one in it are gone too.
                self._end_group(group, exc)
            raise
        group.after_commit.extend(after_commit or ())

    def _commit_group(self, only: OpenTransaction | None = None) -> None:
        """Commit the loop's transaction (``only`` that one, if given), announce its writes, and let
        their callers go on. Only on the thread that opened it: a commit scheduled for a transaction
        that ended early must not touch the next one, perhaps another thread's."""
        if only is not None and only.commit is not None:
            let_go(only.commit)
        group = self._group
        if group is None or (only is not None and group is not only) or group.thread != threading.get_ident():
            return
        self._group = None
        if group.commit is not None:
            let_go(group.commit)
        if not group.open:
            return
        try:
            with self._guard():
                self._db.execute("COMMIT")
        except BaseException as exc:
            if getattr(exc, "__cause__", None) is not None and (
                getattr(exc.__cause__, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            ):
                self._wal_to_shrink = True
            self._end_group(group, exc)
            return
        group.succeed()
        try:
            self._written.set()
            for announce in group.after_commit:
                announce()
            # The store can be written: a failure seen before (and /health's verdict on it) is over.
            self._last_failure = None
            self._probe = (self._clock(), None)
        finally:
            self._lock.release()

    def _end_group(self, group: OpenTransaction, exc: BaseException) -> None:
        """The loop's transaction failed: nothing in it was kept, and each of its callers hears why."""
        if self._group is group:
            self._group = None
        if group.commit is not None:
            let_go(group.commit)
        if not group.open:
            return
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
        self._forget_uncommitted()
        self._lock.release()
        if isinstance(exc, StoreUnavailable):
            group.fail(exc)
        else:
            failure = StoreUnavailable(f"the task store cannot be used now: {exc}")
            failure.__cause__ = exc
            group.fail(failure)

    def _forget_uncommitted(self) -> None:
        """Drop whatever this process remembers of its own writes (a transaction was rolled back)."""

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection: in WAL mode it reads the last commit, never waiting for writers."""
        if self.in_memory:  # one connection is the whole database
            with self._lock, self._guard():
                yield self._db
            return
        with self._guard():
            reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
            if reader is None:
                reader = sqlite3.connect(str(self.path), isolation_level=None, timeout=1.0, check_same_thread=False)
                reader.execute("PRAGMA query_only = ON")
                with self._readers_lock:
                    self._readers.append(reader)
                self._local.reader = reader
            yield reader
