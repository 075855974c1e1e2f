"""The reconciler: replay the ledger through `evolve`, verify every hash chain, compare with the
projections, check that the relay published everything, and raise `drift_detected` alerts.

Each shard scans its part of the ledger in physical order (`reconcile_ledger_scan`: no sort, no
index walk), replaying all of its budgets side by side (rows are applied strictly in sequence
order per budget; out-of-order rows are held or the budget is re-read in order), then reads the
projections in the same snapshot and compares. Shards split the budgets by hash so that
`workers` processes can replay in parallel.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import multiprocessing as mp
import time
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import structlog

from ledger.budget import BudgetState, evolve, initial_state
from ledger.db import connect
from projections.rows import balance_row, reservation_row
from projections.store import queries
from schemas.events import (
    MONEY_DATA_KEYS,
    MONEY_PAIR_LIST_KEYS,
    Alert,
    LedgerEvent,
    alert_to_wire,
    make_alert_id,
    map_money,
    rfc3339_utc,
)
from schemas.money import to_minor

log = structlog.get_logger("reconcile")

BALANCE_FIELDS = (
    "tenant_id",
    "budget_id",
    "currency",
    "opened",
    "funded",
    "reserved",
    "charged",
    "available",
    "budget_limit",
    "utilization_pct",
    "sequence",
    "last_hash",
    "period_start",
    "config",
)
RESERVATION_FIELDS = (
    "tenant_id",
    "budget_id",
    "ref_id",
    "status",
    "amount",
    "charged",
    "expires_at",
    "command_id",
    "created_seq",
    "updated_seq",
)
_LOADS = orjson.loads
_DUMPS = orjson.dumps
_SORT = orjson.OPT_SORT_KEYS
_SHA256 = hashlib.sha256


@dataclass(frozen=True, slots=True)
class Drift:
    """A projection field that differs from the replay; `difference` = actual - expected."""

    tenant_id: str
    budget_id: str
    table: str  # "budget_balances" | "reservations" | "ledger"
    key: str  # the budget, or the reservation's ref_id, or the event's sequence
    field: str
    expected: Any
    actual: Any
    difference: int | None = None


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first link of a budget's chain that does not verify."""

    tenant_id: str
    budget_id: str
    sequence: int
    problem: str


@dataclass(frozen=True, slots=True)
class Unpublished:
    """Ledger events of one command partition that the relay has not published yet."""

    partition: int
    relay_offset: int
    ledger_max_offset: int
    pending: int
    oldest: datetime | None
    overdue: bool


@dataclass(slots=True)
class ShardResult:
    """What one shard's replay found."""

    events: int = 0
    budgets: int = 0
    drifts: list[Drift] = field(default_factory=list)
    broken: list[BrokenLink] = field(default_factory=list)
    # (tenant, budget) -> (sequence, utilization_pct) of the replayed state, for the alerts.
    drifting: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)


@dataclass(slots=True)
class ReconcileReport:
    """Everything a reconcile run found; `clean` decides the exit code."""

    events: int = 0
    budgets: int = 0
    seconds: float = 0.0
    drifts: list[Drift] = field(default_factory=list)
    broken: list[BrokenLink] = field(default_factory=list)
    drifting: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    unpublished: list[Unpublished] = field(default_factory=list)
    kafka: Any = None  # projections.kafka_check.KafkaReport when --source kafka
    alerts_published: int = 0

    @property
    def clean(self) -> bool:
        """No drift, no broken link, nothing overdue on the relay, nothing off in Kafka."""
        kafka_clean = self.kafka is None or self.kafka.clean
        return (
            not self.drifts
            and not self.broken
            and kafka_clean
            and not any(u.overdue for u in self.unpublished)
        )


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """What to reconcile and how."""

    tenant: str | None = None
    budget: str | None = None
    workers: int = 1
    progress: bool = True
    currencies: Mapping[str, int] = field(default_factory=lambda: {"USD": 2, "ZWG": 2})
    role: str | None = "ledger_app"
    # Events the relay has not published are a note until they are this old, then drift.
    unpublished_grace_seconds: float = 300.0


# --- decoding ----------------------------------------------------------------------------------


def _minor(text: str, digits: int) -> int:
    """Fast path of `to_minor` for the exact spelling the ledger writes ("12.50"); else exact."""
    whole, _, frac = text.partition(".")
    if digits and len(frac) == digits and whole and whole[0] != "+":
        return int(whole + frac)
    return to_minor(text, digits)


def _decoded_fields(d: dict[str, Any], digits: int) -> tuple[Any, ...]:
    """The values of a wire event in `LedgerEvent` field order, money as minor units."""
    if d["currency"] is None:
        digits = 0
    amount = d["amount"]
    data = d["data"]
    if data and not (MONEY_DATA_KEYS.isdisjoint(data) and MONEY_PAIR_LIST_KEYS.isdisjoint(data)):
        data = map_money(data, lambda text: _minor(text, digits))
    return (
        d["type"],
        d["tenant_id"],
        d["budget_id"],
        d["sequence"],
        d["command_id"],
        d["command_type"],
        d["ref_id"],
        d["currency"],
        None if amount is None else _minor(amount, digits),
        d["reason"],
        data,
        _minor(d["funded"], digits),
        _minor(d["reserved"], digits),
        _minor(d["charged"], digits),
        _minor(d["available"], digits),
        d["utilization_pct"],
        d["recorded_at"],
        d["metadata"],
        d["prev_hash"],
        d["hash"],
    )


def decode_event(d: dict[str, Any], digits: int) -> LedgerEvent:
    """`event_from_wire` with a faster money path (same result; see tests)."""
    return LedgerEvent(*_decoded_fields(d, digits))


#: What the replay feeds `evolve`: the values of `decode_event`'s LedgerEvent, field for field
#: (same names, same order), in a plain tuple record: a frozen dataclass of 20 fields costs more
#: to build than `evolve` itself spends on most events. `evolve` only reads attributes.
ReplayEvent = namedtuple(  # type: ignore[misc]
    "ReplayEvent", [f.name for f in dataclasses.fields(LedgerEvent)]
)
_new_tuple = tuple.__new__


def replay_event(d: dict[str, Any], digits: int) -> LedgerEvent:
    """`decode_event` into a `ReplayEvent` (typed as the LedgerEvent it stands for)."""
    return _new_tuple(ReplayEvent, _decoded_fields(d, digits))  # type: ignore[return-value]


# --- one budget -------------------------------------------------------------------------------

# Ledger row layout of `reconcile_ledger_scan` / `reconcile_budget_events`.
_SEQ, _TYPE, _FUNDED, _RESERVED, _CHARGED, _AVAILABLE, _BODY = 2, 3, 4, 5, 6, 7, 8
# A budget whose rows arrive out of sequence order buffers them until the missing one arrives;
# past this many buffered rows it stops buffering and is re-read in order at the end instead.
MAX_PENDING = 10_000


class _Budget:
    """The replay of one budget: its state, its first broken link, and its projection rows.

    Rows are fed in the ledger's physical order; they are applied strictly in sequence order
    (`last_seq + 1`), so the replay and the first broken link are exactly those of an ordered
    read. A row that comes early is held in `pending` until its predecessors arrived; a repeated
    sequence (or too many held rows) marks the budget for an ordered re-read (`reread`).
    """

    __slots__ = (
        "balance",
        "broken",
        "events",
        "last_seq",
        "pending",
        "reread",
        "reservations",
        "state",
    )

    def __init__(self, tenant_id: str, budget_id: str) -> None:
        self.state: BudgetState = initial_state(tenant_id, budget_id)
        self.broken: BrokenLink | None = None
        self.balance: tuple[Any, ...] | None = None
        self.reservations: dict[str, list[Any]] = {}
        self.events = 0
        self.last_seq = 0  # the sequence of the last row applied (not the state's: see apply)
        self.pending: dict[int, tuple[Any, ...]] | None = None
        self.reread = False

    def feed(self, row: tuple[Any, ...], currencies: Mapping[str, int]) -> None:
        """Take the next row in physical order; apply it (and any held successors) when it is
        the next in sequence, else hold it."""
        seq = row[_SEQ]
        if seq == self.last_seq + 1:
            self.apply(row, currencies)
            self.last_seq = seq
            pending = self.pending
            if pending:
                while (nxt := self.last_seq + 1) in pending:
                    self.apply(pending.pop(nxt), currencies)
                    self.last_seq = nxt
        elif not self.reread:
            pending = self.pending
            if pending is None:
                pending = self.pending = {}
            if seq <= self.last_seq or seq in pending or len(pending) >= MAX_PENDING:
                self.reread = True  # a repeated sequence, or too much to hold: re-read in order
                self.pending = None
                self.last_seq = -2  # nothing matches any more: every later row is ignored
            else:
                pending[seq] = row

    def end_of_scan(self, currencies: Mapping[str, int]) -> None:
        """Rows still held follow a real gap: apply them in sequence order (the first tells)."""
        if self.pending:
            for seq in sorted(self.pending):
                self.apply(self.pending[seq], currencies)
                self.last_seq = seq
            self.pending = None

    def restart(self) -> None:
        """Forget the replay (keep the projection rows read): for the ordered re-read."""
        st = self.state
        self.state = initial_state(st.tenant_id, st.budget_id)
        self.broken = None
        self.events = 0
        self.pending = None

    def apply(self, row: tuple[Any, ...], currencies: Mapping[str, int]) -> None:
        """Verify one ledger row's link and fold its event into the state."""
        self.events += 1
        s = self.state
        seq = row[_SEQ]
        try:
            d = _LOADS(row[_BODY])
            stored_hash = d.pop("hash")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._break(seq, "event is not a ledger event (unparseable or no hash)")
            return
        if self.broken is None:
            problem = _link_problem(s, seq, d, stored_hash, row)
            if problem:
                self._break(seq, problem)
        d["hash"] = stored_hash
        currency = d.get("currency") or s.currency or ""
        try:
            event = replay_event(d, currencies.get(currency, 2))
        except (KeyError, ValueError, TypeError):
            self._break(seq, "event does not decode")
            return
        self.state = s = evolve(s, event)
        # The row's balance columns must say what the replay says (a column edited behind the
        # event's back, or decide/evolve disagreeing, shows up here).
        if self.broken is None and (
            row[_FUNDED] != s.funded
            or row[_RESERVED] != s.reserved
            or row[_CHARGED] != s.charged
            or row[_AVAILABLE] != s.available
        ):
            self._break(seq, _column_problem(s, row))

    def _break(self, seq: int, problem: str) -> None:
        if self.broken is None:
            self.broken = BrokenLink(self.state.tenant_id, self.state.budget_id, seq, problem)

    def compare(self) -> list[Drift]:
        """Drift between the replayed state and the projection rows read for this budget."""
        s = self.state
        t, b = s.tenant_id, s.budget_id
        drifts: list[Drift] = []
        if self.events == 0:
            return [Drift(t, b, "budget_balances", b, "row", "absent", "present")]
        expected = balance_row(s, "")
        if self.balance is None:
            drifts.append(Drift(t, b, "budget_balances", b, "row", "present", "absent"))
        else:
            for name, exp, act in zip(BALANCE_FIELDS, expected, self.balance, strict=False):
                if name == "config":
                    exp = None if exp is None else _LOADS(exp)  # type: ignore[arg-type]
                if exp != act:
                    drifts.append(
                        Drift(t, b, "budget_balances", b, name, exp, act, _diff(exp, act))
                    )
        seen = set()
        for ref, res in s.reservations.items():
            seen.add(ref)
            exp_row = reservation_row(s, res)
            act_row = self.reservations.get(ref)
            if act_row is None:
                drifts.append(Drift(t, b, "reservations", ref, "row", "present", "absent"))
                continue
            if tuple(act_row) == exp_row[2:]:
                continue  # the common case, in one C-level comparison
            for name, exp, act in zip(RESERVATION_FIELDS[2:], exp_row[2:], act_row, strict=True):
                if exp != act:
                    drifts.append(Drift(t, b, "reservations", ref, name, exp, act, _diff(exp, act)))
        for ref in self.reservations.keys() - seen:
            drifts.append(Drift(t, b, "reservations", ref, "row", "absent", "present"))
        return drifts


def _link_problem(
    s: BudgetState, seq: int, d: dict[str, Any], stored_hash: str, row: tuple[Any, ...]
) -> str | None:
    if seq != s.sequence + 1:
        kind = "duplicate" if seq <= s.sequence else "gap"
        return f"sequence {kind}: expected {s.sequence + 1}, found {seq}"
    if d.get("prev_hash") != s.last_hash:
        return f"prev_hash does not match the hash of sequence {s.sequence}"
    if _SHA256(s.last_hash.encode("ascii") + _DUMPS(d, option=_SORT)).hexdigest() != stored_hash:
        return "hash mismatch: the event was altered after it was written"
    if d.get("sequence") != seq or d.get("type") != row[_TYPE]:
        return "row columns (sequence/type) differ from the hashed event"
    return None


def _column_problem(s: BudgetState, row: tuple[Any, ...]) -> str:
    cols = {
        "funded": (row[_FUNDED], s.funded),
        "reserved": (row[_RESERVED], s.reserved),
        "charged": (row[_CHARGED], s.charged),
        "available": (row[_AVAILABLE], s.available),
    }
    bad = ", ".join(f"{k} {a} (replay {e})" for k, (a, e) in cols.items() if a != e)
    return f"row balance columns differ from the replay: {bad}"


def _diff(expected: Any, actual: Any) -> int | None:
    if isinstance(expected, int) and isinstance(actual, int) and not isinstance(expected, bool):
        return actual - expected
    return None


def _balance_from_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `reconcile_balances` row in BALANCE_FIELDS order."""
    cur, opened, limit, pct, seq, last_hash, period_start, config = _LOADS(row[6])
    return (
        row[0],
        row[1],
        cur,
        opened,
        row[2],
        row[3],
        row[4],
        row[5],
        limit,
        pct,
        seq,
        last_hash,
        period_start,
        config,
    )


# --- one shard --------------------------------------------------------------------------------

FETCH = 20_000


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
    currencies = dict(opts.currencies)
    budgets: dict[tuple[str, str], _Budget] = {}
    q = queries()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived, acyclic objects: the cyclic GC only costs time here
    try:
        with conn.transaction():
            # One snapshot for the ledger scan, the re-reads and the projections.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # keep physical order
            conn.execute("SET LOCAL jit = off")
            get = budgets.get
            with conn.cursor(name=f"reconcile_{shard}") as cur:
                cur.itersize = FETCH
                cur.execute(q["reconcile_ledger_scan"], params)
                while rows := cur.fetchmany(FETCH):
                    for row in rows:
                        budget = get((row[0], row[1]))
                        if budget is None:
                            budget = budgets[(row[0], row[1])] = _Budget(row[0], row[1])
                        budget.feed(row, currencies)
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
                            budget.apply(row, currencies)
                else:
                    budget.end_of_scan(currencies)
            for row in conn.execute(q["reconcile_balances"], params):
                budget = get((row[0], row[1]))
                if budget is None:
                    budget = budgets[(row[0], row[1])] = _Budget(row[0], row[1])
                budget.balance = _balance_from_row(row)
            for row in conn.execute(q["reconcile_reservations"], params):
                budget = get((row[0], row[1]))
                if budget is None:
                    budget = budgets[(row[0], row[1])] = _Budget(row[0], row[1])
                res = _LOADS(row[2])
                budget.reservations[res[0]] = res
    finally:
        if gc_was_enabled:
            gc.enable()
    # Report order: by budget (Python's order; the findings do not depend on it).
    for key in sorted(budgets):
        _finish(budgets[key], result)
    return result


def _finish(budget: _Budget, result: ShardResult) -> None:
    result.budgets += 1
    result.events += budget.events
    drifts = budget.compare()
    if budget.broken is not None:
        result.broken.append(budget.broken)
    if drifts or budget.broken is not None:
        s = budget.state
        result.drifts.extend(drifts)
        result.drifting[(s.tenant_id, s.budget_id)] = (s.sequence, s.utilization_pct)


# --- the whole run ----------------------------------------------------------------------------


def _worker(
    dsn: str, opts: ReconcileOptions, shard: int, shards: int, counter: Any, out: Any
) -> None:
    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    try:
        with connect(dsn, role=opts.role) as conn:
            out.put((shard, replay_shard(conn, opts, shard, shards, progress)))
    except Exception as exc:  # reported to the parent, which fails the run
        out.put((shard, exc))


def replay_all(
    dsn: str, opts: ReconcileOptions, on_progress: Callable[[int], None] | None = None
) -> ShardResult:
    """Replay every shard (in this process when workers == 1, else in worker processes)."""
    if opts.workers <= 1:
        with connect(dsn, role=opts.role) as conn:
            return replay_shard(conn, opts, 0, 1, on_progress)
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(dsn, opts, i, opts.workers, counter, out), daemon=True)
        for i in range(opts.workers)
    ]
    for p in procs:
        p.start()
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
        merged.events += r.events
        merged.budgets += r.budgets
        merged.drifts.extend(r.drifts)
        merged.broken.extend(r.broken)
        merged.drifting.update(r.drifting)
    return merged


def check_unpublished(conn: psycopg.Connection, grace_seconds: float) -> list[Unpublished]:
    """Partitions whose ledger events are not all published; overdue past the grace period."""
    now = datetime.now(UTC)
    found = []
    for partition, cursor, max_offset, pending, oldest in conn.execute(
        queries()["unpublished_events"]
    ):
        if pending:
            overdue = oldest is not None and (now - oldest).total_seconds() > grace_seconds
            found.append(Unpublished(partition, cursor, max_offset, pending, oldest, overdue))
    return found


def drift_alert(
    tenant_id: str,
    budget_id: str,
    sequence: int,
    utilization: str,
    drifts: list[Drift],
    broken: BrokenLink | None,
) -> Alert:
    """The `drift_detected` alert of one budget; its id is stable for the same ledger position."""
    data: dict[str, Any] = {
        "fields": sorted({f"{d.table}.{d.field}" for d in drifts}),
        "drift_count": len(drifts),
    }
    if broken is not None:
        data["broken_link"] = {"sequence": broken.sequence, "problem": broken.problem}
    return Alert(
        alert_id=make_alert_id(tenant_id, budget_id, "drift_detected", sequence),
        type="drift_detected",
        severity="critical",
        tenant_id=tenant_id,
        budget_id=budget_id,
        utilization_pct=utilization,
        threshold="0.00",
        sequence=sequence,
        recorded_at=rfc3339_utc(datetime.now(UTC)),
        data=data,
    )


def publish_alerts(conn: psycopg.Connection, report: ReconcileReport, topic: str) -> int:
    """Write one `drift_detected` alert per drifting budget into the outbox (one transaction)."""
    by_budget: dict[tuple[str, str], list[Drift]] = {}
    for d in report.drifts:
        by_budget.setdefault((d.tenant_id, d.budget_id), []).append(d)
    broken = {(b.tenant_id, b.budget_id): b for b in report.broken}
    rows = []
    for (t, b), (seq, pct) in sorted(report.drifting.items()):
        alert = drift_alert(t, b, seq, pct, by_budget.get((t, b), []), broken.get((t, b)))
        rows.append(
            {
                "topic": topic,
                "key": f"{t}:{b}".encode(),
                "payload": _DUMPS(alert_to_wire(alert)),
                "headers": '[["source", "reconciler"]]',
            }
        )
    if rows:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(queries()["insert_alert"], rows)
    return len(rows)


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
) -> ReconcileReport:
    """Replay, verify and compare; with `alerts_topic`, publish drift alerts through the outbox."""
    started = time.perf_counter()
    shard = replay_all(dsn, opts, on_progress)
    report = ReconcileReport(
        events=shard.events,
        budgets=shard.budgets,
        drifts=shard.drifts,
        broken=shard.broken,
        drifting=shard.drifting,
    )
    with connect(dsn, role=opts.role, autocommit=True) as conn:
        report.unpublished = check_unpublished(conn, opts.unpublished_grace_seconds)
        report.seconds = time.perf_counter() - started
        if kafka_check is not None:
            report.kafka = kafka_check()
            for t, b in report.kafka.drifting_budgets():
                report.drifting.setdefault((t, b), (0, "0.00"))
        if alerts_topic is not None:
            report.alerts_published = publish_alerts(conn, report, alerts_topic)
    log.info(
        "reconciled",
        events=report.events,
        budgets=report.budgets,
        drifts=len(report.drifts),
        broken=len(report.broken),
        seconds=round(report.seconds, 2),
        clean=report.clean,
    )
    return report


def iter_lines(report: ReconcileReport) -> Iterator[str]:
    """The human summary, line by line."""
    rate = report.events / report.seconds if report.seconds else 0.0
    yield (
        f"replayed {report.events:,} events of {report.budgets:,} budgets in "
        f"{report.seconds:.2f} s ({rate:,.0f} events/s)"
    )
    for b in report.broken:
        yield f"BROKEN LINK {b.tenant_id}:{b.budget_id} sequence {b.sequence}: {b.problem}"
    for d in report.drifts:
        diff = "" if d.difference is None else f" (difference {d.difference:+d})"
        yield (
            f"DRIFT {d.tenant_id}:{d.budget_id} {d.table}[{d.key}].{d.field}: "
            f"expected {d.expected!r}, actual {d.actual!r}{diff}"
        )
    for u in report.unpublished:
        label = "UNPUBLISHED (overdue)" if u.overdue else "note: unpublished"
        yield (
            f"{label} partition {u.partition}: {u.pending} event(s) after relay offset "
            f"{u.relay_offset} (ledger at {u.ledger_max_offset}, oldest {u.oldest})"
        )
    if report.kafka is not None:
        yield from report.kafka.lines()
    if report.alerts_published:
        yield f"published {report.alerts_published} drift_detected alert(s) via the outbox"
    yield "clean" if report.clean else "DRIFT DETECTED"


def to_json(report: ReconcileReport) -> dict[str, Any]:
    """The report as JSON-ready data (money stays integer minor units)."""
    return {
        "clean": report.clean,
        "events": report.events,
        "budgets": report.budgets,
        "seconds": round(report.seconds, 3),
        "broken_links": [
            {
                "tenant_id": b.tenant_id,
                "budget_id": b.budget_id,
                "sequence": b.sequence,
                "problem": b.problem,
            }
            for b in report.broken
        ],
        "drifts": [
            {
                "tenant_id": d.tenant_id,
                "budget_id": d.budget_id,
                "table": d.table,
                "key": d.key,
                "field": d.field,
                "expected": d.expected,
                "actual": d.actual,
                "difference": d.difference,
            }
            for d in report.drifts
        ],
        "unpublished": [
            {
                "partition": u.partition,
                "relay_offset": u.relay_offset,
                "ledger_max_offset": u.ledger_max_offset,
                "pending": u.pending,
                "oldest": u.oldest.isoformat() if u.oldest else None,
                "overdue": u.overdue,
            }
            for u in report.unpublished
        ],
        "kafka": None if report.kafka is None else report.kafka.to_json(),
        "alerts_published": report.alerts_published,
    }
