"""The peer baseline (bench/peer.sql, bench/peer.py) against the real PostgreSQL, at a tiny
size: the old design's stored functions refuse what ours refuses (and record the refusal as a
ledger row), the budget row lock serialises concurrent clients, the verification catches a
wrong balance, and a smoke run of the peer phase verifies and reaches the same outcomes as our
domain on the same commands. No timed assertions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bench import peer, workload
from bench.__main__ import create_database, drop_database
from budget_ledger.ledger.budget import apply, initial_state
from budget_ledger.schemas.commands import parse_command
from budget_ledger.schemas.money import DEFAULT_CURRENCIES
from budget_ledger.schemas.to_domain import domain_command

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]


@pytest.fixture
def peer_db(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database with the peer's tables and functions."""
    url = create_database(pg_admin_dsn, migrated=False)
    try:
        peer.install(url)
        yield url
    finally:
        drop_database(pg_admin_dsn, url)


@pytest.fixture
def conn(peer_db: str) -> Iterator[Conn]:
    with psycopg.connect(peer_db, autocommit=True) as c:
        yield c


class Client:
    """Sends the peer's calls with fresh command ids, as the old system's clients did."""

    def __init__(self, conn: Conn, tenant: str = "t", budget: str = "b") -> None:
        self.conn, self.tenant, self.budget, self.n = conn, tenant, budget, 0

    def __call__(self, kind: str, *rest: Any, command_id: str | None = None) -> str | None:
        self.n += 1
        cid = command_id or f"{self.budget}-c{self.n}"
        return peer.call(self.conn, (kind, (cid, self.tenant, self.budget, *rest)))

    def opened(self, funds: int, cap: int | None = None) -> Client:
        assert self("open_budget", "USD", cap) is None
        assert self("fund", funds, "USD") is None
        return self


def balances(conn: Conn, budget: str = "b") -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT funded, reserved, charged FROM budgets WHERE budget_id = %s", (budget,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def last_row(conn: Conn, budget: str = "b") -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM ledger WHERE budget_id = %s ORDER BY sequence DESC LIMIT 1", (budget,)
        ).fetchone()
    assert row is not None
    return row


def test_a_reserve_beyond_the_available_funds_is_refused_and_recorded(conn: Conn) -> None:
    send = Client(conn).opened(1_000)
    assert send("reserve", "r1", 600, "USD") is None
    assert send("reserve", "r2", 401, "USD") == "insufficient_funds"
    row = last_row(conn)
    assert (row["outcome"], row["reason"], row["sequence"]) == (
        "reservation_rejected",
        "insufficient_funds",
        4,
    )
    assert (row["funded"], row["reserved"], row["charged"], row["available"]) == (1000, 600, 0, 400)
    assert send("reserve", "r2", 400, "USD") is None
    assert balances(conn) == (1_000, 1_000, 0)
    assert last_row(conn)["available"] == 0
    assert send("reserve", "r3", 1, "USD") == "insufficient_funds"


def test_the_hard_cap_binds_below_the_funds(conn: Conn) -> None:
    send = Client(conn).opened(1_000, cap=500)
    assert send("reserve", "r1", 501, "USD") == "hard_cap_exceeded"
    assert send("reserve", "r1", 500, "USD") is None
    assert last_row(conn)["available"] == 0


def test_charges_of_unknown_settled_or_overdrawn_reservations_are_refused(conn: Conn) -> None:
    send = Client(conn).opened(1_000)
    assert send("charge", "nope", None) == "reservation_not_found"
    assert send("release", "nope") == "reservation_not_found"
    assert send("reserve", "r1", 300, "USD") is None
    assert send("charge", "r1", 301) == "amount_exceeds_reservation"
    assert send("charge", "r1", 200) is None  # partial: the other 100 go back
    assert balances(conn) == (1_000, 0, 200)
    assert send("charge", "r1", None) == "reservation_not_active"  # already charged
    assert send("release", "r1") == "reservation_not_active"
    assert send("reserve", "r1", 10, "USD") == "duplicate_ref"
    assert send("reserve", "r2", 50, "USD") is None
    assert send("release", "r2") is None
    assert send("charge", "r2", None) == "reservation_not_active"
    assert balances(conn) == (1_000, 0, 200)
    reasons = [r for (r,) in conn.execute("SELECT reason FROM ledger ORDER BY sequence")]
    assert reasons.count(None) == 6  # open, fund, 2 reserves, charge, release


def test_other_currencies_non_positive_amounts_and_reopening_are_refused(conn: Conn) -> None:
    send = Client(conn).opened(1_000)
    assert send("reserve", "r1", 100, "ZWG") == "currency_mismatch"
    assert send("reserve", "r1", 0, "USD") == "invalid_amount"
    assert send("fund", -100, "USD") == "invalid_amount"
    assert send("charge", "r1", None) == "reservation_not_found"
    assert send("open_budget", "USD", None) == "budget_exists"
    assert balances(conn) == (1_000, 0, 0)
    assert last_row(conn)["sequence"] == 7  # every command one row


def test_a_retried_command_id_gets_its_first_answer_and_writes_nothing(conn: Conn) -> None:
    send = Client(conn).opened(1_000)
    assert send("reserve", "r1", 2_000, "USD", command_id="x1") == "insufficient_funds"
    assert send("reserve", "r1", 700, "USD", command_id="x2") is None
    assert send("reserve", "r1", 2_000, "USD", command_id="x1") == "insufficient_funds"
    assert send("reserve", "r1", 700, "USD", command_id="x2") is None
    assert send("open_budget", "USD", None, command_id="b-c1") is None
    assert balances(conn) == (1_000, 700, 0)
    assert last_row(conn)["sequence"] == 4


def test_a_second_client_waits_for_the_budget_lock_and_then_sees_no_funds(
    conn: Conn, peer_db: str
) -> None:
    Client(conn).opened(1_000)
    answers: list[str | None] = []
    with psycopg.connect(peer_db) as first, psycopg.connect(peer_db, autocommit=True) as second:
        with first.transaction():
            assert peer.call(first, ("reserve", ("a", "t", "b", "ra", 600, "USD"))) is None
            pid = second.info.backend_pid
            other = threading.Thread(
                target=lambda: answers.append(
                    peer.call(second, ("reserve", ("b", "t", "b", "rb", 600, "USD")))
                )
            )
            other.start()
            deadline = time.monotonic() + 30
            while conn.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone() != ("Lock",):
                assert time.monotonic() < deadline, "the second client never waited for the lock"
                time.sleep(0.05)
            assert answers == []  # blocked on the first one's FOR UPDATE
        other.join(30)
    assert answers == ["insufficient_funds"]
    assert balances(conn) == (1_000, 600, 0)


def test_two_clients_racing_for_the_last_funds_exactly_one_wins(conn: Conn, peer_db: str) -> None:
    rounds = 20
    for i in range(rounds):
        Client(conn, budget=f"b{i}").opened(1_000)
    wins: Counter[str] = Counter()
    barrier = threading.Barrier(2)

    def racer(name: str) -> None:
        with psycopg.connect(peer_db, autocommit=True) as c:
            for i in range(rounds):
                barrier.wait(30)
                call = ("reserve", (f"{name}-{i}", "t", f"b{i}", f"r-{name}", 600, "USD"))
                if peer.call(c, call) is None:
                    wins[f"b{i}"] += 1

    threads = [threading.Thread(target=racer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert wins == {f"b{i}": 1 for i in range(rounds)}
    assert all(balances(conn, f"b{i}") == (1_000, 600, 0) for i in range(rounds))
    problems, outcomes = peer.verify(peer_db, rounds * 4)
    assert problems == []
    assert outcomes["refused:insufficient_funds"] == rounds


def test_the_verification_catches_a_wrong_balance(conn: Conn, peer_db: str) -> None:
    send = Client(conn).opened(1_000)
    send("reserve", "r1", 300, "USD")
    send("charge", "r1", 100)
    assert peer.verify(peer_db, 4) == (
        [],
        {"budget_funded": 1, "budget_opened": 1, "funds_reserved": 1, "reservation_charged": 1},
    )
    assert peer.verify(peer_db, 5)[0] == ["ledger holds 4 rows for 5 commands"]
    conn.execute("UPDATE budgets SET reserved = reserved + 1")
    problems, _ = peer.verify(peer_db, 4)
    assert "1 budgets whose balances are not their last row's" in problems
    assert "1 budgets whose reserved is not their open reservations" in problems
    conn.execute("UPDATE budgets SET reserved = reserved - 1")
    conn.execute("UPDATE ledger SET charged = 2000, funded = 2000 WHERE sequence = 4")
    problems, _ = peer.verify(peer_db, 4)
    assert "1 ledger rows whose balances are not the running sums of the rows" in problems
    assert "1 ledger rows over the cap or the funds" not in problems  # 2000 <= 2000
    conn.execute("UPDATE ledger SET charged = 3000 WHERE sequence = 4")
    assert "1 ledger rows over the cap or the funds" in peer.verify(peer_db, 4)[0]


def _our_outcomes(commands: list[dict[str, Any]]) -> Counter[str]:
    """The outcomes our domain (decide/evolve) gives the same commands, as the peer counts."""
    states: dict[tuple[str, str], Any] = {}
    now = datetime.now(UTC)
    out: Counter[str] = Counter()
    for cmd in commands:
        key = (cmd["tenant_id"], cmd["budget_id"])
        state = states.get(key) or initial_state(*key)
        command = domain_command(parse_command(orjson.dumps(cmd)), 2, DEFAULT_CURRENCIES)
        states[key], event, _ = apply(state, command, now)
        out[f"refused:{event.reason}" if event.reason else event.type] += 1
    return out


def test_a_smoke_run_of_the_peer_phase_verifies_with_our_outcomes(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    budgets, commands = 8, 400
    result = peer.run(
        create=lambda: create_database(pg_admin_dsn, migrated=False),
        drop=lambda url: drop_database(pg_admin_dsn, url),
        clients=2,
        commands=commands,
        budgets=budgets,
        seed=6,
        workdir=tmp_path,
    )
    assert result.problems == []
    assert result.verified
    assert (result.clients, result.commands, result.budgets) == (2, commands, budgets)
    assert result.synchronous_commit == "on"
    assert result.commands_per_s > 0 and 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.cpu_us_per_command["clients"] >= 0
    stream = chain(
        workload.prepare(budgets, "peer-"), workload.mix(commands, budgets, "peer-", seed=6)
    )
    expected = _our_outcomes(list(stream))
    assert result.outcomes == dict(expected)
    assert sum(n for k, n in expected.items() if k.startswith("refused:")) > 0
    assert list(tmp_path.iterdir()) == []  # the call files are removed


def test_clients_that_finish_first_do_not_fail_the_run(pg_admin_dsn: str, tmp_path: Path) -> None:
    # One budget: one client gets every call, the other two finish (and exit) at once.
    result = peer.run(
        create=lambda: create_database(pg_admin_dsn, migrated=False),
        drop=lambda url: drop_database(pg_admin_dsn, url),
        clients=3,
        commands=800,
        budgets=1,
        seed=6,
        workdir=tmp_path,
    )
    assert result.problems == []
    assert result.verified and result.commands == 800
