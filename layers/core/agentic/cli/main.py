"""``agentic``: create, run and watch tasks from a terminal.

A task id may be shortened to a unique prefix of 4 or more characters (as git does for commits).

Exit codes: 0 the task completed (or the command succeeded), 1 the task failed, 2 bad usage
(including an ambiguous id prefix or a URL without http:// or https://), 3 the task was cancelled,
4 the server refused the request (including "not supported yet"),
5 the server could not be reached or the stream not re-attached, 130 Ctrl-C (watching stopped,
the task goes on).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from agentic.cli.client import AgenticClient, ApiError
from agentic.cli.kb import kb_app
from agentic.cli.lookup import AmbiguousId, Search, parse_when, resolve, search
from agentic.cli.watch import StreamLost, Watcher, hard_breaks

EXIT_FAILED = 1
EXIT_USAGE = 2
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
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    epilog=(
        "A task id may be a unique prefix (4+ characters). "
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
            check_url("--url/AGENTIC_URL", self.url)
            for name, value in (("--api-url/AGENTIC_API_URL", self.api_url), ("--stream-url", self.stream_url)):
                if value:
                    check_url(name, value)
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


def check_url(name: str, url: str) -> None:
    """A server URL must say http:// or https:// (``localhost:8000`` is read as scheme ``localhost``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"{name} is {url!r}, not a URL: write it with its scheme, e.g. http://{url.split('://')[-1]}", EXIT_USAGE)


#: What to do about a refusal, by status: one hint after the server's message.
HINTS = {
    401: "pass the server's token with --token or AGENTIC_TOKEN (its API_TOKEN or one of API_TOKENS)",
    403: "with --aws: your AWS credentials lack execute-api:Invoke / lambda:InvokeFunctionUrl on the stack",
}


@contextmanager
def connected(ctx: typer.Context) -> Iterator[AgenticClient]:
    """A client for the target; server errors become one line and an exit code, never a traceback."""
    target: Target = ctx.obj
    client = target.client()
    try:
        yield client
    except ApiError as exc:
        detail = f" (HTTP {exc.status} {exc.code})" if exc.code != "unsupported" else ""
        hint = f"; {HINTS[exc.status]}" if exc.status in HINTS else ""
        fail(f"{exc.message}{detail}{hint}", EXIT_REFUSED)
    except AmbiguousId as exc:
        lines = "\n".join(
            f"  {t['task_id']}  {t['status']:<17} {t['created_at'][:16].replace('T', ' ')}  {t['user_input'][:50]}"
            for t in exc.candidates[:10]
        )
        more = f"\n  … and {len(exc.candidates) - 10} more" if len(exc.candidates) > 10 else ""
        fail(
            f"{exc.prefix!r} is the start of {len(exc.candidates)} task ids; give more of it:\n{lines}{more}",
            EXIT_USAGE,
        )
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
                # The answer is read before the run starts: "pending" would say it waits for an execute.
                state = "started" if task["status"] == "pending" else task["status"]
                console.print(
                    f"task [bold]{task_id}[/] {state}; follow it with: agentic watch {task_id}", soft_wrap=True
                )
            return
        if not as_json:
            console.print(Text(f"task {task_id}: {task['user_input'][:100]}", style="bold"))
        watch_task(client, task_id, execute=True, raw=as_json)


@app.command()
def watch(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id (or a unique prefix of it).")],
    as_json: JsonOption = False,
) -> None:
    """Follow a task live (it is not started); Ctrl-C stops watching, not the task."""
    with connected(ctx) as client:
        watch_task(client, resolve(client, task_id), execute=False, raw=as_json)


def when_option(end_of_day: bool) -> Callable[[str | None], datetime | None]:
    def parse(value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_when(value, end_of_day=end_of_day)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None

    return parse


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only tasks in this status.")] = None,
    text: Annotated[
        str | None,
        typer.Option("--search", "-s", help="Only tasks whose description (or id) has these words, in any case."),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            parser=when_option(False), metavar="DATE", help="Created on or after (YYYY-MM-DD or an ISO time, UTC)."
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(parser=when_option(True), metavar="DATE", help="Created on or before (a date: the whole day)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many (newest first).")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Go on from where the last page ended (the cursor it printed).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Your tasks, newest first; --search, --since and --until filter, --cursor pages on."""
    query = Search(text, since, until)
    with connected(ctx) as client:
        items, next_cursor = search(client, query, status=status, limit=limit, cursor=cursor)
    if as_json:
        print(json.dumps({"items": items, "next_cursor": next_cursor}))
        return
    table = Table(box=None, header_style="bold")
    table.add_column("task", no_wrap=True, min_width=36)
    table.add_column("status", no_wrap=True, min_width=max((len(t["status"]) for t in items), default=6))
    table.add_column("created (UTC)", no_wrap=True, min_width=16)
    table.add_column("description", overflow="ellipsis", no_wrap=True, ratio=1)
    for task in items:
        table.add_row(
            task["task_id"], task["status"], task["created_at"][:16].replace("T", " "), task["user_input"][:60]
        )
    console.print(table if items else Text("no tasks" + (" match" if query.filters else ""), style="dim"))
    if next_cursor:
        again = [f"--limit {limit}"] if limit != 20 else []
        again += [f"--status {status}"] if status else []
        again += [f"--search {json.dumps(text)}"] if text else []
        again += [f"--since {since.isoformat()}"] if since else []
        again += [f"--until {until.isoformat()}"] if until else []
        console.print(
            Text(f"more: agentic list {' '.join([*again, '--cursor', next_cursor])}", style="dim"), soft_wrap=True
        )


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else ""


def _clock(value: Any) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]


@app.command()
def status(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id (or a unique prefix of it).")],
    as_json: JsonOption = False,
) -> None:
    """A task's status, steps (with their start and duration) and report."""
    with connected(ctx) as client:
        task = client.status(resolve(client, task_id))
    if as_json:
        print(json.dumps(task))
        return
    total = task.get("duration_seconds")
    console.print(
        Text.assemble(
            ("task ", "dim"),
            (task["task_id"], "bold"),
            "  ",
            (task["status"], "cyan"),
            (f"  in {_seconds(total)}" if total is not None else "", "dim"),
        )
    )
    console.print(task["user_input"])
    steps = Table(
        "step", "agent", "status", "attempts", "started (UTC)", "took", "error", box=None, header_style="bold"
    )
    for step in task["steps"]:
        steps.add_row(
            step["step_id"],
            step["agent_type"],
            step["status"],
            str(step["attempts"]),
            _clock(step.get("started_at")),
            _seconds(step.get("duration_seconds")),
            step.get("error") or "",
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
        task_id: Annotated[str, typer.Argument(help="The task id (or a unique prefix of it).")],
        text: Annotated[str | None, typer.Option("--message", "-m", help="A reason or comment.")] = None,
        as_json: JsonOption = False,
    ) -> None:
        _send_control(ctx, task_id, action, {body_key: text} if body_key and text else None, as_json)

    return command


def _send_control(ctx: typer.Context, task_id: str, action: str, body: dict[str, Any] | None, as_json: bool) -> None:
    with connected(ctx) as client:
        task_id = resolve(client, task_id)
        task = client.control(task_id, action, body)
    if as_json:
        print(json.dumps(task))
    else:
        console.print(f"task [bold]{task_id}[/] {task.get('status', action + ' requested')}", soft_wrap=True)


app.command("cancel", help="Cancel a task (a pending one at once, a running one stops).")(_control("cancel", "reason"))
app.command("approve", help="Approve a task waiting for approval; it goes on to the report.")(
    _control("approve", "comment")
)
app.command("reject", help="Reject a task waiting for approval; it ends.")(_control("reject", "reason"))


@app.command()
def retry(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task id (or a unique prefix of it).")],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from-step",
            help="Run again from this step (e.g. step_002, see `agentic status`); "
            "default: the step that did not complete.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a failed or cancelled task again, from the step that did not complete or from --from-step."""
    _send_control(ctx, task_id, "retry", {"from_step": from_step} if from_step else None, as_json)


app.add_typer(kb_app)  # `agentic kb list|search`


def run() -> None:
    """The console script."""
    try:
        app()
    except KeyboardInterrupt:  # outside a watch: nothing was started by this process
        sys.exit(EXIT_INTERRUPTED)
