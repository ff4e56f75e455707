"""A real local server (``python -m agentic.local``) in a subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_to_exit(port: int | str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m agentic.local`` on ``port`` with ``env`` added, run until it exits by itself."""
    return subprocess.run(
        [sys.executable, "-m", "agentic.local", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class LocalServer:
    _started = 0

    def __init__(self, database: Path, port: int | None = None, log: Path | None = None, **env: str) -> None:
        self.database = database
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        LocalServer._started += 1
        self.log = log or database.with_suffix(f".{self.port}.{LocalServer._started}.log")

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to serve."""
        env = {
            **os.environ,
            "DATABASE_PATH": str(self.database),
            "AGENT_LATENCY_SCALE": "0",
            "RETRY_TIME_SCALE": "0.01",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentic.local", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self.proc

    def start(self) -> LocalServer:
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # readiness: the port answers /health
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not become ready in 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def records(self, message: str) -> list[dict[str, Any]]:
        """The server's JSON log records with this message."""
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("message") == message:
                    found.append(record)
        return found

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(signal.SIGKILL if exc[0] else signal.SIGTERM)
