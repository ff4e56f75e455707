"""The peer for ``bench.peer``: the same three-agent pipeline as a LangGraph graph.

Runs inside the peer's own virtualenv (``.venv-peer``), never the project's. Imported by ``langgraph
dev`` (``graph``), or run as a script for the in-process figure (LangGraph + SQLite checkpointer):

    .venv-peer/bin/python bench/peer_graph.py TASKS CONCURRENCY DB_PATH
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

#: The seed's agent latencies (retriever 0.1 s, analyzer 0.2 s, writer 0.1 s), times PEER_LATENCY_SCALE.
SCALE = float(os.environ.get("PEER_LATENCY_SCALE", "0"))


class State(TypedDict, total=False):
    description: str
    context: str
    analysis: str
    report: str


async def retriever(state: State) -> State:
    await asyncio.sleep(0.1 * SCALE)
    return {"context": f"[1] documents about: {state['description']}\n" * 8}


async def analyzer(state: State) -> State:
    await asyncio.sleep(0.2 * SCALE)
    return {"analysis": "Plan: retrieve, analyse, write.\n" + state["context"][:800]}


async def writer(state: State) -> State:
    await asyncio.sleep(0.1 * SCALE)
    return {"report": f"# Report\n\n{state['analysis']}\n\n{state['context'][:600]}"}


def build() -> StateGraph:
    builder = StateGraph(State)
    builder.add_node("retriever", retriever)
    builder.add_node("analyzer", analyzer)
    builder.add_node("writer", writer)
    builder.add_edge(START, "retriever")
    builder.add_edge("retriever", "analyzer")
    builder.add_edge("analyzer", "writer")
    builder.add_edge("writer", END)
    return builder


graph = build().compile()  # langgraph dev brings its own checkpointer


async def in_process(n: int, concurrency: int, path: str) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        app = build().compile(checkpointer=saver)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                config = {"configurable": {"thread_id": str(uuid.uuid4())}}
                await app.ainvoke({"description": f"benchmark task {i}"}, config)  # LangGraph's default durability

        await one(-1)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
        print(f"{n / wall:.1f} {(time.process_time() - cpu0) / n * 1000:.3f}")


if __name__ == "__main__":
    asyncio.run(in_process(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
