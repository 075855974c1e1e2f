"""The fast idempotency fingerprint equals the reference definition on every command type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_ledger.ledger.idempotency import fingerprint, fingerprint_reference
from budget_ledger.schemas.commands import parse_command
from budget_ledger.schemas.limits import id_problem, text_problem

pytestmark = pytest.mark.unit

ENVELOPE = {"command_id": "c-1", "tenant_id": "acme", "budget_id": "b1"}
SAMPLES = [
    {
        "type": "open_budget",
        "currency": "USD",
        "period": "monthly",
        "hard_cap": "100.50",
        "soft_cap": "80",
        "rollover": True,
        "timezone": "Africa/Harare",
        "reservation_ttl_seconds": 60,
    },
    {"type": "open_budget", "currency": "ZWG", "period": "rolling"},
    {"type": "configure_budget", "hard_cap": None, "soft_threshold_pct": 70},
    {"type": "fund", "amount": "12.50", "currency": "USD"},
    {
        "type": "reserve",
        "amount": "3.10",
        "currency": "USD",
        "ref_id": "r1",
        "expires_at": "2026-11-25T14:00:00+02:00",
    },
    {
        "type": "reserve",
        "amount": "3",
        "currency": "USD",
        "ref_id": "r1",
        "issued_at": "2026-11-25T12:00:00.5Z",
        "metadata": {"k": [1, "x", {"y": None}], "é": True},
    },
    {"type": "charge", "ref_id": "r1"},
    {"type": "charge", "ref_id": "r1", "amount": "1.00"},
    {"type": "release", "ref_id": "r1"},
    {"type": "expire_reservations", "as_of": "2026-11-25T12:00:00Z"},
    {"type": "close_period", "period_end": "2026-12-01T00:00:00-05:00"},
    {"type": "adjust", "amount": "-4.20", "reason": "fix", "operator": "ops"},
]


@pytest.mark.parametrize("fields", SAMPLES, ids=[s["type"] for s in SAMPLES])
def test_fast_fingerprint_equals_reference(fields: dict[str, object]) -> None:
    import orjson

    command = parse_command(orjson.dumps({**ENVELOPE, **fields}))
    assert fingerprint(command) == fingerprint_reference(command)


@settings(max_examples=200, deadline=None)
@given(
    amount=st.decimals(min_value="0.01", max_value=10**9, places=2).map(str),
    ref=st.text(min_size=1, max_size=20).filter(lambda s: id_problem(s) is None),
    meta=st.none()
    | st.dictionaries(
        st.text(max_size=5).filter(lambda s: text_problem(s) is None),
        st.integers(-100, 100) | st.text(max_size=5).filter(lambda s: text_problem(s) is None),
    ),
)
def test_fast_fingerprint_equals_reference_on_random_reserves(
    amount: str, ref: str, meta: dict[str, object] | None
) -> None:
    import orjson

    raw = {**ENVELOPE, "type": "reserve", "amount": amount, "currency": "USD", "ref_id": ref}
    if meta is not None:
        raw["metadata"] = meta
    command = parse_command(orjson.dumps(raw))
    assert fingerprint(command) == fingerprint_reference(command)
