"""The deliverer SIGKILLed mid-delivery loses no alert (re-sent after the restart with the same
webhook-id), and without LEDGER_WEBHOOK_ALLOW_PRIVATE a name resolving to loopback is refused at
delivery time: `budget-ledger deliver` as a child process against the real services."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from budget_ledger.consumers.topics import create_topics
from budget_ledger.consumers.webhook_signing import new_secret
from budget_ledger.ledger.settings import Settings
from tests.integration.support import cli_env, kill, scalar, wait_for
from tests.integration.test_webhooks import alert, publish, receiver

pytestmark = pytest.mark.integration


def deliver(settings: Settings, allow_private: bool) -> subprocess.Popen[bytes]:
    env = cli_env(settings)
    env.update({
        "LEDGER_WEBHOOK_GROUP": f"{settings.consumer_group}.webhooks",
        "LEDGER_WEBHOOK_ALLOW_PRIVATE": "true" if allow_private else "false",
        "LEDGER_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
        "LEDGER_WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
        "LEDGER_WEBHOOK_TIMEOUT_SECONDS": "5",
        "LEDGER_APP_DATABASE_URL": settings.app_dsn(),
    })  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "deliver"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def endpoint(settings: Settings, tenant: str, url: str) -> str:
    """An endpoint written directly (as the owner): the delivery-time checks are under test."""
    eid = "whe_" + "ab" * 12
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, secret) VALUES (%s, %s, %s, %s)",
            (eid, tenant, url, new_secret()),
        )
    return eid


def test_sigkill_mid_delivery_loses_no_alert(settings: Settings) -> None:
    create_topics(settings)
    with receiver() as rec:
        endpoint(settings, "acme", rec.url("/slow"))
        a = alert("acme", "k", 1)
        publish(settings, [a])
        proc = deliver(settings, allow_private=True)
        try:
            wait_for(lambda: len(rec.of("/slow")) >= 1, timeout=60, what="the first attempt")
            kill(proc)  # while the receiver is still answering (it takes 1.5 s)
        finally:
            if proc.poll() is None:
                kill(proc)
        status = "SELECT status FROM webhook_deliveries"
        assert scalar(settings.database_url, status) == "pending"  # the result never recorded
        proc = deliver(settings, allow_private=True)
        try:
            wait_for(lambda: scalar(settings.database_url, status) == "delivered", timeout=60,
                     what="the delivery after the restart")  # fmt: skip
        finally:
            kill(proc, 15)
        ids = {h.headers["webhook-id"] for h in rec.of("/slow")}
        assert ids == {f"alrt_{a['alert_id']}"} and len(rec.of("/slow")) >= 2
        # The fan-out was not repeated: one delivery row for the alert.
        assert scalar(settings.database_url, "SELECT count(*) FROM webhook_deliveries") == 1


def test_a_name_resolving_to_loopback_is_refused_at_delivery(settings: Settings) -> None:
    create_topics(settings)
    with receiver() as rec:
        # Written around the API's check, as a DNS answer changed after registration would be.
        endpoint(settings, "acme", f"https://localhost:{rec.port}/ok")
        publish(settings, [alert("acme", "s", 1)])
        proc = deliver(settings, allow_private=False)
        try:
            query = "SELECT status || ' ' || last_error FROM webhook_deliveries"
            wait_for(lambda: (scalar(settings.database_url, query) or "").startswith("failed"),
                     timeout=60, what="the refusal")  # fmt: skip
        finally:
            kill(proc, 15)
        assert "loopback" in scalar(settings.database_url, query)
        time.sleep(0.5)
        assert rec.of("/ok") == []
