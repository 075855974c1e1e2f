"""The API's application factory: `create_app(settings)` (nothing is created at import)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

import budget_ledger
from budget_ledger.entrypoints.api import (
    alerts,
    budgets,
    commands,
    console,
    ledger,
    monitors,
    reconcile,
    reports,
    webhooks,
    writes,
)
from budget_ledger.entrypoints.api.models import Problem
from budget_ledger.entrypoints.api.publisher import CommandPublisher
from budget_ledger.ledger.db import pool as make_pool
from budget_ledger.ledger.db import read_only_pool
from budget_ledger.ledger.settings import Settings, load_settings

DESCRIPTION = """The budget ledger over HTTP. Every request carries an API key
(`Authorization: Bearer <key>`, made with `budget-ledger keys create`); every query runs on the
reader role with the key's tenant, under Postgres row-level security. Writes publish a command
(its `command_id` is the `Idempotency-Key` header) and answer 202, or with `?wait=` its outcome.
Amounts are decimal text with the budget's currency digits, times RFC 3339 UTC."""


def create_app(settings: Settings, pool: ConnectionPool | None = None) -> FastAPI:
    """The API; it opens its connection pool when it starts (or uses `pool`, left open)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = pool is None
        app.state.pool = (
            make_pool(settings.api_dsn(), settings.api_database_role, settings.api_pool_size)
            if own
            else pool
        )
        # The one producer of the writes: made here, never at import, closed on shutdown.
        app.state.publisher = CommandPublisher(settings)
        # The hot reads' pool (auth.hot_read): asyncio, so they need no thread.
        app.state.hot_pool = read_only_pool(
            settings.api_dsn(), settings.api_database_role, settings.api_pool_size
        )
        await app.state.hot_pool.open()
        # Everything made so far (modules, routes, models, pools) lives as long as the process:
        # frozen, a full collection no longer walks it (in-process: 26-69 ms a full collection
        # before, 0.6 ms after), a pause the requests in flight would otherwise wait out.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.hot_pool.close()
            app.state.publisher.close()
            if own:
                app.state.pool.close()

    app = FastAPI(
        title="Budget Ledger API",
        version=budget_ledger.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Any endpoint that reads may meet the handler below: the document says so for all.
        responses={503: {"model": Problem, "description": "the ledger database is unavailable"}},
    )
    app.include_router(budgets.router)
    app.include_router(ledger.router)
    app.include_router(reports.router)
    app.include_router(alerts.router)
    app.include_router(commands.router)
    app.include_router(writes.router)
    app.include_router(monitors.router)
    app.include_router(reconcile.router)
    app.include_router(webhooks.router)
    app.include_router(console.router)  # /console: the web console (docs/console.md)
    app.state.settings = settings

    @app.get("/healthz", tags=["health"], summary="liveness and readiness (no key needed)")
    async def healthz() -> dict[str, str]:
        """`{"status": "ok"}` once the app has started; reads nothing (a cheap probe; async: no
        hop to the thread pool)."""
        return {"status": "ok"}

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database is down or saturated: retryable, and nothing of the error is shown.
        return JSONResponse({"detail": "the ledger database is unavailable"}, status_code=503)

    document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_unreadable_bodies(document())
        return app.openapi_schema or document()

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def declare_unreadable_bodies(schema: dict[str, Any]) -> None:
    """Add the 400 FastAPI answers by itself when a body cannot be read at all (e.g. bytes that
    are not UTF-8) to every operation with a body that does not declare a 400 of its own."""
    problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if "requestBody" in operation:
                operation["responses"].setdefault(
                    "400", {"description": "the body could not be read", "content": problem}
                )


def app_from_env() -> FastAPI:
    """The API configured from LEDGER_* variables (uvicorn's factory for `serve --workers N`)."""
    return create_app(load_settings())
