"""`budget-ledger demo`: a whole flow on the local services, narrated.

Opens a budget, funds it, reserves, charges part of one reward, releases another, is refused
for lack of funds, and prints each outcome as the ledger published it, then the balance row.
Then it makes a read key of the demo tenant, starts the HTTP API in the background
(`demo_api.py`), checks a `curl` line against it and prints the URL, the key and that line.
"""

from __future__ import annotations

import argparse
import secrets
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
from pydantic import SecretStr

from budget_ledger.ledger.settings import Settings


def _show(step: str, event: Mapping[str, Any]) -> None:
    outcome = event["type"] + (f" ({event['reason']})" if event.get("reason") else "")
    print(
        f"{step:<34} -> #{event['sequence']:<2} {outcome:<42} funded={event['funded']:>7} "
        f"reserved={event['reserved']:>7} charged={event['charged']:>7} "
        f"available={event['available']:>7} util={event['utilization_pct']}%"
    )


def _reconcile(settings: Settings, tenant: str, budget: str) -> int:
    """Replay the demo budget's ledger and compare it with its projections."""
    from budget_ledger.projections.reconcile import ReconcileOptions, iter_lines, reconcile

    opts = ReconcileOptions(tenant=tenant, budget=budget, role=settings.database_role)
    report = reconcile(settings.database_url, opts)
    print("reconcile: " + " | ".join(iter_lines(report)))
    return 0 if report.clean else 1


def with_signing_key(settings: Settings) -> Settings:
    """`settings` with a signing key: the configured one, else a throw-away key for this run
    (the demo's consumer and client share it; nothing outside the process ever holds it)."""
    if settings.signing_key_id:
        return settings
    print("no LEDGER_SIGNING_KEY_ID: the demo signs with a throw-away key of its own")
    return settings.model_copy(
        update={
            "signing_keys": {"demo-ephemeral": SecretStr(secrets.token_hex(32))},
            "signing_key_id": "demo-ephemeral",
            "signing_principal": settings.signing_principal or "demo-operator",
        }
    )


def run_demo(settings: Settings, api_port: int | None = 8080) -> int:
    """Run the scripted flow against the configured Kafka and Postgres; return an exit code.
    Opening and funding the budget are privileged commands: the client signs them. With an
    `api_port`, the API is then started in the background and shown (`demo_api.show_api`)."""
    # Imported here, not at the top: every `budget-ledger` start imports this module.
    from budget_ledger.consumers.client import LedgerClient
    from budget_ledger.consumers.command_consumer import CommandConsumer
    from budget_ledger.consumers.relay import Relay
    from budget_ledger.consumers.topics import create_topics
    from budget_ledger.entrypoints.demo_api import show_api
    from budget_ledger.ledger.migrate import migrate

    settings = with_signing_key(settings)
    migrate(settings.database_url)
    create_topics(settings)
    stop = threading.Event()
    consumer = CommandConsumer(settings, stop=stop)
    threads = [
        threading.Thread(target=consumer.run, name="consumer", daemon=True),
        threading.Thread(target=Relay(settings, stop=stop).run, name="relay", daemon=True),
    ]
    for t in threads:
        t.start()
    client = LedgerClient(settings)
    tenant, budget = "demo-tenant", f"launch-{uuid.uuid4().hex[:6]}"
    try:
        if not consumer.ready.wait(60):
            print("the consumer got no partitions within 60 s")
            return 1
        steps: list[tuple[str, dict[str, Any]]] = [
            ("open USD budget, hard cap 100.00", {"type": "open_budget", "currency": "USD",
             "period": "monthly", "hard_cap": "100.00", "soft_threshold_pct": 50}),
            ("fund 80.00", {"type": "fund", "amount": "80.00", "currency": "USD"}),
            ("reserve 30.00 for reward rw-1", {"type": "reserve", "amount": "30.00",
             "currency": "USD", "ref_id": "rw-1"}),
            ("reserve 25.00 for reward rw-2", {"type": "reserve", "amount": "25.00",
             "currency": "USD", "ref_id": "rw-2"}),
            ("charge rw-1 for 20.00 (partial)", {"type": "charge", "ref_id": "rw-1",
             "amount": "20.00"}),
            ("release rw-2 (expired reward)", {"type": "release", "ref_id": "rw-2"}),
            ("reserve 70.00 for rw-3", {"type": "reserve", "amount": "70.00", "currency": "USD",
             "ref_id": "rw-3"}),
            ("charge rw-2 again", {"type": "charge", "ref_id": "rw-2"}),
        ]  # fmt: skip
        print(f"budget {tenant}:{budget}")
        for step, fields in steps:
            ref = client.send({"tenant_id": tenant, "budget_id": budget, **fields})
            _show(step, client.await_outcome(ref, timeout=30).event)
        with psycopg.connect(settings.database_url) as conn:
            row = conn.execute(
                "SELECT funded, reserved, charged, available, utilization_pct, sequence"
                " FROM budget_balances WHERE tenant_id = %s AND budget_id = %s",
                (tenant, budget),
            ).fetchone()
        print(
            "balance projection (minor units): funded, reserved, charged, available, util%, seq ="
            f" {row}"
        )
        if api_port is not None and not show_api(settings, tenant, budget, api_port):
            return 1
        return _reconcile(settings, tenant, budget)
    finally:
        client.close()
        stop.set()
        for t in threads:
            t.join(15)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run a narrated reserve/charge/release flow against the configured Kafka and Postgres,
    then start the HTTP API in the background and print a key and a curl line that works."""
    return run_demo(settings, api_port=None if args.no_api else args.api_port)


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `demo`."""
    p = sub.add_parser("demo", help="run a narrated flow end to end", description=cmd_demo.__doc__)
    p.add_argument("--no-api", action="store_true", help="do not start the HTTP API afterwards")
    p.add_argument(
        "--api-port", type=int, default=8080, help="the API's port (8080; a free one if taken)"
    )
    p.set_defaults(handler=cmd_demo)
