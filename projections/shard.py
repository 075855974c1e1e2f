"""One shard of a reconcile run: scan its ledger rows and projections in one snapshot.

Each shard scans its part of the ledger in physical order (`reconcile_ledger_scan`: no sort, no
index walk), replaying all of its budgets side by side (`projections.replay`), re-reads in order
the budgets that need it, then reads the projections in the same snapshot and compares
(`projections.drift`). Shards split the budgets by hash of the budget id.

Incremental mode (`ReconcileOptions.incremental`) reads only the budgets whose ledger moved past
their checkpoint: among the budgets of rows recorded since the last run began, minus a margin
(`reconcile_touched_since`: one set-based query over a BRIN range of the ledger, which also
brings each kept budget's checkpoint and balance row),
plus those the last run found drifting; the first run ever probes every budget
(`reconcile_touched_budgets`). A touched budget with a stored checkpoint state is replayed from
it: its new rows (and its checkpointed row, when recorded in the range) come from one
statement for the shard over that same range (`reconcile_rows_since`, a hash join), except for
the budgets the last run found drifting, read by an index range scan from the checkpointed row
(`reconcile_events_of`; from the first event without a usable state).
Then its projection rows are compared (for one replayed from its checkpoint: the balance row,
its open reservations and those its new events settled). The other budgets are counted as
skipped, their rows never read.

The per-budget reads from a checkpoint are bounded below by the recorded_at of its checkpointed
row minus the margin (migration 011), so Postgres reads only the recent monthly partitions; the
one-pass read is bounded by the range's start. Rows a bound may have hidden send the budget to
the unbounded ordered re-read (`BudgetReplay.unseen_rows`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
import structlog

from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.db import stream_rows
from budget_ledger.projections.checkpoint_state import StateUnreadable, decode_state, encode_state
from budget_ledger.projections.checkpoints import Verified
from budget_ledger.projections.drift import Drift, balance_from_row, compare
from budget_ledger.projections.reconcile_options import ReconcileOptions
from budget_ledger.projections.replay import BrokenLink, BudgetReplay, LegacySeal
from budget_ledger.projections.store import queries

PROGRESS_EVERY = 20_000  # rows
_LOADS = orjson.loads
log = structlog.get_logger("reconcile")


@dataclass(slots=True)
class ShardResult:
    """What one shard's replay found."""

    events: int = 0
    budgets: int = 0
    drifts: list[Drift] = field(default_factory=list)
    broken: list[BrokenLink] = field(default_factory=list)
    # (tenant, budget) -> (sequence, utilization in basis points) of the replay, for the alerts.
    drifting: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # Incremental mode: budgets unchanged since their checkpoint, and their events, not read.
    skipped_budgets: int = 0
    skipped_events: int = 0
    # (tenant, budget, sequence, hash, state JSON, recorded_at of that row) of every budget that
    # verified clean: the new checkpoints (emptied once written where the shard ran).
    verified: list[Verified] = field(default_factory=list)
    checkpoints_advanced: int = 0
    # The database's clock at the start of the earliest shard's transaction (recorded with the
    # run: the next incremental run looks at the rows recorded since, minus a margin).
    started_at: datetime | None = None

    def merge(self, other: ShardResult) -> None:
        """Add another shard's findings to this one."""
        self.events += other.events
        self.budgets += other.budgets
        self.skipped_budgets += other.skipped_budgets
        self.skipped_events += other.skipped_events
        self.verified.extend(other.verified)
        self.checkpoints_advanced += other.checkpoints_advanced
        self.drifts.extend(other.drifts)
        self.broken.extend(other.broken)
        self.drifting.update(other.drifting)
        if self.started_at is None or (
            other.started_at is not None and other.started_at < self.started_at
        ):
            self.started_at = other.started_at


def replay_shard(
    conn: psycopg.Connection,
    opts: ReconcileOptions,
    shard: int = 0,
    shards: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> ShardResult:
    """Scan one shard of the ledger in physical order, replaying every budget side by side,
    then read the projections (same snapshot) and compare budget by budget."""
    result = ShardResult()
    params = {"tenant": opts.tenant, "budget": opts.budget, "shard": shard, "shards": shards}
    budgets: dict[tuple[str, str], BudgetReplay] = {}
    q = queries()
    keys = opts.chain_keys
    seals: dict[tuple[str, str], LegacySeal] = {}
    checkpoints: dict[tuple[str, str], tuple[int, str]] = {}
    stored_states: dict[tuple[str, str], str] = {}

    def new(tenant: str, budget: str) -> BudgetReplay:
        replay = BudgetReplay(tenant, budget, keys, seals.get((tenant, budget)))
        replay.checkpoint = checkpoints.get((tenant, budget))
        replay.checkpoint_state = stored_states.get((tenant, budget))
        return replay

    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived, acyclic objects: the cyclic GC only costs time here
    try:
        with conn.transaction():
            # One snapshot for the ledger scan, the re-reads and the projections.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # keep physical order
            get = budgets.get
            if keys is not None and not opts.incremental:
                for r in conn.execute(q["reconcile_legacy_seals"], params):
                    seals[(r[0], r[1])] = LegacySeal(r[2], r[3], r[4], r[5])
            now = conn.execute("SELECT now()").fetchone()
            result.started_at = now[0] if now else None
            scan_params: dict[str, object] = dict(params)
            # (query, params) of the ledger reads, each ordered by budget (or physical).
            scans: list[tuple[str, Mapping[str, object]]] = []
            if opts.incremental:
                touched, since = _touched(conn, opts, params, result)
                if keys is not None:  # the legacy seals of the touched budgets only
                    for r in conn.execute(
                        q["reconcile_legacy_seals_of"],
                        {"keys": _json([[k[0], k[1]] for k in touched])},
                    ):
                        seals[(r[0], r[1])] = LegacySeal(r[2], r[3], r[4], r[5])
                reads, streamed, whole = _plan_reads(touched, since, opts, new, budgets,
                                                     checkpoints, result)  # fmt: skip
                # The keys go as one JSON array: psycopg renders a Python list of 50,000 ids
                # as an array literal ~10x slower than orjson writes the same list.
                if streamed:  # one pass over the range the candidates came from
                    scans.append(
                        (q["reconcile_rows_since"], {"keys": _json(streamed), "since": since})
                    )
                if reads:  # one index range scan per budget
                    scans.append((q["reconcile_events_of"], {"keys": _json(reads)}))
                # The balance rows came with the candidates, and after the first run the open
                # reservations too: only the budgets replayed whole read theirs (all of them).
                if since is not None:
                    whole = [k for k in whole if k[4]]
                scan_params = {"keys": _json(whole)} if whole else {}
                balances, reservations = None, q["reconcile_reservations_of"]
            else:
                for r in conn.execute(q["reconcile_checkpoints"], params):
                    checkpoints[(r[0], r[1])] = (int(r[2]), str(r[3]))
                    if r[4] is not None:
                        stored_states[(r[0], r[1])] = r[4]
                scans.append((q["reconcile_ledger_scan"], scan_params))
                balances, reservations = q["reconcile_balances"], q["reconcile_reservations"]
            for i, (scan, scan_args) in enumerate(scans):
                # The one-pass read joins the keys to the range's rows: the planner, which
                # guesses 100 keys, would probe the ledger once per key (2.3x slower measured
                # at 25,000 keys); the other statements of the run keep their nested loops.
                # The session's own setting comes back after it, whatever it was.
                nestloop = None
                if scan is q["reconcile_rows_since"]:
                    nestloop = conn.execute(
                        "SELECT current_setting('enable_nestloop'),"
                        " set_config('enable_nestloop', 'off', true)"
                    ).fetchone()
                n = 0
                # Only the whole scan streams (~1.4 us of PostgreSQL's CPU an event less): the
                # incremental reads' joins keep the plans made for a cursor (planned otherwise,
                # one delivered a budget's rows in reverse).
                whole_scan = scan is q["reconcile_ledger_scan"]
                name = f"reconcile_{shard}_{i}"
                for row in stream_rows(conn, scan, scan_args, name, whole_scan):
                    budget = get((row[0], row[1]))
                    if budget is None:
                        budget = budgets[(row[0], row[1])] = new(row[0], row[1])
                    budget.feed(row)
                    n += 1
                    if n == PROGRESS_EVERY:
                        if on_progress is not None:
                            on_progress(n)
                        n = 0
                if on_progress is not None and n:
                    on_progress(n)
                if nestloop is not None:
                    conn.execute("SELECT set_config('enable_nestloop', %s, true)", nestloop[:1])
            # The projections first: a bounded replay ending before its balance row's sequence
            # missed rows (`unseen_rows`).
            for row in conn.execute(balances, scan_params) if balances is not None else ():
                budget = get((row[0], row[1]))
                if budget is None:
                    budget = budgets[(row[0], row[1])] = new(row[0], row[1])
                budget.balance = balance_from_row(row)
            for row in conn.execute(reservations, scan_params) if scan_params else ():
                budget = get((row[0], row[1]))
                if budget is None:
                    budget = budgets[(row[0], row[1])] = new(row[0], row[1])
                res = _LOADS(row[2])
                budget.reservations[res[0]] = res
            for key, budget in budgets.items():
                if budget.reread or budget.lost_base() or _unseen(budget):
                    budget.restart()
                    for row in stream_rows(
                        conn,
                        q["reconcile_budget_events"],
                        {"tenant": key[0], "budget": key[1]},
                        f"reconcile_{shard}_reread",
                        stream=False,  # its plan stays a cursor's, as the incremental reads'
                    ):
                        budget.apply(row)
                else:
                    budget.end_of_scan()
            for key in checkpoints:
                budget = get(key)
                if budget is None and not opts.incremental:
                    budget = budgets[key] = new(*key)  # checkpointed, but no row left at all
                if budget is not None:
                    budget.end_of_checkpoint()
            if opts.incremental:
                _read_settled_since(conn, budgets)
        # Report order: by budget (Python's order; the findings do not depend on it). Still
        # without the collector: enabled here, its first full pass walks every replay object.
        for key in sorted(budgets):
            _finish(budgets[key], result)
    finally:
        if gc_was_enabled:
            gc.enable()
    return result


def _unseen(budget: BudgetReplay) -> bool:
    if not budget.unseen_rows():
        return False
    s = budget.state
    # A consumer clock off by more than the margin (or rows written behind the consumer's back):
    # worth an operator's look even when the re-read verifies clean.
    log.warning("reconcile_rows_outside_bound", tenant_id=s.tenant_id, budget_id=s.budget_id)
    return True


def _touched(
    conn: psycopg.Connection,
    opts: ReconcileOptions,
    params: Mapping[str, object],
    result: ShardResult,
) -> tuple[list[tuple[Any, ...]], datetime | None]:
    """The shard's touched budgets (`reconcile_touched_since` columns: the checkpoint if any,
    where its new rows are read, the balance row) and the start of the range of new rows (None
    on the first run); adds the checkpoint totals (shard 0) to the skipped counts, which the
    caller corrects."""
    q = queries()
    margin = timedelta(seconds=opts.candidate_margin_seconds)
    if params["shard"] == 0:
        _add_checkpoint_totals(conn, params, result)
    last = conn.execute(q["reconcile_last_run"]).fetchone()
    if last is None:  # the first run: probe every budget
        rows = conn.execute(q["reconcile_touched_budgets"], {**params, "margin": margin})
        return list(rows), None
    since = last[0] - margin
    return list(
        conn.execute(
            q["reconcile_touched_since"],
            {**params, "since": since,
             "drifting_tenants": last[1], "drifting_budgets": last[2]},
        )
    ), since  # fmt: skip


def _add_checkpoint_totals(
    conn: psycopg.Connection, params: Mapping[str, object], result: ShardResult
) -> None:
    """Add the checkpoints' count and covered events to the skipped counts."""
    whole = params["tenant"] is None and params["budget"] is None
    name = "reconcile_checkpoint_totals" if whole else "reconcile_checkpoint_totals_of"
    totals = conn.execute(queries()[name], None if whole else params).fetchone()
    if totals is not None:
        result.skipped_budgets += int(totals[0])
        result.skipped_events += int(totals[1])


def _plan_reads(
    touched: list[tuple[Any, ...]],
    since: datetime | None,
    opts: ReconcileOptions,
    new: Callable[[str, str], BudgetReplay],
    budgets: dict[tuple[str, str], BudgetReplay],
    checkpoints: dict[tuple[str, str], tuple[int, str]],
    result: ShardResult,
) -> tuple[list[list[object]], list[list[object]], list[list[object]]]:
    """Start the replay of each touched budget (from its checkpoint's state when usable) and say
    where its rows come from: the per-budget reads (`reconcile_events_of` keys: tenant, budget,
    first sequence, lower bound of recorded_at or None, replayed whole?), the budgets whose new
    rows all lie in the range (`reconcile_rows_since` keys: tenant, budget, checkpointed
    sequence), and every budget with whether it is replayed whole (`reconcile_reservations_of`)."""
    reads: list[list[object]] = []
    streamed: list[list[object]] = []
    projected: list[list[object]] = []
    margin = timedelta(seconds=opts.candidate_margin_seconds)
    for row in touched:
        t, b, seq, hash_, state, at, from_window = row[:7]
        replay = budgets[(t, b)] = new(t, b)
        if row[7] is not None:
            replay.balance = balance_from_row((row[7], b, *row[8:13]))
        if row[13] is not None:  # the open reservations (after the first run)
            for res in _LOADS(row[13]):
                replay.reservations[res[0]] = res
        read: list[object] = [t, b, 1, None, True]
        if seq is not None:
            checkpoints[(t, b)] = replay.checkpoint = (int(seq), str(hash_))
            result.skipped_budgets -= 1  # counted in the totals, but replayed
            result.skipped_events -= int(seq)
            start = _checkpoint_state(state, t, b, int(seq), str(hash_))
            if start is not None:
                replay.start_at_checkpoint(start)
                read[2], read[4] = int(seq), False
                if at is not None:  # only the partitions from its month on are read
                    read[3] = at - margin
                    replay.bounded = True
                    if from_window and since is not None:
                        projected.append(read)
                        streamed.append([t, b, int(seq)])
                        # A checkpointed row in the range comes with the one pass and must carry
                        # its hash (else, or gone, `lost_base` re-reads the budget whole); one
                        # recorded before the range is not read: a past run verified it, and
                        # --full checks it again, like every row before it. Not probing it
                        # saves a cold random read of an old partition per budget.
                        replay.base_trusted = at < since
                        continue
        reads.append(read)
        projected.append(read)
    return reads, streamed, projected


def _checkpoint_state(
    text: str | None, tenant: str, budget: str, sequence: int, hash_: str
) -> BudgetState | None:
    """The stored state to replay from, or None (no state, or not this checkpoint's): the budget
    is then replayed from its first event."""
    if text is None:
        return None
    try:
        state = decode_state(text)
    except StateUnreadable:
        return None  # replayed whole; the clean run then stores a state it can read
    if (state.tenant_id, state.budget_id, state.sequence, state.last_hash) != (
        tenant,
        budget,
        sequence,
        hash_,
    ):
        return None
    return state


def _read_settled_since(
    conn: psycopg.Connection, budgets: dict[tuple[str, str], BudgetReplay]
) -> None:
    """For budgets replayed from a checkpoint: the projection rows of the reservations that
    their new events settled (the open ones were read with the budget's)."""
    keys: list[tuple[str, str, str]] = []
    for (t, b), budget in budgets.items():
        after = budget.settled_after
        if after:
            keys.extend(
                (t, b, ref)
                for ref, res in budget.state.reservations.items()
                if res.updated_seq > after and res.status != "reserved"
            )
    if not keys:
        return
    for row in conn.execute(queries()["reconcile_reservations_by_ref"], {"keys": _json(keys)}):
        res = _LOADS(row[2])
        budgets[(row[0], row[1])].reservations[res[0]] = res


def _json(rows: object) -> str:
    return orjson.dumps(rows).decode()


def _finish(budget: BudgetReplay, result: ShardResult) -> None:
    result.budgets += 1
    result.events += budget.events
    result.skipped_events += budget.base  # the events before its checkpoint, not replayed
    drifts = compare(budget)
    if budget.broken is not None:
        result.broken.append(budget.broken)
    s = budget.state
    if drifts or budget.broken is not None:
        result.drifts.extend(drifts)
        result.drifting[(s.tenant_id, s.budget_id)] = (s.sequence, s.utilization_bp)
    elif budget.events:
        result.verified.append(
            (s.tenant_id, s.budget_id, s.sequence, s.last_hash, encode_state(s),
             _recorded_at(budget.last_at))
        )  # fmt: skip


def _recorded_at(text: str | None) -> datetime | None:
    """The hashed recorded_at of the checkpointed row (None: the next reads are unbounded)."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None
