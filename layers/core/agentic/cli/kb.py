"""``agentic kb``: what the retriever searches (``list``) and what it would cite (``search``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

kb_app = typer.Typer(name="kb", help="The knowledge base the retriever searches.", no_args_is_help=True)


@kb_app.command("list")
def list_sources(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON.")] = False,
) -> None:
    """The indexed sources (passages, size, indexed at) and the skipped files with their reason."""
    from agentic.cli.main import connected, console

    with connected(ctx) as client:
        body = client.knowledge()
    if as_json:
        print(json.dumps(body))
        return
    table = Table(box=None, header_style="bold")
    for column in ("source", "passages", "bytes", "indexed (UTC)"):
        table.add_column(column, no_wrap=column != "source")
    for s in body["sources"]:
        when = datetime.fromtimestamp(s["indexed_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(s["source"], str(s["passages"]), str(s["size"]), when)
    console.print(table if body["sources"] else Text("no sources indexed", style="dim"))
    if body["skipped"]:
        console.print(Text(f"skipped {len(body['skipped'])} file(s):", style="yellow"))
        for s in body["skipped"]:
            console.print(Text(f"  {s['source']}: {s['reason']}"), soft_wrap=True)


@kb_app.command("search")
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="The question.")],
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="How many passages.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON.")] = False,
) -> None:
    """The passages the retriever would cite for QUERY, best first."""
    from agentic.cli.main import connected, console

    with connected(ctx) as client:
        body = client.search_knowledge(query, k)
    if as_json:
        print(json.dumps(body))
        return
    if not body["passages"]:
        console.print(Text("nothing in the knowledge base matches", style="dim"))
        return
    for p in body["passages"]:
        label = f"{p['source']} — {p['heading']}" if p["heading"] else p["source"]
        console.print(Text.assemble((f"[{p['number']}] ", "bold"), (label, "cyan"), (f"  score {p['score']}", "dim")))
        console.print(Text(p["text"]), soft_wrap=True)
        console.print()
