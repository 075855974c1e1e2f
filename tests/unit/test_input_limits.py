"""The input limits of docs/input-limits.md, one test per rule, each bad message of the hostile
test that used to crash-loop the consumer included. Pure: parse_command only."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_ledger.ledger.idempotency import fingerprint, fingerprint_reference
from budget_ledger.schemas.commands import CommandInvalid, Fund, parse_command
from budget_ledger.schemas.limits import (
    MAX_MESSAGE_BYTES,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    duplicate_key,
    id_problem,
    text_problem,
)

pytestmark = pytest.mark.unit

ENV = {"command_id": "c-1", "tenant_id": "acme", "budget_id": "b-1"}
FUND = {**ENV, "type": "fund", "amount": "1.00", "currency": "USD"}
RESERVE = {**ENV, "type": "reserve", "amount": "1.00", "currency": "USD", "ref_id": "r-1"}
ADJUST = {**ENV, "type": "adjust", "amount": "-1.00", "reason": "fix", "operator": "ops"}
OPEN = {**ENV, "type": "open_budget", "currency": "USD", "period": "monthly"}


def refused(
    body: dict[str, Any] | bytes, currencies: dict[str, int] | None = None
) -> CommandInvalid:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(CommandInvalid) as info:
        parse_command(raw, currencies)
    assert "\n" not in info.value.reason
    return info.value


# --- 1. control characters in any string ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**FUND, "command_id": "c\u00001"}, "command_id", id="command_id"),
        pytest.param({**FUND, "tenant_id": "ac\u0000me"}, "tenant_id", id="tenant_id"),
        pytest.param({**FUND, "budget_id": "\u0000"}, "budget_id", id="budget_id"),
        pytest.param({**RESERVE, "ref_id": "r\u0000"}, "ref_id", id="ref_id"),
        pytest.param({**ADJUST, "operator": "o\u0000"}, "operator", id="operator"),
    ],
)
def test_nul_in_an_id_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    err = refused(body)
    assert err.error_class == "invalid_id"
    assert err.reason.startswith(f"{field} contains control character U+0000")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param({**ADJUST, "reason": "double\u0000top-up"}, "reason contains", id="reason"),
        pytest.param({**FUND, "metadata": {"k": "v\u0000"}}, "metadata at ['k']:", id="value"),
        pytest.param({**FUND, "metadata": {"k\u0000": 1}}, "metadata key 'k\\x00'", id="key"),
        pytest.param({**FUND, "metadata": {"a": [{"b": ["x", "\u0000"]}]}},
                     "metadata at ['a'][0]['b'][1]:", id="nested value"),
        pytest.param({**FUND, "metadata": {"a": {"\u0007": 1}}}, "metadata at ['a']: key",
                     id="nested key"),
    ],
)  # fmt: skip
def test_nul_in_free_text_is_refused_naming_where(body: dict[str, Any], where: str) -> None:
    err = refused(body)
    assert err.error_class == "invalid_text"
    assert err.reason.startswith(where), err.reason
    assert "control character" in err.reason


@pytest.mark.parametrize("char", ["\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
def test_every_c0_c1_control_and_del_is_refused_in_free_text(char: str) -> None:
    assert refused({**ADJUST, "reason": f"a{char}b"}).error_class == "invalid_text"
    assert refused({**FUND, "metadata": {"k": f"a{char}b"}}).error_class == "invalid_text"


def test_free_text_may_hold_any_printable_unicode() -> None:
    text = "Nachtrag für Déc. — ₿ 🎁 \u200d عربى"
    c = parse_command(orjson.dumps({**ADJUST, "reason": text, "metadata": {"note": text}}))
    assert c.reason == text  # type: ignore[union-attr]
    assert c.metadata == {"note": text}


# --- 2. ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("ac\u200bme", "invisible format character U+200B ZERO WIDTH SPACE",
                     id="zero-width space"),
        pytest.param("acme\u202e", "invisible format character U+202E RIGHT-TO-LEFT OVERRIDE",
                     id="bidi override"),
        pytest.param("\u2066acme", "U+2066", id="bidi isolate"),
        pytest.param("ac\ufeffme", "U+FEFF", id="byte order mark"),
        pytest.param("acme\uff1ab", "compatibility character U+FF1A FULLWIDTH COLON",
                     id="full-width colon"),
        pytest.param("\uff41cme", "FULLWIDTH LATIN SMALL LETTER A", id="full-width letter"),
        pytest.param("\ufb01le", "LATIN SMALL LIGATURE FI", id="ligature"),
        pytest.param("x\u00b2", "SUPERSCRIPT TWO", id="superscript"),
        pytest.param("cafe\u0301", "not in Unicode NFKC form", id="decomposed accent"),
        pytest.param("\u0301x", "starts with combining mark", id="leading mark"),
        pytest.param("a\u3000b", "space U+3000 IDEOGRAPHIC SPACE", id="ideographic space"),
        pytest.param("a\u2028b", "line separator", id="line separator"),
        pytest.param("\ue000", "private-use character U+E000", id="private use"),
        pytest.param("a\u0378", "unassigned code point U+0378", id="unassigned"),
        pytest.param("a b", "space U+0020 SPACE", id="ascii space"),
    ],
)  # fmt: skip
def test_ids_that_are_not_visible_nfkc_text_are_refused(value: str, expected: str) -> None:
    for field, body in (("command_id", FUND), ("budget_id", FUND), ("ref_id", RESERVE)):
        err = refused({**body, field: value})
        assert err.error_class == "invalid_id", err.reason
        assert err.reason.startswith(f"{field} "), err.reason
        assert expected in err.reason, err.reason
        # ...also when the message is plain ASCII (the character written as a JSON escape).
        escaped = json.dumps({**body, field: value}, ensure_ascii=True).encode()
        assert escaped.isascii()
        assert refused(escaped).reason == err.reason


def test_the_lookalike_tenant_does_not_become_a_second_budget_that_reads_the_same() -> None:
    err = refused({**FUND, "tenant_id": "acme\uff1ab"})
    assert (err.error_class, "reads as ':'" in err.reason) == ("invalid_id", True)


@pytest.mark.parametrize("value", ["acme", "b-1", "r_1.x", "ops@acme", "expire:b1:2026-01-01Z",
                                   "café", "日本語", "Zürich", "ñ", "🎁"])  # fmt: skip
def test_ordinary_ids_still_pass(value: str) -> None:
    assert id_problem(value) is None
    assert parse_command(orjson.dumps({**RESERVE, "ref_id": value})).ref_id == value  # type: ignore[union-attr]


def test_colon_stays_refused_in_tenant_and_budget_but_not_in_other_ids() -> None:
    for field in ("tenant_id", "budget_id"):
        err = refused({**FUND, field: "a:b"})
        assert err.error_class == "invalid_id"
        assert err.reason == f"{field} must not contain ':' (the Kafka key is tenant_id:budget_id)"
    assert parse_command(orjson.dumps({**FUND, "command_id": "close:b-1:2026"}))


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_an_accepted_id_is_its_own_nfkc_form_and_fully_visible(value: str) -> None:
    if id_problem(value) is None:
        assert unicodedata.normalize("NFKC", value) == value
        assert all(unicodedata.category(ch)[0] not in "CZ" for ch in value)
    else:
        assert isinstance(id_problem(value), str)


# --- 3. timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**FUND, "issued_at": "0001-01-01T00:00:00+14:00"}, "issued_at",
                     id="issued_at year 1"),
        pytest.param({**RESERVE, "expires_at": "9999-12-31T23:59:59-23:59"}, "expires_at",
                     id="expires_at year 9999"),
        pytest.param({**ENV, "type": "expire_reservations", "as_of": "9999-12-31T23:59:59-23:59"},
                     "as_of", id="as_of year 9999"),
        pytest.param({**ENV, "type": "close_period", "period_end": "1999-12-31T23:59:59Z"},
                     "period_end", id="period_end 1999"),
        pytest.param({**FUND, "issued_at": "2200-01-01T00:00:00Z"}, "issued_at",
                     id="first instant of 2200"),
        pytest.param({**FUND, "issued_at": "2000-01-01T00:30:00+01:00"}, "issued_at",
                     id="1999 once in UTC"),
    ],
)  # fmt: skip
def test_timestamps_outside_2000_2200_utc_are_refused(body: dict[str, Any], field: str) -> None:
    err = refused(body)
    assert err.error_class == "out_of_range"
    assert err.reason.startswith(f"{field} ") and "is out of range" in err.reason


@pytest.mark.parametrize(
    "stamp",
    ["2000-01-01T00:00:00Z", "1999-12-31T23:00:00-01:00", "2199-12-31T23:59:59.999999Z",
     "2200-01-01T01:00:00+01:30"],
)  # fmt: skip
def test_timestamps_at_the_edges_of_the_range_are_accepted(stamp: str) -> None:
    c = parse_command(orjson.dumps({**FUND, "issued_at": stamp}))
    assert c.issued_at is not None
    fingerprint(c)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)
def test_any_timestamp_is_refused_or_fingerprints_without_raising(
    when: datetime, offset_minutes: int
) -> None:
    stamp = when.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()
    for body in ({**FUND, "issued_at": stamp}, {**RESERVE, "expires_at": stamp},
                 {**ENV, "type": "expire_reservations", "as_of": stamp},
                 {**ENV, "type": "close_period", "period_end": stamp}):  # fmt: skip
        try:
            c = parse_command(orjson.dumps(body))
        except CommandInvalid as exc:
            assert exc.error_class == "out_of_range"
            continue
        assert fingerprint(c) == fingerprint_reference(c)


def test_fingerprint_does_not_raise_even_on_a_command_built_without_the_parser() -> None:
    extreme = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    c = Fund.model_construct(**{**FUND, "issued_at": extreme})
    assert fingerprint(c) == fingerprint(Fund.model_construct(**{**FUND, "issued_at": extreme}))
    assert fingerprint(c) != fingerprint(Fund.model_construct(**FUND))
    odd = Fund.model_construct(**{**FUND, "metadata": {"x": 1.5, "s": "\ud800"}})
    assert len(fingerprint(odd)) == 64 and len(fingerprint_reference(odd)) == 64


# --- 4. amounts (per command; balances are the domain's, see test_amount_limits) -----------


def test_an_amount_above_10_18_minor_units_is_refused_for_a_4_digit_currency() -> None:
    table = {"USD": 2, "CLF": 4}
    err = refused({**FUND, "currency": "CLF", "amount": "999999999999999.9999"}, table)
    assert err.error_class == "out_of_range"
    assert "100000000000000.0000 CLF" in err.reason
    ok = parse_command(
        orjson.dumps({**FUND, "currency": "CLF", "amount": "100000000000000"}), table
    )
    assert ok.amount == "100000000000000"  # type: ignore[union-attr]
    err = refused({**OPEN, "currency": "CLF", "hard_cap": "999999999999999.9999"}, table)
    assert err.error_class == "out_of_range" and "hard_cap" in err.reason


def test_the_largest_usd_amount_is_accepted() -> None:
    c = parse_command(orjson.dumps({**FUND, "amount": "999999999999999.99"}))
    assert c.amount == "999999999999999.99"  # type: ignore[union-attr]


# --- 6. sizes --------------------------------------------------------------------------------


def test_a_10_mb_message_is_refused_before_it_is_parsed() -> None:
    raw = orjson.dumps({**FUND, "metadata": {"blob": "x" * 10_000_000}})
    err = refused(raw)
    assert err.error_class == "too_large"
    assert str(MAX_MESSAGE_BYTES) in err.reason
    # Not even valid JSON is looked at: the size alone refuses it.
    assert refused(b"{" * (MAX_MESSAGE_BYTES + 1)).error_class == "too_large"
    assert refused("é" * (MAX_MESSAGE_BYTES // 2 + 1)).error_class == "too_large"  # type: ignore[arg-type]


def test_metadata_over_8_kib_is_refused_and_up_to_it_accepted() -> None:
    overhead = len(orjson.dumps({"b": ""}))
    fits = {"b": "x" * (MAX_METADATA_BYTES - overhead)}
    assert parse_command(orjson.dumps({**FUND, "metadata": fits})).metadata == fits
    err = refused({**FUND, "metadata": {"b": "x" * (MAX_METADATA_BYTES - overhead + 1)}})
    assert err.error_class == "too_large" and "metadata is 8193 bytes" in err.reason


def test_metadata_nested_deeper_than_8_levels_is_refused() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"n": value}
        return value

    assert parse_command(orjson.dumps({**FUND, "metadata": nested(MAX_METADATA_DEPTH)}))
    err = refused({**FUND, "metadata": nested(MAX_METADATA_DEPTH + 1)})
    assert err.error_class == "too_large" and "deeper than 8 levels" in err.reason
    err = refused({**FUND, "metadata": {"l": [[[[[[[[1]]]]]]]]}})
    assert err.error_class == "too_large"


def test_metadata_value_types_stay_as_before() -> None:
    assert refused({**FUND, "metadata": {"s": 1.5}}).reason.endswith("(got float)")
    assert "+/-2**53" in refused({**FUND, "metadata": {"n": [2**60]}}).reason
    assert refused({**FUND, "metadata": {"n": [2**60]}}).error_class == "schema"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**ADJUST, "reason": "x" * 1001}, "reason", id="reason"),
        pytest.param({**ADJUST, "operator": "x" * 129}, "operator", id="operator"),
        pytest.param({**FUND, "command_id": "x" * 129}, "command_id", id="command_id"),
        pytest.param({**OPEN, "timezone": "A" * 65}, "timezone", id="timezone"),
    ],
)
def test_text_fields_are_bounded(body: dict[str, Any], field: str) -> None:
    err = refused(body)
    assert err.error_class == "schema" and err.reason.startswith(f"{field} is longer than")


def test_timezone_is_an_iana_name_not_a_path() -> None:
    err = refused({**OPEN, "timezone": "../../etc/passwd"})
    assert "is not an IANA time zone name" in err.reason


# --- 7. duplicate keys -----------------------------------------------------------------------

DUPLICATES = [
    pytest.param(b'{"tenant_id":"evil","command_id":"c","budget_id":"b","type":"fund",'
                 b'"amount":"1","currency":"USD","tenant_id":"real"}', "tenant_id", id="top level"),
    pytest.param(b'{"tenant_id":"t","command_id":"c","budget_id":"b","type":"fund","amount":"1",'
                 b'"currency":"USD","metadata":{"a":1,"b":{"c":1,"c":2}}}', "c", id="nested"),
    pytest.param(b'{"tenant_id":"t","command_id":"c","budget_id":"b","type":"fund","amount":"1",'
                 b'"currency":"USD","metadata":{"l":[{"x":1},{"y":1,"y":1}]}}', "y",
                 id="in a list"),
    pytest.param(b'{"tenant_id" : "t", "command_id": "c", "budget_id": "b", "type": "fund",'
                 b' "amount": "1", "currency": "USD", "tenant_id" : "t"}', "tenant_id",
                 id="spaced, same value"),
    pytest.param(b'{"tenant_id":"t","command_id":"c:1","budget_id":"b","type":"fund",'
                 b'"amount":"1","currency":"USD","issued_at":"2026-01-01T00:00:00Z",'
                 b'"issued_at":"2026-01-01T00:00:00Z"}', "issued_at", id="colons in values"),
    pytest.param(b'{"tenant_id":"t","command_id":"c","budget_id":"b","type":"fund","amount":"1",'
                 b'"currency":"USD","metadata":{"q":"say \\"hi\\"","q":"x"}}', "q",
                 id="with escapes"),
    pytest.param(b'{"tenant_id":"t","command_id":"c","budget_id":"b","type":"fund","amount":"1",'
                 b'"currency":"USD","metadata":{"k":":","k":":"}}', "k",
                 id="values starting with a colon"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "key"), DUPLICATES)
def test_repeated_keys_are_refused_at_any_depth(raw: bytes, key: str) -> None:
    json.loads(raw)  # valid JSON: only the repeat is wrong
    err = refused(raw)
    assert err.error_class == "duplicate_key"
    assert err.reason == f"key {key!r} appears more than once in one JSON object"


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({**FUND, "metadata": {"a": {"b": [1, {"c": "x"}]}}}).encode(),
        json.dumps({**FUND, "metadata": {"é": "ü", "q": 'say "hi"'}}).encode(),
        json.dumps({**FUND, "metadata": {"x": ":", "y": ": a"}}, indent=2).encode(),
        orjson.dumps({**FUND, "issued_at": "2026-01-01T00:00:00+02:00", "command_id": "a:b:c"}),
        b'{ "command_id" :"c","tenant_id"\t:\t"t" ,"budget_id":"b","type":"fund","amount":"1",'
        b'"currency":"USD"}',
    ],
)
def test_no_repeated_key_is_found_where_there_is_none(raw: bytes) -> None:
    assert parse_command(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.text(':"\\ ab', max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(st.tuples(st.text(':"\\ ab', max_size=3), inner), max_size=4)
    ),
    max_leaves=12,
)


def _render(value: Any, spaced: bool) -> str:
    # JSON text that may repeat keys (a list of pairs stands for an object).
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        sep = " : " if spaced else ":"
        return "{" + ",".join(json.dumps(k) + sep + _render(v, spaced) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_render(v, spaced) for v in value) + "]"
    return json.dumps(value)


def _count_keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_keys(v) for v in value)
    return 0


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.text(":\"\\ ab", max_size=3), json_values), max_size=5),
       st.booleans())  # fmt: skip
def test_duplicate_key_fast_path_agrees_with_a_full_parse(
    pairs: list[tuple[str, Any]], spaced: bool
) -> None:
    text = _render(pairs, spaced) if pairs else "{}"
    repeated: list[str] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        repeated.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(items)

    parsed = json.loads(text, object_pairs_hook=hook)
    found = duplicate_key(text.encode(), _count_keys(parsed))
    assert (found is not None) == bool(repeated)


def test_text_problem_allows_format_characters_but_not_controls() -> None:
    assert text_problem("a\u200db") is None
    assert text_problem("a\u00a0b") is None
    assert text_problem("a\x00b") == "contains control character U+0000 at position 1"
    assert text_problem("a\ud800") == "contains surrogate U+D800 at position 1"


def test_error_class_names_the_first_specific_problem() -> None:
    err = refused({**FUND, "command_id": "a b", "issued_at": "1900-01-01T00:00:00Z"})
    assert err.error_class == "invalid_id"
    assert "issued_at" in err.reason  # both problems are still reported


def test_now_is_in_range() -> None:
    c = parse_command(orjson.dumps({**FUND, "issued_at": datetime.now(UTC).isoformat()}))
    assert c.issued_at is not None


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=8))
def test_the_plain_message_fast_path_agrees_with_the_full_id_rule(value: str) -> None:
    # Raw UTF-8 (orjson), every non-ASCII escaped (json ensure_ascii) and raw DEL/controls:
    # whichever spelling, an id is accepted exactly when the id rule accepts it.
    expected = id_problem(value) is None
    for raw in (orjson.dumps({**FUND, "command_id": value}),
                json.dumps({**FUND, "command_id": value}).encode()):  # fmt: skip
        try:
            accepted = parse_command(raw).command_id == value
        except CommandInvalid as exc:
            assert exc.error_class in ("invalid_id", "json"), exc.reason
            accepted = False
        assert accepted == expected


def test_a_raw_del_byte_in_an_otherwise_plain_message_is_refused() -> None:
    raw = orjson.dumps({**FUND, "command_id": "c\x7f1"})
    assert b"\x7f" in raw and raw.isascii()
    err = refused(raw)
    assert (err.error_class, "U+007F" in err.reason) == ("invalid_id", True)
