"""Every command type end to end: Kafka in, ledger + projections + events + alerts out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from budget_ledger.ledger.events import GENESIS_HASH
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.hashing import chain_hash
from tests.integration.support import ledger_count, produce, read_topic, running_consumer, wait_for

pytestmark = pytest.mark.integration

T, B = "acme", "e2e"


def _c(cid: str, kind: str, **fields: object) -> dict[str, object]:
    return {"command_id": cid, "type": kind, "tenant_id": T, "budget_id": B, **fields}


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def test_every_command_type_through_kafka_and_postgres(settings: Settings) -> None:
    now = datetime.now(UTC)
    commands = [
        _c("c01", "open_budget", currency="USD", period="monthly", hard_cap="100.00",
           soft_threshold_pct=50),
        _c("c02", "fund", amount="80.00", currency="USD"),
        _c("c03", "configure_budget", hard_threshold_pct=90),
        _c("c04", "reserve", amount="30.00", currency="USD", ref_id="r1"),
        _c("c05", "reserve", amount="25.00", currency="USD", ref_id="r2"),
        _c("c06", "charge", ref_id="r1", amount="20.00"),
        _c("c07", "release", ref_id="r2"),
        _c("c08", "reserve", amount="70.00", currency="USD", ref_id="r3"),
        _c("c09", "adjust", amount="20.00", reason="late top-up", operator="ops@acme"),
        _c("c10", "reserve", amount="75.00", currency="USD", ref_id="r4",
           expires_at=_iso(now + timedelta(seconds=30))),  # after the consumer sees it
        _c("c11", "expire_reservations", as_of=_iso(now + timedelta(seconds=60))),
        _c("c12", "close_period", period_end=_iso(now + timedelta(seconds=90))),
        _c("c13", "charge", ref_id="r1"),
    ]  # fmt: skip
    expected = [
        # type, reason, funded, reserved, charged, available (minor units)
        ("budget_opened", None, 0, 0, 0, 0),
        ("budget_funded", None, 8000, 0, 0, 8000),
        ("budget_configured", None, 8000, 0, 0, 8000),
        ("funds_reserved", None, 8000, 3000, 0, 5000),
        ("funds_reserved", None, 8000, 5500, 0, 2500),
        ("reservation_charged", None, 8000, 2500, 2000, 3500),
        ("reservation_released", None, 8000, 0, 2000, 6000),
        ("reservation_rejected", "insufficient_funds", 8000, 0, 2000, 6000),
        ("budget_adjusted", None, 10000, 0, 2000, 8000),
        ("funds_reserved", None, 10000, 7500, 2000, 500),
        ("reservations_expired", None, 10000, 0, 2000, 8000),
        ("period_closed", None, 0, 0, 0, 0),
        ("command_rejected", "reservation_not_active", 0, 0, 0, 0),
    ]
    with running_consumer(settings):
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) == len(commands), what="13 events")
        events = read_topic(settings, settings.topic_events, expect=len(commands))
        alerts = read_topic(settings, settings.topic_alerts, expect=4)

    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT sequence, command_id, type, funded, reserved, charged, available, event::text,"
            " prev_hash, hash FROM ledger ORDER BY sequence"
        ).fetchall()
        balance = conn.execute(
            "SELECT funded, reserved, charged, available, sequence, last_hash FROM budget_balances"
        ).fetchone()
        reservations = dict(
            conn.execute("SELECT ref_id, concat(status, ':', charged) FROM reservations").fetchall()
        )

    # The ledger: one event per command, in order, with the balances the rules say.
    assert [r[0] for r in rows] == list(range(1, 14))
    assert [r[1] for r in rows] == [c["command_id"] for c in commands]
    got = [(r[2], orjson.loads(r[7])["reason"], r[3], r[4], r[5], r[6]) for r in rows]
    assert got == expected
    adjusted = orjson.loads(rows[8][7])
    # The operator recorded is the principal that signed the command, not its free-text field.
    assert adjusted["data"] == {"reason": "late top-up", "operator": settings.signing_principal}
    assert orjson.loads(rows[10][7])["data"]["expired"] == [["r4", "75.00"]]

    # Tamper evidence: each hash chains the previous one over the event's canonical form.
    prev = GENESIS_HASH
    for *_, event_text, prev_hash, digest in rows:
        wire = orjson.loads(event_text)
        assert prev_hash == prev == wire["prev_hash"]
        assert (
            digest
            == wire["hash"]
            == chain_hash(prev_hash, {k: v for k, v in wire.items() if k != "hash"})
        )
        prev = digest

    # Projections agree with the last event.
    assert balance == (0, 0, 0, 0, 13, rows[-1][9])
    assert reservations == {"r1": "charged:2000", "r2": "released:0", "r4": "expired:0"}

    # The events topic carries the same events, in per-budget order.
    published = [orjson.loads(m.value()) for m in events]
    assert [e["sequence"] for e in published] == list(range(1, 14))
    assert all(m.key() == f"{T}:{B}".encode() for m in events)
    assert [e["hash"] for e in published] == [r[9] for r in rows]

    # Alerts fire once per crossing: soft at 68.75 % (seq 5), the refusal (8), and after the
    # release re-armed the soft threshold, soft and hard-approaching together at 95 % (10).
    kinds = [(a["type"], a["sequence"]) for a in (orjson.loads(m.value()) for m in alerts)]
    assert kinds == [("soft_cap_exceeded", 5), ("hard_cap_reached", 8),
                     ("soft_cap_exceeded", 10), ("hard_cap_approaching", 10)]  # fmt: skip
