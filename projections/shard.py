"""One shard of a reconcile run: scan its ledger rows and projections in one snapshot.

Each shard scans its part of the ledger in physical order (`reconcile_ledger_scan`: no sort, no
index walk), replaying all of its budgets side by side (`projections.replay`), re-reads in order
the budgets that need it, then reads the projections in the same snapshot and compares
(`projections.drift`). Shards split the budgets by hash of the budget id.

Incremental mode (`ReconcileOptions.incremental`) reads only the budgets whose ledger moved past
their checkpoint (`reconcile_touched_budgets`, index probes only), each budget's rows by index in
sequence order, and those budgets' projection rows; the others are counted as skipped.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import psycopg

from budget_ledger.projections.drift import Drift, balance_from_row, compare
from budget_ledger.projections.reconcile_options import ReconcileOptions
from budget_ledger.projections.replay import BrokenLink, BudgetReplay, LegacySeal
from budget_ledger.projections.store import queries

FETCH = 20_000
_LOADS = orjson.loads


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
    # (tenant, budget, sequence, hash) of every budget that verified clean: the new checkpoints.
    verified: list[tuple[str, str, int, str]] = field(default_factory=list)

    def merge(self, other: ShardResult) -> None:
        """Add another shard's findings to this one."""
        self.events += other.events
        self.budgets += other.budgets
        self.skipped_budgets += other.skipped_budgets
        self.skipped_events += other.skipped_events
        self.verified.extend(other.verified)
        self.drifts.extend(other.drifts)
        self.broken.extend(other.broken)
        self.drifting.update(other.drifting)


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

    def new(tenant: str, budget: str) -> BudgetReplay:
        replay = BudgetReplay(tenant, budget, keys, seals.get((tenant, budget)))
        replay.checkpoint = checkpoints.get((tenant, budget))
        return replay

    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived, acyclic objects: the cyclic GC only costs time here
    try:
        with conn.transaction():
            # One snapshot for the ledger scan, the re-reads and the projections.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # keep physical order
            conn.execute("SET LOCAL jit = off")
            get = budgets.get
            if keys is not None:
                for r in conn.execute(q["reconcile_legacy_seals"], params):
                    seals[(r[0], r[1])] = LegacySeal(r[2], r[3], r[4], r[5])
            for r in conn.execute(q["reconcile_checkpoints"], params):
                checkpoints[(r[0], r[1])] = (int(r[2]), str(r[3]))
            scan, balances, reservations = (
                q["reconcile_ledger_scan"],
                q["reconcile_balances"],
                q["reconcile_reservations"],
            )
            scan_params: dict[str, object] = dict(params)
            if opts.incremental:
                touched = [
                    (r[0], r[1]) for r in conn.execute(q["reconcile_touched_budgets"], params)
                ]
                for key in touched:
                    budgets[key] = new(*key)
                for key, (seq, _hash) in checkpoints.items():
                    if key not in budgets:
                        result.skipped_budgets += 1
                        result.skipped_events += seq
                # Only the touched budgets' rows and projections are read, by index.
                scan_params = {
                    "tenants": [k[0] for k in touched],
                    "budgets": [k[1] for k in touched],
                }
                scan, balances, reservations = (
                    q["reconcile_events_of"],
                    q["reconcile_balances_of"],
                    q["reconcile_reservations_of"],
                )
            with conn.cursor(name=f"reconcile_{shard}") as cur:
                cur.itersize = FETCH
                cur.execute(scan, scan_params)
                while rows := cur.fetchmany(FETCH):
                    for row in rows:
                        budget = get((row[0], row[1]))
                        if budget is None:
                            budget = budgets[(row[0], row[1])] = new(row[0], row[1])
                        budget.feed(row)
                    if on_progress is not None:
                        on_progress(len(rows))
            for key, budget in budgets.items():
                if budget.reread:
                    budget.restart()
                    with conn.cursor(name=f"reconcile_{shard}_reread") as cur:
                        cur.itersize = FETCH
                        cur.execute(
                            q["reconcile_budget_events"], {"tenant": key[0], "budget": key[1]}
                        )
                        for row in cur:
                            budget.apply(row)
                else:
                    budget.end_of_scan()
            for key in checkpoints:
                budget = get(key)
                if budget is None and not opts.incremental:
                    budget = budgets[key] = new(*key)  # checkpointed, but no row left at all
                if budget is not None:
                    budget.end_of_checkpoint()
            for row in conn.execute(balances, scan_params):
                budget = get((row[0], row[1]))
                if budget is None:
                    budget = budgets[(row[0], row[1])] = new(row[0], row[1])
                budget.balance = balance_from_row(row)
            for row in conn.execute(reservations, scan_params):
                budget = get((row[0], row[1]))
                if budget is None:
                    budget = budgets[(row[0], row[1])] = new(row[0], row[1])
                res = _LOADS(row[2])
                budget.reservations[res[0]] = res
    finally:
        if gc_was_enabled:
            gc.enable()
    # Report order: by budget (Python's order; the findings do not depend on it).
    for key in sorted(budgets):
        _finish(budgets[key], result)
    return result


def _finish(budget: BudgetReplay, result: ShardResult) -> None:
    result.budgets += 1
    result.events += budget.events
    drifts = compare(budget)
    if budget.broken is not None:
        result.broken.append(budget.broken)
    s = budget.state
    if drifts or budget.broken is not None:
        result.drifts.extend(drifts)
        result.drifting[(s.tenant_id, s.budget_id)] = (s.sequence, s.utilization_bp)
    elif budget.events:
        result.verified.append((s.tenant_id, s.budget_id, s.sequence, s.last_hash))
