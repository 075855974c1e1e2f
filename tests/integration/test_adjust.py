"""An audited fix end to end: `budget-ledger adjust` → consumer → ledger → reconcile clean."""

from __future__ import annotations

import orjson
import pytest

from budget_ledger.ledger.settings import Settings
from tests.integration.support import (
    cli,
    fund,
    ledger_count,
    open_budget,
    produce,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_adjust_corrects_a_double_top_up_and_reconcile_stays_clean(settings: Settings) -> None:
    with running_consumer(settings):
        produce(
            settings, [open_budget("acme", "b1", "open-1"), fund("acme", "b1", "f-1", "100.00")]
        )
        wait_for(lambda: ledger_count(settings.database_url) == 2, what="2 events")
        # Finance finds that 25.00 of the top-up was booked twice.
        sent = cli(settings, "adjust", "--tenant", "acme", "--budget", "b1", "--amount", "-25.00",
                   "--reason", "duplicate top-up 2026-11-02", "--operator", "ops@acme")  # fmt: skip
        # adjust waits for the ledger's answer: applied, exit 0, the new balances printed.
        assert sent.returncode == 0, sent.stderr
        assert "funded=75.00" in sent.stdout and "available=75.00" in sent.stdout, sent.stdout
        assert ledger_count(settings.database_url) == 3

        # Taking away more than was funded is refused: exit 1 with the reason, nothing changes.
        too_much = cli(settings, "adjust", "--tenant", "acme", "--budget", "b1", "--amount",
                       "-200.00", "--reason", "typo", "--operator", "ops@acme")  # fmt: skip
        assert too_much.returncode == 1, too_much.stdout + too_much.stderr
        assert "refused: negative_funds" in too_much.stderr
        assert scalar(settings.database_url, "SELECT funded FROM budget_balances") == 7500
        # The refusal is itself an audited ledger event; --no-wait only hands it to Kafka.
        wait_for(lambda: ledger_count(settings.database_url) == 4, what="the refusal event")
        no_wait = cli(settings, "adjust", "--tenant", "acme", "--budget", "b1", "--no-wait",
                      "--amount", "1.00", "--reason", "rounding", "--operator", "ops")  # fmt: skip
        assert no_wait.returncode == 0 and "sent adjust" in no_wait.stdout, no_wait.stderr
        wait_for(lambda: ledger_count(settings.database_url) == 5, what="the second adjustment")

    event = orjson.loads(
        scalar(settings.database_url, "SELECT event::text FROM ledger WHERE sequence = 3")
    )
    assert event["type"] == "budget_adjusted"
    assert event["amount"] == "-25.00" and event["funded"] == "75.00"
    assert event["data"]["reason"] == "duplicate top-up 2026-11-02"
    assert event["data"]["operator"] == "ops@acme"
    assert scalar(settings.database_url, "SELECT funded FROM budget_balances") == 7600

    report = cli(settings, "reconcile", "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    assert orjson.loads(report.stdout.splitlines()[-1])["clean"] is True

    refused = cli(settings, "adjust", "--tenant", "acme", "--budget", "b1", "--amount", "ten",
                  "--reason", "x", "--operator", "ops@acme")  # fmt: skip
    assert refused.returncode == 2 and "invalid adjust" in refused.stderr
