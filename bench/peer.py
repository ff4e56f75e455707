"""The peer the issue compares with: LangGraph, in its own virtualenv (``.venv-peer``), never the project's.

    python -m bench.peer          (``make bench`` calls it through ``bench.run``)

Two figures, each measured here as the project's are in ``bench.run``:

- in-process: LangGraph + its SQLite checkpointer (``AsyncSqliteSaver``) running the same
  three-step pipeline (``bench/peer_graph.py``), tasks/s;
- HTTP: ``langgraph dev`` serving that graph, driven by the same aiohttp client as the project's
  server (create a thread, stream a run to its end): the server's CPU per task, and the wall time
  of 100 tasks at once with the seed's latencies.

If the peer cannot be installed (no network, too slow), the functions return None and the caller
says so; the issue's figures are then the comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from bench.proc import tree_cpu_seconds
from tests.e2e.server import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-peer"
PYTHON = VENV / "bin" / "python"
#: Pinned like the project's own dependencies, so the comparison is repeatable.
PACKAGES = [
    "langgraph==1.2.24",
    "langgraph-checkpoint-sqlite==3.1.2",
    "langgraph-cli[inmem]==0.4.40",
]
INSTALL_TIMEOUT_SECONDS = 900
#: Runs langgraph dev works on at once (its default is 10): 100, so that 100 tasks at once can run at once.
JOBS = 100


def ensure_peer() -> str | None:
    """Install the peer into ``.venv-peer`` once; None when ready, else why it is not."""
    check = [str(PYTHON), "-c", "import langgraph.checkpoint.sqlite.aio, langgraph_api"]
    if PYTHON.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(PYTHON), "-m", "pip", "install", "--quiet", *PACKAGES],
            check=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"could not install the peer into {VENV.name}: {exc}"
    return None


def in_process(n: int, concurrency: int) -> tuple[float, float]:
    """LangGraph + AsyncSqliteSaver: (tasks/s, CPU ms per task)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [str(PYTHON), str(ROOT / "bench" / "peer_graph.py"), str(n), str(concurrency), f"{tmp}/peer.db"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PEER_LATENCY_SCALE": "0"},
        ).stdout.split()
    return float(out[0]), float(out[1])


class PeerServer:
    """``langgraph dev`` serving ``bench/peer_graph.py:graph`` on a free loopback port."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.TemporaryDirectory()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PeerServer:
        config = Path(self.tmp.name) / "langgraph.json"
        config.write_text(json.dumps({"dependencies": ["."], "graphs": {"pipeline": "./peer_graph.py:graph"}}))
        (Path(self.tmp.name) / "peer_graph.py").write_text((ROOT / "bench" / "peer_graph.py").read_text())
        self.proc = subprocess.Popen(
            [
                str(VENV / "bin" / "langgraph"),
                "dev",
                "--no-browser",
                "--no-reload",
                "--n-jobs-per-worker",
                str(JOBS),
                "--port",
                str(self.port),
            ],
            cwd=self.tmp.name,
            env={**os.environ, "PEER_LATENCY_SCALE": str(self.scale), "LANGGRAPH_CLI_NO_ANALYTICS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("langgraph dev did not start in 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.tmp.cleanup()

    def cpu(self) -> float:
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)


async def over_http(url: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Create a thread and stream a run of the graph to its end, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as client:

        async def one(i: int) -> None:
            async with gate:
                t0 = time.perf_counter()
                async with client.post("/threads", json={}) as r:
                    thread_id = (await r.json())["thread_id"]
                body = {"assistant_id": "pipeline", "input": {"description": f"benchmark task {i}"}}
                async with client.post(f"/threads/{thread_id}/runs/stream", json=body) as response:
                    assert response.status == 200, await response.text()
                    async for _ in response.content:
                        pass
                latencies.append(time.perf_counter() - t0)

        await one(-1)  # warm-up
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, latencies


def main() -> None:
    problem = ensure_peer()
    if problem:
        print(problem)
        return
    rate, cpu = in_process(600, 50)
    print(f"LangGraph + AsyncSqliteSaver in-process: {rate:.0f} tasks/s, {cpu:.2f} ms CPU per task")
    with PeerServer(0) as server:
        before = server.cpu()
        wall, _ = asyncio.run(over_http(server.url, 600, 16))
        cpu_ms = (server.cpu() - before) / 600 * 1000
        print(f"langgraph dev over HTTP: {600 / wall:.0f} tasks/s, server CPU {cpu_ms:.2f} ms/task")
    with PeerServer(1) as server:
        wall, _ = asyncio.run(over_http(server.url, 100, 100))
        print(f"langgraph dev, 100 at once with the seed's latencies: {wall / 0.4:.2f}x the agent work")


if __name__ == "__main__":
    main()
