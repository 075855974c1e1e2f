"""`budget-ledger serve`: the HTTP API under uvicorn."""

from __future__ import annotations

import argparse

from budget_ledger.entrypoints.errors import EXIT_OK
from budget_ledger.ledger.settings import Settings

APP_FACTORY = "budget_ledger.entrypoints.api.app:app_from_env"


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) until SIGTERM/SIGINT."""
    import uvicorn

    if args.workers > 1:
        # Each worker process builds its own app (and pool) from the environment.
        uvicorn.run(APP_FACTORY, factory=True, host=args.host, port=args.port, workers=args.workers)
    else:
        from budget_ledger.entrypoints.api.app import create_app

        uvicorn.run(create_app(settings), host=args.host, port=args.port)
    return EXIT_OK


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve`."""
    p = sub.add_parser(
        "serve",
        help="serve the HTTP API",
        description=cmd_serve.__doc__,
        epilog="The API logs in with LEDGER_API_DATABASE_URL (else LEDGER_DATABASE_URL) and "
        "runs every query as LEDGER_API_DATABASE_ROLE (ledger_reader); see docs/api.md.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    p.set_defaults(handler=cmd_serve)
