"""``agentic watch``: follow a task's stream to its end, re-attaching after a dropped connection.

The stream is read line by line; each event is shown once (events at or below the last cursor seen
are skipped), and when the connection drops, times out or the server ends the stream early
(``stream_timeout``), the watcher re-attaches with ``Last-Event-ID`` = the last cursor. A server that
ends the stream while the task waits for a person (``stream_paused``) is asked again after the
``retry_after_seconds`` it named, for as long as the task waits.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agentic.cli.client import AgenticClient, ApiError

TERMINAL = {"task_completed": "completed", "task_failed": "failed", "task_cancelled": "cancelled"}
_LIST_ITEM = re.compile(r"^\s*([-*+]|\d{1,9}[.)])\s")
#: Consecutive attempts without a new event before giving up.
MAX_REATTACH = 8
MAX_DELAY_SECONDS = 5.0


class StreamLost(Exception):
    """The stream could not be re-attached."""


@dataclass
class StepView:
    step_id: str
    agent_type: str
    description: str = ""
    state: str = "pending"
    note: str = ""
    #: The text a model has streamed so far in the current attempt (``partial_output`` deltas).
    text: str = ""


@dataclass
class TaskView:
    """What the terminal shows: the task's status and its steps, redrawn as events arrive."""

    task_id: str
    status: str = "connecting"
    steps: dict[str, StepView] = field(default_factory=dict)
    banner: str = ""

    def step(self, data: dict[str, Any]) -> StepView:
        step_id = str(data.get("step_id", "?"))
        if step_id not in self.steps:
            self.steps[step_id] = StepView(step_id, str(data.get("agent_type", "")), str(data.get("description", "")))
        return self.steps[step_id]

    def __rich__(self) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        for step in self.steps.values():
            icon: RenderableType
            if step.state == "running":
                icon = Spinner("dots", style="cyan")
            else:
                icon = Text(
                    {"completed": "✓", "failed": "✗", "retrying": "↻", "cancelled": "⊘"}.get(step.state, "·"),
                    style={"completed": "green", "failed": "red", "retrying": "yellow", "cancelled": "yellow"}.get(
                        step.state, "dim"
                    ),
                )
            table.add_row(
                icon,
                Text(step.step_id, style="dim"),
                Text(step.agent_type, style="bold"),
                Text(step.note or step.state, style="yellow" if step.state == "retrying" else ""),
            )
            if step.state == "running" and step.text:
                # The model's answer as it streams: its last line, so the view stays one screen.
                tail = step.text.rstrip().rsplit("\n", 1)[-1][-100:]
                table.add_row(Text(""), Text(""), Text(""), Text(f"… {tail}", style="dim"))
        header = Text.assemble(("task ", "dim"), (self.task_id, "bold"), ("  ", ""), (self.status, "cyan"))
        parts: list[RenderableType] = [header, table]
        if self.banner:
            parts.append(Text(self.banner, style="yellow"))
        return Group(*parts)


class Watcher:
    """Shows one task's events; ``run`` returns the task's final status (completed, failed, ...)."""

    def __init__(
        self,
        client: AgenticClient,
        console: Console,
        task_id: str,
        *,
        raw: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.console = console
        self.task_id = task_id
        self.raw = raw
        self.sleep = sleep
        self.view = TaskView(task_id)
        self.after = 0
        self.reattached = 0
        self.final: dict[str, Any] | None = None
        #: Seconds to wait before coming back, when the server paused the stream (None: it did not).
        self.paused: float | None = None

    def run(self, *, execute: bool = False) -> str:
        if self.raw:
            self._follow(execute)
        else:
            try:
                with Live(self.view, console=self.console, refresh_per_second=12, transient=False):
                    self._follow(execute)
            finally:
                # Live leaves its last line open: end it, also on Ctrl-C (then a notice follows).
                self.console.print()
            self._show_result()
        assert self.final is not None
        return TERMINAL[self.final["event_type"]]

    def _follow(self, execute: bool) -> None:
        failures = 0
        delay = 0.5
        while self.final is None:
            try:
                stopping: dict[str, Any] | None = None
                with self.client.events(self.task_id, execute=execute, after=self.after) as lines:
                    for line in lines:
                        if self._handle(line):
                            failures, delay = 0, 0.5
                        elif line.get("event_type") == "server_stopping":
                            stopping = line.get("data") or {}
                # The server ends the stream after the task's end; a retried task's log holds an
                # earlier end followed by task_retried, so the last terminal event is what counts.
                if self.final is not None:
                    return
                if self.paused is not None:
                    # Not a failure: the task waits for a person, and the server said when to look again.
                    wait, self.paused = self.paused, None
                    failures, delay = 0, 0.5
                    execute = False
                    self.sleep(wait)
                    continue
                reason = "the stream ended early"
                if stopping is not None:  # the server stops; the task goes on (here later, or elsewhere)
                    reason = "the server is stopping"
                    delay = max(delay, float(stopping.get("retry_after") or 1))
            except httpx.TransportError as exc:  # dropped, reset, timed out
                reason = f"connection lost ({type(exc).__name__})"
            except ApiError as exc:
                if not exc.retryable:
                    raise
                reason = exc.message
                delay = max(delay, exc.retry_after or 1.0)
            failures += 1
            if failures > MAX_REATTACH:
                raise StreamLost(f"{reason}; gave up after {MAX_REATTACH} attempts (last cursor {self.after})")
            self.reattached += 1
            # execute is idempotent, but once the task has events, re-attaching only reads them.
            execute = execute and self.after == 0
            self._notice(f"{reason}; re-attaching after cursor {self.after} (Last-Event-ID)…")
            self.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)

    def _handle(self, event: dict[str, Any]) -> bool:
        """Show one line of the stream; True if it was a new event."""
        cursor = event.get("cursor")
        if not isinstance(cursor, int):
            if event.get("event_type") == "stream_paused":
                self.paused = float((event.get("data") or {}).get("retry_after_seconds") or 1.0)
            return False  # keepalive, stream_timeout, stream_paused: control lines without a cursor
        if cursor <= self.after:
            return False  # already shown before a re-attach
        self.after = cursor
        if event.get("event_type") in TERMINAL:
            self.final = event
        elif event.get("event_type") == "task_retried":
            self.final = None
        if self.raw:
            print(json.dumps(event), flush=True)  # one raw event per line, for scripts
            return True
        self._show(event)
        return True

    def _notice(self, message: str) -> None:
        if self.raw:
            return
        self.view.banner = message
        self.console.print(Text(message, style="yellow"))

    def _show(self, event: dict[str, Any]) -> None:
        kind = str(event.get("event_type"))
        data: dict[str, Any] = event.get("data") or {}
        view = self.view
        view.banner = ""
        if kind == "task_queued":
            view.status = "queued"
            view.banner = f"waiting for a free execution slot (position {data.get('position')})"
        elif kind == "task_started":
            view.status = "analyzing"
        elif kind == "plan_created":
            view.status = "executing"
            for step in data.get("steps", []):
                view.step(step)
        elif kind == "step_started":
            step = view.step(data)
            step.state = "running"
            step.text = ""
            attempt = data.get("attempt") or 1
            step.note = f"attempt {attempt} running" if attempt > 1 else ""
        elif kind == "step_retrying":
            step = view.step(data)
            step.state = "retrying"
            step.text = ""  # the next attempt streams its answer again from the start
            step.note = f"attempt {data.get('attempt')} in {data.get('delay_seconds')} s after {data.get('error')}"
            wait = data.get("delay_seconds")
            self.console.print(Text(f"↻ {step.step_id} {step.agent_type}: {data.get('error')}; retrying in {wait} s"))
        elif kind == "partial_output" and "delta" in data:
            step = view.step(data)
            step.state = "running"
            step.text += str(data["delta"])
        elif kind == "partial_output":
            step = view.step(data)
            step.text = ""
            if step.agent_type != "writer":  # the writer's output is the report, shown at the end
                self._print_output(step, str(data.get("output", "")))
        elif kind == "step_completed":
            step = view.step(data)
            step.state = "completed"
            attempts = data.get("attempts", 1)
            step.note = f"done in {attempts} attempt{'s' if attempts != 1 else ''}"
        elif kind == "error":
            if data.get("step_id"):
                step = view.step(data)
                step.state = "failed"
                step.note = error_text(data)
        elif kind == "approval_requested":
            view.status = "awaiting approval"
            view.banner = (
                f"this task waits for your approval: agentic approve {self.task_id}"
                f"  (or: agentic reject {self.task_id})"
            )
            self.console.print(Text(view.banner, style="bold yellow"))
        elif kind in ("approval_granted", "task_retried"):
            view.status = "executing"
        elif kind in TERMINAL:
            view.status = TERMINAL[kind]
            if kind != "task_completed":
                # The run stopped: a step still in flight will not finish (no spinner left turning).
                for step in view.steps.values():
                    if step.state in ("running", "retrying"):
                        step.state = "cancelled" if kind == "task_cancelled" else "failed"
                        step.note = "stopped: task cancelled" if kind == "task_cancelled" else "stopped"

    def _print_output(self, step: StepView, output: str, max_lines: int = 8) -> None:
        lines = output.splitlines()
        shown = "\n".join(lines[:max_lines]) + (
            f"\n… ({len(lines) - max_lines} more lines)" if len(lines) > max_lines else ""
        )
        self.console.print(Text(f"{step.step_id} {step.agent_type} output:", style="bold"))
        self.console.print(Text(shown, style="dim"))

    def _show_result(self) -> None:
        assert self.final is not None
        data = self.final.get("data") or {}
        if self.final["event_type"] == "task_completed":
            self.console.rule("Report")
            # A newline in the report is a line break (as in the web view), not a space.
            self.console.print(Markdown(hard_breaks(str(data.get("final_output") or ""))))
            self.console.print(Text(f"✓ task {self.task_id} completed", style="bold green"))
        elif self.final["event_type"] == "task_failed":
            self.console.print(Text(f"✗ task {self.task_id} failed: {data.get('error_message')}", style="bold red"))
        else:
            reason = data.get("reason")
            said = f": {reason}" if reason else " (no reason given)"
            self.console.print(Text(f"⊘ task {self.task_id} cancelled{said}", style="bold yellow"))


def error_text(data: dict[str, Any]) -> str:
    """``Error: message`` of an error event, once: the message often starts with the error's name."""
    error, message = str(data.get("error") or ""), str(data.get("message") or "")
    if not error or message.startswith(f"{error}:") or message == error:
        return message or error
    return f"{error}: {message}" if message else error


def hard_breaks(markdown: str) -> str:
    """The report as the web view shows it: a newline inside a paragraph is a line break, and a list
    ends at the first line that is not indented (Markdown would otherwise fold both into one)."""
    out: list[str] = []
    previous = ""
    for line in markdown.splitlines():
        stripped = line.lstrip()
        in_list = previous[:1].isspace() or _LIST_ITEM.match(previous) is not None
        is_item = _LIST_ITEM.match(line) is not None
        if (
            previous.strip()
            and stripped
            and ((in_list and not line[:1].isspace() and not is_item) or (is_item and not in_list))
        ):
            out.append("")  # close the list (or the paragraph before a list)
        elif previous.strip() and stripped and not previous.startswith("#") and not is_item:
            out[-1] += "  "  # a hard line break
        out.append(line)
        previous = line
    return "\n".join(out)
