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
        _serve_workers(args.host, args.port, args.workers, args.access_log)
    else:
        from budget_ledger.entrypoints.api.app import create_app

        app = create_app(settings)
        uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log)
    return EXIT_OK


def _serve_workers(host: str, port: int, workers: int, access_log: bool) -> None:
    """`uvicorn.run(..., workers=N)` with TCP_NODELAY on the listening socket.

    uvicorn binds it without naming the protocol (proto 0), so asyncio in the workers does not
    set TCP_NODELAY on accepted connections, and every response on a keep-alive connection then
    waited ~40 ms for the client's delayed ACK (measured: p50 48 ms with 2 workers, 4 ms with
    one; uvicorn issue #3149, open). Linux copies the option from the listening socket to the
    connections it accepts."""
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # Each worker process builds its own app (and pool) from the environment.
    config = uvicorn.Config(
        APP_FACTORY, factory=True, host=host, port=port, workers=workers, access_log=access_log
    )
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


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
    # Off by default, as in gunicorn: the ingress in front logs requests, and uvicorn's line
    # per request (plain text, not the ledger's structured logs) costs CPU at every request.
    p.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log every request, uvicorn's access log (off)",
    )
    p.set_defaults(handler=cmd_serve)
