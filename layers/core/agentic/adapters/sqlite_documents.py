"""The SQLite file's task documents: stored as JSON without step outputs, parsed once, and remembered
as this process last wrote them, so a run's next write starts from memory instead of a read."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentic.adapters.local_events import LocalEventBus
from agentic.adapters.sqlite_file import SQLiteFile
from agentic.models import EventType, StepStatus, TaskState

_PARSED_CACHE_SIZE = 4096
#: A task row's lease_owner and finished_at.
Columns = tuple[str | None, float | None]


class TaskDocuments(SQLiteFile):
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
        self._parsed: OrderedDict[str, tuple[str, TaskState, Columns | None]] = OrderedDict()
        self._parsed_lock = threading.Lock()
        super().__init__(
            path,
            busy_timeout_seconds=busy_timeout_seconds,
            probe_seconds=probe_seconds,
            clock=clock,
            synchronous=synchronous,
            group_commit=group_commit,
        )

    @staticmethod
    def _dump(task: TaskState) -> str:
        # Without the steps' outputs (ExecutionStep.output): they live in the partial_output events.
        return task.model_dump_json()

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

    def _remember(self, task_id: str, doc: str, task: TaskState, columns: Columns | None = None) -> None:
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
