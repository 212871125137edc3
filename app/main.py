"""The application factory and its lifespan: long-lived objects are built once, here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.api import ask, chat, collections, documents, feedback, health, jobs, models, queries, retrieve, web
from app.api import metrics as metrics_api
from app.body_limit import MULTIPART_OVERHEAD, BodySizeLimit
from app.components import Components, build_components
from app.config import Settings
from app.errors import install_error_handlers
from app.request_budget import DatabaseWaitBudget
from app.services import models as models_service
from app.services.health import IndexCheck, queue_depth
from ingest.reconcile import reconcile_all

logger = logging.getLogger(__name__)


def _warm_up(app: FastAPI, built: Components) -> None:
    began = time.monotonic()
    try:
        built.llm.warm_up()
    except Exception as error:
        logger.exception("the chat model could not be prepared; /readyz stays not ready")
        app.state.startup_checks = {"chat_model": f"failed: {type(error).__name__}; see the server log"}
        return
    logger.info("chat model %s ready in %.1f s", built.llm.default_model, time.monotonic() - began)
    app.state.startup_checks = {}
    app.state.ready = True


def create_app(settings: Settings | None = None, components: Components | None = None) -> FastAPI:
    """Build the API. ``components`` lets tests hand in objects built on fakes."""
    settings = settings or (components.settings if components else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = components if components is not None else await run_in_threadpool(build_components, settings)
        # The index is a cache of SQL: make it agree before the first search.
        reports = await run_in_threadpool(
            partial(reconcile_all, embedding_model=built.embedder.name), built.session_factory, built.store
        )
        for report in reports:
            if report.action != "ok":
                logger.warning("index reconciled: %s", report)
        if settings.models.adapters:
            await run_in_threadpool(models_service.register_configured_adapters, built, settings.models.adapters)
        for note in await built.facts.start():  # the MCP servers' tools, listed once
            logger.warning("%s", note)
        app.state.components = built
        app.state.index_check = IndexCheck(built)
        read_queue = partial(queue_depth, built)
        metrics.QUEUE_DEPTH.watch(read_queue)
        built.answer_log.start()
        if settings.worker.in_process:
            built.worker.start()
        # Requests are served from here on; /readyz turns green once the chat model is ready too, so that the
        # first question does not pay for preparing it (minutes on a first start).
        app.state.startup_checks = {"chat_model": "preparing (first start: about 2 minutes and 1.2 GB)"}
        threading.Thread(target=_warm_up, args=(app, built), name="wenda-warm-up", daemon=True).start()
        try:
            yield
        finally:
            app.state.ready = False
            metrics.QUEUE_DEPTH.forget(read_queue)
            await run_in_threadpool(built.worker.stop)
            # Answers still queued are written before the engine goes: none is lost on a normal shutdown.
            await run_in_threadpool(built.answer_log.close)
            await run_in_threadpool(built.store.close)
            await built.facts.aclose()
            built.close_database()

    app = FastAPI(
        title="wenda",
        summary="Document question answering over your own files, with checked citations.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=lambda: settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(DatabaseWaitBudget, seconds=lambda: settings.database.request_timeout_seconds)
    metrics_api.instrument_http(app)
    # Outermost: every log line of a request, the access log's included, carries its id (X-Request-ID).
    app.add_middleware(CorrelationIdMiddleware)
    for router in (
        health.router,
        collections.router,
        documents.router,
        jobs.router,
        retrieve.router,
        ask.router,
        chat.router,
        queries.router,
        feedback.router,
        models.router,
        metrics_api.router,
        web.router,
    ):
        app.include_router(router)
    return app
