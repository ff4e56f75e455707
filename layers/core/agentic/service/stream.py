"""A task's stream: replay its event log after a cursor, then tail it until a terminal event.

One implementation for both wirings; only the ``EventWaiter`` differs (in-process notification for
the local store, adaptive polling for DynamoDB). Besides events, two control lines can appear, both
without a cursor: ``keepalive`` during long idle gaps, and ``stream_timeout`` when the stream must end
before the task does (it names the cursor to resume from).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agentic.models import utcnow
from agentic.ports import EventWaiter, TaskStore
from agentic.service.io import call_store

KEEPALIVE = "keepalive"
STREAM_TIMEOUT = "stream_timeout"
#: Re-read the log at least this often even without a notification (another process may write).
MAX_WAIT_SECONDS = 1.0


def control_line(event_type: str, task_id: str, **data: object) -> str:
    return (
        json.dumps(  # the events' encoding: compact, and the timestamp in UTC with "Z"
            {"event_type": event_type, "task_id": task_id, "timestamp": utcnow().isoformat()[:-6] + "Z", "data": data},
            separators=(",", ":"),
        )
        + "\n"
    )


async def tail_events(
    store: TaskStore,
    waiter: EventWaiter,
    task_id: str,
    after: int = 0,
    *,
    keepalive_seconds: float = 15.0,
    max_seconds: float = 0.0,
    finished: bool = False,
) -> AsyncIterator[str]:
    """NDJSON lines of the task's events after ``after``, until its terminal event.

    ``finished``: the task had already ended when the stream began, so an empty read means the
    client has seen everything (it resumed at or past the terminal event) and the stream ends.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds if max_seconds else None
    last_sent = loop.time()
    while True:
        events = await call_store(store, store.read_events, task_id, after)
        if events:
            # Events read together go out in one write: each is still sent the moment it is seen.
            chunk = []
            for event in events:
                chunk.append(event.to_line())
                after = event.cursor
                if event.event_type.is_terminal:
                    yield "".join(chunk)
                    return
            yield "".join(chunk)
        now = loop.time()
        if events:
            last_sent = now
            continue
        if finished:
            return
        if deadline is not None and now >= deadline:
            yield control_line(
                STREAM_TIMEOUT,
                task_id,
                cursor=after,
                message="the stream reached its time limit before the task finished; re-attach to continue",
                resume=f"/tasks/{task_id}/events?after={after}",
            )
            return
        if now - last_sent >= keepalive_seconds:
            yield control_line(KEEPALIVE, task_id, cursor=after)
            last_sent = now
        timeout = min(MAX_WAIT_SECONDS, keepalive_seconds - (now - last_sent))
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        await waiter.wait(task_id, after, max(timeout, 0.0))
