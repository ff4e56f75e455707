"""The embedded store: one SQLite file holding tasks and their event logs.

Every write is one transaction (``BEGIN IMMEDIATE``), so conditional transitions and cursor
allocation are atomic even with several processes on the same file. WAL mode lets streams read
while agents write.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from agentic.adapters.local_events import LocalEventBus
from agentic.errors import InputTooLarge, InvalidInput, InvalidTransition, TaskAlreadyExists, TaskNotFound
from agentic.models import EventType, NewEvent, StreamEvent, TaskPage, TaskState, TaskStatus, utcnow
from agentic.ports import Mutation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id    TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks(owner, created_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status);
CREATE TABLE IF NOT EXISTS events (
    task_id    TEXT NOT NULL,
    cursor     INTEGER NOT NULL,
    event_key  TEXT,
    event_type TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (task_id, cursor)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_by_key ON events(task_id, event_key) WHERE event_key IS NOT NULL;
"""


_PARSED_CACHE_SIZE = 4096

#: Bound on a stored task document or event data, in UTF-8 bytes. DynamoDB items hold at most 400 KB;
#: both stores enforce this bound so the local system rejects what AWS would.
MAX_PAYLOAD_BYTES = 350 * 1024


def check_payload_size(what: str, text: str) -> None:
    """Raise ``InputTooLarge`` when ``text`` is over ``MAX_PAYLOAD_BYTES`` (encoded only if it may be)."""
    if len(text) * 4 > MAX_PAYLOAD_BYTES and (size := len(text.encode())) > MAX_PAYLOAD_BYTES:
        raise InputTooLarge(
            f"{what} is {size} bytes; a stored item holds at most {MAX_PAYLOAD_BYTES} bytes "
            "(DynamoDB limits an item to 400 KB)"
        )


def sort_key(ts: datetime) -> str:
    """A fixed-width UTC timestamp that sorts as text."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_cursor(parts: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not valid: pass back the next_cursor of a previous page") from None
    if not isinstance(parts, list):
        raise InvalidInput("cursor is not valid: pass back the next_cursor of a previous page")
    return parts


class SQLiteTaskStore:
    blocking = False  # a local file: calls take microseconds, run them inline

    def __init__(self, path: Path | str, bus: LocalEventBus | None = None) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.bus = bus or LocalEventBus()
        self._lock = threading.RLock()
        self._batch_open = False
        self._unpublished: builtins.list[tuple[str, int, bool]] = []
        # Parsed tasks keyed by their exact stored JSON: a read still fetches the row (so another
        # process's write is always seen) but skips re-parsing a document it parsed before.
        self._parsed: OrderedDict[str, tuple[str, TaskState]] = OrderedDict()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._commit_batch()
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic operation: a SAVEPOINT inside the current group commit, or its own transaction.

        Group commit: on an event loop, operations issued in the same loop iteration (dozens of
        pipelines run interleaved) share one transaction committed at the end of that iteration, so
        the commit cost (most of a write's cost) is paid once per tick, not once per operation. Each
        operation still succeeds or fails alone (its savepoint), and readers on this connection see
        it at once. Outside a loop every operation commits by itself.

        What a client is sent must be durable: streams are woken only after the batch holding their
        events commits, and ``read_events`` and ``list`` commit any open batch before reading, so a
        client never sees an event that a crash could still take back.
        """
        with self._lock:
            if not self._batch_open:
                try:
                    loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                self._db.execute("BEGIN IMMEDIATE")
                if loop is None:
                    try:
                        yield self._db
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
                    return
                self._batch_open = True
                loop.call_soon(self._commit_batch)
            self._db.execute("SAVEPOINT op")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO op")
                self._db.execute("RELEASE op")
                raise
            self._db.execute("RELEASE op")

    def _commit_batch(self) -> None:
        with self._lock:
            if self._batch_open:
                self._batch_open = False
                self._db.execute("COMMIT")
            published, self._unpublished = self._unpublished, []
        self._announce(published)

    def _publish(self, written: Iterable[StreamEvent]) -> None:
        """Wake streams once the events are durable: now, or when the open batch commits."""
        news = [(e.task_id, e.cursor, e.event_type.is_terminal) for e in written]
        with self._lock:
            if self._batch_open:
                self._unpublished.extend(news)
                return
        self._announce(news)

    def _announce(self, news: Iterable[tuple[str, int, bool]]) -> None:
        for task_id, cursor, terminal in news:
            self.bus.publish(task_id, cursor)
            if terminal:  # nothing follows a terminal event; late readers find it in the log
                self.bus.forget(task_id)

    # --- tasks ---------------------------------------------------------------------------------

    def create(self, task: TaskState) -> TaskState:
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO tasks(task_id, owner, status, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                    (
                        task.task_id,
                        task.owner,
                        task.status.value,
                        sort_key(task.created_at),
                        task.model_dump_json(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise TaskAlreadyExists(task.task_id) from None
        self._commit_batch()  # the client is told the task exists: make it durable first
        return task

    def _parse(self, task_id: str, doc: str) -> TaskState:
        cached = self._parsed.get(task_id)
        if cached is not None and cached[0] == doc:
            self._parsed.move_to_end(task_id)
            return cached[1]
        task = TaskState.model_validate_json(doc)
        self._remember(task_id, doc, task)
        return task

    def _remember(self, task_id: str, doc: str, task: TaskState) -> None:
        self._parsed[task_id] = (doc, task)
        self._parsed.move_to_end(task_id)
        if len(self._parsed) > _PARSED_CACHE_SIZE:
            self._parsed.popitem(last=False)

    def get(self, task_id: str) -> TaskState | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            return self._parse(task_id, row[0]) if row else None

    def list(self, owner: str, *, limit: int, cursor: str | None = None, status: TaskStatus | None = None) -> TaskPage:
        sql = "SELECT doc, created_at, task_id FROM tasks WHERE owner = ?"
        args: list[Any] = [owner]
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if cursor:
            parts = decode_cursor(cursor)
            if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                raise InvalidInput("cursor is not valid: pass back the next_cursor of a previous page")
            sql += " AND (created_at < ? OR (created_at = ? AND task_id < ?))"
            args += [parts[0], parts[0], parts[1]]
        sql += " ORDER BY created_at DESC, task_id DESC LIMIT ?"
        args.append(limit + 1)
        with self._lock:
            self._commit_batch()
            rows = self._db.execute(sql, args).fetchall()
        items = [TaskState.model_validate_json(r[0]) for r in rows[:limit]]
        next_cursor = encode_cursor([rows[limit - 1][1], rows[limit - 1][2]]) if len(rows) > limit else None
        return TaskPage(items=items, next_cursor=next_cursor)

    def list_in_status(self, statuses: Collection[TaskStatus]) -> builtins.list[TaskState]:
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = self._db.execute(
                f"SELECT doc FROM tasks WHERE status IN ({marks})", [s.value for s in statuses]
            ).fetchall()
        return [TaskState.model_validate_json(r[0]) for r in rows]

    def update(
        self,
        task_id: str,
        expect: Collection[TaskStatus],
        *,
        events: Sequence[NewEvent] = (),
        mutate: Mutation | None = None,
        **changes: Any,
    ) -> TaskState:
        written: list[StreamEvent] = []
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            task = self._parse(task_id, row[0])
            if task.status not in expect:
                raise InvalidTransition.unexpected(task_id, task.status.value, (s.value for s in expect))
            if mutate is not None:
                changes = {**changes, **mutate(task)}
            updated = task.model_copy(update={**changes, "updated_at": utcnow()})
            doc = updated.model_dump_json()
            check_payload_size(f"task {task_id}", doc)
            db.execute("UPDATE tasks SET status = ?, doc = ? WHERE task_id = ?", (updated.status.value, doc, task_id))
            self._remember(task_id, doc, updated)
            written = [e for e in (self._insert_event(db, event) for event in events) if e is not None]
        self._publish(written)
        return updated

    # --- events --------------------------------------------------------------------------------

    def append_event(self, event: NewEvent) -> StreamEvent | None:
        with self._transaction() as db:
            written = self._insert_event(db, event)
        if written is not None:
            self._publish([written])
        return written

    @staticmethod
    def _insert_event(db: sqlite3.Connection, event: NewEvent) -> StreamEvent | None:
        """Insert with the task's next cursor, inside the caller's transaction; None if the key exists."""
        data = json.dumps(event.data, default=str)
        check_payload_size(f"the data of a {event.event_type.value} event of task {event.task_id}", data)
        # One statement: the next cursor, and nothing at all if the key was written before.
        row = db.execute(
            "INSERT OR IGNORE INTO events(task_id, cursor, event_key, event_type, timestamp, data) "
            "SELECT ?, COALESCE(MAX(cursor), 0) + 1, ?, ?, ?, ? FROM events WHERE task_id = ? RETURNING cursor",
            (
                event.task_id,
                event.key,
                event.event_type.value,
                event.timestamp.isoformat(),
                data,
                event.task_id,
            ),
        ).fetchone()
        if row is None:
            return None  # this key was written before: an idempotent replay
        (cursor,) = row
        return StreamEvent(
            event_type=event.event_type,
            task_id=event.task_id,
            timestamp=event.timestamp,
            cursor=cursor,
            data=event.data,
        )

    def read_events(self, task_id: str, after: int = 0, limit: int = 500) -> builtins.list[StreamEvent]:
        with self._lock:
            self._commit_batch()
            rows = self._db.execute(
                "SELECT cursor, event_type, timestamp, data FROM events WHERE task_id = ? AND cursor > ? "
                "ORDER BY cursor LIMIT ?",
                (task_id, after, limit),
            ).fetchall()
        # Rows this store wrote itself: build them without validating again.
        return [
            StreamEvent.model_construct(
                event_type=EventType(r[1]),
                task_id=task_id,
                timestamp=datetime.fromisoformat(r[2]),
                cursor=r[0],
                data=json.loads(r[3]),
            )
            for r in rows
        ]
