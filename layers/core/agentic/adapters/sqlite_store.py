"""The embedded store: one SQLite file holding tasks, their event logs and the leases of their runs.

Any number of processes may share the file. Every write is one transaction (``BEGIN IMMEDIATE``)
that has committed before the method returns, so a caller is never told a write succeeded that a
crash of the process or a failed commit could take back (with ``synchronous="FULL"`` also a crash of
the machine), and streams are woken only for committed events. WAL mode
lets streams read while agents write.

What is stored once: a step's output lives in its ``partial_output`` event only (the task row holds
state, not text), and the ``task_completed`` event refers to the task's ``final_output`` instead of
copying it. Both are put back when read, so callers see whole tasks and whole events.

The file, its connections and its transactions are ``SQLiteFile``'s (``sqlite_file.py``): reads
never wait for writers, and async callers never wait on the file.
"""

from __future__ import annotations

import builtins
import functools
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agentic.adapters.local_events import LocalEventBus
from agentic.adapters.sqlite_file import SQLiteFile
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
from agentic.models import EventType, Lease, NewEvent, StepStatus, StreamEvent, TaskPage, TaskState, TaskStatus, utcnow
from agentic.ports import Mutation

_PARSED_CACHE_SIZE = 4096
#: A task row's lease_owner and finished_at.
_Columns = tuple[str | None, float | None]


# The stored task document leaves out step outputs (they live in the partial_output events).
_WITHOUT_OUTPUTS: Any = {"execution_plan": {"steps": {"__all__": {"output"}}}}


class SQLiteTaskStore(SQLiteFile):
    read_methods = frozenset({"get", "list", "list_in_status", "read_events", "expired"})

    def __init__(
        self,
        path: Path | str,
        bus: LocalEventBus | None = None,
        *,
        busy_timeout_seconds: float = 10.0,
        probe_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        group_commit: bool = False,
    ) -> None:
        self.bus = bus or LocalEventBus()
        # Parsed tasks keyed by their exact stored JSON: a read still fetches the row (so another
        # process's write is always seen) but skips re-parsing a document it parsed before. After a
        # write of this process, also the row's lease_owner and finished_at as written (see update).
        self._parsed: OrderedDict[str, tuple[str, TaskState, _Columns | None]] = OrderedDict()
        self._parsed_lock = threading.Lock()
        super().__init__(
            path,
            busy_timeout_seconds=busy_timeout_seconds,
            probe_seconds=probe_seconds,
            clock=clock,
            synchronous=synchronous,
            group_commit=group_commit,
        )

    def _announce(self, written: Iterable[tuple[StreamEvent, str]]) -> None:
        """Wake streams (and hand them the events and their lines), only ever for committed events."""
        self.bus.publish_events(written)

    # --- tasks ---------------------------------------------------------------------------------

    @staticmethod
    def _dump(task: TaskState) -> str:
        return task.model_dump_json(exclude=_WITHOUT_OUTPUTS)

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
        # Parsed already: the execute that follows reads this document, and its claim reads it again.
        self._remember(task.task_id, doc, task)
        return task

    def _parse(self, db: sqlite3.Connection, task_id: str, doc: str) -> TaskState:
        """The task of a stored document, with the outputs of its completed steps put back."""
        with self._parsed_lock:
            cached = self._parsed.get(task_id)
            if cached is not None and cached[0] == doc:
                self._parsed.move_to_end(task_id)
                return cached[1]
        task = self._with_outputs(db, TaskState.model_validate_json(doc))
        self._remember(task_id, doc, task)
        return task

    @staticmethod
    def _with_outputs(db: sqlite3.Connection, task: TaskState) -> TaskState:
        plan = task.execution_plan
        if plan is None or not any(s.status is StepStatus.COMPLETED and s.output is None for s in plan.steps):
            return task
        outputs: dict[str, Any] = {}
        for (data,) in db.execute(
            "SELECT data FROM events WHERE task_id = ? AND event_type = ? ORDER BY cursor",
            (task.task_id, EventType.PARTIAL_OUTPUT.value),
        ):
            parsed = json.loads(data)
            outputs[parsed.get("step_id")] = parsed.get("output")
        steps = [
            s.model_copy(update={"output": outputs.get(s.step_id)})
            if s.status is StepStatus.COMPLETED and s.output is None
            else s
            for s in plan.steps
        ]
        return task.model_copy(update={"execution_plan": plan.model_copy(update={"steps": steps})})

    def _remember(self, task_id: str, doc: str, task: TaskState, columns: _Columns | None = None) -> None:
        with self._parsed_lock:
            self._parsed[task_id] = (doc, task, columns)
            self._parsed.move_to_end(task_id)
            if len(self._parsed) > _PARSED_CACHE_SIZE:
                self._parsed.popitem(last=False)

    def _forget_uncommitted(self) -> None:
        with self._parsed_lock:
            self._parsed.clear()  # rows as this process wrote them: some of those writes were undone

    def get_as_written(self, task_id: str) -> TaskState | None:
        with self._parsed_lock:
            known = self._parsed.get(task_id)
        if known is not None and known[2] is not None:  # columns: written (or claimed) here
            return known[1]
        return self.get(task_id)

    def get(self, task_id: str) -> TaskState | None:
        with self._read() as db:
            row = db.execute("SELECT doc FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            return self._parse(db, task_id, row[0]) if row else None

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
            written = [
                e for e in (self._insert_event(db, event, final_output=updated.final_output) for event in events) if e
            ]
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
    ) -> tuple[TaskState, str, str, builtins.list[Any], _Columns]:
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

    def claim(self, task_id: str, runner: str, ttl_seconds: float) -> Lease | None:
        now = self._clock()
        with self._write() as db:
            row = db.execute(
                "SELECT doc, status, lease_epoch, lease_expires FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            doc, status, epoch, expires = row
            if TaskStatus(status).is_terminal or (expires is not None and expires >= now):
                return None
            task = self._parse(db, task_id, doc)  # (parsed once: the execute that claims it read it)
            if task.status is TaskStatus.AWAITING_APPROVAL and (task.approval_deadline or float("inf")) >= now:
                # Nothing to run before its deadline (a lease renewed or handed back during the wait).
                wake = task.approval_deadline if task.approval_deadline is not None else float("inf")
                db.execute("UPDATE tasks SET lease_expires = ? WHERE task_id = ?", (wake, task_id))
                return None
            lease = Lease(runner=runner, epoch=epoch + 1)
            task = task.model_copy(update={"lease": lease})
            claimed = self._dump(task)
            db.execute(
                "UPDATE tasks SET doc = ?, lease_owner = ?, lease_epoch = ?, lease_expires = ? WHERE task_id = ?",
                (claimed, runner, lease.epoch, now + ttl_seconds, task_id),
            )
            # The log's end now, under the write lock: from here this process's commits are the
            # task's events (a stream of it needs no first read; see LocalEventBus.track).
            (log_end,) = db.execute(
                "SELECT COALESCE(MAX(cursor), 0) FROM events WHERE task_id = ?", (task_id,)
            ).fetchone()
            self.bus.track(task_id, log_end)
        # The run's first write starts from this row as written (unfinished: finished_at is NULL).
        self._remember(task_id, claimed, task, (runner, None))
        return lease

    def renew(self, runner: str, leases: dict[str, Lease], ttl_seconds: float) -> set[str]:
        expires = self._clock() + ttl_seconds
        lost: set[str] = set()
        with self._write() as db:
            for task_id, lease in leases.items():
                cur = db.execute(
                    "UPDATE tasks SET lease_expires = ? WHERE task_id = ? AND lease_owner = ? AND lease_epoch = ? "
                    "AND lease_expires IS NOT NULL",
                    (expires, task_id, runner, lease.epoch),
                )
                if cur.rowcount == 0:
                    lost.add(task_id)
        return lost

    def release(self, runner: str, task_ids: Collection[str]) -> None:
        with self._write() as db:
            db.executemany(
                "UPDATE tasks SET lease_expires = 0 "
                "WHERE task_id = ? AND lease_owner = ? AND lease_expires IS NOT NULL AND status != 'awaiting_approval'",
                [(task_id, runner) for task_id in task_ids],
            )

    def expired(self, limit: int) -> builtins.list[str]:
        if limit <= 0:
            return []
        with self._read() as db:
            rows = db.execute(
                "SELECT task_id FROM tasks WHERE lease_expires IS NOT NULL AND lease_expires < ? "
                "ORDER BY lease_expires LIMIT ?",
                (self._clock(), limit),
            ).fetchall()
        return [r[0] for r in rows]

    def purge_finished(self, older_than_seconds: float, batch: int = 500, max_batches: int | None = None) -> int:
        cutoff = self._clock() - older_than_seconds
        purged = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            batches += 1
            with self._write() as db:
                ids = [
                    r[0]
                    for r in db.execute(
                        "SELECT task_id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?",
                        (cutoff, batch),
                    )
                ]
                marks = ",".join("?" * len(ids))
                if ids:
                    db.execute(f"DELETE FROM events WHERE task_id IN ({marks})", ids)
                    db.execute(f"DELETE FROM tasks WHERE task_id IN ({marks})", ids)
            with self._parsed_lock:
                for task_id in ids:
                    self._parsed.pop(task_id, None)
            purged += len(ids)
            if len(ids) < batch:
                break
        return purged

    # --- events --------------------------------------------------------------------------------

    def append_event(self, event: NewEvent) -> StreamEvent | None:
        after: list[Callable[[], None]] = []
        with self._write(after_commit=after) as db:
            written = self._insert_event(db, event)
            if written is not None:
                after.append(functools.partial(self._announce, [written]))
        return None if written is None else written[0]

    @staticmethod
    def _insert_event(
        db: sqlite3.Connection, event: NewEvent, *, final_output: str | None = None
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
        # One statement: the next cursor, and nothing at all if the key was written before.
        row = db.execute(
            "INSERT OR IGNORE INTO events(task_id, cursor, event_key, event_type, timestamp, data) "
            "SELECT ?, COALESCE(MAX(cursor), 0) + 1, ?, ?, ?, ? FROM events WHERE task_id = ? RETURNING cursor",
            (event.task_id, event.key, event.event_type.value, event.timestamp.isoformat(), data, event.task_id),
        ).fetchone()
        if row is None:
            return None  # this key was written before: an idempotent replay
        (cursor,) = row
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
