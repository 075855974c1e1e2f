"""Command validation (every malformed class refused with its message), wire round trips,
canonical encoding, idempotency fingerprints, and the exported JSON Schemas."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_ledger.ledger.events import GENESIS_HASH, Alert, LedgerEvent, Money
from budget_ledger.ledger.idempotency import classify, fingerprint
from budget_ledger.schemas.codec import (
    alert_from_wire,
    alert_to_wire,
    event_from_wire,
    event_to_wire,
    make_alert_id,
    seal,
)
from budget_ledger.schemas.commands import CommandInvalid, Reserve, parse_command
from budget_ledger.schemas.events import json_schemas, rfc3339_utc
from budget_ledger.schemas.hashing import canonical, chain_hash, event_digest
from budget_ledger.schemas.limits import id_problem
from budget_ledger.schemas.money import normalize_decimal, to_decimal_str, to_minor

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "domain.md"
ENV = {"command_id": "c-1", "tenant_id": "acme", "budget_id": "b-1"}
RESERVE = {**ENV, "type": "reserve", "amount": "12.50", "currency": "USD", "ref_id": "r-1"}


def _raw(**over: Any) -> bytes:
    body = {**RESERVE, **over}
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def test_a_valid_reserve_parses() -> None:
    c = parse_command(_raw())
    assert isinstance(c, Reserve)
    assert (c.amount, c.currency, c.ref_id) == ("12.50", "USD", "r-1")


@pytest.mark.parametrize(
    ("raw", "error_class", "message"),
    [
        pytest.param(b"{not json", "json", "invalid JSON", id="bad json"),
        pytest.param(b"\xff\xfe", "json", "invalid JSON", id="not utf-8"),
        pytest.param(b"[1, 2]", "schema", "a command must be a JSON object, not an array",
                     id="not an object"),
        pytest.param(_raw(type=...), "schema", "missing field 'type'", id="no type"),
        pytest.param(_raw(type="reserv"), "schema", "unknown command type 'reserv'",
                     id="unknown type"),
        pytest.param(_raw(amout="1"), "schema", "unknown field 'amout'", id="unknown field"),
        pytest.param(_raw(ref_id=...), "schema", "missing field 'ref_id'", id="missing field"),
        pytest.param(_raw(amount=12.5), "schema",
                     'amount must be a JSON string like "12.50", not a number', id="float amount"),
        pytest.param(_raw(amount=12), "schema", "not a number", id="int amount"),
        pytest.param(_raw(amount="1e3"), "schema", "is not a decimal amount", id="exponent"),
        pytest.param(_raw(amount="-1"), "schema", "is not a decimal amount", id="negative"),
        pytest.param(_raw(amount="0.00"), "schema", "amount must be greater than zero", id="zero"),
        pytest.param(_raw(amount="1.234"), "schema",
                     "amount '1.234' has 3 decimal places; USD allows at most 2", id="too precise"),
        pytest.param(_raw(amount="1" * 16), "schema", "is not a decimal amount", id="too big"),
        pytest.param(_raw(currency="EUR"), "schema", "unknown currency 'EUR'",
                     id="unknown currency"),
        pytest.param(_raw(currency="usd"), "schema", "is not an ISO 4217 code", id="bad code"),
        pytest.param(_raw(command_id=""), "schema", "command_id must not be empty", id="empty id"),
        pytest.param(_raw(ref_id="x" * 129), "schema", "ref_id is longer than 128 characters",
                     id="long id"),
        pytest.param(_raw(tenant_id="a:b"), "invalid_id", "tenant_id must not contain ':'",
                     id="colon in tenant"),
        pytest.param(_raw(issued_at="2026-11-25T12:00:00"), "schema",
                     "issued_at must carry a UTC offset", id="naive issued_at"),
        pytest.param(_raw(expires_at="2026-11-25T12:00:00"), "schema",
                     "expires_at must carry a UTC offset", id="naive expires_at"),
        pytest.param(_raw(metadata={"score": 1.5}), "schema", "(got float)", id="float metadata"),
        pytest.param(_raw(metadata={"n": 2**60}), "schema", "within +/-2**53", id="huge int"),
        pytest.param(orjson.dumps({**ENV, "type": "expire_reservations",
                                   "as_of": "2026-11-25T12:00:00"}), "schema",
                     "as_of must carry a UTC offset", id="naive as_of"),
        pytest.param(orjson.dumps({**ENV, "type": "close_period",
                                   "period_end": "2026-11-25"}), "schema",
                     "period_end", id="date-only period_end"),
        pytest.param(orjson.dumps({**ENV, "type": "adjust", "amount": "-0.00", "reason": "x",
                                   "operator": "o"}), "schema",
                     "adjust amount must be non-zero", id="zero adjust"),
        pytest.param(orjson.dumps({**ENV, "type": "configure_budget"}), "schema",
                     "configure_budget needs at least one of", id="empty configure"),
        pytest.param(orjson.dumps({**ENV, "type": "open_budget", "currency": "USD",
                                   "period": "weekly"}), "schema", "period", id="bad period"),
        pytest.param(orjson.dumps({**ENV, "type": "open_budget", "currency": "USD",
                                   "period": "monthly", "timezone": "Mars/Olympus"}), "schema",
                     "unknown time zone 'Mars/Olympus'", id="bad timezone"),
        pytest.param(orjson.dumps({**ENV, "type": "open_budget", "currency": "USD",
                                   "period": "monthly", "rollover": "yes"}), "schema",
                     "rollover", id="string bool"),
        pytest.param(orjson.dumps({**ENV, "type": "open_budget", "currency": "USD",
                                   "period": "monthly", "hard_cap": 100}), "schema",
                     'hard_cap must be a JSON string like "12.50"', id="numeric cap"),
        pytest.param(orjson.dumps({**ENV, "type": "charge", "ref_id": "r", "currency": "USD"}),
                     "schema", "unknown field 'currency'", id="charge has no currency"),
    ],
)  # fmt: skip
def test_malformed_commands_are_refused_with_a_reason(
    raw: bytes, error_class: str, message: str
) -> None:
    with pytest.raises(CommandInvalid) as info:
        parse_command(raw)
    assert info.value.error_class == error_class
    assert message in info.value.reason
    assert "\n" not in info.value.reason
    assert str(info.value) == info.value.reason


def test_currency_table_is_configurable() -> None:
    table = {"USD": 2, "BHD": 3}
    c = parse_command(_raw(currency="BHD", amount="1.234"), table)
    assert c.amount == "1.234"  # type: ignore[union-attr]
    with pytest.raises(CommandInvalid, match="unknown currency 'ZWG'"):
        parse_command(_raw(currency="ZWG"), table)


def test_configure_distinguishes_absent_from_null() -> None:
    c = parse_command(orjson.dumps({**ENV, "type": "configure_budget", "hard_cap": None}))
    assert c.changes() == {"hard_cap": None}  # type: ignore[union-attr]


# --- money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "digits", "minor"),
    [("12.50", 2, 1250), ("12.5", 2, 1250), ("12", 2, 1200), ("0.01", 2, 1), ("-3", 2, -300),
     ("7", 0, 7), ("1.234", 3, 1234), ("0", 2, 0)],
)  # fmt: skip
def test_to_minor(text: str, digits: int, minor: int) -> None:
    assert to_minor(text, digits) == minor


@pytest.mark.parametrize("text", ["1.234", "1e2", "", "1.", ".5", "+1", "01", "NaN"])
def test_to_minor_refuses_inexact_or_odd_text(text: str) -> None:
    with pytest.raises(ValueError):
        to_minor(text, 2)


@given(st.integers(-(10**17), 10**17), st.sampled_from([0, 2, 3]))
def test_decimal_round_trip(minor: int, digits: int) -> None:
    text = to_decimal_str(minor, digits)
    assert to_minor(text, digits) == minor
    assert "e" not in text and (digits == 0 or len(text.split(".")[1]) == digits)


def test_decimal_rendering() -> None:
    assert [to_decimal_str(m, 2) for m in (1250, -300, 5, 0, -5)] == [
        "12.50", "-3.00", "0.05", "0.00", "-0.05"
    ]  # fmt: skip
    assert normalize_decimal("12.50") == "12.5" and normalize_decimal("3.00") == "3"


# --- events and alerts on the wire ----------------------------------------------------------


T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _event(**over: Any) -> LedgerEvent:
    base: dict[str, Any] = dict(
        type="reservations_expired", tenant_id="acme", budget_id="b-1", sequence=7,
        command_id="c-7", command_type="expire_reservations", ref_id=None, currency="USD",
        amount=350, reason=None,
        data={"as_of": T0, "expired": [["a", 100], ["b", 250]]},
        funded=100000, reserved=0, charged=2500, available=97500, utilization_bp=250,
        recorded_at=T0, metadata={"k": ["v", 1, True, None]},
        prev_hash="a" * 64, hash="b" * 64,
    )  # fmt: skip
    return LedgerEvent(**{**base, **over})


@pytest.mark.parametrize(
    "ev",
    [
        _event(),
        _event(type="budget_adjusted", amount=-2550, data={"reason": "x", "operator": "o"}),
        _event(type="reservation_charged", amount=1050, ref_id="r", data={"released": 1950}),
        _event(type="budget_opened", amount=0, data={"hard_cap": None, "soft_cap": 5000,
                                                     "period_allowance": 0, "rollover": True}),
        _event(type="period_closed", amount=None, data={"closed_funded": 1, "unspent": 0,
                                                        "rolled_over": 0, "allowance": 10}),
        _event(type="command_rejected", currency=None, amount=None, reason="unknown_budget",
               data={"detail": "x"}, funded=0, reserved=0, charged=0, available=0,
               utilization_bp=0, metadata=None),
        _event(type="funds_reserved", amount=5, ref_id="r",
               data={"expires_at": T0 + timedelta(microseconds=1)}),
    ],
)  # fmt: skip
def test_event_wire_round_trip(ev: LedgerEvent) -> None:
    wire = event_to_wire(ev, 2)
    text = orjson.dumps(wire)
    assert event_from_wire(orjson.loads(text), 2) == ev
    assert not re.search(rb'"(amount|funded|reserved|charged|available)":\d', text)


def test_money_in_event_data_is_never_a_number_on_the_wire() -> None:
    wire = event_to_wire(_event(), 2)
    assert wire["data"]["expired"] == [["a", "1.00"], ["b", "2.50"]]
    assert wire["amount"] == "3.50" and wire["funded"] == "1000.00"
    assert wire["data"]["as_of"] == wire["recorded_at"] == "2026-11-25T12:00:00.000000Z"
    assert wire["utilization_pct"] == "2.50"


def test_a_refusal_detail_is_rendered_with_the_budgets_digits() -> None:
    detail = ("available ", Money(105, 2), " of ", Money(7, 0), " as of ", T0)
    wire = event_to_wire(_event(type="command_rejected", data={"detail": detail}), 2)
    assert wire["data"]["detail"] == "available 1.05 of 7 as of 2026-11-25T12:00:00.000000Z"


def test_alert_wire_round_trip_and_stable_id() -> None:
    a = Alert(type="soft_cap_exceeded", severity="warning", tenant_id="acme", budget_id="b-1",
              utilization_bp=1000, threshold_bp=800, sequence=9, recorded_at=T0,
              data={"currency": "USD", "limit": 1000, "committed": 100, "available": 900,
                    "threshold_amount": 80})  # fmt: skip
    wire = alert_to_wire(a, 2)
    assert (wire["utilization_pct"], wire["threshold"]) == ("10.00", "8.00")
    assert wire["data"]["limit"] == "10.00" and wire["data"]["threshold_amount"] == "0.80"
    assert alert_from_wire(orjson.loads(orjson.dumps(wire)), 2) == a
    assert wire["alert_id"] == make_alert_id("acme", "b-1", "soft_cap_exceeded", 9)
    assert re.fullmatch(r"[0-9a-f]{32}", wire["alert_id"])


def test_rfc3339_utc_is_fixed_width_utc() -> None:
    from datetime import datetime, timedelta, timezone

    dt = datetime(2026, 11, 25, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339_utc(dt) == "2026-11-25T12:00:00.000000Z"


# --- canonical encoding and hash ------------------------------------------------------------


def test_canonical_is_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode()


@pytest.mark.parametrize("bad", [{"x": 1.5}, {"x": [0.1]}, {"x": {1: "a"}}, {"x": object()}])
def test_canonical_refuses_unstable_values(bad: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        canonical(bad)


def test_chain_hash_matches_its_definition() -> None:
    import hashlib

    wire = {"b": "1.00", "a": 2}
    expected = hashlib.sha256(GENESIS_HASH.encode() + canonical(wire)).hexdigest()
    assert chain_hash(GENESIS_HASH, wire) == expected
    assert chain_hash(GENESIS_HASH, {"a": 2, "b": "1.00"}) == expected  # key order is irrelevant


# --- idempotency ----------------------------------------------------------------------------


def test_fingerprint_ignores_spelling_but_not_meaning() -> None:
    fp = fingerprint(parse_command(_raw(issued_at="2026-11-25T12:00:00Z")))
    same = fingerprint(parse_command(_raw(amount="12.5", issued_at="2026-11-25T14:00:00+02:00")))
    other = fingerprint(parse_command(_raw(amount="12.51", issued_at="2026-11-25T12:00:00Z")))
    assert fp == same != other
    assert classify(None, fp) == "new"
    assert classify(fp, same) == "duplicate"
    assert classify(fp, other) == "conflict"


def test_fingerprint_of_configure_tells_null_from_absent() -> None:
    clear = parse_command(orjson.dumps({**ENV, "type": "configure_budget", "hard_cap": None,
                                        "rollover": True}))  # fmt: skip
    keep = parse_command(orjson.dumps({**ENV, "type": "configure_budget", "rollover": True}))
    assert fingerprint(clear) != fingerprint(keep)


# --- JSON Schemas ---------------------------------------------------------------------------


def _doc_examples() -> list[tuple[str, dict[str, Any]]]:
    text = DOC.read_text()
    found = re.findall(r"<!-- example: ([\w.]+) -->\s*```json\n(.*?)```", text, re.S)
    return [(name, orjson.loads(body)) for name, body in found]


def test_every_type_has_a_schema() -> None:
    schemas = json_schemas()
    assert {k.split(".")[0] for k in schemas} == {"command", "event", "alert"}
    assert len([k for k in schemas if k.startswith("command.")]) == 11
    assert len([k for k in schemas if k.startswith("event.")]) == 13
    assert len([k for k in schemas if k.startswith("alert.")]) == 5


def test_doc_examples_validate_against_exported_schemas() -> None:
    schemas = json_schemas()
    examples = _doc_examples()
    assert len(examples) >= 8
    for name, example in examples:
        jsonschema.validate(example, schemas[name])
        if name.startswith("command."):
            jsonschema.validate(example, schemas["command"])
            parse_command(orjson.dumps(example))  # and the parser agrees
        # The schema of one type refuses another type's instance (the `type` const).
        other = "event.budget_funded" if name != "event.budget_funded" else "event.budget_opened"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(example, schemas[other])


def test_doc_event_examples_carry_valid_hashes() -> None:
    events = [e for n, e in _doc_examples() if n.startswith("event.")]
    for ev in events:
        body = {k: v for k, v in ev.items() if k != "hash"}
        assert chain_hash(ev["prev_hash"], body) == ev["hash"]


def test_schemas_refuse_money_as_numbers() -> None:
    schemas = json_schemas()
    bad = {**RESERVE, "amount": 12.5}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["command.reserve"])
    ev = event_to_wire(_event(), 2)
    jsonschema.validate(ev, schemas["event.reservations_expired"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ev, "funded": 1000}, schemas["event.reservations_expired"])


KEY_PART = st.text(min_size=1, max_size=20).filter(lambda s: ":" not in s and id_problem(s) is None)


@settings(max_examples=50)
@given(st.integers(1, 10**9), KEY_PART)
def test_any_valid_reserve_round_trips_through_its_fingerprint(cents: int, ref: str) -> None:
    amount = to_decimal_str(cents, 2)
    c1 = parse_command(_raw(amount=amount, ref_id=ref))
    c2 = parse_command(orjson.dumps(c1.model_dump(mode="json")))
    assert fingerprint(c1) == fingerprint(c2)


def test_seal_changes_only_the_hash_and_the_hash_covers_the_wire() -> None:
    ev = dataclasses.replace(_event(), hash="")
    sealed, text = seal(ev, 2)
    assert sealed == dataclasses.replace(ev, hash=sealed.hash)  # every other field kept
    wire = orjson.loads(text)
    assert wire == event_to_wire(sealed, 2)
    body = {k: v for k, v in wire.items() if k != "hash"}
    assert chain_hash(ev.prev_hash, body) == sealed.hash
    # Stored as the hashed bytes themselves, the hash appended as the last key.
    assert text == canonical(body).decode()[:-1] + f',"hash":"{sealed.hash}"}}'


def test_event_digest_hashes_the_stored_bytes_or_re_encodes_a_jsonb_era_row() -> None:
    sealed, text = seal(dataclasses.replace(_event(), hash=""), 2)
    body = orjson.loads(text)
    del body["hash"]
    assert event_digest(sealed.prev_hash, text, body) == sealed.hash
    # JSONB's rendering of the same event (rows written before migration 024): re-encoded.
    jsonb_era = json.dumps({**body, "hash": sealed.hash}, ensure_ascii=False)
    assert event_digest(sealed.prev_hash, jsonb_era, body) == sealed.hash
    # The stored bytes are what is verified: an edit that keeps the layout breaks the hash,
    # even one that leaves the parsed event the same (a space).
    forged = text.replace('"command_id":"c-7"', '"command_id":"c-8"')
    assert forged != text and event_digest(sealed.prev_hash, forged, body) != sealed.hash
    spaced = text.replace('"type":', '"type": ')
    assert orjson.loads(spaced) == orjson.loads(text)
    assert event_digest(sealed.prev_hash, spaced, body) != sealed.hash
    assert event_digest(GENESIS_HASH, text, body) != sealed.hash  # another predecessor
