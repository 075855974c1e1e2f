"""One bad message fails alone: the real consumer dead-letters it and commits everything else."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

import budget_ledger.ledger.record as record_mod
from budget_ledger.consumers import poison
from budget_ledger.ledger import store
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.settings import Settings
from tests.integration.support import (
    assert_ledger_consistent,
    consumer_process,
    dead_letters,
    fund,
    kill,
    ledger_count,
    open_budget,
    produce,
    random_stream,
    read_topic,
    reserve,
    running_consumer,
    topics_ready,
    wait_for,
)

pytestmark = pytest.mark.integration

# A command that fails alone is dead-lettered at parse time when the edge validation refuses it
# (its own error classes), or behind the edge: by a guard around the rules and encoding
# ("internal_error") or by the bisection of a batch Postgres refused ("storage_refused"). Any of
# these is right; a crash never is.
BEHIND_THE_EDGE = {"internal_error", "storage_refused"}


def _coordinates(
    settings: Settings, values: list[bytes], total: int
) -> dict[bytes, tuple[int, int]]:
    """(partition, offset) of each given value in the command topic (which holds `total`)."""
    found = {}
    for m in read_topic(settings, settings.topic_commands, expect=total):
        if m.value() in values:
            found[m.value()] = (m.partition(), m.offset())
    return found


def _run(
    settings: Settings,
    commands: list[dict[str, Any]],
    bad: list[dict[str, Any]],
    maybe_bad: list[dict[str, Any]] | tuple[()] = (),
) -> dict[bytes, dict[str, str]]:
    """Produce everything in one go; every command ends up in the ledger or (`bad` ones, and
    `maybe_bad` ones the rules do not refuse as an event) in the DLQ. Returns the DLQ headers."""
    # No relay: the dead letters stay in the outbox, where the test reads them (publishing the
    # outbox is the relay's job, tested on its own).
    topics_ready(settings)
    late = [open_budget("acme", "late", "late-open"), fund("acme", "late", "late-fund", "1.00")]
    with running_consumer(settings, relay=False):
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) + len(dead_letters(settings))
                 == len(commands), timeout=90, what="every command decided")  # fmt: skip
        # Still running: commands sent afterwards are applied.
        produce(settings, late)
        wait_for(lambda: ledger_count(settings.database_url) + len(dead_letters(settings))
                 == len(commands) + 2, what="the commands sent after the poison")  # fmt: skip
    by_value = dead_letters(settings)
    values = {orjson.dumps(c) for c in [*bad, *maybe_bad]}
    assert set(by_value) <= values, by_value  # only bad ones are dead-lettered
    assert {orjson.dumps(c) for c in bad} <= set(by_value), by_value
    kept = [c for c in [*commands, *late] if orjson.dumps(c) not in by_value]
    assert_ledger_consistent(settings.database_url, kept)  # each exactly once, no gaps
    coordinates = _coordinates(settings, list(by_value), len(commands) + 2)
    for value, (partition, offset) in coordinates.items():
        headers = by_value[value]
        assert headers["original_topic"] == settings.topic_commands
        assert (headers["original_partition"], headers["original_offset"]) == (
            str(partition),
            str(offset),
        )
    assert len(coordinates) == len(by_value)
    return by_value


def test_a_row_postgres_refuses_is_found_by_bisection_and_dead_lettered_alone(
    settings: Settings,
) -> None:
    # Python accepts ref_id "poison"; this test's database refuses it, as it would refuse any
    # value the domain lets through and a column cannot hold.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger ADD CONSTRAINT no_poison CHECK (ref_id <> 'poison')")
    poison = reserve("acme", "b1", "res-poison", "1.00", "poison")
    commands = [
        open_budget("acme", "b1", "open-1"),
        open_budget("acme", "b2", "open-2"),
        fund("acme", "b1", "fund-1", "100.00"),
        fund("acme", "b2", "fund-2", "100.00"),
        *[reserve("acme", "b1", f"res-a{i}", "1.00", f"a{i}") for i in range(20)],
        *[reserve("acme", "b2", f"res-b{i}", "1.00", f"b{i}") for i in range(20)],
        poison,
        *[reserve("acme", "b1", f"res-c{i}", "1.00", f"c{i}") for i in range(20)],
        *[reserve("acme", "b2", f"res-d{i}", "1.00", f"d{i}") for i in range(20)],
    ]
    by_value = _run(settings, commands, [poison])
    headers = by_value[orjson.dumps(poison)]
    assert headers["error_class"] == "storage_refused"
    assert "CheckViolation (23514)" in headers["reason"] and "no_poison" in headers["reason"]
    assert (headers["tenant_id"], headers["command_id"]) == ("acme", "res-poison")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        b1 = conn.execute(
            "SELECT reserved, sequence FROM budget_balances WHERE budget_id = 'b1'"
        ).fetchone()
    assert b1 == (4000, 42)  # 40 reservations of 1.00; open, fund, 40 reserves: no gap


def test_each_kind_of_poison_fails_alone(settings: Settings) -> None:
    def budget(name: str) -> list[dict[str, Any]]:
        return [open_budget("acme", name, f"{name}-open"), fund("acme", name, f"{name}-f", "50.00")]

    def after(name: str) -> list[dict[str, Any]]:
        return [reserve("acme", name, f"{name}-after", "1.00", f"{name}-after")]

    nul_metadata = {**fund("acme", "m", "m-bad", "1.00"), "metadata": {"note": "a\u0000b"}}
    nul_command_id = fund("acme", "c", "c-\u0000-bad", "1.00")
    nul_ref = reserve("acme", "r", "r-bad", "1.00", "r\u0000f")
    nul_reason = {"command_id": "a-bad", "type": "adjust", "tenant_id": "acme", "budget_id": "a",
                  "amount": "1.00", "reason": "x\u0000y", "operator": "ops"}  # fmt: skip
    early = {**fund("acme", "i", "i-bad", "1.00"), "issued_at": "0001-01-01T00:00:00+14:00"}
    late = reserve("acme", "e", "e-bad", "1.00", "e1", expires_at="9999-12-31T23:59:59-23:59")
    tiny_cap = {"command_id": "h-bad", "type": "configure_budget", "tenant_id": "acme",
                "budget_id": "h", "hard_cap": "0.01"}  # fmt: skip
    huge = [fund("acme", "o", f"o-{i}", "999999999999999.99") for i in range(93)]
    bad = [nul_metadata, nul_command_id, nul_ref, nul_reason, early, late]
    # The rules may refuse these as ledger events (then nothing reaches Postgres that it
    # cannot hold); where they do not, Postgres refuses a row and the bisection finds them.
    maybe_bad = [tiny_cap, huge[-1]]
    commands = [
        *budget("m"), nul_metadata, *after("m"),
        *budget("c"), nul_command_id, *after("c"),
        *budget("r"), nul_ref, *after("r"),
        *budget("a"), nul_reason, *after("a"),
        *budget("i"), early, *after("i"),
        *budget("e"), late, *after("e"),
        open_budget("acme", "h", "h-open"), fund("acme", "h", "h-f", "2000.00"),
        reserve("acme", "h", "h-r", "1000.00", "h1"), tiny_cap, *after("h"),
        open_budget("acme", "o", "o-open"), *huge, *after("o"),
    ]  # fmt: skip
    # Without the edge validation, each fails here, alone, as:
    expected = [
        # A \u0000 escape only in the event's JSON: JSONB refused it (22P05); the json column
        # (migration 024) would keep it, so only the edge refuses it now.
        ("storage_refused", "UntranslatableCharacter (22P05)"),
        # NUL in a text column: refused by Postgres (the ledger rows go by binary COPY)
        ("storage_refused", "CharacterNotInRepertoire (22021)"),
        ("storage_refused", "CharacterNotInRepertoire (22021)"),
        ("storage_refused", "CharacterNotInRepertoire (22021)"),  # the reason column
        ("internal_error", "OverflowError"),  # the year 0 in UTC
        ("internal_error", "OverflowError"),  # the year 10000 in UTC
        ("storage_refused", "NumericValueOutOfRange (22003)"),  # utilization_pct numeric(9, 2)
        ("storage_refused", "NumericValueOutOfRange (22003)"),  # funded beyond bigint
    ]
    by_value = _run(settings, commands, bad, maybe_bad)
    for command, (error_class, fragment) in zip([*bad, *maybe_bad], expected, strict=True):
        headers = by_value.get(orjson.dumps(command))
        if headers is None:
            continue  # a maybe_bad one the rules recorded as an event
        assert headers["reason"], headers
        if headers["error_class"] in BEHIND_THE_EDGE:
            assert headers["error_class"] == error_class, (command, headers)
            assert fragment in headers["reason"], (command, headers)
        assert headers["tenant_id"] == "acme"
        assert headers["command_id"] == command["command_id"].replace("\u0000", "\ufffd")


def test_a_nul_in_a_binary_ledger_copy_is_refused_and_its_row_named(database_url: str) -> None:
    # Behind the edge validation: what the bisection's hint relies on when a batch's ledger
    # COPY (binary) carries a NUL byte in a text column.
    def row(sequence: int, command_id: str) -> tuple[object, ...]:
        return ("acme", "nul", sequence, "budget_opened", command_id, "fp", None, None, None,
                0, 0, 0, 0, "t", 0, sequence, "{}", datetime.now(UTC), "p", "h", None,
                None)  # fmt: skip

    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.DataError) as refused:
            store.append_ledger_rows(conn, [row(1, "ok"), row(2, "c-\u0000-bad"), row(3, "ok")])
        assert poison.is_data_error(refused.value)
        assert refused.value.sqlstate == "22021"  # CharacterNotInRepertoire
        assert poison.copy_line(refused.value) == ("ledger", 2)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)


def test_a_failure_in_the_rules_dead_letters_only_that_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decide = record_mod.decide

    def decide(state: BudgetState, command: Any, now: Any) -> Any:
        if command.command_id == "fund-bug":
            raise KeyError("a bug in the rules")
        return real_decide(state, command, now)

    monkeypatch.setattr(record_mod, "decide", decide)
    buggy = fund("acme", "b1", "fund-bug", "5.00")
    commands = [
        open_budget("acme", "b1", "open-1"),
        open_budget("acme", "b2", "open-2"),
        fund("acme", "b1", "fund-1", "10.00"),
        buggy,
        fund("acme", "b1", "fund-2", "10.00"),
        fund("acme", "b2", "fund-3", "10.00"),
    ]
    by_value = _run(settings, commands, [buggy])
    headers = by_value[orjson.dumps(buggy)]
    assert headers["error_class"] == "internal_error"
    assert "KeyError" in headers["reason"]
    assert (headers["tenant_id"], headers["command_id"]) == ("acme", "fund-bug")


def test_a_unique_violation_that_replaying_does_not_resolve_is_bisected_not_retried_forever(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idempotency look-up misses one command id (as a look-up bug or a collation quirk
    # would), so the (tenant_id, command_id) index refuses it on every replay of the batch.
    real = store.lookup_prior

    def blind(conn: psycopg.Connection, keys: list[tuple[str, str]]) -> Any:
        return {k: v for k, v in real(conn, keys).items() if k != ("acme", "dup")}

    first = fund("acme", "b1", "dup", "1.00")
    again = fund("acme", "b2", "dup", "2.00")  # same tenant and id, another budget
    commands = [
        open_budget("acme", "b1", "open-1"),
        open_budget("acme", "b2", "open-2"),
        first,
        fund("acme", "b1", "fund-1", "1.00"),
    ]
    topics_ready(settings)
    with running_consumer(settings, relay=False):
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) == 4, what="the first commands")
        monkeypatch.setattr(store, "lookup_prior", blind)
        produce(settings, [fund("acme", "b2", "fund-2", "1.00"), again,
                           fund("acme", "b2", "fund-3", "1.00")])  # fmt: skip
        wait_for(lambda: ledger_count(settings.database_url) == 6, what="the commands around it")
        wait_for(lambda: len(dead_letters(settings)) == 1, what="the dead letter")
    headers = dead_letters(settings)[orjson.dumps(again)]
    assert headers["error_class"] == "storage_refused"
    assert "UniqueViolation (23505)" in headers["reason"]
    assert "ledger_tenant_id_command_id_key" in headers["reason"]
    assert_ledger_consistent(
        settings.database_url,
        [*commands, fund("acme", "b2", "fund-2", "1.00"), fund("acme", "b2", "fund-3", "1.00")],
    )


def test_a_group_of_three_survives_the_message_that_used_to_kill_it(settings: Settings) -> None:
    """The incident: one refused row crash-looped every member of a three-member group."""
    settings = settings.model_copy(update={"topic_partitions": 12})
    topics_ready(settings)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger ADD CONSTRAINT no_poison CHECK (ref_id <> 'poison')")
    commands = random_stream(seed=21, budgets=30, commands=1500)
    poisons = [reserve("acme", f"b{b}", f"poison-{b}", "1.00", "poison") for b in (3, 17, 29)]
    for i, p in enumerate(poisons):
        commands.insert(200 + 400 * i, p)
    procs = [consumer_process(settings) for _ in range(3)]
    try:
        time.sleep(3)
        produce(settings, commands)
        wait_for(lambda: ledger_count(settings.database_url) == len(commands) - len(poisons),
                 timeout=120, what="every good command")  # fmt: skip
        wait_for(lambda: len(dead_letters(settings)) == len(poisons), what="the dead letters")
        assert [p.poll() for p in procs] == [None, None, None]  # all three still running
    finally:
        for p in procs:
            kill(p)
    assert set(dead_letters(settings)) == {orjson.dumps(p) for p in poisons}
    assert {h["error_class"] for h in dead_letters(settings).values()} == {"storage_refused"}
    assert_ledger_consistent(settings.database_url, [c for c in commands if c not in poisons])
