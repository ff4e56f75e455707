"""Builds the local system from settings: the embedded store, the in-process runner and executor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from agentic.adapters.local_executor import LocalExecutor
from agentic.adapters.sqlite_store import SQLiteTaskStore
from agentic.agents.catalog import default_registry
from agentic.agents.faults import FaultPlan
from agentic.api.app import create_app
from agentic.api.identity import bearer_identity
from agentic.api.routes import pipeline as pipeline_routes
from agentic.api.ui import router as ui_router
from agentic.local import metrics as local_metrics
from agentic.observability import add_metric_sink, logger, remove_metric_sink
from agentic.pipeline import load_pipeline
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


def build_local_system(settings: Settings) -> LocalSystem:
    store = SQLiteTaskStore(
        settings.database_path,
        busy_timeout_seconds=settings.store_busy_timeout_seconds,
        probe_seconds=settings.health_probe_seconds,
        synchronous=settings.sqlite_synchronous,
    )
    registry = default_registry(settings.agent_latency_scale)
    ops = PipelineOps(store, registry, load_pipeline(settings.pipeline_definition), FaultPlan.parse(settings.faults))
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
    )
    metrics.watch_executor(lambda: executor.waiting, lambda: executor.running)
    service = TaskService(store, executor, store.bus, settings, ops=ops)
    return LocalSystem(settings, store, ops, runner, executor, service, metrics)


def create_local_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    system = build_local_system(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        add_metric_sink(system.metrics)
        # Resume tasks whose runner died (and renew our leases) from now on. The server binds its
        # port before the app starts (see __main__), so a process that cannot serve takes nothing.
        system.executor.start_maintenance()
        watcher = None
        if settings.inbox_dir is not None:
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
            if watcher is not None:
                await watcher.stop()
            await system.executor.shutdown()
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
    app.state.metrics = system.metrics
    app.add_middleware(local_metrics.HttpMetrics, sink=system.metrics)
    app.include_router(local_metrics.router)
    app.include_router(pipeline_routes.router)  # the state machine, drawn by the web view
    app.include_router(ui_router)  # the web view at /ui; / redirects to it
    return app
