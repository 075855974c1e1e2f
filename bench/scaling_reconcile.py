"""`bench.scaling seed-checkpoints`, `append` and `incremental`: the incremental reconcile on a
filled database (checkpoints as a full run leaves them, a day's new events, the timed run)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from bench.report import cpu_probe_ms
from bench.scaling_history import CHUNK, TOPIC, _base, _money, _step, _with_db, _Writer
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.commands import Charge, Reserve
from budget_ledger.projections.reconcile_options import ReconcileOptions


def seed_checkpoints(args: argparse.Namespace) -> int:
    """Write every budget's reconcile checkpoint as a clean full run would: its last sequence
    and hash and its state, taken from the projections (which the reconciler proves equal to the
    replay; `reconcile --full` also checks each stored state), the recorded_at of that last row
    (from the ledger: the lower bound of the next incremental run's reads), and record that run
    — instead of replaying a 20M-event ledger first."""
    from budget_ledger.ledger.db import connect
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.checkpoint_state import encode_state
    from budget_ledger.projections.checkpoints import RunRecord, advance_checkpoints, record_run
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
            done += advance_checkpoints(url, rows)
        record_run(url, RunRecord("full", started, True, events, len(keys), ()))
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
    # The filled background budgets only (scale-0 .. scale-6), not the hot one nor those a
    # benchmark run (`python -m bench --use-database`) added to this database.
    budgets = conn.execute("SELECT count(*) FROM budget_balances WHERE tenant_id ~ '^scale-[0-9]+$'"
                           ).fetchone()[0]  # type: ignore[index]  # fmt: skip
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
    checkpoints, so it can be repeated on the same ledger; with `--write`, the last run writes
    its checkpoints and records itself, as the job does (the ledger is then reconciled)."""
    from budget_ledger.ledger.settings import load_settings
    from budget_ledger.projections.reconcile import reconcile

    settings = load_settings()
    url = _with_db(settings.database_url, args.database)
    opts = ReconcileOptions(
        workers=args.workers,
        progress=False,
        incremental=True,
        candidate_margin_seconds=settings.reconcile_margin_seconds,
    )
    if args.day:
        _make_day(url, args, opts)
    _print_range(url, opts.candidate_margin_seconds)
    # The machine's speed moves from minute to minute here: say what it was.
    print(f"CPU probe {cpu_probe_ms()} ms (bench.report: a fixed loop, lower is faster)")
    for run in range(1, args.runs + 1):
        t0 = time.perf_counter()
        write = args.write and run == args.runs
        report = reconcile(url, opts, checkpoint_dsn=url if write else None)
        took = time.perf_counter() - t0
        wrote = f", wrote {report.checkpoints_advanced:,} checkpoints" if write else ""
        print(f"incremental reconcile {run}: {took:.2f} s, replayed {report.events:,} events of "
              f"{report.budgets:,} budgets, skipped {report.skipped_events:,} events / "
              f"{report.skipped_budgets:,} budgets, clean={report.clean}{wrote}")  # fmt: skip
    return 0


def _make_day(url: str, args: argparse.Namespace, opts: ReconcileOptions) -> None:
    """A day as the daily run sees it: the last recorded run begins more than the margin after
    the newest row (so the range holds none of the rows it checkpoints), then `--day` new
    events. The candidate range then holds those only, not every append of the margin."""
    from budget_ledger.ledger.db import connect
    from budget_ledger.projections.reconcile import reconcile

    with connect(url, autocommit=True) as conn:
        # Only the rows within the margin (a max over the whole ledger took 4-13 s on the 20M
        # one): a newest row older than the margin needs no wait.
        row = conn.execute(
            "SELECT max(recorded_at), now() FROM ledger"
            " WHERE recorded_at > now() - make_interval(secs => %s)",
            (opts.candidate_margin_seconds + 1,),
        ).fetchone()
    if row is not None and row[0] is not None:
        wait = opts.candidate_margin_seconds + 1 - (row[1] - row[0]).total_seconds()
        if wait > 0:
            print(f"waiting {wait:.0f} s: the margin after the newest row")
            time.sleep(wait)
    report = reconcile(url, opts, checkpoint_dsn=url)
    print(f"reconciled what was pending: {report.events:,} events, clean={report.clean}")
    append(argparse.Namespace(database=args.database, events=args.day, budgets=args.budgets,
                              seed=args.seed))  # fmt: skip
    _wait_for_autovacuum(url)


def _wait_for_autovacuum(url: str) -> None:
    """Wait until autovacuum has been idle in this database for one naptime (at most 10 min).

    The append writes a day's events in seconds, so autovacuum's work on them (the month's
    partition, the balance rows, the checkpoints) starts right after it, while a real day's
    is spread over the day and long done when the daily run starts; timed right after the
    append, the runs shared the two cores with it."""
    from budget_ledger.ledger.db import connect

    t0 = time.perf_counter()
    with connect(url, autocommit=True) as conn:
        nap = conn.execute(
            "SELECT setting::int FROM pg_settings WHERE name = 'autovacuum_naptime'"
        ).fetchone()
        quiet_needed = (nap[0] if nap else 60) + 5
        quiet_since, busy_polls = time.perf_counter(), 0
        while time.perf_counter() - t0 < 600:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'autovacuum worker' AND datname = current_database()"
            ).fetchone()
            now = time.perf_counter()
            if busy and busy[0]:
                busy_polls += 1  # about a second each
                quiet_since = now
            elif now - quiet_since >= quiet_needed:
                break
            time.sleep(1)
    print(f"waited {time.perf_counter() - t0:.0f} s for autovacuum to finish the day's work "
          f"(seen working for ~{busy_polls} s)")  # fmt: skip


def _print_range(url: str, margin_seconds: float) -> None:
    """How many ledger rows the candidate query will read: those recorded since the last
    recorded run began, minus the margin. A daily run reads about one day's rows; rows appended
    within the margin before the last run are read again (already checkpointed), so appends
    made minutes apart make the range several days' worth, not what a daily run sees."""
    from datetime import timedelta

    from budget_ledger.ledger.db import connect

    with connect(url, autocommit=True) as conn:
        last = conn.execute("SELECT max(started_at) FROM reconcile_runs").fetchone()
        if last is None or last[0] is None:
            print("candidate range: no recorded run (the first run probes every budget)")
            return
        since = last[0] - timedelta(seconds=margin_seconds)
        rows = conn.execute(
            "SELECT count(*) FROM ledger WHERE recorded_at >= %s", (since,)
        ).fetchone()
    count = rows[0] if rows else 0
    print(f"candidate range: {count:,} ledger rows recorded since {since:%H:%M:%S} "
          f"(the last run's start minus the {margin_seconds:.0f} s margin)")  # fmt: skip
