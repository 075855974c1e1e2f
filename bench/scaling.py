"""Scaling benchmark: costs measured on ledgers of 1M and 20M events (docs/scaling.md).

    .venv/bin/python -m bench.scaling fill --database bench_scale_1m --events 1000000 \\
        --budgets 50000 --hot-events 500000
    .venv/bin/python -m bench.scaling measure --database bench_scale_1m

`fill` creates (or replaces) a database next to LEDGER_DATABASE_URL, migrates it and COPYs a
history into it: one hot budget with `--hot-events` events and `--budgets` background budgets
sharing the rest, spread over `--months` months of `recorded_at` ending now. Every event is made
by the domain itself (decide, seal onto the budget's hash chain, evolve), so the chains, balances
and projections are the real ones; only the wire parsing is skipped (commands are built as
domain values) and the stored command fingerprints are digests of the command ids. Background
workers run in parallel processes, one per `--workers`, plus one for the hot budget.

`measure` times, on such a database, what issue 12 asks to be independent of history: the
state load of the hot budget (cold, fresh connection), a ledger page of 50 entries of a budget
by date range, and an incremental reconcile after new events; the end-to-end throughput and the
first-command-after-restart figures use `python -m bench --template-database` and
`bench.restart` against the same database.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

from budget_ledger.ledger.budget import BudgetState, decide, evolve, initial_state
from budget_ledger.ledger.commands import (
    Amount,
    Charge,
    Command,
    Fund,
    OpenBudget,
    Release,
    Reserve,
)
from budget_ledger.ledger.partitioning import partition_for
from budget_ledger.ledger.state import compact
from budget_ledger.schemas.codec import seal

HOT = ("scale-hot", "hot-0")
TOPIC = "scale.commands"
PARTITIONS = 12
CHUNK = 20_000


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@dataclass
class _Writer:
    """One worker's COPY buffers and Kafka coordinates (its own topic: offsets never clash)."""

    conn: psycopg.Connection
    topic: str
    ledger_rows: list[tuple[object, ...]]
    reservation_rows: list[tuple[object, ...]]
    offsets: dict[int, int]
    written: int = 0
    balance_rows: list[tuple[object, ...]] = field(default_factory=list)

    def flush(self) -> None:
        from budget_ledger.ledger import store
        from budget_ledger.ledger.db import copy_rows
        from budget_ledger.projections.store import upsert_projections

        with self.conn.transaction():
            copy_rows(self.conn, store.queries()["copy_ledger"], self.ledger_rows)
            if self.reservation_rows or self.balance_rows:
                upsert_projections(self.conn, self.balance_rows, self.reservation_rows)
        self.written += len(self.ledger_rows)
        self.ledger_rows.clear()
        self.reservation_rows.clear()
        self.balance_rows.clear()


def _money(minor: int) -> Amount:
    return Amount(minor, f"{minor // 100}.{minor % 100:02d}")


def _base(key: tuple[str, str], n: int) -> dict[str, Any]:
    return {
        "command_id": f"{key[1]}-c{n}",
        "tenant_id": key[0],
        "budget_id": key[1],
        "issued_at": None,
        "metadata": None,
    }


def _open(key: tuple[str, str]) -> OpenBudget:
    return OpenBudget(
        **_base(key, 0),
        currency="USD",
        digits=2,
        period="rolling",
        hard_cap=None,
        soft_cap=None,
        soft_threshold_pct=80,
        hard_threshold_pct=95,
        period_allowance=None,
        rollover=False,
        timezone="UTC",
        reservation_ttl_seconds=None,
    )


def budget_commands(key: tuple[str, str], n: int) -> Iterator[Command]:
    """`n` commands for one budget: open, fund, then reserve/charge/release cycles (a refill
    fund every 500 commands); the last two reservations stay open."""
    yield _open(key)
    yield Fund(**_base(key, 1), amount=_money(10**11), currency="USD")
    i = 2
    ref = 0
    while i < n:
        if i % 500 == 0:
            yield Fund(**_base(key, i), amount=_money(10**9), currency="USD")
        elif i % 2 == 0 or i >= n - 2:
            ref += 1
            yield Reserve(**_base(key, i), ref_id=f"r{ref}", amount=_money(500 + i % 97),
                          currency="USD", expires_at=None)  # fmt: skip
        elif i % 6 == 1:
            yield Release(**_base(key, i), ref_id=f"r{ref}")
        else:
            yield Charge(**_base(key, i), ref_id=f"r{ref}", amount=None)
        i += 1


def _step(w: _Writer, state: BudgetState, command: Command, now: datetime) -> BudgetState:
    """Decide, seal, fold one command (as `ledger.record` does, without the wire parsing);
    buffer its ledger row and the projection row of a reservation it settled."""
    from budget_ledger.projections.rows import reservation_row

    unsealed = decide(state, command, now)
    event, wire = seal(unsealed, state.digits if state.opened else 2)
    after = evolve(state, event)
    key = f"{state.tenant_id}:{state.budget_id}".encode()
    part = partition_for(key, PARTITIONS)
    offset = w.offsets.get(part, 0)
    w.offsets[part] = offset + 1
    w.ledger_rows.append(
        (event.tenant_id, event.budget_id, event.sequence, event.type, event.command_id,
         hashlib.sha256(event.command_id.encode()).hexdigest(), event.ref_id, event.currency,
         event.amount, event.funded, event.reserved, event.charged, event.available, w.topic,
         part, offset, orjson.dumps(wire).decode(), event.recorded_at, event.prev_hash,
         event.hash, event.reason, event.utilization_bp)
    )  # fmt: skip
    ref = event.ref_id
    if ref is not None and event.type in ("reservation_charged", "reservation_released"):
        # Settled: its projection row is final; the state keeps only open reservations.
        w.reservation_rows.append(reservation_row(after, after.reservations[ref]))
        after = compact(after, (ref,))
    return after


def _worker(
    dsn: str,
    keys: list[tuple[str, str]],
    per_budget: int,
    start: datetime,
    span: timedelta,
    topic: str,
) -> tuple[int, dict[int, int]]:
    """Write the histories of `keys` round-robin (all budgets advance together in time)."""
    from budget_ledger.ledger.db import connect

    conn = connect(dsn)
    w = _Writer(conn, topic, [], [], {})
    streams = {k: budget_commands(k, per_budget) for k in keys}
    states = {k: initial_state(*k) for k in keys}
    total = per_budget * len(keys)
    done = 0
    rounds_per_budget = per_budget
    # A single budget's stream goes in chunks; many budgets advance one command per round.
    stride = max(1, CHUNK // len(keys)) if len(keys) < CHUNK else 1
    for _ in range(0, rounds_per_budget, stride):
        for k in keys:
            stream = streams[k]
            for _ in range(stride):
                command = next(stream, None)
                if command is None:
                    break
                now = start + span * (done / total)
                states[k] = _step(w, states[k], command, now)
                done += 1
            if len(w.ledger_rows) >= CHUNK:
                w.flush()
    w.flush()
    _write_projections(conn, states.values(), start + span)
    conn.close()
    return w.written, w.offsets


def _write_projections(conn: psycopg.Connection, states: Iterable[BudgetState],
                       updated_at: datetime) -> None:  # fmt: skip
    """The balance rows and open reservations of `states`, a transaction per chunk (the
    session's staging tables empty at each commit: one transaction for all would re-merge every
    earlier chunk's rows again with each chunk)."""
    from budget_ledger.projections.rows import balance_row, reservation_row
    from budget_ledger.projections.store import upsert_projections

    chunk: list[BudgetState] = []
    for state in [*states, None]:
        if state is not None:
            chunk.append(state)
        if chunk and (state is None or len(chunk) >= CHUNK):
            opened = [reservation_row(s, r) for s in chunk for r in s.reservations.values()]
            with conn.transaction():
                upsert_projections(conn, [balance_row(s, updated_at) for s in chunk], opened)
            chunk = []


def _project_shard(args: tuple[str, int, int]) -> int:
    """Fold one shard's ledger rows (physical order) into states; write their projections."""
    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.history import fold

    url, shard, shards = args
    states: dict[tuple[str, str], BudgetState] = {}
    conn = connect(url)
    with conn.transaction(), conn.cursor(name="project") as cur:
        # Physical order is nearly each budget's sequence order (concurrent writers can leave
        # a row on an earlier page): rows that come early wait in `pending`. A parallel scan
        # would interleave its workers' rows much more.
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cur.itersize = CHUNK
        cur.execute(
            "SELECT tenant_id, budget_id, sequence, event::text FROM ledger"
            " WHERE abs(hashtext(budget_id)) %% %s = %s",
            (shards, shard),
        )
        pending: dict[tuple[str, str], dict[int, str]] = {}
        for tenant, budget, seq, text in cur:
            key = (tenant, budget)
            state = states.get(key) or initial_state(tenant, budget)
            if seq != state.sequence + 1:
                pending.setdefault(key, {})[seq] = text
                continue
            state = fold(state, orjson.loads(text))
            held = pending.get(key)
            while held and state.sequence + 1 in held:
                state = fold(state, orjson.loads(held.pop(state.sequence + 1)))
            states[key] = compact(state)
        assert not any(pending.values()), "rows missing from a budget's sequence"
    _write_projections(conn, states.values(), datetime.now(UTC))
    conn.close()
    return len(states)


def project(args: argparse.Namespace) -> int:
    """Write the balance and open-reservation projections from the ledger (a fill cut short
    before its final writes), in `--workers` processes; settled reservations are there."""
    from budget_ledger.ledger.settings import load_settings

    url = _with_db(load_settings().database_url, args.database)
    t0 = time.perf_counter()
    jobs = [(url, w, args.workers) for w in range(args.workers)]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        budgets = sum(pool.map(_project_shard, jobs))
    print(f"projected {budgets:,} budgets in {time.perf_counter() - t0:.0f} s")
    return 0


def _run_worker(args: tuple[Any, ...]) -> tuple[str, int, dict[int, int]]:
    written, offsets = _worker(*args)
    return args[5], written, offsets


def fill(args: argparse.Namespace) -> int:
    """Create the database and write its history; prints what was written."""
    from budget_ledger.ledger.migrate import migrate
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.ledger.store import queries

    admin = load_settings().database_url
    url = _with_db(admin, args.database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(args.database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.database)))
    migrate(url)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    span = timedelta(days=30 * args.months)
    start = end - span
    _prepare_partitions(url, start, end)

    background = args.events - args.hot_events
    per_budget = max(2, background // max(args.budgets, 1))
    keys = [(f"scale-{i % 7}", f"b-{i}") for i in range(args.budgets)]
    jobs: list[tuple[Any, ...]] = [
        (url, keys[w :: args.workers], per_budget, start, span, f"{TOPIC}.w{w}")
        for w in range(args.workers)
    ]
    if args.hot_events:
        jobs.append((url, [HOT], args.hot_events, start, span, f"{TOPIC}.hot"))
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        results = pool.map(_run_worker, jobs)
    took = time.perf_counter() - t0
    events = sum(r[1] for r in results)
    with psycopg.connect(url, autocommit=True) as conn:
        q = queries()
        for topic, _, offsets in results:
            for partition, next_offset in offsets.items():
                cursor = {"topic": topic, "partition": partition}
                conn.execute(q["ensure_relay_cursor"], cursor)
                conn.execute(q["advance_relay_cursor"], {**cursor, "offset": next_offset - 1})
        conn.execute("ANALYZE")
    print(
        f"filled {args.database}: {events:,} events ({args.hot_events:,} in {HOT[0]}:{HOT[1]}, "
        f"{per_budget} in each of {args.budgets:,} budgets) from {start:%Y-%m-%d} to "
        f"{end:%Y-%m-%d} in {took:.0f} s ({events / took:,.0f} events/s)"
    )
    return 0


def _prepare_partitions(url: str, start: datetime, end: datetime) -> None:
    """Monthly partitions for the filled span before the current month (the migration creates
    the current month and those ahead): named and secured as `ledger_ensure_partitions` does."""
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    current = datetime(end.year, end.month, 1, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        while month < current:
            after = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
            name = f"ledger_y{month:%Y}m{month:%m}"
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF ledger FOR VALUES FROM ({}) TO ({})"
                ).format(sql.Identifier(name), sql.Literal(month), sql.Literal(after))
            )
            conn.execute("SELECT ledger_secure_partition(%s::regclass)", (name,))
            month = after


def _timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _ms(samples: list[float]) -> str:
    low, high = min(samples), max(samples)
    return f"median {statistics.median(samples):.1f} ms (min {low:.1f}, max {high:.1f})"


def measure(args: argparse.Namespace) -> int:
    """Time the per-budget costs on a filled database."""
    from budget_ledger.ledger import store
    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.ledger_pages import ledger_page
    from budget_ledger.projections.state_loading import load_states

    url = _with_db(load_settings().database_url, args.database)
    with psycopg.connect(url) as conn:
        events = conn.execute("SELECT count(*) FROM ledger").fetchone()
        hot = conn.execute(
            "SELECT sequence FROM budget_balances WHERE tenant_id = %s AND budget_id = %s", HOT
        ).fetchone()
        span = conn.execute(
            "SELECT min(recorded_at), max(recorded_at) FROM ledger"
            " WHERE tenant_id = %s AND budget_id = %s",
            HOT,
        ).fetchone()
        small = conn.execute(
            "SELECT tenant_id, budget_id FROM budget_balances WHERE tenant_id <> %s LIMIT 1",
            (HOT[0],),
        ).fetchone()
    assert events and hot and span and small, "not a filled database"
    print(f"{args.database}: {events[0]:,} events; {HOT[0]}:{HOT[1]} has {hot[0]:,}")

    loads: list[float] = []
    for _ in range(args.runs):
        with connect(url) as conn:  # a new session each time: nothing of the budget cached in it
            t0 = time.perf_counter()
            state = load_states(conn, [HOT])[HOT]
            loads.append((time.perf_counter() - t0) * 1000)
            assert isinstance(state, BudgetState) and state.sequence == hot[0], state
    print(f"state load of {HOT[0]}:{HOT[1]} from the projections, each on a new connection: "
          f"{_ms(loads)}")  # fmt: skip
    if args.replay:

        def replay_load() -> None:
            with connect(url) as conn:
                state = store.load_budgets(conn, [HOT])[HOT]
                assert isinstance(state, BudgetState) and state.sequence == hot[0], state

        print(f"state load of {HOT[0]}:{HOT[1]} by replaying its ledger: "
              f"{_ms(_timed(replay_load, 1))}")  # fmt: skip

    # A week in the middle of the hot budget's history, and a whole year of a small budget.
    middle = span[0] + (span[1] - span[0]) / 2
    windows = [(HOT, middle, middle + timedelta(days=7)),
               ((small[0], small[1]), span[0], span[0] + timedelta(days=365))]  # fmt: skip
    with connect(url) as conn:
        for key, since, until in windows:
            first: list[float] = []
            second: list[float] = []
            for _ in range(args.runs * 4):
                t0 = time.perf_counter()
                page = ledger_page(conn, key[0], key[1], since, until, limit=50)
                first.append((time.perf_counter() - t0) * 1000)
                if page.next is not None:  # the page after it: keyset, not OFFSET
                    t0 = time.perf_counter()
                    ledger_page(conn, key[0], key[1], since, until, after=page.next, limit=50)
                    second.append((time.perf_counter() - t0) * 1000)
            print(f"ledger page of {key[0]}:{key[1]} in [{since:%Y-%m-%d}, {until:%Y-%m-%d}), "
                  f"{len(page.entries)} entries: first page {_ms(first)}"
                  + (f"; second page {_ms(second)}" if second else ""))  # fmt: skip
    return 0


def seed_checkpoints(args: argparse.Namespace) -> int:
    """Write every budget's reconcile checkpoint as a clean full run would: its last sequence
    and hash and its state, taken from the projections (which the reconciler proves equal to the
    replay; `reconcile --full` also checks each stored state), the recorded_at of that last row
    (from the ledger: the lower bound of the next incremental run's reads), and record that run
    — instead of replaying a 20M-event ledger first."""
    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.checkpoint_state import encode_state
    from budget_ledger.projections.checkpoints import RunRecord, advance_checkpoints
    from budget_ledger.projections.state_loading import load_states

    url = _with_db(load_settings().database_url, args.database)
    t0 = time.perf_counter()
    with connect(url) as conn:
        started = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        keys = [(t, b) for t, b in conn.execute(
            "SELECT tenant_id, budget_id FROM budget_balances ORDER BY 1, 2")]  # fmt: skip
        events = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]  # type: ignore[index]
        conn.rollback()
        done = 0
        for i in range(0, len(keys), CHUNK):
            states = load_states(conn, keys[i : i + CHUNK])
            found = [(k, s) for k, s in states.items() if isinstance(s, BudgetState)]
            at = {(r[0], r[1]): r[2] for r in conn.execute(
                "SELECT l.tenant_id, l.budget_id, l.recorded_at"
                " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS k(t, b, s)"
                " JOIN ledger l ON l.tenant_id = k.t AND l.budget_id = k.b AND l.sequence = k.s",
                ([k[0] for k, _ in found], [k[1] for k, _ in found],
                 [s.sequence for _, s in found]))}  # fmt: skip
            conn.rollback()
            rows = [(k[0], k[1], s.sequence, s.last_hash, encode_state(s), at.get(k))
                    for k, s in found]  # fmt: skip
            last = i + CHUNK >= len(keys)
            run = RunRecord("full", started, True, events, len(keys), ()) if last else None
            done += advance_checkpoints(url, rows, run=run)
    print(f"seeded {done:,} checkpoints in {time.perf_counter() - t0:.0f} s")
    return 0


def append(args: argparse.Namespace) -> int:
    """Write `--events` new events now (wall clock) to random background budgets, each loaded
    from the projections as the consumer does: what a day brings before the daily reconcile."""
    import random

    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.rows import balance_row
    from budget_ledger.projections.state_loading import load_states

    url = _with_db(load_settings().database_url, args.database)
    rng = random.Random(args.seed)
    conn = connect(url)
    budgets = conn.execute("SELECT count(*) FROM budget_balances WHERE tenant_id <> %s",
                           (HOT[0],)).fetchone()[0]  # type: ignore[index]  # fmt: skip
    conn.rollback()
    spread = args.budgets or args.events // 2
    picked = sorted(rng.sample(range(budgets), min(budgets, spread)))
    keys = [(f"scale-{i % 7}", f"b-{i}") for i in picked]
    w = _Writer(conn, f"{TOPIC}.append.{int(time.time())}", [], [], {})
    t0 = time.perf_counter()
    written = 0
    for i in range(0, len(keys), CHUNK // 2):
        batch = keys[i : i + CHUNK // 2]
        states = load_states(conn, batch)
        conn.rollback()
        changed = []
        for key in batch:
            state = states[key]
            assert isinstance(state, BudgetState) and state.opened, key
            for _ in range(args.events // (2 * len(keys))):  # reserve + charge pairs
                n = state.sequence
                ref = f"n{n}"
                reserve = Reserve(**_base(key, n), ref_id=ref, amount=_money(700),
                                  currency="USD", expires_at=None)  # fmt: skip
                state = _step(w, state, reserve, datetime.now(UTC))
                state = _step(w, state, Charge(**_base(key, n + 1), ref_id=ref, amount=None),
                              datetime.now(UTC))  # fmt: skip
            changed.append(state)
        written += len(w.ledger_rows)
        now = datetime.now(UTC)
        w.balance_rows.extend(balance_row(s, now) for s in changed)
        w.flush()
    from budget_ledger.ledger.store import queries

    q = queries()  # no relay runs here: mark the new rows published, as the fill does
    with conn.transaction():
        for partition, next_offset in w.offsets.items():
            cursor = {"topic": w.topic, "partition": partition}
            conn.execute(q["ensure_relay_cursor"], cursor)
            conn.execute(q["advance_relay_cursor"], {**cursor, "offset": next_offset - 1})
    print(f"appended {written:,} events to {len(keys):,} budgets in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    conn.close()
    return 0


def incremental(args: argparse.Namespace) -> int:
    """Time `reconcile` (incremental, as the hourly/daily job runs it) without moving the
    checkpoints, so it can be repeated on the same ledger."""
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.reconcile import ReconcileOptions, reconcile

    url = _with_db(load_settings().database_url, args.database)
    for run in range(1, args.runs + 1):
        opts = ReconcileOptions(workers=2, progress=False, incremental=True)
        t0 = time.perf_counter()
        report = reconcile(url, opts)
        took = time.perf_counter() - t0
        print(f"incremental reconcile {run}: {took:.2f} s, replayed {report.events:,} events of "
              f"{report.budgets:,} budgets, skipped {report.skipped_events:,} events / "
              f"{report.skipped_budgets:,} budgets, clean={report.clean}")  # fmt: skip
    return 0


def restart(args: argparse.Namespace) -> int:
    """The first command after a consumer restart: a consumer on fresh topics over the filled
    database is killed (SIGKILL) and started again; once the new one owns every partition, one
    command for the hot budget is produced: the time until its ledger row is committed includes
    loading that budget's state into the new process's empty cache."""
    import os
    import signal
    import subprocess
    import uuid

    from confluent_kafka import Producer

    from bench import workload
    from budget_ledger.consumers.kafka_config import producer_config
    from budget_ledger.consumers.topics import create_topics
    from budget_ledger.ledger.settings import load_settings, prefixed_names

    url = _with_db(load_settings().database_url, args.database)
    names = prefixed_names(f"restart{uuid.uuid4().hex[:8]}")
    settings = load_settings(database_url=url, **names, topic_partitions=PARTITIONS)
    create_topics(settings, partitions=PARTITIONS)
    env = dict(os.environ)
    env.update({f"LEDGER_{k.upper()}": v for k, v in names.items()})
    env.update({"LEDGER_DATABASE_URL": url, "LEDGER_APP_DATABASE_URL": "",
                "LEDGER_LOG_LEVEL": "error", **workload.signing_env(settings)})  # fmt: skip
    producer = Producer(producer_config(settings))
    conn = psycopg.connect(url, autocommit=True)

    def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "budget_ledger.entrypoints.cli", "consume"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)

    def send(n: int) -> tuple[str, float]:
        command_id = f"restart-{uuid.uuid4().hex}-{n}"
        # A reserve: not a privileged command, so it needs no signature.
        body = {"type": "reserve", "command_id": command_id, "tenant_id": HOT[0],
                "budget_id": HOT[1], "amount": "0.01", "currency": "USD",
                "ref_id": command_id}  # fmt: skip
        producer.produce(settings.topic_commands, key=f"{HOT[0]}:{HOT[1]}".encode(),
                         value=orjson.dumps(body))  # fmt: skip
        producer.flush(10)
        return command_id, time.perf_counter()

    def committed(command_id: str, since: float, timeout: float = 120) -> float:
        while time.perf_counter() - since < timeout:
            row = conn.execute(  # the idempotency guard's key: the ledger has no command index
                "SELECT 1 FROM ledger_commands WHERE tenant_id = %s AND command_id = %s",
                (HOT[0], command_id),
            ).fetchone()
            if row is not None:
                return (time.perf_counter() - since) * 1000
            time.sleep(0.002)
        raise RuntimeError(f"{command_id} not committed within {timeout} s")

    def owns_all(old: frozenset[str] = frozenset(), timeout: float = 120) -> frozenset[str]:
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        from budget_ledger.consumers.kafka_config import admin_config

        admin = AdminClient(admin_config(settings))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            group = settings.consumer_group
            desc = admin.describe_consumer_groups([group])[group].result(10)
            # A killed member keeps its partitions until its session times out: wait for the
            # new member to own them all.
            members = frozenset(m.member_id for m in desc.members)
            owned = sum(len(m.assignment.topic_partitions) for m in desc.members)
            if (
                desc.state == ConsumerGroupState.STABLE
                and owned == PARTITIONS
                and not members & old
            ):
                time.sleep(1.0)  # the assignment callback (seek to the stored position) runs
                return members
            time.sleep(0.2)
        raise RuntimeError("the consumer did not get its partitions")

    consumer = start()
    try:
        members = owns_all()
        warm = committed(*send(0))
        print(f"first consumer: first command for {HOT[0]}:{HOT[1]} committed {warm:.0f} ms "
              "after it was produced")  # fmt: skip
        for run in range(1, args.runs + 1):
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
            restarted = time.perf_counter()
            consumer = start()
            members = owns_all(members)
            first = committed(*send(run))
            again = committed(*send(run + 1000))
            whole = (time.perf_counter() - restarted) * 1000
            print(f"restart {run}: first command for {HOT[0]}:{HOT[1]} committed {first:.0f} ms "
                  f"after it was produced (the next one {again:.0f} ms; restart to both "
                  f"committed {whole:.0f} ms, including the group rebalance)")  # fmt: skip
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`fill`, `measure` or `restart`."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fill", help="create and fill a scaling database")
    f.add_argument("--database", required=True)
    f.add_argument("--events", type=int, default=1_000_000)
    f.add_argument("--budgets", type=int, default=50_000)
    f.add_argument("--hot-events", type=int, default=500_000)
    f.add_argument("--months", type=int, default=24)
    f.add_argument("--workers", type=int, default=2, help="background writer processes")
    m = sub.add_parser("measure", help="time the per-budget costs on a filled database")
    m.add_argument("--database", required=True)
    m.add_argument("--runs", type=int, default=5)
    m.add_argument("--replay", action="store_true", help="also time the old load by replay")
    r = sub.add_parser("restart", help="time the first command after a consumer restart")
    r.add_argument("--database", required=True)
    r.add_argument("--runs", type=int, default=3)
    c = sub.add_parser("seed-checkpoints", help="checkpoints as a clean full run leaves them")
    c.add_argument("--database", required=True)
    a = sub.add_parser("append", help="write new events now to random budgets")
    a.add_argument("--database", required=True)
    a.add_argument("--events", type=int, default=100_000)
    a.add_argument("--budgets", type=int, default=0, help="over this many (default events/2)")
    a.add_argument("--seed", type=int, default=12)
    j = sub.add_parser("project", help="write the projections from the ledger")
    j.add_argument("--database", required=True)
    j.add_argument("--workers", type=int, default=2)
    i = sub.add_parser("incremental", help="time an incremental reconcile (no checkpoint moves)")
    i.add_argument("--database", required=True)
    i.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    commands = {"fill": fill, "measure": measure, "restart": restart, "append": append,
                "seed-checkpoints": seed_checkpoints, "incremental": incremental,
                "project": project}  # fmt: skip
    return commands[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
