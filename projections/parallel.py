"""The sharded multiprocessing driver: one forked worker per shard, progress summed across them.

`finish` runs in each worker on its shard's result before the result travels to the parent
(the reconciler writes the shard's checkpoints there, in parallel, instead of sending them);
`alongside` runs in the parent while the workers replay (it would otherwise wait idle).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

from budget_ledger.ledger.db import connect
from budget_ledger.projections.reconcile_options import ReconcileOptions
from budget_ledger.projections.shard import ShardResult, replay_shard

#: Work done where a shard was replayed, on its result, before the result is returned.
Finish = Callable[[ShardResult], None]


def _worker(
    dsn: str,
    opts: ReconcileOptions,
    shard: int,
    shards: int,
    counter: Any,
    out: Any,
    finish: Finish | None,
) -> None:
    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    try:
        with connect(dsn, role=opts.role) as conn:
            result = replay_shard(conn, opts, shard, shards, progress)
        if finish is not None:
            finish(result)
        out.put((shard, result))
    except Exception as exc:  # reported to the parent, which fails the run
        out.put((shard, exc))


def replay_all(
    dsn: str,
    opts: ReconcileOptions,
    on_progress: Callable[[int], None] | None = None,
    finish: Finish | None = None,
    alongside: Callable[[], None] | None = None,
) -> ShardResult:
    """Replay every shard (in this process when workers == 1, else in worker processes), each
    result passed to `finish` where it was computed, and call `alongside` meanwhile (once the
    workers are forked, so that nothing it opens is inherited by them); returns the results
    merged."""
    if opts.workers <= 1:
        with connect(dsn, role=opts.role) as conn:
            result = replay_shard(conn, opts, 0, 1, on_progress)
        if finish is not None:
            finish(result)
        if alongside is not None:
            alongside()
        return result
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker, args=(dsn, opts, i, opts.workers, counter, out, finish), daemon=True
        )
        for i in range(opts.workers)
    ]
    for p in procs:
        p.start()
    if alongside is not None:
        try:
            alongside()
        except BaseException:
            for p in procs:
                p.kill()
            raise
    results: list[ShardResult] = []
    seen = 0
    while len(results) < opts.workers:
        try:
            _shard, res = out.get(timeout=0.25)
        except Exception:  # queue.Empty: just a progress tick
            res = None
        if isinstance(res, Exception):
            for p in procs:
                p.kill()
            raise res
        if res is not None:
            results.append(res)
        if on_progress is not None:
            now = counter.value
            on_progress(now - seen)
            seen = now
        if res is None and not any(p.is_alive() for p in procs) and out.empty():
            raise RuntimeError("a replay worker died without a result")
    for p in procs:
        p.join()
    merged = ShardResult()
    for r in results:
        merged.merge(r)
    return merged
