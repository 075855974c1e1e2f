"""State loaded from the projection rows equals a compacted full replay, and deciding against a
compacted state plus the settled records the per-batch look-up returns gives the same events.

Histories are the seeded random streams of `bench/replay_bench.py` (every command type,
refusals, expiries and period closes), run through the consumer's `process_batch` with full
states; the projection rows are the ones the consumer writes (`balance_row`, `reservation_row`).
"""

from __future__ import annotations

import random
from dataclasses import fields, replace
from datetime import timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.replay_bench import START, build_rows, command_stream
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.history import ReplayFailed, replay
from budget_ledger.ledger.record import record
from budget_ledger.ledger.state import ReservationStatus, compact
from budget_ledger.projections.rows import balance_row, reservation_row
from budget_ledger.projections.state_loading import (
    reservation_from_row,
    state_from_projection,
    with_settled,
)
from budget_ledger.schemas.commands import parse_command

pytestmark = pytest.mark.unit

CURRENCIES = {"USD": 2, "ZWG": 2}
RESERVED = ReservationStatus.RESERVED


def _states(n: int, budgets: int, seed: int, batch: int) -> list[BudgetState]:
    """Each budget's full state, replayed from the ledger rows the consumer wrote."""
    rows: list[tuple[str, str, str]] = []
    for out in build_rows(command_stream(n, budgets, seed=seed), partitions=1, batch=batch):
        rows += [(str(r[0]), str(r[1]), str(r[16])) for r in out.ledger_rows]
    rows.sort(key=lambda r: (r[0], r[1], orjson.loads(r[2])["sequence"]))
    states = list(replay(rows))
    assert not any(isinstance(s, ReplayFailed) for s in states)
    return states  # type: ignore[return-value]


def _loaded(state: BudgetState) -> BudgetState | None:
    """What `load_states` builds from the rows the consumer wrote for ``state``."""
    opened = [reservation_row(state, r)[2:] for r in state.reservations.values()]
    return state_from_projection(
        balance_row(state, START), [r for r in opened if r[1] == RESERVED.value]
    )


def _settled_records(state: BudgetState, ref: str) -> list[object]:
    """What `lookup_settled` returns for ``ref``: its projection row if it is settled."""
    res = state.reservations.get(ref)
    if res is None or res.status is RESERVED:
        return []
    return [reservation_from_row(reservation_row(state, res)[2:])]


HISTORIES = {
    "seed": st.integers(0, 10_000),
    "n": st.integers(10, 400),
    "budgets": st.integers(1, 6),
    "batch": st.integers(1, 60),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**HISTORIES)
def test_the_state_loaded_from_projection_rows_is_the_compacted_replay(
    seed: int, n: int, budgets: int, batch: int
) -> None:
    for state in _states(n, budgets, seed, batch):
        loaded = _loaded(state)
        assert loaded == compact(state)
        assert loaded is not None and all(
            r.status is RESERVED for r in loaded.reservations.values()
        )
        assert dict(loaded.expiring) == dict(state.expiring)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**HISTORIES, pick=st.randoms(use_true_random=False))
def test_deciding_against_the_compacted_state_and_looked_up_records_gives_the_same_event(
    seed: int, n: int, budgets: int, batch: int, pick: random.Random
) -> None:
    now = START + timedelta(hours=1)
    for state in _states(n, budgets, seed, batch):
        if not state.opened:
            continue
        refs = [*sorted(state.reservations), "fresh-ref"]
        for i in range(6):
            ref = pick.choice(refs)
            kind = pick.choice(["reserve", "charge", "release"])
            body = {"type": kind, "command_id": f"next-{i}", "tenant_id": state.tenant_id,
                    "budget_id": state.budget_id, "ref_id": ref}  # fmt: skip
            if kind == "reserve":
                body |= {"amount": "1.00", "currency": state.currency}
            command = parse_command(orjson.dumps(body), CURRENCIES)
            loaded = _loaded(state)
            assert loaded is not None
            if ref not in loaded.reservations:  # the consumer looks only these up
                loaded = with_settled(loaded, _settled_records(state, ref))  # type: ignore[arg-type]
            full = record(state, command, now, CURRENCIES)
            fast = record(loaded, command, now, CURRENCIES)
            assert fast.text == full.text and fast.alert_wires == full.alert_wires
            assert compact(fast.state, [ref]) == compact(full.state)


def test_compact_keeps_open_reservations_and_every_other_field() -> None:
    states = [s for s in _states(300, 3, 11, 25) if s.reservations]
    assert states
    for state in states:
        small = compact(state)
        assert set(small.reservations) == {
            r for r, res in state.reservations.items() if res.status is RESERVED
        }
        others = [f.name for f in fields(BudgetState) if f.name != "reservations"]
        assert all(getattr(small, f) == getattr(state, f) for f in others)
        assert compact(small) is small  # nothing settled left: the same object
        settled = [r for r, res in state.reservations.items() if res.status is not RESERVED]
        assert compact(state, settled) == small  # only the named refs checked


def test_a_row_without_a_usable_snapshot_is_not_loaded() -> None:
    state = next(s for s in _states(200, 2, 5, 20) if s.opened)
    row = balance_row(state, START)
    seq = 19  # snapshot_seq (migration 007); the monitors (016) follow it
    assert state_from_projection((*row[:seq], None, *row[seq + 1 :]), []) is None  # before 007
    stale = (*row[:seq], state.sequence - 1, *row[seq + 1 :])
    assert state_from_projection(stale, []) is None  # stale columns
    wrong = list(row)
    wrong[7] = int(row[7]) + 1  # type: ignore[call-overload]  # available contradicts the rest
    assert state_from_projection(tuple(wrong), []) is None
    loaded = state_from_projection(row, [])
    assert loaded is not None and loaded.sequence == state.sequence
    assert loaded == replace(
        compact(state), reservations=loaded.reservations, expiring=loaded.expiring
    )
