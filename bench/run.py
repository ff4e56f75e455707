"""Benchmarks: the in-process runner and the HTTP API. Prints figures; asserts nothing.

    make bench            (or: python -m bench.run [--tasks N] [--concurrency C])

1. No agent latency (AGENT_LATENCY_SCALE=0): tasks/s and p50/p99 end-to-end latency, in-process
   and through HTTP (create + execute, the NDJSON stream read to its last line).
2. The seed's latencies (scale 1, 400 ms of agent work per task): the ratio of end-to-end time to
   those 400 ms for one task and for 100 concurrent tasks.
3. The issue-17 table, every row measured in this run beside the peer (LangGraph, installed into
   its own ``.venv-peer`` by ``bench.peer``; ``--no-peer`` skips it): the server's CPU per task over
   HTTP (600 tasks from 16 clients), 100 tasks at once with the seed's latencies (one server
   process, and ``WORKERS`` = the machine's cores), in-process throughput, and an idle server's CPU
   per second. Import times: ``make coldstart``.
"""

from __future__ import annotations

import os

# Logs at INFO would measure the terminal; the benchmark's servers log warnings only.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from agentic.local.wiring import build_local_system
from agentic.settings import Settings
from bench import peer
from bench.proc import tree_cpu_seconds
from tests.e2e.server import LocalServer

AGENT_WORK_SECONDS = 0.4  # retriever 0.1 + analyzer 0.2 + writer 0.1


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def report(label: str, n: int, wall: float, latencies: list[float]) -> None:
    print(
        f"{label:<44} {n / wall:>8.0f} tasks/s   p50 {pct(latencies, 50) * 1000:7.1f} ms   "
        f"p99 {pct(latencies, 99) * 1000:7.1f} ms   ({n} tasks in {wall:.2f} s)"
    )


def settings(tmp: Path, scale: float, group_commit: bool = False) -> Settings:
    return Settings(
        database_path=tmp / f"bench-{scale}-{time.monotonic_ns()}.db",
        agent_latency_scale=scale,
        max_concurrent_executions=10_000,
        max_queue_size=10_000,
        sqlite_group_commit=group_commit,
    )


async def in_process(
    tmp: Path, scale: float, n: int, concurrency: int, *, group_commit: bool = False
) -> tuple[float, list[float]]:
    """Create and run ``n`` tasks through the service and the local runner, ``concurrency`` at a time."""
    system = build_local_system(settings(tmp, scale, group_commit))
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            task, _ = await system.service.create("bench", f"benchmark task {i} on retries and streaming")
            await system.runner.run(task.task_id)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    system.store.close()
    return wall, latencies


async def over_http(url: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Create + execute through HTTP, reading each NDJSON stream line by line to its end.

    aiohttp as the client: httpx costs ~6 ms of CPU per task here and would measure itself.
    """
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as client:

        async def one(i: int) -> None:
            async with gate:
                t0 = time.perf_counter()
                async with client.post("/tasks", json={"description": f"benchmark task {i} on streaming"}) as r:
                    task_id = (await r.json())["task_id"]
                last = b""
                async with client.post(f"/tasks/{task_id}/execute") as response:
                    async for line in response.content:
                        last = line.strip() or last
                assert json.loads(last)["event_type"] == "task_completed", last
                latencies.append(time.perf_counter() - t0)

        await one(-1)  # warm-up
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, latencies


#: The issue's measure: 600 tasks from 16 clients, no agent latency.
TABLE_TASKS = 600
TABLE_CLIENTS = 16
IDLE_SECONDS = 10.0


def server_env(scale: str) -> dict[str, str]:
    return {
        "AGENT_LATENCY_SCALE": scale,
        "MAX_CONCURRENT_EXECUTIONS": "10000",
        "MAX_QUEUE_SIZE": "10000",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }


def table(tmp: Path, with_peer: bool, rounds: int = 3) -> None:
    """Every row of the issue's table, this project beside the peer, measured now (ratios).

    Both servers run side by side and each measure alternates between them ``rounds`` times
    (medians), so a change in the machine's load weighs on both alike.
    """
    # The interpreter matters: from Python 3.12 a run starts eagerly in the request that admits it.
    python = ".".join(map(str, sys.version_info[:3]))
    print(f"\n== the issue's table, measured in this run ({rounds} alternating rounds, medians; Python {python})")
    problem = peer.ensure_peer() if with_peer else "skipped (--no-peer)"
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(LocalServer(tmp / "table.db", **server_env("0")))
        ours_seed = stack.enter_context(LocalServer(tmp / "table-seed.db", **server_env("1")))
        # One worker process per core (WORKERS, see the README's "Several processes"), for 100 at once.
        cores = os.cpu_count() or 1
        ours_workers = None
        if cores > 1:
            ours_workers = stack.enter_context(
                LocalServer(tmp / "table-workers.db", **server_env("1"), WORKERS=str(cores))
            )
        theirs = theirs_seed = None
        if problem is None:
            theirs = stack.enter_context(peer.PeerServer(0))
            theirs_seed = stack.enter_context(peer.PeerServer(1))
        assert ours.proc is not None
        asyncio.run(over_http(ours.url, 50, TABLE_CLIENTS))  # warm-up
        asyncio.run(over_http(ours_seed.url, 100, 100))
        if ours_workers is not None:
            asyncio.run(over_http(ours_workers.url, 100, 100))
        if theirs is not None and theirs_seed is not None:
            asyncio.run(peer.over_http(theirs.url, 50, TABLE_CLIENTS))
            asyncio.run(peer.over_http(theirs_seed.url, 100, 100))
        time.sleep(1.0)
        before = tree_cpu_seconds(ours.proc.pid)
        time.sleep(IDLE_SECONDS)
        idle_ms = (tree_cpu_seconds(ours.proc.pid) - before) / IDLE_SECONDS * 1000

        cpu: dict[str, list[float]] = {"ours": [], "peer": []}
        at_once: dict[str, list[float]] = {"ours": [], "workers": [], "peer": []}
        rate: dict[str, list[float]] = {"ours": [], "peer": [], "grouped": []}
        for _ in range(rounds):
            before = tree_cpu_seconds(ours.proc.pid)
            asyncio.run(over_http(ours.url, TABLE_TASKS, TABLE_CLIENTS))
            cpu["ours"].append((tree_cpu_seconds(ours.proc.pid) - before) / TABLE_TASKS * 1000)
            wall, _ = asyncio.run(over_http(ours_seed.url, 100, 100))
            at_once["ours"].append(wall / AGENT_WORK_SECONDS)
            if ours_workers is not None:
                wall, _ = asyncio.run(over_http(ours_workers.url, 100, 100))
                at_once["workers"].append(wall / AGENT_WORK_SECONDS)
            wall, _ = asyncio.run(in_process(tmp, 0, TABLE_TASKS, 50))
            rate["ours"].append(TABLE_TASKS / wall)
            wall, _ = asyncio.run(in_process(tmp, 0, TABLE_TASKS, 50, group_commit=True))
            rate["grouped"].append(TABLE_TASKS / wall)
            if theirs is not None and theirs_seed is not None:
                before = theirs.cpu()
                asyncio.run(peer.over_http(theirs.url, TABLE_TASKS, TABLE_CLIENTS))
                cpu["peer"].append((theirs.cpu() - before) / TABLE_TASKS * 1000)
                wall, _ = asyncio.run(peer.over_http(theirs_seed.url, 100, 100))
                at_once["peer"].append(wall / AGENT_WORK_SECONDS)
                rate["peer"].append(peer.in_process(TABLE_TASKS, 50)[0])

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    ours_cpu, peer_cpu = median(cpu["ours"]) or 0.0, median(cpu["peer"])
    ours_100, peer_100 = median(at_once["ours"]) or 0.0, median(at_once["peer"])
    workers_100 = median(at_once["workers"])
    ours_rate, peer_rate = median(rate["ours"]) or 0.0, median(rate["peer"])
    grouped_rate = median(rate["grouped"]) or 0.0

    def ratio(ours: float, theirs: float | None) -> str:
        return f"{ours / theirs:.2f}x the peer" if theirs else "-"

    rows = [
        (
            "server CPU per task over HTTP",
            f"{ours_cpu:.2f} ms",
            f"{peer_cpu:.2f} ms" if peer_cpu else "-",
            ratio(ours_cpu, peer_cpu),
            "<= 0.35x the peer",
        ),
        (
            "100 tasks at once, seed latencies, HTTP",
            f"{ours_100:.2f}x the agent work",
            f"{peer_100:.2f}x" if peer_100 else "-",
            "",
            "<= 1.4x the agent work",
        ),
        (
            f"  the same, WORKERS={cores} (a process per core)",
            f"{workers_100:.2f}x the agent work" if workers_100 else "- (one core)",
            "",
            "",
            "<= 1.4x the agent work",
        ),
        (
            "in-process throughput",
            f"{ours_rate:.0f} tasks/s",
            f"{peer_rate:.0f} tasks/s" if peer_rate else "-",
            ratio(ours_rate, peer_rate),
            ">= 2x the peer",
        ),
        (
            "  the same, SQLITE_GROUP_COMMIT=true",
            f"{grouped_rate:.0f} tasks/s",
            "",
            ratio(grouped_rate, peer_rate),
            "(an option: see README)",
        ),
        ("idle server CPU", f"{idle_ms:.2f} ms/s", "", "", "<= 0.5 ms/s"),
    ]
    header = ("measure", "this project", "peer", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if problem:
        print(f"peer: {problem}; compare with the issue's figures instead")
    print("imports (agent and API handlers as a ratio to `import boto3`): make coldstart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-peer", action="store_true", help="measure this project only")
    parser.add_argument("--table-only", action="store_true", help="only the issue's table")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentic-bench-"))
    if args.table_only:
        table(tmp, not args.no_peer)
        return

    print("== no agent latency (AGENT_LATENCY_SCALE=0)")
    wall, lat = asyncio.run(in_process(tmp, 0, args.tasks, args.concurrency))
    report("in-process runner", args.tasks, wall, lat)
    with LocalServer(
        tmp / "http.db",
        AGENT_LATENCY_SCALE="0",
        MAX_CONCURRENT_EXECUTIONS="10000",
        MAX_QUEUE_SIZE="10000",
        POWERTOOLS_LOG_LEVEL="WARNING",
    ) as server:
        wall, lat = asyncio.run(over_http(server.url, args.tasks, args.concurrency))
        report(f"HTTP, one server process, {args.concurrency} clients", args.tasks, wall, lat)

    print(f"\n== seed latencies (AGENT_LATENCY_SCALE=1: {AGENT_WORK_SECONDS * 1000:.0f} ms of agent work per task)")
    for n in (1, 100):
        wall, lat = asyncio.run(in_process(tmp, 1, n, n))
        print(
            f"in-process, {n:>3} concurrent: all done in {wall * 1000:6.0f} ms = "
            f"{wall / AGENT_WORK_SECONDS:.3f}x the agent work (p50 {pct(lat, 50) / AGENT_WORK_SECONDS:.3f}x)"
        )
    with LocalServer(tmp / "http-seed.db", AGENT_LATENCY_SCALE="1", POWERTOOLS_LOG_LEVEL="WARNING") as server:
        for n in (1, 100):
            wall, lat = asyncio.run(over_http(server.url, n, n))
            print(
                f"HTTP,       {n:>3} concurrent: all done in {wall * 1000:6.0f} ms = "
                f"{wall / AGENT_WORK_SECONDS:.3f}x the agent work (p50 {pct(lat, 50) / AGENT_WORK_SECONDS:.3f}x)"
            )
    print("\ntargets: one task <= 1.05x, 100 concurrent <= 1.3x, >= 500 tasks/s through HTTP with no latency")
    table(tmp, not args.no_peer)


if __name__ == "__main__":
    main()
