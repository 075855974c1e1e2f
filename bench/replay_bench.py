"""Replay benchmark: fill a ledger with N events quickly, then time `reconcile` over it.

    .venv/bin/python bench/replay_bench.py --events 1000000 --budgets 2000 --workers 2

The fill does not go through Kafka: a seeded random command stream runs through the consumer's
own `process_batch` (the domain's `apply`, the same row layout) with in-process look-ups, and the
ledger and projection rows are COPYed in. The timed part is `projections.reconcile.reconcile`,
exactly what `budget-ledger reconcile` runs; `--incremental-after N` times an incremental against
a full reconcile after N new events on a checkpointed ledger. The database in LEDGER_DATABASE_URL
is used as is (`--fresh` creates and migrates a scratch database next to it and drops it
afterwards).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budget_ledger.consumers.processor import (
    BatchContext,
    BatchOutput,
    Incoming,
    PartitionState,
    merge_states,
    process_batch,
)
from budget_ledger.ledger.budget import initial_state

START = datetime(2026, 1, 1, tzinfo=UTC)


def _money(rng: random.Random, low: int, high: int) -> str:
    minor = rng.randint(low, high)
    return f"{minor // 100}.{minor % 100:02d}"


def command_stream(
    n: int, budgets: int, seed: int = 7, tenants: int = 3
) -> Iterator[dict[str, Any]]:
    """A seeded stream of `n` commands over `budgets` budgets: opens first, then a random mix of
    fund/reserve/charge/release/adjust/configure/expire/close, including refusals."""
    rng = random.Random(seed)
    keys = [(f"tenant-{i % tenants}", f"budget-{i}") for i in range(budgets)]
    open_refs: dict[tuple[str, str], list[str]] = {k: [] for k in keys}
    ref_counter = 0
    for i, (tenant, budget) in enumerate(keys[: min(n, budgets)]):
        period = "monthly" if i % 4 == 0 else "rolling"
        cmd: dict[str, Any] = {
            "type": "open_budget",
            "command_id": f"c-open-{i}",
            "tenant_id": tenant,
            "budget_id": budget,
            "currency": "USD" if i % 3 else "ZWG",
            "period": period,
        }
        if i % 5 == 0:
            cmd["hard_cap"] = _money(rng, 50_000, 200_000)
        if i % 7 == 0:
            cmd["period_allowance"] = _money(rng, 10_000, 50_000)
            cmd["rollover"] = bool(i % 2)
        yield cmd
    for j in range(max(0, n - budgets)):
        key = keys[rng.randrange(budgets)]
        tenant, budget = key
        currency = "ZWG" if int(budget.split("-")[1]) % 3 == 0 else "USD"
        base = {"command_id": f"c-{j}", "tenant_id": tenant, "budget_id": budget}
        roll = rng.random()
        refs = open_refs[key]
        if roll < 0.12:
            yield {
                **base,
                "type": "fund",
                "amount": _money(rng, 1_000, 100_000),
                "currency": currency,
            }
        elif roll < 0.55:
            ref_counter += 1
            ref = f"r-{ref_counter}"
            refs.append(ref)
            cmd = {
                **base,
                "type": "reserve",
                "amount": _money(rng, 1, 5_000),
                "currency": currency,
                "ref_id": ref,
            }
            if rng.random() < 0.2:
                # Early in the run these expire at the sweeps below; later ones are refused.
                cmd["expires_at"] = rng.choice(["2026-01-01T00:01:00Z", "2099-01-01T00:00:00Z"])
            yield cmd
        elif roll < 0.78 and refs:
            ref = refs.pop(rng.randrange(len(refs)))
            cmd = {**base, "type": "charge", "ref_id": ref}
            if rng.random() < 0.3:
                cmd["amount"] = _money(rng, 1, 500)  # may exceed the reservation: a refusal
            yield cmd
        elif roll < 0.9 and refs:
            yield {**base, "type": "release", "ref_id": refs.pop(rng.randrange(len(refs)))}
        elif roll < 0.93:
            amount = _money(rng, 1, 2_000)
            yield {
                **base,
                "type": "adjust",
                "amount": amount if rng.random() < 0.7 else "-" + amount,
                "reason": "bench correction",
                "operator": "ops-1",
            }
        elif roll < 0.95:
            yield {**base, "type": "configure_budget", "soft_threshold_pct": rng.randint(50, 90)}
        elif roll < 0.97:
            yield {**base, "type": "expire_reservations", "as_of": "2026-01-01T00:02:00Z"}
        elif roll < 0.98:
            yield {**base, "type": "close_period", "period_end": "2026-01-01T00:01:40Z"}
        else:
            yield {**base, "type": "charge", "ref_id": f"missing-{j}"}  # reservation_not_found


def build_rows(
    commands: Iterator[dict[str, Any]],
    partitions: int = 12,
    batch: int = 5000,
    topic: str = "bench.commands",
    *,
    live_after: int | None = None,
) -> Iterator[BatchOutput]:
    """Run commands through the consumer's `process_batch` in batches (in-process look-ups:
    command ids are unique, budgets start empty); yields each batch's rows. Batches are
    recorded one second apart from START; with `live_after`, the batches after that many are
    recorded at the wall clock (new events for an incremental reconcile to find)."""
    ctx = BatchContext(
        topic=topic,
        events_topic="bench.events",
        alerts_topic="bench.alerts",
        dlq_topic="bench.dlq",
        currencies={"USD": 2, "ZWG": 2},
    )
    states = {p: PartitionState(next_offset=0) for p in range(partitions)}
    offsets = dict.fromkeys(range(partitions), 0)
    now = START
    made = 0
    pending: list[Incoming] = []

    def flush() -> BatchOutput:
        out = process_batch(
            pending,
            states,
            ctx,
            lookup_prior=lambda keys: {},
            load_budgets=lambda keys: {k: initial_state(*k) for k in keys},
            now=now,
        )
        merge_states(states, out)
        return out

    for cmd in commands:
        key = f"{cmd['tenant_id']}:{cmd['budget_id']}".encode()
        part = hash_partition(key, partitions)
        pending.append(Incoming(part, offsets[part], key, orjson.dumps(cmd)))
        offsets[part] += 1
        if len(pending) >= batch:
            yield flush()
            pending = []
            made += 1
            if live_after is not None and made >= live_after:
                now = datetime.now(UTC)
            else:
                now += timedelta(seconds=1)
    if pending:
        yield flush()


def hash_partition(key: bytes, partitions: int) -> int:
    """A stable partition for a key (any stable function will do for a benchmark)."""
    return int.from_bytes(key[-4:], "big") % partitions


def fill(dsn: str, n: int, budgets: int, seed: int) -> int:
    """Write the ledger and projections of `n` commands into the database; returns events."""
    return write_batches(dsn, build_rows(command_stream(n, budgets, seed)))


def fill_split(dsn: str, n: int, budgets: int, seed: int, tail: int) -> tuple[int, list[Any]]:
    """Like `fill`, but hold back the batches of the last `tail` commands or more (whole batches
    of 5,000): returns the events written and the held batches, for `write_batches` later."""
    head = max(n - tail, 0) // 5000  # build_rows' batches hold 5,000 commands
    # The held batches are recorded at the wall clock, as a consumer would record new events.
    batches = build_rows(command_stream(n, budgets, seed), live_after=head)
    written = write_batches(dsn, itertools.islice(batches, head))
    return written, list(batches)


def write_batches(dsn: str, batches: Iterable[BatchOutput]) -> int:
    """COPY the batches' ledger and projection rows, mark them published; returns events."""
    from budget_ledger.ledger import store
    from budget_ledger.ledger.db import connect
    from budget_ledger.projections.store import upsert_projections

    total = 0
    last: dict[tuple[object, object], object] = {}
    # As the owner: COPY FROM is refused on tables with row-level security for ledger_app.
    with connect(dsn) as conn:
        for out in batches:
            with conn.transaction():
                store.append_ledger_rows(conn, out.ledger_rows)
                upsert_projections(conn, out.balance_rows, out.reservation_rows)
            total += len(out.ledger_rows)
            for row in out.ledger_rows:
                last[(row[13], row[14])] = row[15]  # rows come in offset order per partition
        # No relay runs here: mark every partition published so the run measures a clean ledger.
        q = store.queries()
        for (topic, partition), offset in last.items():
            cursor = {"topic": topic, "partition": partition}
            conn.execute(q["ensure_relay_cursor"], cursor)
            conn.execute(q["advance_relay_cursor"], {**cursor, "offset": offset})
        conn.execute("ANALYZE ledger")
        conn.commit()
    return total


def _scratch(dsn: str) -> str:
    import psycopg
    from psycopg import sql

    from budget_ledger.ledger.migrate import migrate

    name = f"ledger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    migrate(url)
    return url


def _drop(dsn: str, url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _client_cpu() -> float:
    """CPU seconds of this process and its reaped children (the replay workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Fill (unless --no-fill), then time one full reconcile and print events/s."""
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.reconcile import ReconcileOptions, reconcile

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--events", type=int, default=1_000_000, help="commands to generate (one event each)"
    )
    p.add_argument("--budgets", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workers", type=int, default=2, help="replay processes (split by budget hash)")
    p.add_argument(
        "--fresh", action="store_true", help="use a scratch database, dropped afterwards"
    )
    p.add_argument("--keep", action="store_true", help="with --fresh: keep the scratch database")
    p.add_argument(
        "--no-fill", action="store_true", help="reuse the ledger already in the database"
    )
    p.add_argument("--runs", type=int, default=1, help="timed reconcile runs")
    p.add_argument(
        "--incremental-after",
        type=int,
        default=0,
        metavar="N",
        help="fill all but the last N commands, reconcile (checkpoints), write the N, then time "
        "an incremental and a full reconcile",
    )
    args = p.parse_args(argv)

    settings = load_settings()
    dsn = _scratch(settings.database_url) if args.fresh else settings.database_url
    try:
        if args.incremental_after:
            _incremental_bench(dsn, args)
            return 0
        if not args.no_fill:
            t0 = time.perf_counter()
            events = fill(dsn, args.events, args.budgets, args.seed)
            took = time.perf_counter() - t0
            print(f"filled {events:,} events in {took:.1f} s ({events / took:,.0f}/s)")
        for run in range(args.runs):
            load = os.getloadavg()[0]
            cpu0 = _client_cpu()
            t0 = time.perf_counter()
            report = reconcile(dsn, ReconcileOptions(workers=args.workers, progress=False))
            took = time.perf_counter() - t0
            cpu = _client_cpu() - cpu0
            print(
                f"run {run + 1}: replayed {report.events:,} events of {report.budgets:,} budgets "
                f"in {took:.2f} s = {report.events / took:,.0f} events/s "
                f"(workers={args.workers}, clean={report.clean}); reconciler CPU "
                f"{cpu / max(report.events, 1) * 1e6:.2f} us/event (all its processes, not "
                f"Postgres); load before {load:.2f}"
            )
    finally:
        if args.fresh and not args.keep:
            _drop(settings.database_url, dsn)
    return 0


def _incremental_bench(dsn: str, args: argparse.Namespace) -> None:
    """Incremental vs full reconcile after `--incremental-after` new events, and the incremental
    run as it was before checkpoint states and run records (every budget probed, every touched
    budget replayed whole), on the same ledger."""
    import psycopg

    from budget_ledger.projections.reconcile import ReconcileOptions, reconcile
    from budget_ledger.projections.store import queries

    t0 = time.perf_counter()
    events, held = fill_split(dsn, args.events, args.budgets, args.seed, args.incremental_after)
    print(f"filled {events:,} events in {time.perf_counter() - t0:.1f} s")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # What autovacuum does to a ledger that has been running: summarise the BRIN ranges of
        # recorded_at (unsummarised ranges are read whole by the candidate query).
        conn.execute("VACUUM ledger")
    t0 = time.perf_counter()
    first = reconcile(dsn, ReconcileOptions(workers=args.workers, progress=False), None, None,
                      None, checkpoint_dsn=dsn)  # fmt: skip
    print(
        f"full reconcile setting checkpoints: {first.events:,} events, "
        f"{first.checkpoints_advanced:,} checkpoints in {time.perf_counter() - t0:.2f} s"
    )
    new = write_batches(dsn, held)
    print(f"wrote {new:,} new events")
    with psycopg.connect(dsn) as conn:  # the plan of the candidate query on this ledger
        since = conn.execute("SELECT max(started_at) - interval '1 hour' FROM reconcile_runs")
        params = {"tenant": None, "budget": None, "shard": 0, "shards": 1,
                  "since": since.fetchone()[0],  # type: ignore[index]
                  "drifting_tenants": [], "drifting_budgets": []}  # fmt: skip
        plan = conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + queries()["reconcile_touched_since"], params
        ).fetchall()
        print("candidate query plan:\n  " + "\n  ".join(r[0] for r in plan))

    def timed(run: int, label: str, incremental: bool, write: bool = False) -> None:
        opts = ReconcileOptions(workers=args.workers, progress=False, incremental=incremental)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        # Without checkpoint_dsn every run sees the same ledger; `write` is a real run.
        report = reconcile(dsn, opts, None, None, None, checkpoint_dsn=dsn if write else None)
        took = time.perf_counter() - t0
        print(
            f"run {run + 1} {label:>24}: {took:6.2f} s, replayed {report.events:,} events of "
            f"{report.budgets:,} budgets, skipped {report.skipped_events:,} events / "
            f"{report.skipped_budgets:,} budgets, {report.checkpoints_advanced:,} checkpoints "
            f"written (clean={report.clean}, load before {load:.2f})"
        )

    for run in range(args.runs):
        timed(run, "incremental", True)
        timed(run, "full", False)
    # As before this change: no stored states (touched budgets replayed whole) and no run
    # recorded (the first-run path probes every budget's last row). Then restored.
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE bench_cp AS SELECT * FROM reconcile_checkpoints")
        conn.execute("CREATE TABLE bench_runs AS SELECT * FROM reconcile_runs")
        conn.execute("UPDATE reconcile_checkpoints SET state = NULL")
        conn.execute("DELETE FROM reconcile_runs")
    for run in range(args.runs):
        timed(run, "incremental (old)", True)
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM reconcile_checkpoints")
        conn.execute("INSERT INTO reconcile_checkpoints SELECT * FROM bench_cp")
        conn.execute("INSERT INTO reconcile_runs OVERRIDING SYSTEM VALUE SELECT * FROM bench_runs")
        conn.execute("DROP TABLE bench_cp, bench_runs")
    # The daily run as it happens: incremental, writing the new checkpoints and its run record.
    timed(0, "incremental + checkpoints", True, write=True)


if __name__ == "__main__":
    raise SystemExit(main())
