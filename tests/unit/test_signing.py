"""Signed privileged commands: the header format, rotation, every refusal, and the processor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from budget_ledger.consumers.processor import (
    BatchContext,
    BatchOutput,
    Incoming,
    PartitionState,
    process_batch,
)
from budget_ledger.ledger.budget import BudgetState, initial_state
from budget_ledger.schemas import signing
from budget_ledger.schemas.signing import (
    CHECK_KEY,
    CHECK_MAC,
    CHECK_MALFORMED,
    CHECK_MISSING,
    CHECK_TENANT,
    Refusal,
    Signer,
    Verified,
    canonical_bytes,
    sign,
    verify,
)

pytestmark = pytest.mark.unit

SECRET = b"unit-test-signing-key-0123456789abcdef"
OLD = b"unit-test-retired-key-0123456789abcdef"
KEYS = {"k2": SECRET}
SIGNER = Signer("k2", SECRET, "alice@finance")
KEY = b"acme:b-1"
VALUE = b'{"command_id":"f-1","type":"fund","tenant_id":"acme","budget_id":"b-1"}'

# The worked example of docs/security.md ("Signed privileged commands").
DOC_SECRET = b"example-secret-0123456789abcdef-0123"
DOC_VALUE = (
    b'{"command_id":"f-1","type":"fund","tenant_id":"acme","budget_id":"b-1",'
    b'"amount":"100.00","currency":"USD"}'
)
DOC_MAC = "9709bf106bf12a642c9a19816ca14420bb84e0c39d22be7b6330fe72ee50a617"


def test_the_documented_example_signs_to_the_documented_mac() -> None:
    headers = dict(
        sign(
            b"acme:b-1",
            DOC_VALUE,
            key_id="k2026-11",
            secret=DOC_SECRET,
            principal="alice@finance",
            tenant="acme",
        )
    )
    assert headers == {
        "ledger-key-id": b"k2026-11",
        "ledger-principal": b"alice@finance",
        "ledger-tenant": b"acme",
        "ledger-sig-v1": DOC_MAC.encode(),
    }


def test_canonical_bytes_are_length_prefixed_fields() -> None:
    canon = canonical_bytes("k", "p", "*", b"t:b", b"{}")
    assert canon == (
        b"ledger-sig-v1"
        + b"\0\0\0\1k"
        + b"\0\0\0\1p"
        + b"\0\0\0\1*"
        + b"\0\0\0\3t:b"
        + b"\0\0\0\2{}"
    )
    # Moving bytes between neighbouring fields changes the encoding (no ambiguous concatenation).
    assert canonical_bytes("k", "pa", "*", b"t:b", b"{}") != canonical_bytes(
        "k", "p", "a*", b"t:b", b"{}"
    )


def test_a_signed_message_verifies_and_names_its_principal() -> None:
    assert verify(SIGNER.headers(KEY, VALUE), KEY, VALUE, KEYS, "acme") == Verified(
        "alice@finance", "*", "k2"
    )
    scoped = SIGNER.as_principal("acme-ops", "acme")
    assert verify(scoped.headers(KEY, VALUE), KEY, VALUE, KEYS, "acme") == Verified(
        "acme-ops", "acme", "k2"
    )


def test_rotation_accepts_every_active_key_and_refuses_a_removed_one() -> None:
    old = Signer("k1", OLD, "sweeper")
    both = {"k1": OLD, "k2": SECRET}
    assert isinstance(verify(old.headers(KEY, VALUE), KEY, VALUE, both), Verified)
    assert isinstance(verify(SIGNER.headers(KEY, VALUE), KEY, VALUE, both), Verified)
    retired = verify(old.headers(KEY, VALUE), KEY, VALUE, KEYS)
    assert isinstance(retired, Refusal) and retired.check == CHECK_KEY


def _check(headers: Any, key: bytes = KEY, value: bytes = VALUE, tenant: str = "acme") -> str:
    result = verify(headers, key, value, KEYS, tenant)
    assert isinstance(result, Refusal), result
    return result.check


def _swap(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


def test_every_refusal_names_its_check() -> None:
    good = SIGNER.headers(KEY, VALUE)
    assert _check([]) == CHECK_MISSING
    assert _check([("traceparent", b"00-abc")]) == CHECK_MISSING
    assert _check(good[:3]) == CHECK_MALFORMED  # no MAC
    assert _check([*good, good[0]]) == CHECK_MALFORMED  # a header twice
    assert _check(_swap(good, "ledger-sig-v1", b"zz" * 32)) == CHECK_MALFORMED
    assert _check(_swap(good, "ledger-principal", b"\xff")) == CHECK_MALFORMED
    assert _check(_swap(good, "ledger-principal", b"")) == CHECK_MALFORMED
    assert _check([(n, None if n == "ledger-tenant" else v) for n, v in good]) == CHECK_MALFORMED
    # Unknown key, forged MAC, another payload, another key, swapped principal or tenant.
    assert _check(Signer("k9", SECRET, "x").headers(KEY, VALUE)) == CHECK_KEY
    assert _check(Signer("k2", b"x" * 40, "x").headers(KEY, VALUE)) == CHECK_MAC
    assert _check(_swap(good, "ledger-sig-v1", b"0" * 64)) == CHECK_MAC
    assert _check(good, value=VALUE.replace(b"f-1", b"f-2")) == CHECK_MAC
    assert _check(good, key=b"acme:b-2") == CHECK_MAC
    assert _check(_swap(good, "ledger-principal", b"mallory")) == CHECK_MAC
    assert _check(_swap(good, "ledger-tenant", b"acme")) == CHECK_MAC
    # A tenant-scoped principal acting on another tenant.
    scoped = SIGNER.as_principal("acme-ops", "acme").headers(KEY, VALUE)
    assert _check(scoped, tenant="globex") == CHECK_TENANT


def test_the_signer_never_shows_its_secret() -> None:
    assert SECRET.decode() not in repr(SIGNER)
    with pytest.raises(ValueError):
        sign(KEY, VALUE, key_id="bad id", secret=SECRET, principal="p")
    with pytest.raises(ValueError):
        sign(KEY, VALUE, key_id="k", secret=SECRET, principal="has space")


def test_privileged_types_are_the_documented_eight() -> None:
    documented = {
        "open_budget", "configure_budget", "fund", "adjust", "close_period", "expire_reservations",
        "set_monitor", "remove_monitor",
    }  # fmt: skip
    assert documented == signing.PRIVILEGED


# -- the processor ----------------------------------------------------------------------------

CTX = BatchContext("cmd", "events", "alerts", "dlq", {"USD": 2}, signing_keys=KEYS)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _cmd(cid: str, kind: str, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    return {"command_id": cid, "type": kind, "tenant_id": tenant, "budget_id": "b-1", **fields}


def _msg(offset: int, command: dict[str, Any], signer: Signer | None = SIGNER) -> Incoming:
    key = f"{command['tenant_id']}:{command['budget_id']}".encode()
    value = orjson.dumps(command)
    headers = tuple(signer.headers(key, value)) if signer else ()
    return Incoming(0, offset, key, value, headers=headers)


def _run(messages: list[Incoming]) -> BatchOutput:
    def load(keys: list[tuple[str, str]]) -> dict[tuple[str, str], BudgetState]:
        return {k: initial_state(*k) for k in keys}

    parts = {0: PartitionState(next_offset=0)}
    return process_batch(messages, parts, CTX, lambda _k: {}, load, NOW)


def _dead(out: BatchOutput) -> list[dict[str, str]]:
    return [dict(orjson.loads(h or "[]")) for t, _k, _v, h in out.outbox_rows if t == "dlq"]


OPEN = _cmd("o-1", "open_budget", currency="USD", period="monthly")
FUND = _cmd("f-1", "fund", amount="100.00", currency="USD")


def test_signed_privileged_commands_apply_and_reserve_needs_no_signature() -> None:
    out = _run([
        _msg(0, OPEN),
        _msg(1, FUND),
        _msg(2, _cmd("r-1", "reserve", amount="5.00", currency="USD", ref_id="rw"), None),
        _msg(3, _cmd("c-1", "charge", ref_id="rw"), None),
        _msg(4, _cmd("r-2", "reserve", amount="5.00", currency="USD", ref_id="rw2"), None),
        _msg(5, _cmd("l-1", "release", ref_id="rw2"), None),
    ])  # fmt: skip
    assert _dead(out) == []
    assert [r[3] for r in out.ledger_rows] == [
        "budget_opened", "budget_funded", "funds_reserved", "reservation_charged",
        "funds_reserved", "reservation_released",
    ]  # fmt: skip


def _refused_check(command: dict[str, Any], headers: tuple[tuple[str, bytes | None], ...]) -> str:
    key = f"{command['tenant_id']}:{command['budget_id']}".encode()
    value = orjson.dumps(command)
    out = _run([_msg(0, OPEN), Incoming(0, 1, key, value, headers=headers)])
    assert [r[3] for r in out.ledger_rows] == ["budget_opened"]  # nothing else changed
    (dead,) = _dead(out)
    assert dead["error_class"] == "unauthorized"
    assert (dead["tenant_id"], dead["command_id"]) == (command["tenant_id"], command["command_id"])
    assert out.dead_letter_classes == {"unauthorized": 1}
    return dead["check"]


@pytest.mark.parametrize(
    "command",
    [
        FUND,
        _cmd("cf-1", "configure_budget", hard_cap="10.00"),
        _cmd("a-1", "adjust", amount="5.00", reason="fix", operator="alice"),
        _cmd("cp-1", "close_period", period_end="2026-12-01T00:00:00Z"),
        _cmd("e-1", "expire_reservations", as_of="2026-11-26T00:00:00Z"),
        _cmd("o-2", "open_budget", currency="USD", period="rolling"),
    ],
)
def test_each_privileged_type_is_dead_lettered_for_each_bad_signature(
    command: dict[str, Any],
) -> None:
    key = f"{command['tenant_id']}:{command['budget_id']}".encode()
    value = orjson.dumps(command)
    other = orjson.dumps({**command, "command_id": "other"})
    assert _refused_check(command, ()) == CHECK_MISSING
    assert _refused_check(command, tuple(Signer("k2", b"f" * 40, "x").headers(key, value))) == (
        CHECK_MAC
    )
    assert _refused_check(command, tuple(Signer("k1", OLD, "x").headers(key, value))) == CHECK_KEY
    assert _refused_check(command, tuple(SIGNER.headers(key, other))) == CHECK_MAC
    scoped = SIGNER.as_principal("globex-ops", "globex")
    assert _refused_check(command, tuple(scoped.headers(key, value))) == CHECK_TENANT


def test_a_signed_adjust_records_the_signed_principal_as_operator() -> None:
    adjust = _cmd("a-1", "adjust", amount="-5.00", reason="fix", operator="someone-else")
    out = _run([_msg(0, OPEN), _msg(1, FUND), _msg(2, adjust)])
    event = orjson.loads(out.ledger_rows[-1][16])
    assert event["type"] == "budget_adjusted"
    assert event["data"]["operator"] == "alice@finance"


def test_without_configured_keys_every_privileged_command_is_refused() -> None:
    ctx = BatchContext("cmd", "events", "alerts", "dlq", {"USD": 2}, signing_keys={})
    out = process_batch(
        [_msg(0, OPEN)],
        {0: PartitionState(next_offset=0)},
        ctx,
        lambda _k: {},
        lambda keys: {k: initial_state(*k) for k in keys},
        NOW,
    )
    assert out.ledger_rows == []
    assert [d["check"] for d in _dead(out)] == [CHECK_KEY]


# -- settings and the process's signer --------------------------------------------------------


def test_signing_settings_are_validated_and_never_show_the_secret() -> None:
    from budget_ledger.consumers.client import (
        SigningUnavailable,
        settings_signer,
        signature_headers,
    )
    from budget_ledger.ledger.settings import SettingsError, load_settings
    from budget_ledger.schemas.commands import parse_command

    secret = SECRET.decode()
    s = load_settings(signing_keys={"k2": secret}, signing_key_id="k2", signing_principal="ops")
    assert secret not in repr(s) and secret not in str(s.model_dump())
    signer = settings_signer(s)
    assert signer is not None and (signer.key_id, signer.principal) == ("k2", "ops")
    assert settings_signer(s, "alice", "acme") == Signer("k2", SECRET, "alice", "acme")
    with pytest.raises(SettingsError, match="shorter than 32"):
        load_settings(signing_keys={"k2": "short"})
    with pytest.raises(SettingsError, match="LEDGER_SIGNING_KEY_ID"):
        load_settings(signing_keys={"k2": secret}, signing_key_id="k9")

    unsigned = load_settings(signing_keys={}, signing_key_id="")
    assert settings_signer(unsigned) is None
    fund = parse_command(VALUE.replace(b"}", b',"amount":"1.00","currency":"USD"}'), {"USD": 2})
    with pytest.raises(SigningUnavailable):
        signature_headers(None, fund, KEY, VALUE)
    reserve = parse_command(
        b'{"command_id":"r","type":"reserve","tenant_id":"acme","budget_id":"b-1",'
        b'"amount":"1.00","currency":"USD","ref_id":"x"}',
        {"USD": 2},
    )
    assert signature_headers(None, reserve, KEY, VALUE) is None
