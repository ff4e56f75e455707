"""``python -m agentic.local``: serve the whole system on the embedded store."""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn

from agentic.local.wiring import create_local_app
from agentic.settings import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m agentic.local", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args(argv)
    # Bind first: a server that cannot take its port stops here, before it opens the store or
    # resumes anyone's tasks.
    try:
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = create_local_app(settings)
    # Access logs off: the app logs each task as structured JSON with its task_id.
    config = uvicorn.Config(app, access_log=False, log_level=settings.log_level.lower())
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
