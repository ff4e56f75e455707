"""A store's write starts from the row as its process last wrote it, only while nobody changed it since."""

from __future__ import annotations

import pytest

from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.errors import InvalidTransition
from agentic.models import TaskState, TaskStatus

pytestmark = pytest.mark.functional


@pytest.fixture
def two_processes(tmp_path):
    a, b = SQLiteTaskStore(tmp_path / "tasks.db"), SQLiteTaskStore(tmp_path / "tasks.db")
    yield a, b
    a.close()
    b.close()


def running_task(a: SQLiteTaskStore) -> None:
    """A task that process A claimed and moved on once (so A holds the row as it wrote it)."""
    a.create(TaskState(task_id="t", owner="o", user_input="Explain backoff"))
    assert a.claim("t", "runner-a", 30) is not None
    a.update("t", {TaskStatus.PENDING}, status=TaskStatus.ANALYZING)


def test_a_write_builds_on_what_another_process_wrote_since(two_processes):
    a, b = two_processes
    running_task(a)
    # Given another process changed the task after A's last write
    b.update("t", {TaskStatus.ANALYZING}, error_message="noted by b")
    # When A writes again
    updated = a.update("t", {TaskStatus.ANALYZING}, current_step_index=2)
    # Then A's change lands on B's, not on A's older copy
    stored = b.get("t")
    assert stored is not None
    assert (stored.error_message, stored.current_step_index) == ("noted by b", 2)
    assert updated.error_message == "noted by b"


def test_a_write_from_a_state_another_process_left_is_refused(two_processes):
    a, b = two_processes
    running_task(a)
    # Given another process cancelled the task after A's last write (A still remembers it analyzing)
    b.update("t", {TaskStatus.ANALYZING}, status=TaskStatus.CANCELLED, lease=None)
    # When A writes as if it were still analyzing
    # Then the write is refused and the task stays cancelled
    with pytest.raises(InvalidTransition):
        a.update("t", {TaskStatus.ANALYZING}, status=TaskStatus.EXECUTING)
    stored = a.get("t")
    assert stored is not None
    assert stored.status is TaskStatus.CANCELLED


def test_a_write_that_only_stale_memory_would_refuse_goes_through(two_processes):
    a, b = two_processes
    running_task(a)
    # Given another process moved the task on after A's last write
    b.update("t", {TaskStatus.ANALYZING}, status=TaskStatus.EXECUTING)
    # When A writes from the state the task is in now
    updated = a.update("t", {TaskStatus.EXECUTING}, current_step_index=1)
    # Then it lands
    assert updated.status is TaskStatus.EXECUTING
    stored = b.get("t")
    assert stored is not None
    assert stored.current_step_index == 1


def test_a_run_decides_on_the_task_as_it_wrote_it_and_its_next_write_finds_a_later_cancel(two_processes):
    a, b = two_processes
    running_task(a)
    # Given another process cancelled the task after A's last write
    b.update("t", {TaskStatus.ANALYZING}, status=TaskStatus.CANCELLED, lease=None)
    # When A's run looks at the task as it wrote it (no read of the file)
    seen = a.get_as_written("t")
    # Then it sees its own last write, as a read a moment before the cancel would have
    assert seen is not None
    assert seen.status is TaskStatus.ANALYZING
    # And the write it decides on is refused: the cancel stands
    with pytest.raises(InvalidTransition):
        a.update("t", {TaskStatus.ANALYZING}, status=TaskStatus.EXECUTING)
    # And from then on it sees the task as stored (its memory of its own write is gone)
    after = a.get_as_written("t")
    assert after is not None
    assert after.status is TaskStatus.CANCELLED


def test_a_task_this_process_never_wrote_is_read_from_the_file(two_processes):
    a, b = two_processes
    b.create(TaskState(task_id="t", owner="o", user_input="Explain backoff"))
    b.update("t", {TaskStatus.PENDING}, status=TaskStatus.CANCELLED)
    seen = a.get_as_written("t")
    assert seen is not None
    assert seen.status is TaskStatus.CANCELLED
