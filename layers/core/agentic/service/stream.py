"""A task's stream: replay its event log after a cursor, then tail it until the task ends.

One implementation for both wirings; only the ``EventWaiter`` differs (in-process notification for
the local store, adaptive polling for DynamoDB). Besides events, control lines can appear, all
without a cursor: ``keepalive`` during long idle gaps, ``task_pending`` first when the task has not
been started (the stream then waits for someone to execute it), ``stream_timeout`` when the stream
must end before the task does, ``store_unavailable`` when the store cannot be read and
``server_stopping`` when the server stops (SIGTERM, Ctrl-C) while the task goes on (all three name
the cursor to resume from and the path to re-attach to, on this server once it is back or on any
other sharing its store), and ``stream_paused`` when the task waits for a person and the wiring would
rather not hold a connection meanwhile (``pause_seconds``: on AWS a held stream is a Lambda billed by
the second): it names the cursor and ``retry_after_seconds``, and the clients come back by themselves.

A stream always ends with its task: when the log shows nothing new, the task's status is checked
(at most every ``STATUS_CHECK_SECONDS``), so a client that resumed at or past the terminal event is
not left waiting.

Reads and consistency: the reads that follow a running task ask for ``consistent=False`` (on
DynamoDB an eventually consistent GetItem, half the price of a consistent one; a polling stream's
reads are nearly all of a task's reads). Such a read may lag, even behind a read before it, but it
returns a gapless, in-order piece of the log after the cursor (``TaskStore.read_events``), so events
go out once, in order, only possibly a round later. Every read whose EMPTY answer ends or pauses the
stream is consistent: once the task is known to have ended (``finished``: the status read, which is
consistent, said so, or the caller did) an empty read means the client has everything, which only a
consistent read can tell; likewise the first read of a stream that would pause at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agentic.errors import StoreUnavailable
from agentic.models import EventType, TaskStatus, utcnow
from agentic.ports import EventWaiter, TaskStore
from agentic.service.io import call_store


class LastChunk(str):
    """A chunk after which the stream ends (its task's end): a response can end its body with it."""


KEEPALIVE = "keepalive"
STREAM_TIMEOUT = "stream_timeout"
TASK_PENDING = "task_pending"
STORE_UNAVAILABLE = "store_unavailable"
SERVER_STOPPING = "server_stopping"
#: How long a client whose stream ended with ``server_stopping`` waits before it re-attaches.
REATTACH_AFTER_SECONDS = 1
STREAM_PAUSED = "stream_paused"
#: Re-read the log at least this often even without a notification (another process may write).
MAX_WAIT_SECONDS = 1.0
#: How often an idle stream asks whether its task ended with an event before its cursor (a client
#: that resumed past the end); after IDLE_SECONDS without events, every IDLE_STATUS_CHECK_SECONDS.
STATUS_CHECK_SECONDS = 1.0
IDLE_SECONDS = 10.0
IDLE_STATUS_CHECK_SECONDS = 10.0
#: The pause after a wake-up that found nothing new, so a stream can never spin.
MIN_IDLE_SECONDS = 0.05


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
    not_started: bool = False,
    max_wait_seconds: float = MAX_WAIT_SECONDS,
    pause_seconds: float = 0.0,
    awaiting: bool = False,
) -> AsyncIterator[str]:
    """NDJSON lines of the task's events after ``after``, until its terminal event or its end.

    ``finished``: the task had already ended when the stream began, so an empty read means the
    client has seen everything and the stream ends. ``not_started``: the task is pending and nobody
    executed it; the stream says so in a ``task_pending`` line, then waits for the start.
    ``awaiting``: the caller read the task waiting for a person just now, so with ``pause_seconds``
    a first read with nothing new pauses at once (a client coming back is not held a status round).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds if max_seconds else None
    last_sent = last_new = loop.time()
    # The caller read the task just now (``finished`` says whether it had ended): the first check
    # is due a round later, not before the first read (a thread hop per stream saved).
    next_status_check = loop.time() + STATUS_CHECK_SECONDS
    woke_early = False
    # The waiter's memory of committed events, each with its line (encoded once, at its commit).
    recent = getattr(waiter, "recent_lines", None)
    holds_after = getattr(waiter, "holds_after", None)
    woken = False  # the last wait ended with a notification, not at its timeout
    # The last events came from the waiter's memory; at the start, when it holds every event of
    # this process after ``after`` (a task it has just claimed), the first read of the log is saved.
    from_memory = bool(recent is not None and holds_after is not None and holds_after(task_id, after))
    if not_started:
        yield control_line(
            TASK_PENDING,
            task_id,
            cursor=after,
            message="the task has not been started; this stream waits until someone executes it",
            execute=f"/tasks/{task_id}/execute",
        )
    while True:
        if getattr(waiter, "stopping", False):  # checked each round: a busy log must not hold the stop up
            yield control_line(
                SERVER_STOPPING,
                task_id,
                cursor=after,
                message="this server is stopping; the task goes on: re-attach to continue",
                resume=f"/tasks/{task_id}/events?after={after}",
                retry_after=REATTACH_AFTER_SECONDS,
            )
            return
        try:
            # Events a local commit handed to the waiter come from memory (no read, no thread hop);
            # anything else from the log (another process's writes, a timeout, a stream far behind).
            kept = recent(task_id, after) if recent is not None and (woken or from_memory) else []
            events = [event for event, _ in kept]
            if events:
                from_memory = True
            elif from_memory:
                from_memory = False  # memory had nothing more: wait (the log is read at a gap or a timeout)
            else:
                # A read whose empty answer decides something (the stream ends or pauses) must see
                # every committed event; the polling reads may lag (eventually consistent on
                # DynamoDB, half the price): a lagging read only shows the events a round later.
                consistent = finished or (awaiting and pause_seconds > 0)
                events = await call_store(store, store.read_events, task_id, after, consistent=consistent)
            if not events and awaiting and pause_seconds:
                yield _paused(task_id, after, pause_seconds)
                return
            awaiting = False  # only the first read follows the caller's look at the status
            if not events and not finished and loop.time() >= next_status_check:
                idle = loop.time() - last_new >= IDLE_SECONDS
                next_status_check = loop.time() + (IDLE_STATUS_CHECK_SECONDS if idle else STATUS_CHECK_SECONDS)
                task = await call_store(store, store.get, task_id)
                if task is None or task.status.is_terminal:
                    # Its terminal event is in the log: past our cursor (read it) or not (we are done).
                    # Consistently: a lagging read could miss it, and the stream would end without it.
                    finished = True
                    events = await call_store(store, store.read_events, task_id, after, consistent=True)
                elif pause_seconds and task.status is TaskStatus.AWAITING_APPROVAL:
                    yield _paused(task_id, after, pause_seconds)
                    return
        except StoreUnavailable as exc:
            yield control_line(
                STORE_UNAVAILABLE,
                task_id,
                cursor=after,
                message=f"{exc}; re-attach to continue",
                resume=f"/tasks/{task_id}/events?after={after}",
            )
            return
        if events:
            # Events read together go out in one write: each is still sent the moment it is seen.
            chunk = []
            for i, event in enumerate(events):
                chunk.append(kept[i][1] if kept else event.to_line())
                after = event.cursor
                if event.event_type is EventType.TASK_RETRIED:
                    finished = False  # the task runs again: follow it to its new end
                # The end, unless a retry follows it (a retried task's log holds earlier endings).
                retried = i + 1 < len(events) and events[i + 1].event_type is EventType.TASK_RETRIED
                if event.event_type.is_terminal and not retried:
                    yield LastChunk("".join(chunk))
                    return
            if pause_seconds and events[-1].event_type is EventType.APPROVAL_REQUESTED:
                chunk.append(_paused(task_id, after, pause_seconds))
                yield LastChunk("".join(chunk))
                return
            yield "".join(chunk)
            last_sent = last_new = loop.time()
            woke_early = False
            continue
        if finished:
            return
        now = loop.time()
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
        if woke_early:
            # A notification that led to nothing to read: never turn that into a busy loop.
            await asyncio.sleep(MIN_IDLE_SECONDS)
        # A keepalive goes out at the first wake-up after it is due (a little late at most): waking
        # exactly for it would cost a polling waiter one more read each time.
        timeout = min(max_wait_seconds, keepalive_seconds)
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        started_wait = loop.time()
        await waiter.wait(task_id, after, max(timeout, 0.0))
        waited = loop.time() - started_wait
        woke_early = waited < min(timeout, max_wait_seconds) / 2
        woken = waited < timeout


def _paused(task_id: str, after: int, pause_seconds: float) -> str:
    return control_line(
        STREAM_PAUSED,
        task_id,
        cursor=after,
        reason="awaiting_approval",
        message="the task waits for a person; this stream ends meanwhile: re-attach after retry_after_seconds",
        retry_after_seconds=pause_seconds,
        resume=f"/tasks/{task_id}/events?after={after}",
    )
