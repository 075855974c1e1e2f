"""Balance monitors: the commands' validation, decide/evolve, the ``balance_monitor`` alert
(once per crossing, re-armed when the condition clears), its wire form and id, and the
monitors' round trips through the balance projection, the checkpoint state and drift."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import reduce
from itertools import count
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_ledger.ledger.budget import BudgetState, LedgerEvent, evolve, initial_state
from budget_ledger.ledger.record import Recorded, record
from budget_ledger.ledger.state import Monitor
from budget_ledger.projections.checkpoint_state import decode_state, encode_state
from budget_ledger.projections.drift import BALANCE_FIELDS, compare
from budget_ledger.projections.replay import BudgetReplay
from budget_ledger.projections.rows import balance_row, reservation_row
from budget_ledger.projections.state_loading import state_from_projection
from budget_ledger.schemas.codec import alert_from_wire, event_from_wire, event_to_wire
from budget_ledger.schemas.commands import CommandInvalid, parse_command
from budget_ledger.schemas.signing import PRIVILEGED

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T, B = "acme", "b-1"
TABLE = {"USD": 2}
_ids = count()


def raw(type_: str, **fields: Any) -> bytes:
    body = {"type": type_, "command_id": f"c{next(_ids)}", "tenant_id": T, "budget_id": B}
    return orjson.dumps({**body, **fields})


def run(state: BudgetState, type_: str, **fields: Any) -> Recorded:
    return record(state, parse_command(raw(type_, **fields), TABLE), NOW, TABLE)


def funded(amount: str = "100") -> BudgetState:
    s = run(initial_state(T, B), "open_budget", currency="USD", period="monthly").state
    return run(s, "fund", amount=amount, currency="USD").state


def monitor_alerts(done: Recorded) -> list[dict[str, Any]]:
    return [w for w in done.alert_wires if w["type"] == "balance_monitor"]


# --- the commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"metric": "balance", "operator": "<", "threshold": "1"}, "metric"),
        ({"metric": "available", "operator": "=", "threshold": "1"}, "operator"),
        ({"metric": "available", "operator": "<", "threshold": "-1"}, "decimal amount"),
        ({"metric": "available", "operator": "<", "threshold": 50}, "JSON string"),
        ({"metric": "utilization_pct", "operator": ">", "threshold": "50.125"}, "percent"),
        ({"metric": "utilization_pct", "operator": ">", "threshold": "10000000"}, "percent"),
        ({"operator": "<", "threshold": "1"}, "missing field 'metric'"),
    ],
)
def test_a_bad_monitor_is_refused_with_a_clear_reason(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(CommandInvalid) as err:
        parse_command(raw("set_monitor", monitor_id="m1", **fields), TABLE)
    assert err.value.error_class == "schema"
    assert needle in err.value.reason


def test_monitor_commands_are_signed_like_configure_budget() -> None:
    assert {"set_monitor", "remove_monitor", "configure_budget"} <= PRIVILEGED


# --- firing and re-arming ----------------------------------------------------------------------


def test_fires_once_per_crossing_and_again_only_after_clearing() -> None:
    s = funded("100")
    done = run(s, "set_monitor", monitor_id="low", metric="available", operator="<",
               threshold="50.00")  # fmt: skip
    assert monitor_alerts(done) == [] and done.state.monitors["low"].armed
    crossing = run(done.state, "reserve", ref_id="r1", amount="60", currency="USD")
    [alert] = monitor_alerts(crossing)
    assert alert["data"] | {} == {
        **alert["data"],
        "monitor_id": "low", "metric": "available", "operator": "<", "threshold": "50.00",
        "value": "40.00",
    }  # fmt: skip
    assert alert["severity"] == "warning"
    assert not crossing.state.monitors["low"].armed
    still = run(crossing.state, "reserve", ref_id="r2", amount="5", currency="USD")
    assert monitor_alerts(still) == []
    cleared = run(still.state, "release", ref_id="r1")
    assert monitor_alerts(cleared) == [] and cleared.state.monitors["low"].armed
    again = run(cleared.state, "reserve", ref_id="r3", amount="60", currency="USD")
    assert [a["data"]["value"] for a in monitor_alerts(again)] == ["35.00"]
    assert again.alert_wires[-1]["alert_id"] != alert["alert_id"]


def test_a_monitor_set_while_its_condition_holds_fires_on_the_set_event() -> None:
    done = run(funded("10"), "set_monitor", monitor_id="m", metric="funded", operator="<=",
               threshold="10")  # fmt: skip
    assert [a["sequence"] for a in monitor_alerts(done)] == [done.event.sequence]
    # Setting the same condition again while it holds does not fire again; a new one does.
    same = run(done.state, "set_monitor", monitor_id="m", metric="funded", operator="<=",
               threshold="10.00")  # fmt: skip
    assert monitor_alerts(same) == []
    other = run(same.state, "set_monitor", monitor_id="m", metric="funded", operator="<",
                threshold="11")  # fmt: skip
    assert len(monitor_alerts(other)) == 1


def test_utilization_monitor_in_percent_and_two_monitors_on_one_event() -> None:
    s = funded("100")
    s = run(s, "set_monitor", monitor_id="half", metric="utilization_pct", operator=">=",
            threshold="50").state  # fmt: skip
    s = run(s, "set_monitor", monitor_id="res", metric="reserved", operator=">",
            threshold="49.99").state  # fmt: skip
    done = run(s, "reserve", ref_id="r1", amount="50", currency="USD")
    alerts = monitor_alerts(done)
    seen = [(a["data"]["monitor_id"], a["data"]["threshold"], a["data"]["value"]) for a in alerts]
    assert seen == [
        ("half", "50.00", "50.00"),
        ("res", "49.99", "50.00"),
    ]  # fmt: skip
    assert alerts[0]["threshold"] == "50.00"  # the alert's threshold: the percent
    assert len({a["alert_id"] for a in alerts}) == 2  # same event, two alerts, two ids
    back = [alert_from_wire(w, 2) for w in alerts]
    assert [a.data["threshold"] for a in back] == [5000, 4999]


def test_removed_monitor_never_fires() -> None:
    s = funded("100")
    s = run(s, "set_monitor", monitor_id="m", metric="available", operator="<",
            threshold="50").state  # fmt: skip
    s = run(s, "remove_monitor", monitor_id="m").state
    assert not s.monitors
    assert monitor_alerts(run(s, "reserve", ref_id="r1", amount="90", currency="USD")) == []


def test_a_budget_without_monitors_shares_its_empty_map() -> None:
    s = funded("100")
    after = run(s, "reserve", ref_id="r1", amount="1", currency="USD").state
    assert after.monitors is s.monitors and not after.monitors


# --- evolve never raises on monitor events -----------------------------------------------------

_data = st.dictionaries(
    st.sampled_from(["monitor_id", "metric", "operator", "threshold_amount", "threshold_bp"]),
    st.none()
    | st.integers(-5, 10**6)
    | st.text(max_size=3)
    | st.sampled_from(["available", "utilization_pct", "<", ">=", "m1"]),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["monitor_set", "monitor_removed"]), _data),
                      max_size=12))  # fmt: skip
def test_evolve_folds_any_monitor_event(steps: list[tuple[str, dict[str, Any]]]) -> None:
    s = funded("100")
    for i, (etype, data) in enumerate(steps, start=s.sequence + 1):
        ev = LedgerEvent(
            etype, T, B, i, f"x{i}", "set_monitor", None, "USD", None, None, data,
            s.funded_in_period, s.reserved_total, s.charged_in_period, s.available,
            s.utilization_bp, NOW, None, s.last_hash, f"{i:064x}",
        )  # fmt: skip
        s = evolve(s, ev)
        assert s.sequence == i


# --- persistence of the monitors ---------------------------------------------------------------


def _with_monitors() -> tuple[BudgetState, list[LedgerEvent]]:
    events: list[LedgerEvent] = []
    s = initial_state(T, B)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("open_budget", {"currency": "USD", "period": "monthly"}),
        ("fund", {"amount": "100", "currency": "USD"}),
        ("set_monitor", {"monitor_id": "a", "metric": "available", "operator": "<",
                         "threshold": "50"}),
        ("set_monitor", {"monitor_id": "u", "metric": "utilization_pct", "operator": ">",
                         "threshold": "99.5"}),
        ("reserve", {"ref_id": "r1", "amount": "60", "currency": "USD"}),
    ]  # fmt: skip
    for kind, fields in steps:
        done = run(s, kind, **fields)
        s = done.state
        events.append(done.event)
    return s, events


def test_replay_through_the_wire_equals_live() -> None:
    s, events = _with_monitors()
    wire = [event_from_wire(orjson.loads(orjson.dumps(event_to_wire(e, 2))), 2) for e in events]
    assert reduce(evolve, wire, initial_state(T, B)) == s
    assert dict(s.monitors) == {
        "a": Monitor("available", "<", 5000, False),
        "u": Monitor("utilization_pct", ">", 9950, True),
    }


def test_monitors_survive_the_balance_row_and_the_checkpoint_state() -> None:
    s, _ = _with_monitors()
    row = balance_row(s, NOW)
    assert orjson.loads(row[-1]) == {  # type: ignore[arg-type]
        "a": {"metric": "available", "operator": "<", "threshold": 5000, "armed": False},
        "u": {"metric": "utilization_pct", "operator": ">", "threshold": 9950, "armed": True},
    }
    loaded = state_from_projection(row, [])
    assert loaded is not None and loaded.monitors == s.monitors
    assert decode_state(encode_state(s)).monitors == s.monitors
    # No monitors: a NULL column, and a checkpoint without the field (as before monitors).
    plain = funded()
    assert balance_row(plain, NOW)[-1] is None
    assert len(orjson.loads(encode_state(plain))) == 18


def _replay(state: BudgetState, balance: tuple[Any, ...]) -> BudgetReplay:
    budget = BudgetReplay(T, B)
    budget.state, budget.events, budget.balance = state, 5, balance
    budget.reservations = {
        ref: list(reservation_row(state, r)[2:]) for ref, r in state.reservations.items()
    }
    return budget


def test_drift_compares_the_monitors() -> None:
    s, _ = _with_monitors()
    row = balance_row(s, NOW)
    stored = row[:14] + row[15:]
    # As `reconcile_balances` reads it: config and monitors as parsed JSON.
    as_read = tuple(orjson.loads(v) if n in ("config", "monitors") and v else v  # type: ignore[arg-type]
                    for n, v in zip(BALANCE_FIELDS, stored, strict=True))  # fmt: skip
    assert compare(_replay(s, as_read)) == []
    flipped = dict(as_read[-1])
    flipped["a"] = {**flipped["a"], "armed": True}
    drifted = compare(_replay(s, (*as_read[:-1], flipped)))
    assert [d.field for d in drifted] == ["monitors"]
    assert [d.field for d in compare(_replay(s, (*as_read[:-1], None)))] == ["monitors"]
