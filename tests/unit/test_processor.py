"""The consumer's batch logic without Kafka or Postgres: the look-ups are plain functions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import consumers.processor as processor
from consumers.processor import BatchContext, Incoming, PartitionState, process_batch
from ledger.budget import BudgetState, initial_state

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
    real_apply = processor.apply

    def flaky_apply(state: BudgetState, command: Any, now: datetime, cur: Any) -> Any:
        if command.command_id == "c2":
            raise ZeroDivisionError("boom")
        return real_apply(state, command, now, cur)

    monkeypatch.setattr(processor, "apply", flaky_apply)
    out = _run(
        [_msg(0, OPEN), _msg(1, FUND), _msg(2, _cmd("c3", "fund", amount="1.00", currency="USD"))]
    )
    assert [r[4] for r in out.ledger_rows] == ["c1", "c3"]
    assert [r[2] for r in out.ledger_rows] == [1, 2]  # no gap: the failed command got no sequence
    (headers,) = [dict(orjson.loads(h or "[]")) for t, *_, h in out.outbox_rows if t == "dlq"]
    assert headers["error_class"] == "internal_error" and "ZeroDivisionError" in headers["reason"]
