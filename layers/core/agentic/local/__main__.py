"""``python -m agentic.local``: serve the whole system on the embedded store."""

from __future__ import annotations

import argparse

import uvicorn

from agentic.local.wiring import create_local_app
from agentic.settings import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m agentic.local", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args(argv)
    app = create_local_app(settings)
    # Access logs off: the app logs each task as structured JSON with its task_id.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()
