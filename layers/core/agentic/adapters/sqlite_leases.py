"""Leases on the SQLite file's tasks (claimed alone, or with the run's first write in one commit;
renewed, handed back, found expired) and the retention purge of finished tasks."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Callable, Collection
from typing import TypeVar

from agentic.adapters.sqlite_documents import TaskDocuments
from agentic.errors import StoreBusy, StoreUnavailable, TaskNotFound
from agentic.models import Lease, TaskState, TaskStatus
from agentic.observability import logger

T = TypeVar("T")


class _FirstWriteFailed(Exception):
    """``claim_then``'s first write raised: its transaction is rolled back (the cause says why)."""


class LeaseRows(TaskDocuments):
    def claim(self, task_id: str, runner: str, ttl_seconds: float) -> Lease | None:
        with self._write() as db:
            claimed = self._claim_row(db, task_id, runner, ttl_seconds)
        if claimed is None:
            return None
        lease, doc, task = claimed
        # The run's first write starts from this row as written (unfinished: finished_at is NULL).
        self._remember(task_id, doc, task, (runner, None))
        return lease

    def claim_then(
        self, task_id: str, runner: str, ttl_seconds: float, first_write: Callable[[Lease], T]
    ) -> tuple[Lease, T | None] | None:
        """``claim``, and if it is won, the run's first write (``first_write(lease)``) in the same
        transaction: one commit where there were two. If ``first_write`` fails, nothing of it is kept
        and the claim is made alone (None in the write's place): the run makes that write again
        itself and meets the failure there, as it would have without this."""
        try:
            with self._write() as db:
                claimed = self._claim_row(db, task_id, runner, ttl_seconds)
                if claimed is None:
                    return None
                lease, doc, task = claimed
                self._remember(task_id, doc, task, (runner, None))  # the first write starts from it
                try:
                    return lease, first_write(lease)
                except (StoreBusy, StoreUnavailable):
                    raise
                except Exception as exc:
                    raise _FirstWriteFailed from exc  # out of the transaction: it is rolled back
        except _FirstWriteFailed as failed:
            logger.info(
                "the run's first write failed; the claim is made alone",
                extra={"task_id": task_id, "reason": repr(failed.__cause__)},
            )
        lease_only = self.claim(task_id, runner, ttl_seconds)
        return None if lease_only is None else (lease_only, None)

    def _claim_row(
        self, db: sqlite3.Connection, task_id: str, runner: str, ttl_seconds: float
    ) -> tuple[Lease, str, TaskState] | None:
        """The claim's writes, in the caller's transaction: the lease, the document holding it and the task."""
        now = self._clock()
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
        (log_end,) = db.execute("SELECT COALESCE(MAX(cursor), 0) FROM events WHERE task_id = ?", (task_id,)).fetchone()
        self.bus.track(task_id, log_end)
        return lease, claimed, task

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
