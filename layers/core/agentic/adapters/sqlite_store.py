"""The embedded store: one SQLite file holding tasks, their event logs and the leases of their runs.

Any number of processes may share the file. Every write is one transaction (``BEGIN IMMEDIATE``;
a write made inside another, as ``claim_then`` makes them, is part of that one) that has committed
before the method returns, so a caller is never told a write succeeded that a
crash of the process or a failed commit could take back (with ``synchronous="FULL"`` also a crash of
the machine), and streams are woken only for committed events. WAL mode
lets streams read while agents write.

What is stored once: a step's output lives in its ``partial_output`` event only (the task row holds
state, not text), and the ``task_completed`` event refers to the task's ``final_output`` instead of
copying it. Both are put back when read, so callers see whole tasks and whole events.

Built in layers, each in its own module: the file, its connections and its transactions
(``SQLiteFile``, ``sqlite_file.py``: reads never wait for writers, async callers never wait on the
file); the task documents and this process's memory of them (``TaskDocuments``,
``sqlite_documents.py``); the leases of runs (``LeaseRows``, ``sqlite_leases.py``: a run admitted to
run at once is claimed in the same transaction as its first write, see ``claim_then``); and here,
tasks and their event logs.
"""

from __future__ import annotations

import builtins
import functools
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from agentic.adapters.sqlite_documents import Columns
from agentic.adapters.sqlite_leases import LeaseRows
from agentic.adapters.store_codec import (
    check_payload_size,
    decode_cursor,
    encode_cursor,
    encode_data,
    event_line,
    sort_key,
)
from agentic.errors import (
    InvalidInput,
    InvalidTransition,
    TaskAlreadyExists,
    TaskNotFound,
)
from agentic.models import EventType, NewEvent, StreamEvent, TaskPage, TaskState, TaskStatus, utcnow
from agentic.ports import Mutation


class SQLiteTaskStore(LeaseRows):
    read_methods = frozenset({"get", "list", "list_in_status", "read_events", "expired"})

    def _announce(self, written: Iterable[tuple[StreamEvent, str]]) -> None:
        """Wake streams (and hand them the events and their lines), only ever for committed events."""
        self.bus.publish_events(written)

    # --- tasks ---------------------------------------------------------------------------------

    def create(self, task: TaskState) -> TaskState:
        doc = self._dump(task)
        check_payload_size(f"task {task.task_id}", doc)
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO tasks(task_id, owner, status, created_at, doc) VALUES (?, ?, ?, ?, ?)",
                    (task.task_id, task.owner, task.status.value, sort_key(task.created_at), doc),
                )
        except sqlite3.IntegrityError:
            raise TaskAlreadyExists(task.task_id) from None
        # As written here (no lease, not finished): the execute that follows starts from memory,
        # and its claim reads the row again under the write lock.
        self._remember(task.task_id, doc, task, (None, None))
        return task

    def list(self, owner: str, *, limit: int, cursor: str | None = None, status: TaskStatus | None = None) -> TaskPage:
        # Both shapes are seeks on an index that starts with the WHERE clause's columns; the cursor
        # is a row-value comparison, which stays on the index where an OR would not.
        sql = "SELECT doc, created_at, task_id FROM tasks WHERE owner = ?"
        args: list[Any] = [owner]
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if cursor:
            parts = decode_cursor(cursor)
            if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                raise InvalidInput("cursor is not valid: pass back the next_cursor of a previous page")
            sql += " AND (created_at, task_id) < (?, ?)"
            args += [parts[0], parts[1]]
        sql += " ORDER BY created_at DESC, task_id DESC LIMIT ?"
        args.append(limit + 1)
        with self._read() as db:
            rows = db.execute(sql, args).fetchall()
        items = [TaskState.model_validate_json(r[0]) for r in rows[:limit]]
        next_cursor = encode_cursor([rows[limit - 1][1], rows[limit - 1][2]]) if len(rows) > limit else None
        return TaskPage(items=items, next_cursor=next_cursor)

    def list_in_status(self, statuses: Collection[TaskStatus]) -> builtins.list[TaskState]:
        marks = ",".join("?" * len(statuses))
        with self._read() as db:
            found = db.execute(f"SELECT doc FROM tasks WHERE status IN ({marks})", [s.value for s in statuses])
            rows = found.fetchall()
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
        after: list[Callable[[], None]] = []
        with self._write(after_commit=after) as db:
            change = None
            with self._parsed_lock:
                known = self._parsed.get(task_id)
            if known is not None and known[2] is not None:
                # The row as this process last wrote it: change that, on the condition (checked in the
                # same statement) that nobody changed the row since; else read it as it is.
                doc_before, task, (owner_before, finished_before) = known[0], known[1], known[2]
                try:
                    change = self._change(task_id, task, expect, mutate, changes, owner_before, finished_before)
                except InvalidTransition:
                    change = None  # perhaps only refused by what memory holds: the row decides
                if change is not None:
                    cursor = db.execute(
                        f"UPDATE tasks SET {change[2]} WHERE task_id = ? AND doc = ? AND lease_owner IS ? "
                        "AND finished_at IS ?",
                        (*change[3], task_id, doc_before, owner_before, finished_before),
                    )
                    if cursor.rowcount != 1:
                        change = None
            if change is None:
                row = db.execute(
                    "SELECT doc, lease_owner, finished_at FROM tasks WHERE task_id = ?", (task_id,)
                ).fetchone()
                if row is None:
                    raise TaskNotFound(task_id)
                task = self._parse(db, task_id, row[0])
                change = self._change(task_id, task, expect, mutate, changes, row[1], row[2])
                db.execute(f"UPDATE tasks SET {change[2]} WHERE task_id = ?", (*change[3], task_id))
            updated, doc, _, _, columns = change
            written = self._insert_events(db, events, final_output=updated.final_output)
            after.append(functools.partial(self._announce, written))
        self._remember(task_id, doc, updated, columns)
        return updated

    def _change(
        self,
        task_id: str,
        task: TaskState,
        expect: Collection[TaskStatus],
        mutate: Mutation | None,
        changes: dict[str, Any],
        lease_owner: str | None,
        finished_at: float | None,
    ) -> tuple[TaskState, str, str, builtins.list[Any], Columns]:
        """The task after the change, its document, the UPDATE's SET clause and arguments, and the
        row's lease_owner and finished_at after it; raises if the task's state refuses the change."""
        if task.status not in expect:
            raise InvalidTransition.unexpected(task_id, task.status.value, (s.value for s in expect))
        if mutate is not None:
            changes = {**changes, **mutate(task)}
        updated = task.model_copy(update={**changes, "updated_at": utcnow()})
        doc = self._dump(updated)
        check_payload_size(f"task {task_id}", doc)
        finished = updated.status.is_terminal
        # A change that takes the task's lease away (cancel, approve, retry) also takes the
        # runner's name off it, so that runner's next renewal finds the lease lost.
        keep_expiry, wake_at = self._wake_at(task, updated)
        # Only the columns that change: each one set is an index entry rewritten (a page in the
        # commit), and most writes change the document alone.
        sets: list[str] = ["doc = ?"]
        args: builtins.list[Any] = [doc]
        if updated.status is not task.status:
            sets.append("status = ?")
            args.append(updated.status.value)
        if not keep_expiry:
            sets.append("lease_expires = ?")
            args.append(wake_at)
        if updated.lease is None and lease_owner is not None:
            sets.append("lease_owner = NULL")
            lease_owner = None
        if finished and finished_at is None:
            finished_at = self._clock()
            sets.append("finished_at = ?")
            args.append(finished_at)
        elif not finished and finished_at is not None:
            sets.append("finished_at = NULL")
            finished_at = None
        return updated, doc, ", ".join(sets), args, (lease_owner, finished_at)

    # --- leases --------------------------------------------------------------------------------

    @staticmethod
    def _wake_at(before: TaskState, after: TaskState) -> tuple[bool, float | None]:
        """Whether a change keeps the task's lease expiry, and if not, the new one.

        The expiry says when a live process should pick the task up next. A finished task holds no
        lease (and starts its retention period). A task waiting for approval is picked up at its
        deadline (to fail it then); one that leaves the wait or comes back from a terminal state (a
        retry) can be picked up at once, so that if whoever changed it dies before starting it, any
        live process does. Otherwise the lease stands.
        """
        if after.status.is_terminal:
            return False, None
        if after.status is TaskStatus.AWAITING_APPROVAL:
            return False, after.approval_deadline if after.approval_deadline is not None else float("inf")
        if before.status is TaskStatus.AWAITING_APPROVAL or before.status.is_terminal:
            return False, 0.0
        return True, None

    # --- events --------------------------------------------------------------------------------

    def append_event(self, event: NewEvent) -> StreamEvent | None:
        after: list[Callable[[], None]] = []
        with self._write(after_commit=after) as db:
            written = self._insert_event(db, event)
            if written is not None:
                after.append(functools.partial(self._announce, [written]))
        return None if written is None else written[0]

    @classmethod
    def _insert_events(
        cls, db: sqlite3.Connection, events: Sequence[NewEvent], *, final_output: str | None
    ) -> builtins.list[tuple[StreamEvent, str]]:
        """``_insert_event`` for each, inside the caller's transaction; those already written left out.

        Only a task's first event here looks its next cursor up: the transaction holds the write
        lock, so each next one follows the last this call wrote (of the task's 12 events, 8 skip the
        lookup, and the statement that chose the cursor was a tenth of an event's insert).
        """
        written: builtins.list[tuple[StreamEvent, str]] = []
        next_cursor: dict[str, int] = {}
        for event in events:
            done = cls._insert_event(db, event, final_output=final_output, cursor=next_cursor.get(event.task_id))
            if done is not None:
                written.append(done)
                next_cursor[event.task_id] = done[0].cursor + 1
        return written

    @staticmethod
    def _insert_event(
        db: sqlite3.Connection, event: NewEvent, *, final_output: str | None = None, cursor: int | None = None
    ) -> tuple[StreamEvent, str] | None:
        """Insert with the task's next cursor, inside the caller's transaction; None if the key exists.

        Returns the event and its NDJSON line, made here from the data just encoded (a stream writes
        it as it is: each event is encoded once).""

        A ``task_completed`` event written with the task it completes refers to the task's
        ``final_output`` rather than storing the report a second time (``read_events`` puts it back).
        """
        whole = data = encode_data(event.data)
        if (
            event.event_type is EventType.TASK_COMPLETED
            and final_output is not None
            and event.data.get("final_output") == final_output
        ):
            data = encode_data({k: v for k, v in event.data.items() if k != "final_output"})
        check_payload_size(f"the data of a {event.event_type.value} event of task {event.task_id}", data)
        timestamp = event.timestamp.isoformat()
        if cursor is None:
            # One statement: the next cursor, and nothing at all if the key was written before.
            row = db.execute(
                "INSERT OR IGNORE INTO events(task_id, cursor, event_key, event_type, timestamp, data) "
                "SELECT ?, COALESCE(MAX(cursor), 0) + 1, ?, ?, ?, ? FROM events WHERE task_id = ? RETURNING cursor",
                (event.task_id, event.key, event.event_type.value, timestamp, data, event.task_id),
            ).fetchone()
            if row is None:
                return None  # this key was written before: an idempotent replay
            (cursor,) = row
        elif (
            db.execute(
                "INSERT OR IGNORE INTO events(task_id, cursor, event_key, event_type, timestamp, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event.task_id, cursor, event.key, event.event_type.value, timestamp, data),
            ).rowcount
            != 1
        ):
            return None  # as above: the key was written before
        # The fields of a validated NewEvent and the cursor the store chose: nothing to validate again.
        written = StreamEvent.model_construct(
            event_type=event.event_type,
            task_id=event.task_id,
            timestamp=event.timestamp,
            cursor=cursor,
            data=event.data,
        )
        return written, event_line(event, cursor, whole)

    def read_events(
        self, task_id: str, after: int = 0, limit: int = 500, *, consistent: bool = True
    ) -> builtins.list[StreamEvent]:
        del consistent  # every read of the file sees every committed write
        with self._read() as db:
            rows = db.execute(
                "SELECT cursor, event_type, timestamp, data FROM events WHERE task_id = ? AND cursor > ? "
                "ORDER BY cursor LIMIT ?",
                (task_id, after, limit),
            ).fetchall()
            events = []
            for cursor, event_type, timestamp, text in rows:
                data = json.loads(text)
                if event_type == EventType.TASK_COMPLETED.value and "final_output" not in data:
                    final = db.execute(
                        "SELECT json_extract(doc, '$.final_output') FROM tasks WHERE task_id = ?", (task_id,)
                    ).fetchone()
                    data["final_output"] = final[0] if final else None
                # Rows this store wrote itself: build them without validating again.
                events.append(
                    StreamEvent.model_construct(
                        event_type=EventType(event_type),
                        task_id=task_id,
                        timestamp=datetime.fromisoformat(timestamp),
                        cursor=cursor,
                        data=data,
                    )
                )
        return events
