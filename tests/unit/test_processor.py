"""The consumer's batch logic without Kafka or Postgres: the look-ups are plain functions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import budget_ledger.consumers.processor as processor
import budget_ledger.ledger.record as record_mod
from budget_ledger.consumers.processor import BatchContext, Incoming, PartitionState, process_batch
from budget_ledger.ledger.budget import BudgetState, initial_state
from budget_ledger.schemas.commands import COMMAND_MODELS

pytestmark = pytest.mark.unit

CTX = BatchContext("cmd", "events", "alerts", "dlq", {"USD": 2, "ZWG": 2})
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _msg(offset: int, command: dict[str, Any] | bytes, key: bytes | None = None) -> Incoming:
    if isinstance(command, dict):
        value = orjson.dumps(command)
        key = key or f"{command['tenant_id']}:{command['budget_id']}".encode()
    else:
        value = command
    return Incoming(0, offset, key, value)


def _cmd(cid: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": cid, "type": kind, "tenant_id": "t", "budget_id": "b", **fields}


def _run(messages: list[Incoming], prior: Mapping[tuple[str, str], tuple[str, str]] | None = None,
         next_offset: int = 0) -> processor.BatchOutput:  # fmt: skip
    def load(keys: list[tuple[str, str]]) -> dict[tuple[str, str], BudgetState]:
        return {k: initial_state(*k) for k in keys}

    parts = {0: PartitionState(next_offset=next_offset)}
    return process_batch(messages, parts, CTX, lambda _keys: dict(prior or {}), load, NOW)


OPEN = _cmd("c1", "open_budget", currency="USD", period="rolling")
FUND = _cmd("c2", "fund", amount="10.00", currency="USD")


def test_every_message_moves_the_position_and_bad_ones_become_dead_letters() -> None:
    out = _run([
        _msg(0, OPEN),
        _msg(1, b"{nope", key=b"t:b"),
        _msg(2, FUND, key=b"t:other"),
        _msg(3, FUND),
        _msg(4, FUND),  # redelivered within the batch: same outcome, no second row
        _msg(5, {**FUND, "amount": "99.00"}),  # same id, other payload
    ])  # fmt: skip
    assert out.positions == {0: (0, 6)}
    assert [r[4] for r in out.ledger_rows] == ["c1", "c2"]
    dlq = [(orjson.loads(h or "[]"), v) for t, _k, v, h in out.outbox_rows if t == "dlq"]
    classes = [dict(h)["error_class"] for h, _ in dlq]
    assert classes == ["json", "key_mismatch", "idempotency_conflict"]
    republished = [v for t, _k, v, _h in out.outbox_rows if t == "events"]
    assert len(republished) == 1 and orjson.loads(republished[0])["command_id"] == "c2"
    assert out.balance_rows[0][4] == 1000  # funded, once


def test_messages_before_the_stored_position_are_skipped() -> None:
    out = _run([_msg(3, OPEN), _msg(4, FUND)], next_offset=4)
    assert out.positions == {0: (4, 5)}
    assert [r[4] for r in out.ledger_rows] == ["c2"]  # c1 was applied before (offset 3)


def test_a_failure_in_the_rules_dead_letters_that_command_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_decide = record_mod.decide

    def flaky_decide(state: BudgetState, command: Any, now: datetime) -> Any:
        if command.command_id == "c2":
            raise ZeroDivisionError("boom")
        return real_decide(state, command, now)

    monkeypatch.setattr(record_mod, "decide", flaky_decide)
    out = _run(
        [_msg(0, OPEN), _msg(1, FUND), _msg(2, _cmd("c3", "fund", amount="1.00", currency="USD"))]
    )
    assert [r[4] for r in out.ledger_rows] == ["c1", "c3"]
    assert [r[2] for r in out.ledger_rows] == [1, 2]  # no gap: the failed command got no sequence
    (headers,) = [dict(orjson.loads(h or "[]")) for t, *_, h in out.outbox_rows if t == "dlq"]
    assert headers["error_class"] == "internal_error" and "ZeroDivisionError" in headers["reason"]


def _dlq(out: processor.BatchOutput) -> list[dict[str, str]]:
    return [dict(orjson.loads(h or "[]")) for t, *_, h in out.outbox_rows if t == "dlq"]


def test_a_failing_fingerprint_dead_letters_that_command_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = processor.fingerprint

    def fingerprint(command: Any) -> str:
        if command.command_id == "c2":
            raise OverflowError("date value out of range")
        return real(command)

    monkeypatch.setattr(processor, "fingerprint", fingerprint)
    out = _run([_msg(0, OPEN), _msg(1, FUND), _msg(2, {**FUND, "command_id": "c3"})])
    assert [r[4] for r in out.ledger_rows] == ["c1", "c3"]
    (headers,) = _dlq(out)
    assert headers["error_class"] == "internal_error" and "OverflowError" in headers["reason"]
    assert (headers["tenant_id"], headers["command_id"]) == ("t", "c2")
    assert out.positions == {0: (0, 3)}


def test_a_failing_event_encoding_leaves_no_trace_of_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = record_mod.seal

    def seal(event: Any, digits: int) -> Any:
        if event.command_id == "c2":
            raise ValueError("cannot encode")
        return real(event, digits)

    monkeypatch.setattr(record_mod, "seal", seal)
    out = _run([_msg(0, OPEN), _msg(1, FUND), _msg(2, {**FUND, "command_id": "c3"})])
    assert [(r[4], r[2]) for r in out.ledger_rows] == [("c1", 1), ("c3", 2)]
    assert out.balance_rows[0][4] == 1000  # one fund of 10.00 applied, not two
    assert [h["error_class"] for h in _dlq(out)] == ["internal_error"]


def test_a_parser_crash_dead_letters_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse_command(raw: bytes, currencies: Any) -> Any:
        raise RecursionError("too deep")

    monkeypatch.setattr(processor, "parse_command", parse_command)
    out = _run([_msg(0, OPEN)])
    assert out.ledger_rows == [] and out.positions == {0: (0, 1)}
    (headers,) = _dlq(out)
    assert headers["error_class"] == "internal_error" and "RecursionError" in headers["reason"]
    # Not a command, but its JSON names the ids: the client awaiting it can fail fast.
    assert (headers["tenant_id"], headers["command_id"]) == ("t", "c1")
    out = _run([_msg(0, b"{nope", key=b"t:b"), _msg(1, b"[1, 2]", key=b"t:b")])
    assert ["command_id" in h for h in _dlq(out)] == [False, False]


def test_a_poisoned_message_is_dead_lettered_unapplied_and_the_rest_follows_without_a_gap() -> None:
    reason = "the database refused a row of this command: CheckViolation (23514): no"
    out = process_batch(
        [_msg(0, OPEN), _msg(1, FUND), _msg(2, {**FUND, "command_id": "c3"})],
        {0: PartitionState(next_offset=0)},
        CTX,
        lambda _keys: {},
        lambda keys: {k: initial_state(*k) for k in keys},
        NOW,
        poisoned={(0, 1): reason},
    )
    assert [(r[4], r[2]) for r in out.ledger_rows] == [("c1", 1), ("c3", 2)]
    (headers,) = _dlq(out)
    assert headers == {
        "error_class": "storage_refused",
        "reason": reason,
        "original_topic": "cmd",
        "original_partition": "0",
        "original_offset": "1",
        "tenant_id": "t",
        "command_id": "c2",
    }
    assert out.dead_letter_classes == {"storage_refused": 1}


def test_dead_letter_headers_never_carry_a_nul() -> None:
    # A NUL in the ids (refused by the parser) and in a reason (a Postgres message quoting it).
    out = process_batch(
        [_msg(0, OPEN), _msg(1, {**FUND, "command_id": "c\u00002"}), _msg(2, FUND)],
        {0: PartitionState(next_offset=0)},
        CTX,
        lambda _keys: {},
        lambda keys: {k: initial_state(*k) for k in keys},
        NOW,
        poisoned={(0, 1): "refused: \u0000", (0, 2): "refused: \u0000"},
    )
    raw = [h for t, *_, h in out.outbox_rows if t == "dlq"]
    assert len(raw) == 2 and all(h is not None and "\\u0000" not in h for h in raw)
    first, second = (dict(orjson.loads(h or "[]")) for h in raw)
    assert first["command_id"] == "c\ufffd2"
    assert second["command_id"] == "c2" and second["reason"] == "refused: \ufffd"


def test_an_oversized_message_is_cut_on_arrival_and_dead_lettered_with_its_size() -> None:
    from budget_ledger.schemas.limits import MAX_MESSAGE_BYTES

    huge = orjson.dumps({**FUND, "command_id": "huge", "metadata": {"blob": "x" * 10_000_000}})
    incoming = Incoming.bounded(0, 1, b"t:b", huge, 0)
    assert incoming.value is not None and len(incoming.value) == MAX_MESSAGE_BYTES
    assert Incoming.bounded(0, 2, b"t:b", orjson.dumps(FUND), 0).original_size == 0

    out = _run([_msg(0, OPEN), incoming, _msg(2, FUND)])
    assert [r[4] for r in out.ledger_rows] == ["c1", "c2"]
    [(topic, key, value, headers)] = out.outbox_rows
    fields = dict(orjson.loads(headers or "[]"))
    assert (topic, key, value) == ("dlq", b"t:b", huge[:MAX_MESSAGE_BYTES])
    assert fields["error_class"] == "too_large"
    assert fields["truncated"] == "true"
    assert fields["original_size"] == str(len(huge))
    assert str(len(huge)) in fields["reason"]


def test_alerts_and_dead_letters_become_rows_of_the_batch() -> None:
    out = _run([
        _msg(0, OPEN),
        _msg(1, FUND),
        _msg(2, _cmd("c3", "reserve", amount="8.00", currency="USD", ref_id="r1")),
        _msg(3, b"{nope", key=b"t:b"),  # no ids: on the DLQ topic only
        _msg(4, b'{"tenant_id": "t", "command_id": "c\\u0000x"}', key=b"t:b"),
        _msg(5, {**FUND, "amount": "99.00"}),  # c2 again, another payload
    ])  # fmt: skip
    (alert,) = out.alert_rows
    assert alert[:7] == ("t", "b", 3, "soft_cap_exceeded", "warning", 8000, 8000)
    wire = orjson.loads(alert[8])
    (on_topic,) = [v for t, _k, v, _h in out.outbox_rows if t == "alerts"]
    assert wire == orjson.loads(on_topic) and wire["sequence"] == 3
    assert alert[7] == NOW
    rows = [(r[0], r[1], r[2], r[3], r[5], r[6], r[7]) for r in out.dead_letter_rows]
    assert rows == [
        ("t", "c\ufffdx", None, "schema", "cmd", 0, 4),  # a NUL Postgres would refuse is replaced
        ("t", "c2", "fund", "idempotency_conflict", "cmd", 0, 5),
    ]
    assert len(_dlq(out)) == 3


def test_the_commands_naming_a_reward_are_the_models_with_a_ref_id() -> None:
    # `_ref_of` reads `ref_id` only of these types: a new model with the field must join them.
    with_ref = {m for m in COMMAND_MODELS.values() if "ref_id" in m.model_fields}
    assert set(processor.REF_COMMANDS) == with_ref
