"""A server process takes its listening socket only once its app is built.

With ``WORKERS``, each worker listens on a socket of its own (``SO_REUSEPORT``) and the kernel gives
it a share of the port's connections from the moment it listens: a worker that listened before
building its app (opening the store) would hold its share meanwhile, and reset them if it then could
not start."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from agentic.local import __main__ as local_main
from agentic.settings import Settings

pytestmark = pytest.mark.unit


def test_serve_opens_its_socket_after_building_the_app(monkeypatch, tmp_path):
    # Given a server process whose app build, socket and serving are recorded
    steps: list[str] = []
    monkeypatch.setattr(
        local_main, "create_local_app", lambda settings, worker=0: steps.append("app built") or object()
    )
    monkeypatch.setattr(local_main, "freeze_startup_heap", lambda: None)

    def open_socket() -> Any:
        steps.append("socket opened")
        return socket.socket()

    def run(self: Any, sockets: list[Any]) -> None:
        steps.append("serving")
        for sock in sockets:
            sock.close()

    monkeypatch.setattr(local_main.QuietServer, "run", run)
    # When it serves
    local_main.serve(Settings(database_path=tmp_path / "tasks.db"), open_socket, worker=1)
    # Then its socket is opened once the app is built, and served on at once
    assert steps == ["app built", "socket opened", "serving"]
