"""The client's pure parts: typed outcomes from wire events, and Kafka's murmur2 partitioner."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_ledger.consumers.client import (
    Accepted,
    Refused,
    dead_letter_owner,
    outcome_from_event,
    wire_command,
)
from budget_ledger.ledger.partitioning import murmur2, partition_for

pytestmark = pytest.mark.unit

EVENT = {
    "type": "funds_reserved", "tenant_id": "acme", "budget_id": "b1", "sequence": 7,
    "command_id": "c-7", "command_type": "reserve", "ref_id": "rw-1", "currency": "USD",
    "amount": "12.50", "reason": None, "data": {}, "funded": "100.00", "reserved": "12.50",
    "charged": "0.10", "available": "87.40", "utilization_pct": "12.60",
    "recorded_at": "2026-11-26T18:00:00.000000Z", "metadata": None, "prev_hash": "0", "hash": "1",
}  # fmt: skip


def test_an_accepted_event_becomes_accepted_with_exact_decimals() -> None:
    outcome = outcome_from_event(EVENT)
    assert isinstance(outcome, Accepted) and outcome.accepted
    assert outcome.amount == Decimal("12.50")
    assert outcome.balances.available == Decimal("87.40")
    assert outcome.balances.charged + outcome.balances.available == Decimal("87.50")
    assert (outcome.sequence, outcome.event_type, outcome.ref_id) == (7, "funds_reserved", "rw-1")
    with pytest.raises(TypeError):
        outcome.event["funded"] = "0"  # type: ignore[index]


def test_a_refusal_becomes_refused_with_its_reason() -> None:
    outcome = outcome_from_event(
        {**EVENT, "type": "reservation_rejected", "reason": "insufficient_funds"}, redelivered=True
    )
    assert isinstance(outcome, Refused) and not outcome.accepted
    assert outcome.reason == "insufficient_funds" and outcome.redelivered


def test_wire_command_builds_a_new_dict() -> None:
    extra = {"metadata": {"rule": "r1"}}
    cmd = wire_command("release", "acme", "b1", ref_id="rw-1", **extra)
    assert cmd == {"type": "release", "tenant_id": "acme", "budget_id": "b1", "ref_id": "rw-1",
                   "metadata": {"rule": "r1"}}  # fmt: skip
    assert extra == {"metadata": {"rule": "r1"}}


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # Kafka's own test vectors (clients/src/test/.../UtilsTest.testMurmur2)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_javas(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=500))
def test_partition_is_in_range_and_stable(key: bytes, partitions: int) -> None:
    p = partition_for(key, partitions)
    assert 0 <= p < partitions and p == partition_for(bytes(key), partitions)


DLQ_HEADERS = {"error_class": "schema", "reason": "unknown currency 'EUR'",
               "original_topic": "budget.commands", "original_partition": "3",
               "original_offset": "41"}  # fmt: skip


def test_a_dead_letter_is_matched_by_our_own_delivery_offset_first() -> None:
    mine = ("acme", "c-1")
    owner = dead_letter_owner(
        {**DLQ_HEADERS, "tenant_id": "other", "command_id": "x"}, b"", "budget.commands",
        {(3, 41): mine}, {mine: (3, 41)},
    )  # fmt: skip
    assert owner == mine


def test_a_dead_letter_falls_back_to_header_ids_then_to_the_original_json() -> None:
    by_headers = {**DLQ_HEADERS, "tenant_id": "t6", "command_id": "c-9"}
    assert dead_letter_owner(by_headers, b"", "budget.commands", {}, {}) == ("t6", "c-9")
    original = b'{"tenant_id": "t5", "command_id": "c-8", "type": "reserve"}'
    assert dead_letter_owner(DLQ_HEADERS, original, "budget.commands", {}, {}) == ("t5", "c-8")
    assert dead_letter_owner(DLQ_HEADERS, b"\xff not json", "budget.commands", {}, {}) is None
    assert dead_letter_owner(DLQ_HEADERS, b"[1, 2]", "budget.commands", {}, {}) is None


def test_another_producers_dead_letter_reusing_our_id_is_not_ours() -> None:
    # We sent (t5, c-1) at partition 3 offset 7; someone else's conflicting copy died at 41.
    headers = {**DLQ_HEADERS, "error_class": "idempotency_conflict", "tenant_id": "t5",
               "command_id": "c-1"}  # fmt: skip
    ours = {("t5", "c-1"): (3, 7)}
    assert dead_letter_owner(headers, b"", "budget.commands", {(3, 7): ("t5", "c-1")}, ours) is None
