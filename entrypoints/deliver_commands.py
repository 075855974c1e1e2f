"""`budget-ledger deliver`: the webhook delivery worker (docs/webhooks.md)."""

from __future__ import annotations

import argparse
import threading

from budget_ledger.ledger.settings import Settings


def cmd_deliver(args: argparse.Namespace, settings: Settings) -> int:
    """Deliver the alerts of the alerts topic to the tenants' webhook endpoints until
    SIGTERM/SIGINT (signed per Standard Webhooks, retried with backoff)."""
    from budget_ledger.consumers.webhook_deliverer import Deliverer
    from budget_ledger.entrypoints.runner import serve_health, stop_on_signals

    stop = stop_on_signals()
    ready = threading.Event()
    ready.set()
    serve_health(settings, ready, stop)
    Deliverer(settings, stop=stop).run()
    return 0


def add_deliver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `deliver`."""
    p = sub.add_parser(
        "deliver",
        help="deliver alerts to the tenants' webhook endpoints",
        description=(cmd_deliver.__doc__ or "")
        + " Its consumer group is LEDGER_WEBHOOK_GROUP; private and loopback targets are refused"
        " unless LEDGER_WEBHOOK_ALLOW_PRIVATE=true.",
    )
    p.set_defaults(handler=cmd_deliver)
