"""``python -m agentic.local``: serve the whole system on the embedded store.

A bad setting stops it before it serves anything, with one line on stderr naming the setting and
exit code 2 (as for a bad command-line argument), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from email.utils import formatdate
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import uvicorn
from pydantic import ValidationError

from agentic.agents.catalog import check_model_settings
from agentic.agents.faults import FaultPlan
from agentic.errors import AgenticError, StoreUnavailable
from agentic.local.wiring import create_local_app
from agentic.local.workers import OpenSocket, Supervisor, listen
from agentic.pipeline import load_pipeline
from agentic.settings import MAX_WORKERS, Settings

PROG = "python -m agentic.local"
#: The exit code of a bad setting or argument (argparse's, too).
EXIT_BAD_SETTING = 2
#: How often the server's main loop wakes while a connection is open (uvicorn's own: 0.1 s).
IDLE_TICK_SECONDS = 1.0
#: Allocations between two collections of the garbage collector's young generation (CPython: 700).
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Exempt what start-up built from the garbage collector; collect young objects less often.

    Why: a full collection scans every object the collector tracks. ~75,000 of the server's are built
    at start-up (modules, routes, schemas, the knowledge index) and live as long as it does, so each
    full collection took 60-100 ms, a stall of every request, stream and run at once (one in a third of
    the benchmark's 100-at-once rounds). Frozen, they are never scanned again. The young generation,
    collected every 700 allocations by default, rescanned the objects of a hundred runs in flight
    many times a second; the server's objects are freed by reference counting (its cycles are rare),
    so a larger one costs a little memory and saves most of that work (GC time in the benchmark about
    a third of what it was; see the README's *Speed*).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def fail(message: str) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_SETTING)


def describe(exc: ValidationError) -> str:
    """One line per invalid field, named as its environment variable."""
    parts = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err.get("loc", ())).upper()
        if not name:  # a rule across settings: its message names them and their values
            parts.append(str(err.get("msg")).removeprefix("Value error, "))
            continue
        parts.append(f"{name}={err.get('input')!r}: {err.get('msg')}")
    return "; ".join(parts)


def _is_folder(path: Path | None) -> None:
    if path is not None and not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder")


def load_settings() -> Settings:
    """The settings, each checked the way the server will use it; a bad one ends the process."""
    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid setting {describe(exc)}")
    checks: list[tuple[str, Callable[[], object]]] = [
        ("FAULTS", lambda: FaultPlan.parse(settings.faults)),
        ("API_TOKEN/API_TOKENS", settings.owner_tokens),
        ("PIPELINE_DEFINITION", lambda: load_pipeline(settings.pipeline_definition)),
        ("MODEL_*", lambda: check_model_settings(settings, load_pipeline(settings.pipeline_definition))),
        ("KNOWLEDGE_DIR", lambda: _is_folder(settings.knowledge_dir)),
    ]
    for name, check in checks:
        try:
            check()
        except (AgenticError, ValueError, OSError) as exc:
            fail(f"invalid setting {name}: {exc}")
    return settings


class _Connections(set[Any]):
    """uvicorn's set of open connections, telling the server when the first one opens."""

    def __init__(self, opened: Callable[[], None]) -> None:
        super().__init__()
        self._opened = opened

    def add(self, connection: Any) -> None:
        first = not self
        super().add(connection)
        if first:
            self._opened()


class QuietServer(uvicorn.Server):
    """uvicorn's server, whose main loop wakes only while a connection is open, once a second.

    uvicorn's main loop sleeps 0.1 s between checks for a stop signal and the refresh of the
    ``Date`` header, which was most of an idle server's CPU. Here it waits a second while any
    connection is open (the header changes once a second, as before), and with none open until the
    first one opens (the header is brought up to date then, before that connection's first request)
    or a stop signal wakes it (``handle_exit`` runs on the loop's thread: signals reach the main
    thread), so stopping is as prompt as before.
    """

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.server_state.connections = _Connections(self._first_connection)

    def _first_connection(self) -> None:
        date = [(b"date", formatdate(time.time(), usegmt=True).encode())] if self.config.date_header else []
        self.server_state.default_headers = date + self.config.encoded_headers
        if self._wake is not None:
            self._wake.set()

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter += 10  # uvicorn's ticks are 0.1 s: ten of them per wait here
            with suppress(TimeoutError):
                async with asyncio.timeout(IDLE_TICK_SECONDS if self.server_state.connections else None):
                    await self._wake.wait()
            self._wake.clear()
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._wake is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)  # safe from a signal handler


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=settings.workers, help="server processes (WORKERS)")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= MAX_WORKERS:
        fail(f"invalid setting WORKERS={args.workers}: between 1 and {MAX_WORKERS}")
    if args.workers > 1 and not hasattr(os, "fork"):
        fail(f"invalid setting WORKERS={args.workers}: several processes need os.fork (Linux, macOS)")
    # Bind first: a server that cannot take its port stops here, before it opens the store or
    # resumes anyone's tasks.
    try:
        if args.workers > 1:
            sock = listen(args.host, args.port, first=True)
        else:
            sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    processes = f", {args.workers} worker processes" if args.workers > 1 else ""
    print(
        f"{PROG}: listening on {url} (web view {url}/ui, API docs {url}/docs{processes}); Ctrl-C stops",
        file=sys.stderr,
    )
    if args.workers == 1:
        serve(settings, lambda: sock)
        code = 0
    else:
        say = functools.partial(print, f"{PROG}:", file=sys.stderr)
        code = Supervisor(
            args.workers,
            sock,
            lambda index, open_socket: serve(settings, open_socket, worker=index),
            startup_failure=EXIT_BAD_SETTING,
            say=say,
        ).run()
    print(f"{PROG}: stopped", file=sys.stderr)
    sys.exit(code)


def serve(settings: Settings, open_socket: OpenSocket, worker: int = 0) -> int:
    """Serve until a stop signal: one process, or worker ``worker`` of several. The socket is taken
    (``open_socket``) once the app is built: a worker's own socket takes connections from then on."""
    try:
        app = create_local_app(settings, worker=worker)
    except (OSError, sqlite3.Error, StoreUnavailable) as exc:
        fail(f"cannot open DATABASE_PATH={str(settings.database_path)!r}: {exc}")
    freeze_startup_heap()
    # The app logs each task as structured JSON with its task_id; ACCESS_LOG=true adds a line per request.
    # Idle keep-alive connections stay open longer than clients keep them (httpx and aiohttp expire
    # theirs after 5 s, uvicorn's default here too): with equal timeouts a client may send a request
    # on a connection the server is closing, and a POST is then lost as "disconnected" under load.
    config = uvicorn.Config(
        app, access_log=settings.access_log, log_level=settings.log_level.lower(), timeout_keep_alive=30
    )
    # uvicorn re-raises Ctrl-C after its graceful shutdown, unless the stop came in before it had
    # captured the signal: either way the server has stopped, and says so in one line.
    with suppress(KeyboardInterrupt):
        QuietServer(config).run(sockets=[open_socket()])
    return 0


if __name__ == "__main__":
    main()
