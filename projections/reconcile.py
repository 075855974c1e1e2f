"""The reconciler: replay the ledger through `evolve`, verify every hash chain, compare with the
projections, check that the relay published everything, and raise `drift_detected` alerts.

This module composes the run; each concern has its own module:

- `projections.replay` — the ordered replay of one budget and its chain verification (each
  event decoded and folded by `ledger.history.fold`, like every other read of history);
- `projections.drift` — the replayed state against the projection rows;
- `projections.shard` — one shard's scan of ledger and projections in one snapshot;
- `projections.parallel` — the sharded multiprocessing driver;
- `projections.relay_lag` — events the relay has not published yet;
- `projections.drift_alerts` — `drift_detected` alerts (built by `ledger.budget.drift_alert`)
  into the outbox;
- `projections.reconcile_report` — the report and its text and JSON renderings.

The names callers used before the split are re-exported here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection
from typing import Any

import psycopg
import structlog

from budget_ledger.ledger.db import connect
from budget_ledger.projections.checkpoints import RunRecord, advance_checkpoints, record_run
from budget_ledger.projections.drift import BALANCE_FIELDS, RESERVATION_FIELDS, Drift
from budget_ledger.projections.drift_alerts import publish_alerts
from budget_ledger.projections.parallel import Finish, replay_all
from budget_ledger.projections.reconcile_options import ReconcileOptions
from budget_ledger.projections.reconcile_report import ReconcileReport, iter_lines, to_json
from budget_ledger.projections.relay_lag import Unpublished, check_unpublished
from budget_ledger.projections.replay import BrokenLink
from budget_ledger.projections.shard import ShardResult, replay_shard
from budget_ledger.projections.store import queries

__all__ = [
    "BALANCE_FIELDS",
    "RESERVATION_FIELDS",
    "BrokenLink",
    "Drift",
    "ReconcileOptions",
    "ReconcileReport",
    "ShardResult",
    "Unpublished",
    "check_unpublished",
    "estimate_events",
    "iter_lines",
    "publish_alerts",
    "reconcile",
    "replay_all",
    "replay_shard",
    "to_json",
]

log = structlog.get_logger("reconcile")


def estimate_events(conn: psycopg.Connection, opts: ReconcileOptions) -> int | None:
    """How many events the run will replay (for the ETA): exact when filtered, else estimated."""
    if opts.tenant or opts.budget:
        row = conn.execute(
            queries()["count_ledger_events"], {"tenant": opts.tenant, "budget": opts.budget}
        ).fetchone()
        return int(row[0]) if row else 0
    value = conn.execute(queries()["ledger_size_estimate"]).fetchone()
    return int(value[0]) if value and value[0] > 0 else None


def reconcile(
    dsn: str,
    opts: ReconcileOptions,
    on_progress: Callable[[int], None] | None = None,
    alerts_topic: str | None = None,
    kafka_check: Callable[[], Any] | None = None,
    checkpoint_dsn: str | None = None,
) -> ReconcileReport:
    """Replay, verify and compare; with `alerts_topic`, publish drift alerts through the outbox;
    with `checkpoint_dsn`, advance the checkpoints of the budgets that verified clean."""
    started = time.perf_counter()
    if opts.incremental:
        _summarize_new_ranges(dsn, opts)
    # Before the replay: a budget with a Kafka finding is not checkpointed, and the shards
    # write their checkpoints themselves, in parallel, as soon as they are done.
    kafka = kafka_check() if kafka_check is not None else None
    held = kafka.drifting_budgets() if kafka is not None else set()
    finish: Finish = _drop_verified
    if checkpoint_dsn is not None:
        finish = functools.partial(_write_checkpoints, checkpoint_dsn, held)
    unpublished: list[Unpublished] = []

    def check_relay() -> None:  # in the parent, while the workers replay
        with connect(dsn, role=opts.role, autocommit=True) as conn:
            unpublished.extend(check_unpublished(conn, opts.unpublished_grace_seconds))

    shard = replay_all(dsn, opts, on_progress, finish, alongside=check_relay)
    report = ReconcileReport(
        events=shard.events,
        budgets=shard.budgets,
        drifts=shard.drifts,
        broken=shard.broken,
        drifting=shard.drifting,
        mode="incremental" if opts.incremental else "full",
        skipped_budgets=shard.skipped_budgets,
        skipped_events=shard.skipped_events,
        checkpoints_advanced=shard.checkpoints_advanced,
        unpublished=unpublished,
    )
    if kafka is not None:
        report.kafka = kafka
        for key in held:
            report.drifting.setdefault(key, (0, 0))
    report.seconds = time.perf_counter() - started
    if alerts_topic is not None:
        with connect(dsn, role=opts.role, autocommit=True) as conn:
            report.alerts_published = publish_alerts(conn, report, alerts_topic)
    # Only a run over every budget may say where the next incremental run starts looking, and
    # only once every shard's checkpoints are committed: a run that fails in between leaves
    # checkpoints without a record, and the next run then looks from the older record on.
    whole = opts.tenant is None and opts.budget is None
    if checkpoint_dsn is not None and whole and shard.started_at is not None:
        record_run(
            checkpoint_dsn,
            RunRecord(report.mode, shard.started_at, report.clean, report.events,
                      report.budgets, report.drifting.keys()),
        )  # fmt: skip
    log.info(
        "reconciled",
        mode=report.mode,
        events=report.events,
        skipped_events=report.skipped_events,
        budgets=report.budgets,
        drifts=len(report.drifts),
        broken=len(report.broken),
        seconds=round(report.seconds, 2),
        clean=report.clean,
    )
    return report


def _drop_verified(shard: ShardResult) -> None:
    """In the shard's worker of a run that writes no checkpoints: the verified states stay
    there (25,000 a shard took ~0.4 s to pickle on their way to a parent with no use for them)."""
    shard.verified = []


def _write_checkpoints(dsn: str, held: Collection[tuple[str, str]], shard: ShardResult) -> None:
    """In the shard's worker: set the checkpoints of its budgets that verified clean (not those
    `held` back by a Kafka finding); only their count travels back."""
    t0 = time.perf_counter()
    shard.checkpoints_advanced = advance_checkpoints(dsn, shard.verified, exclude=held)
    shard.verified = []
    log.info(
        "checkpoints_written",
        checkpoints=shard.checkpoints_advanced,
        seconds=round(time.perf_counter() - t0, 3),
    )


def _summarize_new_ranges(dsn: str, opts: ReconcileOptions) -> None:
    """Summarise the ledger's new BRIN ranges (migration 019) so that the candidate query reads
    only the rows recorded since the last run, not every range autovacuum left unsummarised."""
    t0 = time.perf_counter()
    with connect(dsn, role=opts.role, autocommit=True) as conn:
        row = conn.execute(queries()["summarize_new_ranges"]).fetchone()
    log.info(
        "ledger_ranges_summarized",
        ranges=int(row[0]) if row else 0,
        seconds=round(time.perf_counter() - t0, 3),
    )
