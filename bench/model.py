"""A model-backed task through the real server: what streaming 2,000 tokens costs. Prints; asserts nothing.

    python -m bench.model [--tasks N] [--concurrency C]      (part of `make bench`)

`python -m agentic.local` runs with MODEL_PROVIDER=openai against a local scripted Chat Completions
server (tests/fake_openai.py, in this process) whose writer answer is 2,000 tokens, one every
millisecond. For each task, read over HTTP as a client would:

- events written per task (and how many of them carry text deltas),
- the server's CPU time per 1,000 streamed tokens (utime + stime of the server process, /proc),
- the delay from the model sending its first token to the client reading the first delta (p50, p99).
"""

from __future__ import annotations

import os

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.run import pct
from tests.e2e.server import LocalServer
from tests.fake_openai import Answer, FakeOpenAI

TOKENS = 2000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(url: str, n: int, concurrency: int) -> list[dict[str, float]]:
    gate = asyncio.Semaphore(concurrency)
    results: list[dict[str, float]] = []
    async with aiohttp.ClientSession(base_url=url) as client:

        async def one(i: int) -> None:
            async with gate:
                marker = f"bench-model-{i}-{time.monotonic_ns()}"
                async with client.post("/tasks", json={"description": f"Explain backoff ({marker})"}) as r:
                    task_id = (await r.json())["task_id"]
                events = deltas = 0
                first_delta: float | None = None
                async with client.post(f"/tasks/{task_id}/execute") as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        events += "cursor" in event
                        if event.get("event_type") == "partial_output" and "delta" in event.get("data", {}):
                            deltas += 1
                            first_delta = first_delta or time.monotonic()
                results.append({"marker": marker, "events": events, "deltas": deltas, "first_delta": first_delta or 0})

        await asyncio.gather(*(one(i) for i in range(n)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentic-bench-model-"))
    with FakeOpenAI() as fake:
        fake.default["stream"] = Answer.tokens(TOKENS, delay_between=0.001)
        env = {
            "MODEL_PROVIDER": "openai",
            "MODEL_BASE_URL": fake.base_url,
            "MODEL_ID": "bench",
            "AGENT_LATENCY_SCALE": "0",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        with LocalServer(tmp / "model.db", **env) as server:
            assert server.proc is not None
            asyncio.run(run(server.url, 2, 2))  # warm-up
            cpu0 = cpu_seconds(server.proc.pid)
            t0 = time.perf_counter()
            results = asyncio.run(run(server.url, args.tasks, args.concurrency))
            wall = time.perf_counter() - t0
            cpu = cpu_seconds(server.proc.pid) - cpu0
        writer_calls = {s.body["messages"][-1]["content"]: s for s in fake.seen("stream") if s.sent_at}
    delays = []
    for result in results:
        call = next((c for text, c in writer_calls.items() if result["marker"] in text), None)
        if call is not None and result["first_delta"]:
            delays.append(result["first_delta"] - call.sent_at[0])
    events = [r["events"] for r in results]
    deltas = [r["deltas"] for r in results]
    print(f"== a model-backed task: the writer streams {TOKENS} tokens (1 ms apart), {args.tasks} tasks")
    print(
        f"events written per task: {sum(events) / len(events):.1f} "
        f"(of them text deltas: {sum(deltas) / len(deltas):.1f}; {TOKENS} tokens unbatched would be {TOKENS})"
    )
    print(f"server CPU per 1,000 streamed tokens: {cpu / (args.tasks * TOKENS / 1000) * 1000:.2f} ms")
    if delays:
        print(
            f"model's first token -> client's first delta: p50 {pct(delays, 50) * 1000:.1f} ms, "
            f"p99 {pct(delays, 99) * 1000:.1f} ms"
        )
    print(f"({args.tasks} tasks in {wall:.1f} s, {args.concurrency} at a time)")


if __name__ == "__main__":
    main()
