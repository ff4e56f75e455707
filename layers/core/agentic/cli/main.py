"""``agentic``: create, run and watch tasks from a terminal.

Exit codes: 0 the task completed (or the command succeeded), 1 the task failed, 2 bad usage,
3 the task was cancelled, 4 the server refused the request (including "not supported yet"),
5 the server could not be reached or the stream not re-attached, 130 Ctrl-C (watching stopped,
the task goes on).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from agentic.cli.client import AgenticClient, ApiError
from agentic.cli.kb import kb_app
from agentic.cli.watch import StreamLost, Watcher, hard_breaks

EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130
EXIT_FOR_OUTCOME = {"completed": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
DEFAULT_URL = "http://127.0.0.1:8000"

app = typer.Typer(
    name="agentic",
    help="Create, run and watch agentic tasks (retriever → analyzer → writer) on a local server or on AWS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=(
        "Exit codes: 0 completed/ok, 1 task failed, 2 usage, 3 task cancelled, 4 refused by the server, "
        "5 server unreachable, 130 interrupted (the task keeps running)."
    ),
)
console = Console()
errors = Console(stderr=True)


@dataclass
class Target:
    url: str
    token: str | None
    aws: bool
    api_url: str | None
    stream_url: str | None
    region: str | None

    def client(self) -> AgenticClient:
        if not self.aws:
            return AgenticClient(self.api_url or self.url, self.stream_url, token=self.token)
        if not self.api_url or not self.stream_url:
            fail(
                "--aws needs --api-url (the stack's ApiUrl output) and --stream-url (its StreamUrl output), "
                "or AGENTIC_API_URL and AGENTIC_STREAM_URL",
                2,
            )
        from agentic.cli.sigv4 import aws_auth

        try:
            api_auth, stream_auth = aws_auth(self.api_url, self.stream_url, self.region)
        except LookupError as exc:
            fail(str(exc), 2)
        return AgenticClient(self.api_url, self.stream_url, api_auth=api_auth, stream_auth=stream_auth)


def fail(message: str, code: int) -> NoReturn:
    errors.print(Text(f"agentic: {message}", style="red"), soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def connected(ctx: typer.Context) -> Iterator[AgenticClient]:
    """A client for the target; server errors become one line and an exit code, never a traceback."""
    target: Target = ctx.obj
    client = target.client()
    try:
        yield client
    except ApiError as exc:
        detail = f" (HTTP {exc.status} {exc.code})" if exc.code != "unsupported" else ""
        fail(f"{exc.message}{detail}", EXIT_REFUSED)
    except StreamLost as exc:
        fail(f"lost the stream: {exc}", EXIT_UNREACHABLE)
    except httpx.TransportError as exc:
        fail(f"cannot reach {client.api_url}: {exc or type(exc).__name__}", EXIT_UNREACHABLE)
    finally:
        client.close()


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="AGENTIC_URL", help="The local server.")] = DEFAULT_URL,
    token: Annotated[
        str | None, typer.Option(envvar="AGENTIC_TOKEN", help="Bearer token (the server's API_TOKEN/API_TOKENS).")
    ] = None,
    aws: Annotated[
        bool,
        typer.Option("--aws", envvar="AGENTIC_AWS", help="Call the AWS stack, SigV4-signed with your credentials."),
    ] = False,
    api_url: Annotated[
        str | None, typer.Option(envvar="AGENTIC_API_URL", help="The stack's ApiUrl output (create, list, status).")
    ] = None,
    stream_url: Annotated[
        str | None, typer.Option(envvar="AGENTIC_STREAM_URL", help="The stack's StreamUrl output (execute, events).")
    ] = None,
    region: Annotated[
        str | None, typer.Option(envvar="AWS_REGION", help="AWS region (default: from the URLs).")
    ] = None,
) -> None:
    ctx.obj = Target(url, token, aws, api_url, stream_url, region)


def watch_task(client: AgenticClient, task_id: str, *, execute: bool, raw: bool) -> NoReturn:
    watcher = Watcher(client, console, task_id, raw=raw)
    try:
        outcome = watcher.run(execute=execute)
    except KeyboardInterrupt:
        errors.print(
            Text(
                "Stopped watching. The task was not cancelled and keeps running; "
                f"re-attach with: agentic watch {task_id}",
                style="yellow",
            ),
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(EXIT_FOR_OUTCOME.get(outcome, EXIT_FAILED))


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (events one per line) for scripts.")]


@app.command()
def submit(
    ctx: typer.Context,
    description: Annotated[str, typer.Argument(help="What the agents should work on (1-4000 characters).")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the task live until it ends.")] = False,
    approval: Annotated[bool, typer.Option("--approval", help="Ask for approval before the final report.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Submitting again with the same key returns the same task.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a task and start it; with --watch, follow it to the end."""
    with connected(ctx) as client:
        # With --watch the task is started by its stream (POST /execute), so no event is missed.
        task = client.create(description, execute=not watch, approval=approval, idempotency_key=idempotency_key)
        task_id = task["task_id"]
        if not watch:
            if as_json:
                print(json.dumps(task))
            else:
                console.print(f"task [bold]{task_id}[/] {task['status']}; follow it with: agentic watch {task_id}")
            return
        if not as_json:
            console.print(Text(f"task {task_id}: {task['user_input'][:100]}", style="bold"))
        watch_task(client, task_id, execute=True, raw=as_json)


@app.command()
def watch(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    as_json: JsonOption = False,
) -> None:
    """Follow a task live (it is not started); Ctrl-C stops watching, not the task."""
    with connected(ctx) as client:
        watch_task(client, task_id, execute=False, raw=as_json)


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only tasks in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many (newest first).")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Your tasks, newest first."""
    with connected(ctx) as client:
        page = client.list(status=status, limit=limit)
    if as_json:
        print(json.dumps(page))
        return
    table = Table(box=None, header_style="bold")
    table.add_column("task", no_wrap=True, min_width=36)
    table.add_column("status", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("description")
    for task in page["items"]:
        table.add_row(
            task["task_id"], task["status"], task["created_at"][:16].replace("T", " "), task["user_input"][:60]
        )
    console.print(table if page["items"] else Text("no tasks", style="dim"))
    if page.get("next_cursor"):
        console.print(Text(f"more: --limit {min(limit * 2, 100)} (or GET /tasks?cursor=…)", style="dim"))


@app.command()
def status(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    as_json: JsonOption = False,
) -> None:
    """A task's status, steps and report."""
    with connected(ctx) as client:
        task = client.status(task_id)
    if as_json:
        print(json.dumps(task))
        return
    console.print(Text.assemble(("task ", "dim"), (task["task_id"], "bold"), "  ", (task["status"], "cyan")))
    console.print(task["user_input"])
    steps = Table("step", "agent", "status", "attempts", "error", box=None, header_style="bold")
    for step in task["steps"]:
        steps.add_row(
            step["step_id"], step["agent_type"], step["status"], str(step["attempts"]), step.get("error") or ""
        )
    if task["steps"]:
        console.print(steps)
    if task.get("error_message"):
        console.print(Text(task["error_message"], style="red"))
    if task.get("final_output"):
        console.rule("Report")
        console.print(Markdown(hard_breaks(task["final_output"])))


def _control(action: str, body_key: str | None = None) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        task_id: Annotated[str, typer.Argument(help="The task id.")],
        text: Annotated[str | None, typer.Option("--message", "-m", help="A reason or comment.")] = None,
        as_json: JsonOption = False,
    ) -> None:
        with connected(ctx) as client:
            task = client.control(task_id, action, {body_key: text} if body_key and text else None)
        if as_json:
            print(json.dumps(task))
        else:
            console.print(f"task [bold]{task_id}[/] {task.get('status', action + ' requested')}")

    return command


app.command("cancel", help="Cancel a task (a pending one at once, a running one stops).")(_control("cancel", "reason"))
app.command("approve", help="Approve a task waiting for approval; it goes on to the report.")(
    _control("approve", "comment")
)
app.command("reject", help="Reject a task waiting for approval; it ends.")(_control("reject", "reason"))
app.command("retry", help="Run a failed or cancelled task again from the step that did not complete.")(
    _control("retry")
)


app.add_typer(kb_app)  # `agentic kb list|search`


def run() -> None:
    """The console script."""
    try:
        app()
    except KeyboardInterrupt:  # outside a watch: nothing was started by this process
        sys.exit(EXIT_INTERRUPTED)
