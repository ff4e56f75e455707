"""Builds the local system from settings: the embedded store, the in-process runner and executor."""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.model_clients import build_model_client
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.catalog import registry_for
from agentic.api.app import create_app
from agentic.api.identity import bearer_identity
from agentic.api.routes import pipeline as pipeline_routes
from agentic.api.ui import router as ui_router
from agentic.knowledge.base import KnowledgeBase
from agentic.knowledge.builtin import shared_builtin_index
from agentic.knowledge.folder import FolderKnowledge
from agentic.local import metrics as local_metrics
from agentic.observability import add_metric_sink, logger, remove_metric_sink
from agentic.pipeline import load_pipeline
from agentic.ports import ModelClient
from agentic.service.io import call_store
from agentic.service.pipeline_ops import PipelineOps
from agentic.service.runner import LocalRunner
from agentic.service.tasks import TaskService
from agentic.settings import Settings


@dataclass
class LocalSystem:
    settings: Settings
    store: SQLiteTaskStore
    ops: PipelineOps
    runner: LocalRunner
    executor: LocalExecutor
    service: TaskService
    metrics: local_metrics.PrometheusSink
    model: ModelClient | None = None
    #: What the retriever searches: the KNOWLEDGE_DIR folder's index, or the built-in documents.
    knowledge: KnowledgeBase | None = None


def local_knowledge(settings: Settings) -> KnowledgeBase:
    if settings.knowledge_dir is None:
        return shared_builtin_index(settings.knowledge_min_score)
    return FolderKnowledge(
        settings.knowledge_dir,
        settings.knowledge_index_file(),
        max_file_bytes=settings.knowledge_max_file_bytes,
        min_score=settings.knowledge_min_score,
        passage_words=settings.knowledge_passage_words,
        busy_timeout_seconds=settings.store_busy_timeout_seconds,
    )


def build_local_system(settings: Settings) -> LocalSystem:
    """The store, the runner and the executor; runs go on the caller's loop (see ``call_store``)."""
    store = SQLiteTaskStore(
        settings.database_path,
        busy_timeout_seconds=settings.store_busy_timeout_seconds,
        probe_seconds=settings.health_probe_seconds,
        synchronous=settings.sqlite_synchronous,
        group_commit=settings.sqlite_group_commit,
    )
    knowledge = local_knowledge(settings)
    model = build_model_client(settings)
    ops = PipelineOps.configured(
        store,
        registry_for(settings, model, knowledge),
        load_pipeline(settings.pipeline_definition),
        settings,
        io=functools.partial(call_store, store),
    )
    runner = LocalRunner(ops, time_scale=settings.retry_time_scale, jitter=settings.local_retry_jitter)
    metrics = local_metrics.PrometheusSink()
    executor = LocalExecutor(
        metrics.timed(runner.run, store),
        store,
        max_concurrent=settings.max_concurrent_executions,
        max_queue=settings.max_queue_size,
        retry_after_seconds=settings.retry_after_seconds,
        lease_seconds=settings.lease_seconds,
        renew_seconds=settings.lease_renew_seconds,
        retention_seconds=settings.retention_days * 86400 if settings.retention_days else None,
        # Claimed and started in one commit: runs start eagerly (``adapters/eager_start.py``), so the
        # first write in the request does not make the runs of a burst start their agents together.
        first_write=runner.first_write,
    )
    metrics.watch_executor(lambda: executor.waiting, lambda: executor.running)
    store.bus.on_run_end = executor.run_ending
    service = TaskService(store, executor, store.bus, settings, ops=ops)
    return LocalSystem(settings, store, ops, runner, executor, service, metrics, model, knowledge)


def begin_stop(system: LocalSystem) -> asyncio.Future[None]:
    """What a stop signal does first: no step starts any more, every open stream ends now with a
    ``server_stopping`` line (clients re-attach), and the runs are interrupted and their leases
    handed back. Without this uvicorn would wait for the streams to close before stopping anything."""
    system.executor.begin_stop()
    system.store.bus.stop()
    return asyncio.ensure_future(system.executor.shutdown())


def on_stop_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on the loop at SIGINT/SIGTERM, before the handler in place (uvicorn's,
    which then stops the server as usual); return how to undo it. Signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        prior = signal.getsignal(sig)

        def handler(signum: int, frame: object, prior: object = prior) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(callback)
            if callable(prior):
                prior(signum, frame)

        installed[sig] = prior
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, prior in installed.items():
            signal.signal(sig, prior)

    return undo


def create_local_app(settings: Settings | None = None, *, worker: int = 0) -> FastAPI:
    """The local server's app. ``worker``: its index among the server's processes (``WORKERS``); only
    worker 0 follows the KNOWLEDGE_DIR folder and the INBOX_DIR (the others search the same index
    file, and the inbox's files are each taken once)."""
    settings = settings or Settings()
    system = build_local_system(settings)
    follows_folders = worker == 0

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        add_metric_sink(system.metrics)
        # Resume tasks whose runner died (and renew our leases) from now on. The server binds its
        # port before the app starts (see __main__), so a process that cannot serve takes nothing.
        system.executor.start_maintenance()
        if isinstance(system.knowledge, FolderKnowledge) and follows_folders:  # follow KNOWLEDGE_DIR
            system.knowledge.start(settings.knowledge_poll_seconds)
        stopping: list[asyncio.Future[None]] = []
        undo_signals = on_stop_signals(lambda: stopping.append(begin_stop(system)))
        watcher = None
        if settings.inbox_dir is not None and follows_folders:
            from agentic.local.inbox import InboxWatcher

            watcher = InboxWatcher(
                system.service,
                settings.inbox_dir,
                settings.default_owner,
                poll_seconds=settings.inbox_poll_seconds,
                max_bytes=settings.max_document_bytes,
                settle_seconds=settings.inbox_settle_seconds,
            )
            watcher.start()
        logger.info("local server ready", extra={"database": str(settings.database_path)})
        try:
            yield
        finally:
            undo_signals()
            if watcher is not None:
                await watcher.stop()
            await system.executor.shutdown()
            if system.model is not None:
                await system.model.aclose()
            if isinstance(system.knowledge, FolderKnowledge):
                await asyncio.to_thread(system.knowledge.close)
            system.store.close()
            remove_metric_sink(system.metrics)

    app = create_app(
        system.service,
        bearer_identity(settings),
        max_request_bytes=settings.max_request_bytes,
        lifespan=lifespan,
        bearer_auth=True,
        offline_docs=True,
    )
    app.state.system = system
    app.state.knowledge = system.knowledge
    app.state.metrics = system.metrics
    app.add_middleware(local_metrics.HttpMetrics, sink=system.metrics)
    app.include_router(local_metrics.router)
    app.include_router(pipeline_routes.router)  # the state machine, drawn by the web view
    app.include_router(ui_router)  # the web view at /ui; / redirects to it
    return app
