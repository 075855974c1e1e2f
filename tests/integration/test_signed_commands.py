"""Signed privileged commands through the real consumer: every bad signature is dead-lettered
with `unauthorized` and the failed check, and changes nothing; a signed adjust records its
signer as the operator."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.signing import KafkaHeaders, Signer
from tests.integration.support import (
    dead_letters,
    fund,
    ledger_count,
    open_budget,
    produce,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT, BUDGET = "acme", "b1"
KEY = f"{TENANT}:{BUDGET}".encode()


def _privileged(kind: str, cid: str) -> dict[str, Any]:
    base = {"command_id": cid, "tenant_id": TENANT, "budget_id": BUDGET}
    fields: dict[str, dict[str, Any]] = {
        "fund": {"type": "fund", "amount": "1000.00", "currency": "USD"},
        "adjust": {"type": "adjust", "amount": "1000.00", "reason": "x", "operator": "mallory"},
        "open_budget": {"type": "open_budget", "currency": "USD", "period": "monthly",
                        "budget_id": "b-new"},
        "close_period": {"type": "close_period", "period_end": "2026-12-01T00:00:00Z"},
    }  # fmt: skip
    return {**base, **fields[kind]}


def _key(command: dict[str, Any]) -> bytes:
    return f"{command['tenant_id']}:{command['budget_id']}".encode()


def _bad_cases(settings: Settings) -> list[tuple[str, dict[str, Any], KafkaHeaders | None]]:
    """(expected check, command, headers) for every bad signature of every privileged kind."""
    good = settings_signer(settings, "ops@acme")
    assert good is not None
    forged = Signer(good.key_id, b"not-the-ledger-key-0123456789abcdef", "ops@acme")
    retired = Signer("retired-2025", b"a-key-the-ledger-no-longer-holds-0123", "ops@acme")
    other_tenant = good.as_principal("globex-ops", "globex")
    cases: list[tuple[str, dict[str, Any], KafkaHeaders | None]] = []
    for kind in ("fund", "adjust", "open_budget", "close_period"):
        command = _privileged(kind, f"unsigned-{kind}")
        cases.append(("signature_missing", command, None))
        command = _privileged(kind, f"forged-{kind}")
        cases.append(("signature_mismatch", command, forged.headers(_key(command), _v(command))))
        command = _privileged(kind, f"retired-{kind}")
        cases.append(("key_unknown", command, retired.headers(_key(command), _v(command))))
        # A valid signature of another command, replayed on this one.
        command = _privileged(kind, f"replayed-{kind}")
        signed_for = _v(_privileged(kind, f"harmless-{kind}"))
        cases.append(("signature_mismatch", command, good.headers(_key(command), signed_for)))
        command = _privileged(kind, f"tenant-{kind}")
        cases.append(("tenant_scope", command, other_tenant.headers(_key(command), _v(command))))
    return cases


def _v(command: dict[str, Any]) -> bytes:
    return orjson.dumps(command)


def _state(settings: Settings) -> tuple[Any, ...]:
    return (
        ledger_count(settings.database_url),
        scalar(settings.database_url, "SELECT count(*) FROM budget_balances"),
        scalar(
            settings.database_url,
            "SELECT (funded, sequence)::text FROM budget_balances"
            " WHERE tenant_id = %(t)s AND budget_id = %(b)s",
            {"t": TENANT, "b": BUDGET},
        ),
    )


def test_badly_signed_privileged_commands_are_dead_lettered_and_change_nothing(
    settings: Settings,
) -> None:
    with running_consumer(settings, relay=False):
        produce(
            settings, [open_budget(TENANT, BUDGET, "open-1"), fund(TENANT, BUDGET, "f-1", "100.00")]
        )
        wait_for(lambda: ledger_count(settings.database_url) == 2, what="the signed open and fund")
        before = _state(settings)
        assert before == (2, 1, "(10000,2)")

        cases = _bad_cases(settings)
        producer = Producer(producer_config(settings))
        for _check, command, headers in cases:
            producer.produce(
                settings.topic_commands, key=_key(command), value=_v(command), headers=headers
            )
        assert producer.flush(30) == 0
        wait_for(lambda: len(dead_letters(settings)) == len(cases), what="every dead letter")

        dead = dead_letters(settings)
        for check, command, _headers in cases:
            headers = dead[_v(command)]
            assert headers["error_class"] == "unauthorized", command["command_id"]
            assert headers["check"] == check, command["command_id"]
            assert headers["command_id"] == command["command_id"]
        # Balances, sequences and the ledger are as they were; no budget was opened.
        assert _state(settings) == before
        assert scalar(settings.database_url, "SELECT count(*) FROM reservations") == 0

        # The same commands, signed, are taken: an adjust records its signer, not its text.
        adjust = _privileged("adjust", "signed-adjust")
        signer = settings_signer(settings, "alice@finance")
        assert signer is not None
        producer.produce(
            settings.topic_commands,
            key=KEY,
            value=_v(adjust),
            headers=signer.headers(KEY, _v(adjust)),
        )
        assert producer.flush(30) == 0
        wait_for(lambda: ledger_count(settings.database_url) == 3, what="the signed adjust")
    event = orjson.loads(
        scalar(
            settings.database_url,
            "SELECT event::text FROM ledger WHERE command_id = 'signed-adjust'",
        )
    )
    assert event["type"] == "budget_adjusted"
    assert event["data"]["operator"] == "alice@finance"
    assert _state(settings) == (3, 1, "(110000,3)")


def test_reserve_charge_and_release_need_no_signature(settings: Settings) -> None:
    with running_consumer(settings, relay=False):
        produce(
            settings, [open_budget(TENANT, BUDGET, "open-1"), fund(TENANT, BUDGET, "f-1", "100.00")]
        )
        unsigned = [
            {"command_id": "r-1", "type": "reserve", "tenant_id": TENANT, "budget_id": BUDGET,
             "amount": "10.00", "currency": "USD", "ref_id": "rw-1"},
            {"command_id": "c-1", "type": "charge", "tenant_id": TENANT, "budget_id": BUDGET,
             "ref_id": "rw-1"},
            {"command_id": "r-2", "type": "reserve", "tenant_id": TENANT, "budget_id": BUDGET,
             "amount": "10.00", "currency": "USD", "ref_id": "rw-2"},
            {"command_id": "l-2", "type": "release", "tenant_id": TENANT, "budget_id": BUDGET,
             "ref_id": "rw-2"},
        ]  # fmt: skip
        produce(settings, unsigned, sign=False)
        wait_for(lambda: ledger_count(settings.database_url) == 6, what="every command")
    assert dead_letters(settings) == {}
