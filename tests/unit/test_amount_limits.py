"""The stored range in the domain: no amount or resulting balance passes MAX_MINOR (10**18 minor
units); such a command is refused with amount_out_of_range, as an event, and replay agrees."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import reduce
from itertools import count
from typing import Any

import orjson
import pytest

from budget_ledger.ledger.budget import BudgetState, LedgerEvent, evolve, initial_state
from budget_ledger.ledger.reasons import Reason
from budget_ledger.ledger.record import record
from budget_ledger.ledger.state import MAX_MINOR
from budget_ledger.schemas.codec import detail_text, event_from_wire, event_to_wire, pct_text
from budget_ledger.schemas.commands import Command, parse_command

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T, B = "acme", "b-1"
TABLE = {"USD": 2, "CLF": 4}
_ids = count()


def cmd(type_: str, **fields: Any) -> Command:
    body = {"type": type_, "command_id": f"c{next(_ids)}", "tenant_id": T, "budget_id": B, **fields}
    return parse_command(orjson.dumps(body), TABLE)


def unchecked(type_: str, **fields: Any) -> Command:
    """A command the schema would refuse, to reach the domain's own check (defence in depth)."""
    model = {"fund": "Fund", "reserve": "Reserve"}[type_]
    import budget_ledger.schemas.commands as sc

    body = {"type": type_, "command_id": f"c{next(_ids)}", "tenant_id": T, "budget_id": B, **fields}
    return getattr(sc, model).model_construct(**body)  # type: ignore[no-any-return]


def run(state: BudgetState, *commands: Command) -> tuple[BudgetState, list[LedgerEvent]]:
    events = []
    for c in commands:
        done = record(state, c, NOW, TABLE)
        state = done.state
        events.append(done.event)
    return state, events


def detail(ev: LedgerEvent) -> str:
    """The refusal detail as the ledger writes it."""
    return detail_text(ev.data["detail"])


def assert_stored_range(state: BudgetState, events: list[LedgerEvent], digits: int) -> None:
    for s in (state,):
        assert 0 <= s.funded_in_period <= MAX_MINOR and 0 <= s.committed <= MAX_MINOR
        assert 0 <= s.available <= s.limit <= MAX_MINOR
    for ev in events:
        assert ev.amount is None or abs(ev.amount) <= MAX_MINOR
        for v in (ev.funded, ev.reserved, ev.charged, ev.available):
            assert 0 <= v <= MAX_MINOR
    wire = [event_from_wire(orjson.loads(orjson.dumps(event_to_wire(e, digits))), digits)
            for e in events]  # fmt: skip
    assert reduce(evolve, wire, initial_state(T, B)) == state


def test_93_funds_of_the_largest_usd_amount() -> None:
    big = "999999999999999.99"
    state, events = run(initial_state(T, B), cmd("open_budget", currency="USD", period="monthly"))
    state, funds = run(state, *[cmd("fund", amount=big, currency="USD") for _ in range(93)])
    accepted = [e for e in funds if e.type == "budget_funded"]
    refused = [e for e in funds if e.type == "command_rejected"]
    # 10 * (10**17 - 1) <= 10**18 < 11 * (10**17 - 1): the eleventh and every later one is refused.
    assert len(accepted) == 10 and funds[:10] == accepted
    assert len(refused) == 83 and {e.reason for e in refused} == {Reason.AMOUNT_OUT_OF_RANGE}
    assert (
        "funded would be 10999999999999999.89, above the ledger's maximum 10000000000000000.00"
        in detail(refused[0])
    )
    assert state.funded_in_period == 10 * (10**17 - 1)
    assert_stored_range(state, events + funds, 2)


def test_one_fund_of_15_digits_in_a_4_digit_currency() -> None:
    state, events = run(initial_state(T, B), cmd("open_budget", currency="CLF", period="rolling"))
    # The schema refuses the amount; the domain refuses it too if it gets there another way.
    state, evs = run(state, unchecked("fund", amount="999999999999999.9999", currency="CLF"))
    assert (evs[0].type, evs[0].reason) == ("command_rejected", Reason.AMOUNT_OUT_OF_RANGE)
    assert "exceeds the ledger's maximum amount 100000000000000.0000" in detail(evs[0])
    state, more = run(state, cmd("fund", amount="100000000000000", currency="CLF"),
                      cmd("fund", amount="0.0001", currency="CLF"))  # fmt: skip
    assert [e.type for e in more] == ["budget_funded", "command_rejected"]
    assert state.funded_in_period == MAX_MINOR
    assert_stored_range(state, events + evs + more, 4)


@pytest.mark.parametrize(
    ("command", "etype"),
    [
        pytest.param(lambda: cmd("adjust", amount="-999999999999999.9999", reason="x",
                                 operator="o"), "command_rejected", id="adjust down"),
        pytest.param(lambda: cmd("adjust", amount="999999999999999.9999", reason="x",
                                 operator="o"), "command_rejected", id="adjust up"),
        pytest.param(lambda: cmd("charge", ref_id="r1", amount="999999999999999.9999"),
                     "command_rejected", id="charge"),
        pytest.param(lambda: cmd("configure_budget", hard_cap="999999999999999.9999"),
                     "command_rejected", id="hard_cap"),
        pytest.param(lambda: cmd("configure_budget", period_allowance="999999999999999.9999"),
                     "command_rejected", id="period_allowance"),
        pytest.param(lambda: unchecked("reserve", amount="999999999999999.9999", currency="CLF",
                                       ref_id="r2", expires_at=None),
                     "reservation_rejected", id="reserve"),
    ],
)  # fmt: skip
def test_amounts_without_a_currency_are_range_checked_by_the_domain(
    command: Any, etype: str
) -> None:
    state, events = run(initial_state(T, B),
                        cmd("open_budget", currency="CLF", period="monthly"),
                        cmd("fund", amount="5", currency="CLF"),
                        cmd("reserve", amount="1", currency="CLF", ref_id="r1"))  # fmt: skip
    after, evs = run(state, command())
    assert (evs[0].type, evs[0].reason) == (etype, Reason.AMOUNT_OUT_OF_RANGE)
    assert (after.funded_in_period, after.reserved_total, after.config) == (
        state.funded_in_period, state.reserved_total, state.config)  # fmt: skip
    assert_stored_range(after, events + evs, 4)


def test_a_budget_already_above_the_maximum_may_shrink_but_not_grow() -> None:
    # A state written before this rule existed (only reachable by replaying an old ledger).
    state, _ = run(initial_state(T, B), cmd("open_budget", currency="USD", period="monthly"))
    legacy = dataclasses.replace(state, funded_in_period=2 * MAX_MINOR)
    _, evs = run(legacy, cmd("fund", amount="1", currency="USD"),
                 cmd("adjust", amount="-1", reason="x", operator="o"))  # fmt: skip
    assert [(e.type, e.reason) for e in evs[:1]] == [("command_rejected", "amount_out_of_range")]
    after, evs = run(legacy, cmd("adjust", amount="-1", reason="x", operator="o"))
    assert evs[0].type == "budget_adjusted" and after.funded_in_period == 2 * MAX_MINOR - 100


def test_freezing_a_budget_with_a_tiny_cap_keeps_utilization_finite() -> None:
    state, events = run(initial_state(T, B),
                        cmd("open_budget", currency="USD", period="monthly"),
                        cmd("fund", amount="1000", currency="USD"),
                        cmd("reserve", amount="1000", currency="USD", ref_id="r1"),
                        cmd("configure_budget", hard_cap="0.01"))  # fmt: skip
    assert events[-1].type == "budget_configured"
    assert state.utilization_bp == 100_000 * 100 * 100
    assert pct_text(state.utilization_bp) == "10000000.00"
    # The largest utilization the domain can produce: MAX_MINOR committed against a 1-unit limit.
    big, evs = run(initial_state(T, B), cmd("open_budget", currency="CLF", period="rolling"),
                   cmd("fund", amount="100000000000000", currency="CLF"),
                   cmd("reserve", amount="100000000000000", currency="CLF", ref_id="r"),
                   cmd("configure_budget", hard_cap="0.0001"))  # fmt: skip
    assert pct_text(big.utilization_bp) == "100000000000000000000.00"
    assert_stored_range(big, evs, 4)
