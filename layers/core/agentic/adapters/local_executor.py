"""Runs pipelines in-process on asyncio: leases shared through the store, and backpressure.

Ownership: a task is run by whoever holds its lease. ``start`` claims the lease with a conditional
write (exactly one process wins, however many share the store file; with ``first_write``, a task
that runs at once is claimed in the same commit as its run's first write, ``claim_then``); a
background loop renews the leases this process holds and resumes tasks whose lease expired because
their process died. A process that lost a lease (it stalled past the expiry and another took over)
stops that run; the store's fenced writes would refuse its writes anyway.

Backpressure is per process: at most ``max_concurrent`` pipelines run and ``max_queue`` more wait
here, in order, each holding its lease so that no other process runs it meanwhile.

Stopping (SIGTERM, Ctrl-C): ``begin_stop`` ends admissions at once (no step starts any more), and
``shutdown`` interrupts the runs (a step in flight counts as an interrupted attempt, as after a
crash) and hands their leases back, so any live process resumes them at once.

Runs go on the loop that serves requests and streams: their writes go through ``call_store``,
which never makes that loop wait for the store's lock (a write that would wait is made on the
store's writer thread instead). A run admitted by a request starts eagerly (``start_eagerly``): its
first part, up to its first agent call, runs inside that request.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from agentic.adapters.eager_start import start_eagerly
from agentic.errors import Backpressure, StoreUnavailable
from agentic.models import EventType, Lease, NewEvent, TaskState
from agentic.observability import logger
from agentic.ports import LeaseStore
from agentic.service.io import call_store


class RunFn(Protocol):
    """Runs the task under ``lease``; ``first``: what the run's first write returned, made already
    in the claim's commit (``FirstWrite``); what it returns is the runner's business."""

    def __call__(self, task_id: str, lease: Lease, first: Any = None, /) -> Awaitable[object]: ...


#: A run's first write, made in the same commit as the claim that admits it to run at once.
FirstWrite = Callable[[str, Lease], object]
TaskStarter = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]
#: Pages the retention pass frees per store call: each call is one short transaction, and other
#: writes go between the calls.
FREE_PAGES_PER_CALL = 1024


def new_runner_id() -> str:
    """Unique per process start, readable in the store: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LocalExecutor:
    def __init__(
        self,
        run: RunFn,
        store: LeaseStore,
        *,
        max_concurrent: int = 100,
        max_queue: int = 100,
        retry_after_seconds: int = 1,
        lease_seconds: float = 6.0,
        renew_seconds: float = 2.0,
        retention_seconds: float | None = None,
        purge_every_seconds: float = 3600.0,
        runner_id: str | None = None,
        start_task: TaskStarter = start_eagerly,
        first_write: FirstWrite | None = None,
    ) -> None:
        self._run = run
        self._first_write = first_write
        self._start_task = start_task
        self._store = store
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.retry_after_seconds = retry_after_seconds
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retention_seconds = retention_seconds
        self.purge_every_seconds = purge_every_seconds
        self.runner_id = runner_id or new_runner_id()
        self._held: dict[str, Lease] = {}  # every task admitted here (running or waiting) and its lease
        self._running: dict[str, asyncio.Task[None]] = {}
        # Runs whose last event is committed, on their way out: their slots count as free already
        # (``run_ending``), so a client that saw a task end and executes the next one at once is
        # never refused for the slot of a run that has nothing left to do.
        self._ending: set[str] = set()
        self._ending_lock = threading.Lock()
        # The run being started eagerly, while its first part runs (it is not in ``_running`` until
        # that part waits): its last event may be committed in that part.
        self._starting: str | None = None
        self._waiting: deque[str] = deque()
        # Slots kept for starts whose claim (with the run's first write) is being made.
        self._reserved = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._maintenance: asyncio.Task[None] | None = None
        self._next_purge = 0.0
        self._stopping = False
        self._shutdown: asyncio.Future[None] | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def run_ending(self, task_id: str) -> None:
        """The run of ``task_id`` committed its last event (any thread: called by the event bus before
        it wakes the task's streams). Its slot is free from now on, before the run has returned."""
        with self._ending_lock:
            # (an ending written here for a run elsewhere frees nothing here)
            if task_id in self._running or task_id == self._starting:
                self._ending.add(task_id)

    def _occupied(self) -> int:
        with self._ending_lock:
            ending = sum(1 for task_id in self._ending if task_id in self._running)
        return len(self._running) - ending + self._reserved

    def _free_slots(self) -> int:
        return self.max_concurrent - self._occupied() + self.max_queue - len(self._waiting)

    async def start(self, task_id: str) -> None:
        """Claim and run (or queue) the task; a task another runner holds is left to it (attach)."""
        if task_id in self._held:
            return
        if self._stopping:
            raise Backpressure(
                "this server is stopping; the task stays as it is: execute it again (on any live server)",
                self.retry_after_seconds,
            )
        if self._free_slots() <= 0:
            raise Backpressure(
                f"{len(self._running)} tasks are running and {len(self._waiting)} are waiting (the limit); "
                "the task stays pending: execute it again later",
                self.retry_after_seconds,
            )
        if self._first_write is not None and not self._waiting and self._occupied() < self.max_concurrent:
            # It runs at once: the claim and the run's first write are one commit (``claim_then``),
            # and its slot is kept meanwhile (the claim may wait for the store on another thread).
            claimed = None
            self._reserved += 1
            try:
                first_write = functools.partial(self._first_write, task_id)
                claimed = await call_store(
                    self._store, self._store.claim_then, task_id, self.runner_id, self.lease_seconds, first_write
                )
            finally:
                self._reserved -= 1
                if claimed is None:  # not won (or it failed): its slot goes to whoever queued meanwhile
                    self._fill_slots()
            if claimed is not None:
                won, first = claimed
                await self._admit(task_id, won, first, slot_kept=True)
            return
        lease = await call_store(self._store, self._store.claim, task_id, self.runner_id, self.lease_seconds)
        if lease is not None:
            await self._admit(task_id, lease)

    async def _admit(self, task_id: str, lease: Lease, first: object | None = None, *, slot_kept: bool = False) -> None:
        """Run (or queue) a task claimed here. ``slot_kept``: a slot was kept for it while it was
        claimed, so it runs at once; ``first``: its first write was made with the claim."""
        if self._stopping:  # stopped while claiming: hand it back at once
            await call_store(self._store, self._store.release, self.runner_id, [task_id])
            return
        self._held[task_id] = lease
        if slot_kept or (not self._waiting and self._occupied() < self.max_concurrent):  # waiting ones go first
            self._launch(task_id, eager=True, first=first)
            return
        self._waiting.append(task_id)
        await call_store(
            self._store,
            self._store.append_event,
            NewEvent(
                task_id=task_id,
                event_type=EventType.TASK_QUEUED,
                data={"position": len(self._waiting), "running": len(self._running)},
            ),
        )

    def _launch(self, task_id: str, *, eager: bool = False, first: object | None = None) -> None:
        """Start the run of ``task_id``: eagerly when a request or the lease pass admitted it; a run
        that frees a slot launches the next waiting one as a plain task (eager launches there would
        nest one run's end inside another's, as deep as the queue is long)."""
        self._idle.clear()
        coro, name = self._run_and_release(task_id, first), f"task-{task_id}"
        if eager:
            run = self._start_eagerly(task_id, coro, name)
        else:
            run = self._running[task_id] = asyncio.create_task(coro, name=name)
        # A run cancelled before its first step never enters ``_run_and_release`` (asyncio raises
        # CancelledError before its first line), so its ``finally`` would never free the slot.
        run.add_done_callback(functools.partial(self._release_unstarted, task_id))

    def _start_eagerly(self, task_id: str, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        with self._ending_lock:
            self._starting = task_id
        run: asyncio.Task[None] | None = None
        try:
            run = self._start_task(coro, name)
            return run
        finally:
            # Running from here on, in the same step as it stops being the one starting: an end
            # committed on the writer thread meanwhile is counted either way (``run_ending``).
            with self._ending_lock:
                self._starting = None
                if run is not None and not run.done():  # (one that ended has let go already)
                    self._running[task_id] = run

    def _release_unstarted(self, task_id: str, run: asyncio.Future[None]) -> None:
        if self._running.get(task_id) is run:  # still ours: its ``finally`` did not run
            self._release(task_id)

    async def _run_and_release(self, task_id: str, first: object | None = None) -> None:
        try:
            lease = self._held[task_id]
            await (self._run(task_id, lease) if first is None else self._run(task_id, lease, first))
        except StoreUnavailable:
            pass  # logged by the runner; the lease is no longer renewed and expires, then it resumes
        finally:
            self._release(task_id)

    def _release(self, task_id: str) -> None:
        """The run of ``task_id`` is over: free its slot, start whoever waits for one."""
        self._running.pop(task_id, None)
        self._held.pop(task_id, None)
        with self._ending_lock:
            self._ending.discard(task_id)
        self._fill_slots()
        if not self._running:
            self._idle.set()

    def _fill_slots(self) -> None:
        """Start waiting tasks, in order, in the slots that are free."""
        while self._waiting and self._occupied() < self.max_concurrent and not self._stopping:
            self._launch(self._waiting.popleft())

    # --- task control (the store has recorded the change already) -------------------------------

    async def cancel(self, task: TaskState) -> None:
        """Interrupt the run here now (a step in flight is cancelled, not left to finish); its slot
        is free at once. A run in another process stops when its lease renewal finds the task over."""
        run = self._running.get(task.task_id)
        if run is not None:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        elif task.task_id in self._waiting:
            self._waiting.remove(task.task_id)
            self._held.pop(task.task_id, None)

    async def resume(self, task: TaskState) -> None:
        await self._start_soon(task.task_id)

    async def reject(self, task: TaskState, reason: str | None) -> None:
        """Nothing runs while a task waits for approval: the store change is all there is."""

    async def retry(self, task: TaskState, start_at: str) -> None:
        await self._start_soon(task.task_id)

    async def _start_soon(self, task_id: str) -> None:
        try:
            await self.start(task_id)
        except Backpressure:  # its lease is free: whichever process has a slot first runs it
            logger.info("no free slot now; the task starts when one is free", extra={"task_id": task_id})

    # --- leases --------------------------------------------------------------------------------

    def start_maintenance(self) -> None:
        """Renew leases and resume orphaned tasks every ``renew_seconds``, starting now."""
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._maintain(), name="lease-maintenance")

    async def _maintain(self) -> None:
        while not self._stopping:
            try:
                await self.maintain_once()
            except StoreUnavailable as exc:  # leases lapse meanwhile; runs resume once it can write
                logger.warning("lease maintenance skipped: the store is unavailable", extra={"reason": str(exc)})
            except Exception:  # the loop must outlive any one failure
                logger.exception("lease maintenance failed")
            await asyncio.sleep(self.renew_seconds)

    async def maintain_once(self) -> list[str]:
        """Renew held leases, stop runs that lost theirs, resume expired tasks; return those resumed."""
        store = self._store
        if self._held:
            lost = await call_store(store, store.renew, self.runner_id, dict(self._held), self.lease_seconds)
            with self._ending_lock:
                # Ended by its own run, which is on its way out: its lease went with its last write.
                # (That write told ``run_ending`` before any renewal of this process could see it.)
                lost -= self._ending
            for task_id in lost & set(self._held):
                if task_id in self._running:  # still running here: another runner owns it now, or
                    # another process ended the task (a cancel there)
                    logger.warning("lease lost; the run stops", extra={"task_id": task_id})
                    self._running[task_id].cancel()
                elif task_id in self._waiting:
                    self._waiting.remove(task_id)
                    self._held.pop(task_id, None)
        resumed = []
        for task_id in await call_store(store, store.expired, self._free_slots()):
            if self._stopping:
                break
            if task_id in self._held:
                continue  # ours and still running: the renewal above failed earlier, let it finish
            lease = await call_store(store, store.claim, task_id, self.runner_id, self.lease_seconds)
            if lease is not None:
                logger.warning("resuming a task whose runner stopped", extra={"task_id": task_id})
                await self._admit(task_id, lease)
                resumed.append(task_id)
        await self._purge_if_due()
        return resumed

    async def _purge_if_due(self) -> None:
        if self.retention_seconds is None:
            return
        now = asyncio.get_running_loop().time()
        if now < self._next_purge:
            return
        # One batch per maintenance pass, so a large backlog never stalls the loop that renews leases.
        purged = await call_store(self._store, self._store.purge_finished, self.retention_seconds, 500, 1)
        self._next_purge = now if purged >= 500 else now + self.purge_every_seconds
        if purged:
            # Give the space back (SQLite keeps freed pages in the file otherwise), one batch a call.
            freed = 0
            while (batch := await call_store(self._store, self._store.free_pages, FREE_PAGES_PER_CALL, 1)) > 0:
                freed += batch
                if batch < FREE_PAGES_PER_CALL or self._stopping:
                    break
            logger.info("purged finished tasks past the retention", extra={"tasks": purged, "pages_freed": freed})

    async def drain(self) -> None:
        """Wait until nothing runs or waits (benchmarks and tests)."""
        await self._idle.wait()

    def begin_stop(self) -> None:
        """Start no more runs or steps from now on (the first thing a stopping server does)."""
        self._stopping = True

    async def shutdown(self) -> None:
        """Stop: interrupt runs and hand their leases back so any live process resumes them at once.

        A step in flight is cancelled, not waited for: the process that resumes the task counts it
        as an interrupted attempt (``States.Timeout``), as after a crash. Safe to call again.
        """
        self.begin_stop()
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._shutdown)

    async def _stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        self._waiting.clear()
        held = list(self._held)
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if held:
            try:
                await call_store(self._store, self._store.release, self.runner_id, held)
                logger.info("leases handed back", extra={"tasks": held})
            except StoreUnavailable:
                logger.warning("could not release leases; they expire by themselves", extra={"tasks": held})
