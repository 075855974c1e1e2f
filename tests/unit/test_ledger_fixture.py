"""A ledger written by old code (tests/fixtures/ledger_v1.jsonl, commit b6dd0c7) still verifies.

Every stored event decodes with today's codec and re-encodes to the bytes its stored hash covers;
every budget's hash chain links from genesis; folding the decoded events with `evolve` ends at
the balances the last event recorded. The codec is reached only through the small helpers below,
so a change of its API means changing them, never the fixture (see tests/fixtures/README.md).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from budget_ledger.ledger.budget import (
    GENESIS_HASH,
    BudgetState,
    LedgerEvent,
    evolve,
    initial_state,
)
from budget_ledger.ledger.history import replay_digits
from budget_ledger.schemas.codec import event_from_wire, event_to_wire, pct_text
from budget_ledger.schemas.events import EVENT_TYPES
from budget_ledger.schemas.hashing import chain_hash

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ledger_v1.jsonl"
# The committed bytes: the fixture is evidence of what old code wrote, never regenerated.
FIXTURE_SHA256 = "186ba2ad7fe53e443d30c8b2dee7ec3ddd29172a1a7f22bca4563c0d9180c43e"
Key = tuple[str, str]


# --- the codec, reached only through these helpers -----------------------------------------


def stored_wire(row: dict[str, Any]) -> dict[str, Any]:
    """The event as stored (the ledger's JSONB text, parsed)."""
    wire: dict[str, Any] = orjson.loads(row["event"])
    return wire


def digits_for(state: BudgetState, wire: dict[str, Any]) -> int:
    """The minor digits to read `wire` with: the budget's own, from its `budget_opened`."""
    return replay_digits(state, wire)


def decode(wire: dict[str, Any], digits: int) -> LedgerEvent:
    """Wire dict -> domain event."""
    return event_from_wire(wire, digits)


def encode(event: LedgerEvent, digits: int) -> dict[str, Any]:
    """Domain event -> wire dict (with its `hash`)."""
    return event_to_wire(event, digits)


def hash_of(wire: dict[str, Any]) -> str:
    """The chain hash of a wire dict: over its canonical bytes without `hash`, after `prev_hash`."""
    return chain_hash(wire["prev_hash"], {k: v for k, v in wire.items() if k != "hash"})


def event_columns(event: LedgerEvent) -> tuple[int | None, int, int, int, int]:
    """The integer ledger columns an event fills: amount and the balances after it."""
    return (event.amount, event.funded, event.reserved, event.charged, event.available)


def event_balances(event: LedgerEvent) -> tuple[int, int, int, int, str]:
    """The balances an event recorded."""
    return (event.funded, event.reserved, event.charged, event.available,
            pct_text(event.utilization_bp))  # fmt: skip


def state_balances(state: BudgetState) -> tuple[int, int, int, int, str]:
    """The balances of a folded state, comparable with `event_balances`."""
    return (state.funded_in_period, state.reserved_total, state.charged_in_period,
            state.available, pct_text(state.utilization_bp))  # fmt: skip


# --- the fixture -----------------------------------------------------------------------------


@cache
def _rows() -> tuple[dict[str, Any], ...]:
    return tuple(orjson.loads(line) for line in FIXTURE.read_bytes().splitlines() if line)


@cache
def _budgets() -> dict[Key, list[dict[str, Any]]]:
    out: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for row in _rows():
        out[(row["tenant_id"], row["budget_id"])].append(row)
    for history in out.values():
        history.sort(key=lambda r: r["sequence"])
    return dict(out)


BUDGETS = sorted(_budgets())
_ids = [f"{t}:{b}" for t, b in BUDGETS]


def test_the_fixture_is_the_committed_one() -> None:
    digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert digest == FIXTURE_SHA256, (
        "tests/fixtures/ledger_v1.jsonl changed: it records what old code wrote and must not be "
        "regenerated or edited (tests/fixtures/README.md)"
    )


def test_the_fixture_covers_every_event_type_tenants_and_digits() -> None:
    rows = _rows()
    # Event types added after the fixture was written cannot be in it (it is never regenerated).
    newer = {"monitor_set", "monitor_removed"}
    assert {r["type"] for r in rows} == set(EVENT_TYPES) - newer
    assert len({r["tenant_id"] for r in rows}) >= 2
    digits: dict[str, int] = {}
    for row in rows:
        if row["type"] == "budget_opened":
            wire = stored_wire(row)
            digits[wire["currency"]] = digits_for(initial_state("t", "b"), wire)
    assert {0, 2, 3} <= set(digits.values()), digits
    rejected = {stored_wire(r)["reason"] for r in rows if r["type"] == "command_rejected"}
    refused = {stored_wire(r)["reason"] for r in rows if r["type"] == "reservation_rejected"}
    assert len(rejected) >= 5 and len(refused) >= 3, (rejected, refused)


@pytest.mark.parametrize("key", BUDGETS, ids=_ids)
def test_every_stored_event_reencodes_to_its_stored_hash(key: Key) -> None:
    state = initial_state(*key)
    for row in _budgets()[key]:
        wire = stored_wire(row)
        assert wire["hash"] == row["hash"] and wire["prev_hash"] == row["prev_hash"]
        # The stored bytes themselves verify, whatever today's codec does.
        assert hash_of(wire) == row["hash"], f"sequence {row['sequence']}: stored bytes"
        digits = digits_for(state, wire)
        event = decode(wire, digits)
        again = encode(event, digits)
        assert again == wire, f"sequence {row['sequence']}: re-encoded differently"
        assert hash_of(again) == row["hash"], f"sequence {row['sequence']}: re-encoded hash"
        assert event_columns(event) == (
            row["amount"], row["funded"], row["reserved"], row["charged"], row["available"]
        ), f"sequence {row['sequence']}: integer columns"  # fmt: skip
        state = evolve(state, event)


@pytest.mark.parametrize("key", BUDGETS, ids=_ids)
def test_every_hash_chain_links_from_genesis(key: Key) -> None:
    history = _budgets()[key]
    assert [r["sequence"] for r in history] == list(range(1, len(history) + 1))
    previous = GENESIS_HASH
    for row in history:
        assert row["prev_hash"] == previous, f"sequence {row['sequence']}"
        previous = row["hash"]


@pytest.mark.parametrize("key", BUDGETS, ids=_ids)
def test_folding_the_events_ends_at_the_last_events_balances(key: Key) -> None:
    state = initial_state(*key)
    event = None
    for row in _budgets()[key]:
        wire = stored_wire(row)
        event = decode(wire, digits_for(state, wire))
        state = evolve(state, event)
        assert state_balances(state) == event_balances(event), f"sequence {row['sequence']}"
    assert event is not None
    assert state.sequence == event.sequence and state.last_hash == event.hash
