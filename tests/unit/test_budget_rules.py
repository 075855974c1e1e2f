"""The budget rules as a readable spec: one case per rule and per refusal reason.

Each case is: commands that set the scene, then one command, and what its single event must be.
Amounts in ``expect`` are minor units (cents), utilization is in basis points and times are
``datetime``: the rules speak integers. Commands go through `ledger.record.record`, exactly as
the consumer runs them (translated with the budget's digits, decided, sealed, folded).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import orjson
import pytest

from budget_ledger.ledger.budget import (
    GENESIS_HASH,
    RESERVATION_EDGES,
    Alert,
    BudgetState,
    LedgerEvent,
    decide,
    evolve,
    initial_state,
)
from budget_ledger.ledger.reasons import Reason
from budget_ledger.ledger.record import Recorded, record
from budget_ledger.schemas.codec import event_to_wire
from budget_ledger.schemas.commands import Command, parse_command
from budget_ledger.schemas.hashing import chain_hash
from budget_ledger.schemas.to_domain import domain_command

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T, B = "acme", "b-1"
_ids = count()
CURRENCIES = {"USD": 2, "ZWG": 2, "EUR": 2}


def cmd(type_: str, **fields: Any) -> Command:
    """A parsed command for budget acme:b-1 with a fresh command_id."""
    body = {"type": type_, "command_id": f"c{next(_ids)}", "tenant_id": T, "budget_id": B, **fields}
    return parse_command(orjson.dumps(body), CURRENCIES)


def apply(state: BudgetState, command: Command, now: datetime) -> Recorded:
    """``command`` applied as the consumer applies it (the test table has no EUR: see open)."""
    return record(state, command, now, {"USD": 2, "ZWG": 2})


def run(
    *commands: Command, now: datetime = NOW
) -> tuple[BudgetState, list[LedgerEvent], list[Alert]]:
    """Apply commands in order from a fresh budget; return final state, events, alerts."""
    state = initial_state(T, B)
    events: list[LedgerEvent] = []
    alerts: list[Alert] = []
    for c in commands:
        done = apply(state, c, now)
        state = done.state
        events.append(done.event)
        alerts.extend(done.alerts)
    return state, events, alerts


def utc(text: str) -> datetime:
    """An aware datetime from ISO text (the tests' times)."""
    return datetime.fromisoformat(text).astimezone(UTC)


OPEN = {"currency": "USD", "period": "monthly"}


def open_(**extra: Any) -> Command:
    return cmd("open_budget", **{**OPEN, **extra})


def fund(amount: str = "100.00", currency: str = "USD") -> Command:
    return cmd("fund", amount=amount, currency=currency)


def reserve(ref: str, amount: str, currency: str = "USD", **extra: Any) -> Command:
    return cmd("reserve", ref_id=ref, amount=amount, currency=currency, **extra)


#: The largest USD amount a command may carry (15 integer digits): 10**17 - 1 cents.
BIG = "999999999999999.99"
BIG_CENTS = 10**17 - 1
PAST = (NOW - timedelta(minutes=1)).isoformat()
FUTURE = (NOW + timedelta(hours=1)).isoformat()

# (id, scene, command, event type, reason, expected event fields)
CASES: list[tuple[str, list[Command], Command, str, str | None, dict[str, Any]]] = [
    # --- opening ---
    ("open creates the budget", [], open_(), "budget_opened", None,
     {"funded": 0, "currency": "USD", "sequence": 1}),
    ("open funds the first period's allowance", [], open_(period_allowance="50"), "budget_opened",
     None, {"funded": 5000, "amount": 5000, "available": 5000}),
    ("open twice: budget_exists", [open_()], open_(), "command_rejected", Reason.BUDGET_EXISTS, {}),
    ("open with a currency missing from the table: unknown_currency", [],
     cmd("open_budget", currency="EUR", period="monthly"), "command_rejected",
     Reason.UNKNOWN_CURRENCY, {"currency": None}),
    ("open with soft_cap above hard_cap: invalid_config", [],
     open_(hard_cap="10", soft_cap="20"), "command_rejected", Reason.INVALID_CONFIG, {}),
    ("open with soft % above hard %: invalid_config", [],
     open_(soft_threshold_pct=96), "command_rejected", Reason.INVALID_CONFIG, {}),
    ("any command before open: unknown_budget", [], fund(), "command_rejected",
     Reason.UNKNOWN_BUDGET, {"sequence": 1, "currency": None}),
    # --- configure ---
    ("configure changes limits from now on", [open_(), fund("100")],
     cmd("configure_budget", hard_cap="40"), "budget_configured", None,
     {"funded": 10000, "available": 4000}),
    ("configure with null clears the hard cap", [open_(hard_cap="40"), fund("100")],
     cmd("configure_budget", hard_cap=None), "budget_configured", None, {"available": 10000}),
    ("configure more precise than the currency: invalid_amount", [open_()],
     cmd("configure_budget", hard_cap="1.001"), "command_rejected", Reason.INVALID_AMOUNT, {}),
    ("configure into an inconsistent config: invalid_config", [open_(hard_cap="40")],
     cmd("configure_budget", soft_cap="50"), "command_rejected", Reason.INVALID_CONFIG, {}),
    # --- fund ---
    ("fund adds to funded", [open_()], fund("12.50"), "budget_funded", None,
     {"amount": 1250, "funded": 1250, "available": 1250}),
    ("fund in another currency: currency_mismatch", [open_()], fund("1", "ZWG"),
     "command_rejected", Reason.CURRENCY_MISMATCH, {"funded": 0}),
    # --- reserve ---
    ("reserve holds funds", [open_(), fund("100")], reserve("r1", "30"), "funds_reserved", None,
     {"reserved": 3000, "available": 7000, "utilization_bp": 3000, "ref_id": "r1"}),
    ("reserve may use exactly everything", [open_(), fund("100")], reserve("r1", "100"),
     "funds_reserved", None, {"available": 0, "utilization_bp": 10000}),
    ("reserve beyond the funds: insufficient_funds", [open_(), fund("100")],
     reserve("r1", "100.01"), "reservation_rejected", Reason.INSUFFICIENT_FUNDS,
     {"reserved": 0, "amount": None}),
    ("reserve beyond a binding hard cap: hard_cap_exceeded", [open_(hard_cap="50"), fund("100")],
     reserve("r1", "60"), "reservation_rejected", Reason.HARD_CAP_EXCEEDED, {"available": 5000}),
    ("reserve beyond funds under a looser cap: insufficient_funds",
     [open_(hard_cap="500"), fund("100")], reserve("r1", "150"), "reservation_rejected",
     Reason.INSUFFICIENT_FUNDS, {}),
    ("reserve in another currency: currency_mismatch", [open_(), fund("100")],
     reserve("r1", "1", "ZWG"), "reservation_rejected", Reason.CURRENCY_MISMATCH, {}),
    ("reserve a ref_id twice: duplicate_ref", [open_(), fund("100"), reserve("r1", "1")],
     reserve("r1", "1"), "reservation_rejected", Reason.DUPLICATE_REF, {"reserved": 100}),
    ("reserve a released ref_id again: duplicate_ref",
     [open_(), fund("100"), reserve("r1", "1"), cmd("release", ref_id="r1")],
     reserve("r1", "1"), "reservation_rejected", Reason.DUPLICATE_REF, {}),
    ("reserve already expired: expires_in_past", [open_(), fund("100")],
     reserve("r1", "1", expires_at=PAST), "reservation_rejected", Reason.EXPIRES_IN_PAST, {}),
    ("reserve keeps an explicit expires_at (in UTC)", [open_(), fund("100")],
     reserve("r1", "1", expires_at="2026-11-25T15:00:00+02:00"), "funds_reserved", None,
     {"data": {"expires_at": utc("2026-11-25T13:00:00Z")}}),
    ("reserve inherits the budget's TTL", [open_(reservation_ttl_seconds=60), fund("100")],
     reserve("r1", "1"), "funds_reserved", None,
     {"data": {"expires_at": utc("2026-11-25T12:01:00Z")}}),
    # --- charge ---
    ("charge without amount charges all", [open_(), fund("100"), reserve("r1", "30")],
     cmd("charge", ref_id="r1"), "reservation_charged", None,
     {"amount": 3000, "reserved": 0, "charged": 3000, "data": {"released": 0}}),
    ("charge less releases the remainder", [open_(), fund("100"), reserve("r1", "30")],
     cmd("charge", ref_id="r1", amount="10.5"), "reservation_charged", None,
     {"amount": 1050, "reserved": 0, "charged": 1050, "available": 8950,
      "data": {"released": 1950}}),
    ("charge more than reserved: amount_exceeds_reservation",
     [open_(), fund("100"), reserve("r1", "30")], cmd("charge", ref_id="r1", amount="30.01"),
     "command_rejected", Reason.AMOUNT_EXCEEDS_RESERVATION, {"reserved": 3000}),
    ("charge more precise than the currency: invalid_amount",
     [open_(), fund("100"), reserve("r1", "30")], cmd("charge", ref_id="r1", amount="1.001"),
     "command_rejected", Reason.INVALID_AMOUNT, {}),
    ("charge an unknown ref_id: reservation_not_found", [open_()], cmd("charge", ref_id="nope"),
     "command_rejected", Reason.RESERVATION_NOT_FOUND, {"ref_id": "nope"}),
    ("charge a released reservation: reservation_not_active",
     [open_(), fund("100"), reserve("r1", "30"), cmd("release", ref_id="r1")],
     cmd("charge", ref_id="r1"), "command_rejected", Reason.RESERVATION_NOT_ACTIVE, {}),
    ("charge twice: reservation_not_active",
     [open_(), fund("100"), reserve("r1", "30"), cmd("charge", ref_id="r1")],
     cmd("charge", ref_id="r1"), "command_rejected", Reason.RESERVATION_NOT_ACTIVE,
     {"charged": 3000}),
    # --- release ---
    ("release frees the reservation", [open_(), fund("100"), reserve("r1", "30")],
     cmd("release", ref_id="r1"), "reservation_released", None,
     {"amount": 3000, "reserved": 0, "available": 10000}),
    ("release a charged reservation: reservation_not_active",
     [open_(), fund("100"), reserve("r1", "30"), cmd("charge", ref_id="r1")],
     cmd("release", ref_id="r1"), "command_rejected", Reason.RESERVATION_NOT_ACTIVE, {}),
    ("release an unknown ref_id: reservation_not_found", [open_()], cmd("release", ref_id="x"),
     "command_rejected", Reason.RESERVATION_NOT_FOUND, {}),
    # --- expire ---
    ("expire releases only what is due, in expiry order",
     [open_(), fund("100"), reserve("late", "5", expires_at=FUTURE),
      reserve("b", "2", expires_at="2026-11-25T12:00:30Z"),
      reserve("a", "1", expires_at="2026-11-25T12:00:20Z"), reserve("never", "3")],
     cmd("expire_reservations", as_of="2026-11-25T12:00:40Z"), "reservations_expired", None,
     {"amount": 300, "reserved": 800, "data": {"as_of": utc("2026-11-25T12:00:40Z"),
                                               "expired": [["a", 100], ["b", 200]]}}),
    ("expire with nothing due is still an event", [open_()],
     cmd("expire_reservations", as_of=NOW.isoformat()), "reservations_expired", None,
     {"amount": 0, "data": {"as_of": NOW, "expired": []}}),
    ("expire as of the future: as_of_in_future", [open_()],
     cmd("expire_reservations", as_of=FUTURE), "command_rejected", Reason.AS_OF_IN_FUTURE, {}),
    # --- periods ---
    ("close: charged restarts, reservations carry over, funded = allowance",
     [open_(period_allowance="100"), reserve("r1", "30"), reserve("r2", "20"),
      cmd("charge", ref_id="r1")],
     cmd("close_period", period_end="2026-11-25T12:00:00.5Z"), "period_closed", None,
     {"funded": 10000, "charged": 0, "reserved": 2000, "available": 8000,
      "data": {"period_start": utc("2026-11-25T11:00:00Z"),
               "period_end": utc("2026-11-25T12:00:00.5Z"), "closed_funded": 10000,
               "closed_reserved": 2000, "closed_charged": 3000, "unspent": 7000,
               "rolled_over": 0, "allowance": 10000}}),
    ("close with rollover carries the unspent amount",
     [open_(period_allowance="100", rollover=True), reserve("r1", "30"),
      cmd("charge", ref_id="r1")],
     cmd("close_period", period_end="2026-11-25T12:00:00.5Z"), "period_closed", None,
     {"funded": 17000, "charged": 0}),
    ("close a rolling budget: period_not_closable", [open_(period="rolling")],
     cmd("close_period", period_end=NOW.isoformat()), "command_rejected",
     Reason.PERIOD_NOT_CLOSABLE, {}),
    ("close a period twice: period_already_closed",
     [open_(), cmd("close_period", period_end="2026-11-25T12:00:00Z")],
     cmd("close_period", period_end="2026-11-25T12:00:00Z"), "command_rejected",
     Reason.PERIOD_ALREADY_CLOSED, {}),
    ("close a period that has not ended: period_not_ended", [open_()],
     cmd("close_period", period_end=FUTURE), "command_rejected", Reason.PERIOD_NOT_ENDED, {}),
    # --- adjust ---
    ("adjust corrects funded, with reason and operator", [open_(), fund("100")],
     cmd("adjust", amount="-25.50", reason="double top-up", operator="ops@acme"),
     "budget_adjusted", None,
     {"amount": -2550, "funded": 7450,
      "data": {"reason": "double top-up", "operator": "ops@acme"}}),
    ("adjust below zero funded: negative_funds", [open_(), fund("10")],
     cmd("adjust", amount="-10.01", reason="x", operator="o"), "command_rejected",
     Reason.NEGATIVE_FUNDS, {"funded": 1000}),
    ("adjust more precise than the currency: invalid_amount", [open_()],
     cmd("adjust", amount="1.001", reason="x", operator="o"), "command_rejected",
     Reason.INVALID_AMOUNT, {}),
    ("lowering funds below commitments leaves available at zero, never negative",
     [open_(), fund("100"), reserve("r1", "80")],
     cmd("adjust", amount="-50", reason="x", operator="o"), "budget_adjusted", None,
     {"available": 0, "utilization_bp": 16000}),
    # --- the stored range: nothing may pass 10**18 minor units ---
    ("fund up to the maximum is accepted", [open_(), *[fund(BIG)] * 9], fund(BIG),
     "budget_funded", None, {"funded": 10 * BIG_CENTS}),
    ("fund past the maximum: amount_out_of_range", [open_(), *[fund(BIG)] * 10], fund(BIG),
     "command_rejected", Reason.AMOUNT_OUT_OF_RANGE, {"funded": 10 * BIG_CENTS, "amount": None}),
    ("adjust past the maximum: amount_out_of_range", [open_(), *[fund(BIG)] * 10],
     cmd("adjust", amount=BIG, reason="x", operator="o"), "command_rejected",
     Reason.AMOUNT_OUT_OF_RANGE, {"funded": 10 * BIG_CENTS}),
    ("adjust down from the maximum is accepted", [open_(), *[fund(BIG)] * 10],
     cmd("adjust", amount="-" + BIG, reason="x", operator="o"), "budget_adjusted", None,
     {"funded": 9 * BIG_CENTS}),
    ("close whose rollover would pass the maximum: amount_out_of_range",
     [open_(period_allowance=BIG, rollover=True), *[fund(BIG)] * 9],
     cmd("close_period", period_end=NOW.isoformat()), "command_rejected",
     Reason.AMOUNT_OUT_OF_RANGE, {"funded": 10 * BIG_CENTS, "charged": 0}),
    ("close with rollover up to the maximum is accepted",
     [open_(period_allowance=BIG, rollover=True), *[fund(BIG)] * 8],
     cmd("close_period", period_end=NOW.isoformat()), "period_closed", None,
     {"funded": 10 * BIG_CENTS}),
    ("a hard cap of 0.01 under 1,000.00 reserved: utilization stays a finite number",
     [open_(), fund("1000"), reserve("r1", "1000")], cmd("configure_budget", hard_cap="0.01"),
     "budget_configured", None, {"available": 0, "utilization_bp": 1000000000}),
    # --- balance monitors ---
    ("set_monitor records the monitor in minor units", [open_()],
     cmd("set_monitor", monitor_id="m1", metric="available", operator="<", threshold="50"),
     "monitor_set", None,
     {"data": {"monitor_id": "m1", "metric": "available", "operator": "<",
               "threshold_amount": 5000}}),
    ("set_monitor of utilization records basis points", [open_()],
     cmd("set_monitor", monitor_id="m1", metric="utilization_pct", operator=">=",
         threshold="87.5"), "monitor_set", None, {"data": {
         "monitor_id": "m1", "metric": "utilization_pct", "operator": ">=",
         "threshold_bp": 8750}}),
    ("set_monitor more precise than the currency: invalid_amount", [open_()],
     cmd("set_monitor", monitor_id="m1", metric="funded", operator=">", threshold="1.001"),
     "command_rejected", Reason.INVALID_AMOUNT, {}),
    ("a 21st monitor: too_many_monitors",
     [open_(), *[cmd("set_monitor", monitor_id=f"m{i}", metric="funded", operator=">",
                     threshold=str(i)) for i in range(20)]],
     cmd("set_monitor", monitor_id="m20", metric="funded", operator=">", threshold="1"),
     "command_rejected", Reason.TOO_MANY_MONITORS, {}),
    ("replacing one of 20 monitors is accepted",
     [open_(), *[cmd("set_monitor", monitor_id=f"m{i}", metric="funded", operator=">",
                     threshold=str(i)) for i in range(20)]],
     cmd("set_monitor", monitor_id="m3", metric="funded", operator="<", threshold="1"),
     "monitor_set", None, {}),
    ("remove_monitor removes it",
     [open_(), cmd("set_monitor", monitor_id="m1", metric="funded", operator=">", threshold="1")],
     cmd("remove_monitor", monitor_id="m1"), "monitor_removed", None,
     {"data": {"monitor_id": "m1"}}),
    ("remove_monitor of an unknown id: monitor_not_found", [open_()],
     cmd("remove_monitor", monitor_id="m1"), "command_rejected", Reason.MONITOR_NOT_FOUND, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("scene", "command", "etype", "reason", "expect"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_rule(
    scene: list[Command],
    command: Command,
    etype: str,
    reason: str | None,
    expect: dict[str, Any],
) -> None:
    # The close-period cases need the budget to have opened an hour earlier.
    opened_at = NOW - timedelta(hours=1) if command.type == "close_period" else NOW
    state = initial_state(T, B)
    for c in scene:
        state = apply(state, c, opened_at if c.type == "open_budget" else NOW).state
    done = apply(state, command, NOW)
    after, ev = done.state, done.event
    assert (ev.type, ev.reason) == (etype, reason)
    assert ev.sequence == state.sequence + 1
    assert ev.command_id == command.command_id
    for field, value in expect.items():
        assert getattr(ev, field) == value, field
    # Balances on the event are the state after it.
    assert (ev.funded, ev.reserved, ev.charged, ev.available) == (
        after.funded_in_period,
        after.reserved_total,
        after.charged_in_period,
        after.available,
    )


def test_every_ledger_reason_has_a_case() -> None:
    dlq_only = {
        Reason.IDEMPOTENCY_CONFLICT, Reason.MALFORMED_JSON, Reason.SCHEMA_VIOLATION,
        Reason.KEY_MISMATCH, Reason.TENANT_MISMATCH,  # tenant_mismatch: test below
        Reason.TOO_LARGE, Reason.DUPLICATE_KEY, Reason.INVALID_ID, Reason.INVALID_TEXT,
        Reason.OUT_OF_RANGE,
    }  # fmt: skip
    covered = {c[4] for c in CASES}
    assert set(Reason) - dlq_only <= covered


def test_tenant_mismatch_is_refused_on_the_routed_budgets_chain() -> None:
    state, _, _ = run(open_())
    body = {"type": "fund", "command_id": "x", "tenant_id": "evil", "budget_id": B,
            "amount": "1", "currency": "USD"}  # fmt: skip
    foreign = domain_command(parse_command(orjson.dumps(body)), state.digits, CURRENCIES)
    ev = decide(state, foreign, NOW)
    assert (ev.type, ev.reason) == ("command_rejected", Reason.TENANT_MISMATCH)
    assert (ev.tenant_id, ev.budget_id, ev.sequence) == (T, B, 2)
    assert evolve(state, ev).funded_in_period == 0


def test_rejections_only_advance_the_chain() -> None:
    state, events, _ = run(open_(), fund("10"), reserve("r1", "50"))
    assert events[-1].type == "reservation_rejected"
    assert (state.funded_in_period, state.reserved_total, state.sequence) == (1000, 0, 3)
    assert state.last_hash == events[-1].hash


def test_reservation_lifecycle_edges() -> None:
    state, _, _ = run(open_(), fund("100"), reserve("a", "1"), reserve("b", "2"),
                      reserve("c", "3", expires_at="2026-11-25T12:00:01Z"),
                      cmd("charge", ref_id="a"), cmd("release", ref_id="b"))  # fmt: skip
    state = apply(state, cmd("expire_reservations", as_of="2026-11-25T12:00:02Z"),
                  NOW + timedelta(seconds=5)).state  # fmt: skip
    statuses = {ref: r.status for ref, r in state.reservations.items()}
    assert statuses == {"a": "charged", "b": "released", "c": "expired"}
    assert state.reservations["a"].charged_amount == 100
    assert all(("reserved", s) in RESERVATION_EDGES for s in ("charged", "released", "expired"))
    assert not state.expiring


def test_metadata_is_carried_to_the_event() -> None:
    _, events, _ = run(open_(), cmd("fund", amount="1", currency="USD", metadata={"who": "ops"}))
    assert events[-1].metadata == {"who": "ops"}


def test_hash_chain_links_every_event() -> None:
    _, events, _ = run(open_(), fund("10"), reserve("r", "1"), reserve("r", "1"),
                       cmd("charge", ref_id="r"))  # fmt: skip
    prev = GENESIS_HASH
    for ev in events:
        wire = event_to_wire(ev, 2)
        del wire["hash"]
        assert ev.prev_hash == prev
        assert chain_hash(prev, wire) == ev.hash
        prev = ev.hash


def test_decide_is_deterministic_and_does_not_hash() -> None:
    state, _, _ = run(open_())
    c = domain_command(fund("1"), state.digits, CURRENCIES)
    assert decide(state, c, NOW) == decide(state, c, NOW)
    assert decide(state, c, NOW).hash == ""  # sealing is the writer's job, at the edge


def test_evolve_advances_over_an_unknown_event_type() -> None:
    state, events, _ = run(open_(), fund("10"))
    martian = LedgerEvent(**{**_fields(events[-1]), "type": "martian", "sequence": 3, "hash": "h"})
    after = evolve(state, martian)
    assert (after.sequence, after.last_hash) == (3, "h")
    assert (after.funded_in_period, after.reserved_total, after.charged_in_period) == (1000, 0, 0)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"type": "reservation_charged", "ref_id": "ghost"}, KeyError),
        ({"type": "budget_configured", "data": {}}, KeyError),
        ({"type": "period_closed", "data": {"allowance": "x"}}, (KeyError, ValueError)),
    ],
)
def test_evolve_raises_on_a_malformed_event(
    changes: dict[str, Any], error: type[Exception] | tuple[type[Exception], ...]
) -> None:
    # Live consumption must fail loudly (the consumer dead-letters the command), never fold a
    # broken event into a silently stale state.
    state, events, _ = run(open_(), fund("10"))
    bad = LedgerEvent(**{**_fields(events[-1]), **changes, "sequence": 3, "hash": "h"})
    with pytest.raises(error):
        evolve(state, bad)


def _fields(ev: LedgerEvent) -> dict[str, Any]:
    return {f.name: getattr(ev, f.name) for f in dataclasses.fields(LedgerEvent)}


# --- alerts ---------------------------------------------------------------------------------


def _types(alerts: list[Alert]) -> list[str]:
    return [a.type for a in alerts]


def test_soft_threshold_fires_once_per_crossing_and_rearms_below() -> None:
    _, _, alerts = run(open_(), fund("100"), reserve("a", "80"), reserve("b", "5"),
                       cmd("release", ref_id="a"), reserve("c", "80"))  # fmt: skip
    soft = [a for a in alerts if a.type == "soft_cap_exceeded"]
    assert [a.sequence for a in soft] == [3, 6]
    assert soft[0].severity == "warning"
    assert (soft[0].threshold_bp, soft[0].utilization_bp) == (8000, 8000)
    assert soft[0].data["threshold_amount"] == 8000


def test_soft_cap_amount_takes_precedence_over_percent() -> None:
    _, _, alerts = run(
        open_(soft_cap="20"), fund("100"), reserve("a", "19.99"), reserve("b", "0.01")
    )
    assert [(a.type, a.sequence, a.threshold_bp) for a in alerts] == [
        ("soft_cap_exceeded", 4, 2000)
    ]


def test_hard_threshold_is_critical_at_its_percent() -> None:
    _, _, alerts = run(open_(), fund("100"), reserve("a", "94.99"), reserve("b", "0.01"))
    assert _types(alerts) == ["soft_cap_exceeded", "hard_cap_approaching"]
    hard = alerts[-1]
    assert (hard.severity, hard.threshold_bp, hard.sequence) == ("critical", 9500, 4)


def test_both_thresholds_in_one_step_fire_together() -> None:
    _, _, alerts = run(open_(), fund("100"), reserve("a", "99"))
    assert _types(alerts) == ["soft_cap_exceeded", "hard_cap_approaching"]


def test_hard_cap_reached_fires_once_until_the_ceiling_rises() -> None:
    _, _, alerts = run(open_(), fund("10"), reserve("a", "50"), reserve("b", "50"), fund("1"),
                       reserve("c", "50"))  # fmt: skip
    reached = [a for a in alerts if a.type == "hard_cap_reached"]
    assert [a.sequence for a in reached] == [3, 6]
    assert reached[0].data["reason"] == "insufficient_funds"
    assert reached[0].data["requested_amount"] == "50"


def test_period_close_rearms_alerts() -> None:
    state, _, alerts = run(open_(period_allowance="100"), reserve("a", "90"),
                           now=NOW - timedelta(hours=1))  # fmt: skip
    assert _types(alerts) == ["soft_cap_exceeded"]
    again = apply(state, cmd("close_period", period_end=NOW.isoformat()), NOW).alerts
    assert _types(list(again)) == ["soft_cap_exceeded"]  # still above in the new period


def test_alert_ids_are_stable_and_distinct() -> None:
    state = initial_state(T, B)
    for c in (open_(), fund("100")):
        state = apply(state, c, NOW).state
    c = reserve("a", "99")
    a1 = [a["alert_id"] for a in apply(state, c, NOW).alert_wires]
    a2 = [a["alert_id"] for a in apply(state, c, NOW).alert_wires]
    assert a1 == a2
    assert len(set(a1)) == len(a1) == 2


def test_alert_wire_form_renders_money_and_percent() -> None:
    state = initial_state(T, B)
    for c in (open_(), fund("100")):
        state = apply(state, c, NOW).state
    soft = apply(state, reserve("a", "80"), NOW).alert_wires[0]
    assert (soft["threshold"], soft["utilization_pct"]) == ("80.00", "80.00")
    assert soft["data"]["threshold_amount"] == "80.00"
    assert soft["recorded_at"] == "2026-11-25T12:00:00.000000Z"
    assert len(soft["alert_id"]) == 32
