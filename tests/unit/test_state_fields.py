"""`evolve` (and `with_reservations`) carry every `BudgetState` field they do not compute, and
`evolve` fails loudly on bad events.

Each field the evolver neither reads nor sets is replaced by a marker: a value of the field's type
(the class is compiled with typed native fields) that no evolver writes; after the event the same
value must still be there. A field added to `BudgetState` later needs a marker in `_MARKERS` (the
tests fail until it has one); then, if an evolver builds the next state without it, the field
falls back to its default and the marker is lost.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import immutables
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_ledger.ledger.budget import BudgetConfig, BudgetState, evolve
from budget_ledger.ledger.events import LedgerEvent
from budget_ledger.ledger.state import config_data, with_reservations
from budget_ledger.schemas.commands import Command
from tests.unit.test_budget_rules import cmd, fund, open_, reserve, run

pytestmark = pytest.mark.unit

_CHAIN = {"sequence", "last_hash"}
_BALANCES = {
    "config",
    "funded_in_period",
    "reserved_total",
    "charged_in_period",
    "cap_reached_alerted",
}
_ALERT_ARMING = {"above_soft", "above_hard", "monitors"}


_MARKERS: dict[str, Any] = {
    "tenant_id": "<marker tenant>",
    "budget_id": "<marker budget>",
    "opened": "<negated>",
    "currency": "<marker currency>",
    "config": BudgetConfig(period="<marker period>"),
    "funded_in_period": 987_654_301,
    "reserved_total": 987_654_302,
    "charged_in_period": 987_654_303,
    "sequence": 987_654_304,
    "last_hash": "<marker hash>",
    "period_start": datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC),
    "reservations": immutables.Map({"<marker reservations>": None}),
    "cap_reached_alerted": "<negated>",
    "digits": 987_654_305,
    "expiring": immutables.Map({"<marker expiring>": None}),
    "above_soft": "<negated>",
    "above_hard": "<negated>",
    "monitors": immutables.Map({"<marker monitors>": None}),
}


def _markers(state: BudgetState, keep: set[str]) -> dict[str, Any]:
    """A marker for every field not in ``keep`` (a flag: the state's own value negated)."""
    names = [f.name for f in fields(BudgetState)]
    assert set(names) == set(_MARKERS), "a BudgetState field without a marker (or a stale one)"
    return {
        name: not getattr(state, name) if _MARKERS[name] == "<negated>" else _MARKERS[name]
        for name in names
        if name not in keep
    }


# (case id, scene, command, fields the evolver may read or set)
CASES: list[tuple[str, list[Command], Command, set[str]]] = [
    ("command_rejected", [open_()], fund("1.00", "EUR"), _CHAIN | {"opened"}),
    (
        "reservation_rejected",
        [open_()],
        reserve("r1", "5.00"),
        _CHAIN | {"opened", "cap_reached_alerted"},
    ),
    ("budget_funded", [open_()], fund("1.00"), _CHAIN | _BALANCES | _ALERT_ARMING | {"opened"}),
    (
        "budget_configured",
        [open_(), fund("10.00")],
        cmd("configure_budget", soft_cap="5.00"),
        _CHAIN | _BALANCES | _ALERT_ARMING | {"opened"},
    ),
]


@pytest.mark.parametrize(("etype", "scene", "command", "used"), CASES, ids=[c[0] for c in CASES])
def test_every_other_field_survives(
    etype: str, scene: list[Command], command: Command, used: set[str]
) -> None:
    state, _, _ = run(*scene)
    _, events, _ = run(*scene, command)
    event = events[-1]
    assert event.type == etype
    markers = _markers(state, used)
    assert markers, "every field is used: the case tests nothing"
    after = evolve(replace(state, **markers), event)
    lost = [name for name, marker in markers.items() if getattr(after, name) != marker]
    assert not lost, f"{event.type} reset {lost}"
    assert (after.sequence, after.last_hash) == (event.sequence, event.hash)


def test_with_reservations_carries_every_other_field() -> None:
    """Its positional constructor names every field: one added later and left out would fall
    back to its default, and its marker would be lost."""
    state, _, _ = run(open_(), fund("10.00"), reserve("r1", "9.00"))
    markers = _markers(state, {"reservations"})
    new_map = state.reservations.delete("r1")
    after = with_reservations(replace(state, **markers), new_map)
    lost = [name for name, marker in markers.items() if getattr(after, name) != marker]
    assert not lost, f"with_reservations reset {lost}"
    assert after.reservations is new_map


def test_a_refusal_keeps_real_values() -> None:
    state, _, _ = run(open_(), fund("10.00"), reserve("r1", "9.00"))
    _, events, _ = run(open_(), fund("10.00"), reserve("r1", "9.00"), fund("1.00", "EUR"))
    after = evolve(state, events[-1])
    for f in fields(BudgetState):
        if f.name not in _CHAIN:
            assert getattr(after, f.name) == getattr(state, f.name), f.name


def _fields(ev: LedgerEvent) -> dict[str, Any]:
    return {f.name: getattr(ev, f.name) for f in fields(LedgerEvent)}


@given(
    ref=st.text(min_size=1, max_size=20).filter(lambda r: r != "r1"),
    etype=st.sampled_from(["reservation_charged", "reservation_released"]),
)
def test_evolve_is_not_tolerant(ref: str, etype: str) -> None:
    """An event about a reservation the state never saw raises instead of being skipped."""
    state, events, _ = run(open_(), fund("10.00"), reserve("r1", "1.00"))
    bad = LedgerEvent(
        **{**_fields(events[-1]), "type": etype, "ref_id": ref, "sequence": 4, "hash": "h"}
    )
    with pytest.raises(KeyError):
        evolve(state, bad)


def test_config_data_names_every_config_field() -> None:
    config = BudgetConfig(period="monthly", hard_cap=5, soft_cap=4, period_allowance=3)
    data = config_data(config)
    assert set(data) == {f.name for f in fields(BudgetConfig)}
    assert BudgetConfig(**data) == config  # type: ignore[arg-type]
