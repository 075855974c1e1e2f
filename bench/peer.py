"""The benchmark's peer: the old system's design, run on the same workload in the same run.

One PostgreSQL transaction per command through PL/pgSQL functions (`bench/peer.sql`) that lock
the budget row (`SELECT ... FOR UPDATE`), check the rules, append one ledger row (refusals too,
with their reason) and update the balances; no Kafka. N client processes (multiprocessing, each
with its own autocommit psycopg connection, durable commits) each send one `SELECT fn(...)` per
command. The commands are `workload.prepare` + `workload.mix` (same budgets, same seed),
translated to function calls with amounts as exact integer minor units. Each client owns the
budgets whose key hashes to it, so every budget's commands keep their order, as they do on our
Kafka partitions. Every client count runs in its own fresh database, verified afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import workload
from bench.procstat import CpuSampler
from budget_ledger.ledger.sql import load_queries
from budget_ledger.schemas.money import DEFAULT_CURRENCIES, to_minor

SCHEMA = Path(__file__).with_name("peer.sql")

#: The calls (one per command type) and the checks, from bench/peer_queries.sql.
QUERIES = load_queries("bench", "peer_queries.sql")

Call = tuple[str, tuple[Any, ...]]
"""(command type, the function's arguments): command_id, tenant_id, budget_id, then the rest."""


@dataclass
class PeerResult:
    """One client count's figures and verification."""

    clients: int
    commands: int
    budgets: int
    seconds: float = 0.0
    commands_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    synchronous_commit: str = ""
    verified: bool = False
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_us_per_command: dict[str, float] = field(default_factory=dict)


# --- the workload as function calls -----------------------------------------------------------


def translate(cmd: Mapping[str, Any], digits: int) -> Call:
    """A workload command as the peer's function call; amounts in exact minor units of a
    currency with `digits` decimals (ValueError if not exact, never a float)."""
    kind = cmd["type"]
    head = (cmd["command_id"], cmd["tenant_id"], cmd["budget_id"])
    amount = to_minor(cmd["amount"], digits) if "amount" in cmd else None
    if kind == "open_budget":
        cap = cmd.get("hard_cap")
        return kind, (*head, cmd["currency"], None if cap is None else to_minor(cap, digits))
    if kind == "fund":
        return kind, (*head, amount, cmd["currency"])
    if kind == "reserve":
        return kind, (*head, cmd["ref_id"], amount, cmd["currency"])
    if kind == "charge":
        return kind, (*head, cmd["ref_id"], amount)  # None: the whole reservation
    if kind == "release":
        return kind, (*head, cmd["ref_id"])
    raise ValueError(f"the peer has no function for {kind!r}")


def translate_all(
    commands: Iterable[Mapping[str, Any]], currencies: Mapping[str, int] = DEFAULT_CURRENCIES
) -> Iterator[Call]:
    """Translate a stream; a charge's amount takes the digits of its budget's currency (known
    from the budget's open command, else the command's own currency)."""
    budget_digits: dict[tuple[str, str], int] = {}
    for cmd in commands:
        key = (cmd["tenant_id"], cmd["budget_id"])
        if cmd["type"] == "open_budget":
            budget_digits[key] = currencies[cmd["currency"]]
        digits = budget_digits.get(key)
        if digits is None:
            digits = currencies[cmd.get("currency", "USD")]
        yield translate(cmd, digits)


def client_of(call: Call, clients: int) -> int:
    """The client that sends `call`: a budget's calls all go to one client, in order."""
    _, args = call
    return zlib.crc32(f"{args[1]}:{args[2]}".encode()) % clients


def split(calls: Iterable[Call], clients: int) -> list[list[Call]]:
    """`calls` dealt to `clients` lists by budget, each list in the stream's order."""
    out: list[list[Call]] = [[] for _ in range(clients)]
    for call in calls:
        out[client_of(call, clients)].append(call)
    return out


# --- the database -----------------------------------------------------------------------------


def install(dsn: str) -> None:
    """Create the peer's tables and functions in an empty database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA.read_bytes())  # a trusted file, no parameters


def call(conn: psycopg.Connection[Any], c: Call) -> str | None:
    """Send one call (its own transaction on an autocommit connection); its refusal reason."""
    kind, args = c
    row = conn.execute(QUERIES[kind], args, prepare=True).fetchone()
    return None if row is None else row[0]


#: What each check counts (0 = fine).
CHECKS = {
    "check_sequence_gaps": "budgets with sequence gaps",
    "check_running_sums": "ledger rows whose balances are not the running sums of the rows",
    "check_last_row": "budgets whose balances are not their last row's",
    "check_open_reservations": "budgets whose reserved is not their open reservations",
    "check_over_cap": "ledger rows over the cap or the funds",
}


def verify(dsn: str, expected: int) -> tuple[list[str], dict[str, int]]:
    """Ledger rows = commands, gap-free sequences, balances = sums of rows, nothing over its
    cap or funds; also the outcomes (event type, or `refused:<reason>`) counted."""

    def count(conn: psycopg.Connection[Any], name: str) -> int:
        row = conn.execute(QUERIES[name]).fetchone()
        return -1 if row is None else int(row[0])

    problems: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = count(conn, "check_rows")
        if rows != expected:
            problems.append(f"ledger holds {rows} rows for {expected} commands")
        problems.extend(f"{n} {what}" for name, what in CHECKS.items() if (n := count(conn, name)))
        outcomes = {str(k): int(n) for k, n in conn.execute(QUERIES["outcomes"])}
    return problems, outcomes


# --- the clients ------------------------------------------------------------------------------


def _client(dsn: str, path: str, messages: Any, go: Any) -> None:
    """One client process: the untimed preparation, "ready", then after `go` the timed calls;
    puts ("done", start, end, latencies in µs, synchronous_commit) or ("error", text)."""
    try:
        with open(path, "rb") as f:
            prep, timed = pickle.load(f)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(QUERIES["synchronous_commit"]).fetchone()
            sync = str(row[0]) if row else "?"
            for c in prep:
                call(conn, c)
            messages.put(("ready",))
            go.wait()
            latencies = array("I")
            clock = time.perf_counter_ns
            start = time.time()
            for c in timed:
                t0 = clock()
                call(conn, c)
                latencies.append((clock() - t0) // 1000)
            end = time.time()
        messages.put(("done", start, end, latencies.tobytes(), sync))
    except Exception as exc:  # reported to the parent, which fails the run
        messages.put(("error", f"{type(exc).__name__}: {exc}"))


def _collect(messages: Any, procs: list[Any], kind: str, timeout: float) -> list[tuple[Any, ...]]:
    """One `kind` message per client; RuntimeError on a client's error, exit or silence."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            msg = messages.get(timeout=1.0)
        except queue.Empty:
            # A client that has reported may have exited (0); any other exit is a crash.
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a client died before its report") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(got)} of {len(procs)} clients {kind} in time") from None
            continue
        if msg[0] == "error":
            raise RuntimeError(f"client: {msg[1]}")
        got.append(msg)
    return got


def _percentile_ms(sorted_us: array[int], q: float) -> float:
    if not sorted_us:
        return 0.0
    return round(sorted_us[min(len(sorted_us) - 1, int(q * len(sorted_us)))] / 1000, 2)


def _write_calls(
    workdir: Path, clients: int, commands: int, budgets: int, seed: int
) -> tuple[list[Path], int, int]:
    """Each client's (preparation, timed) calls pickled to a file; (files, n_prep, n_timed)."""
    prefix = "peer-"
    prep = split(translate_all(workload.prepare(budgets, prefix)), clients)
    timed = split(translate_all(workload.mix(commands, budgets, prefix, seed=seed)), clients)
    paths = [workdir / f"peer-{clients}-{i}.calls" for i in range(clients)]
    for path, pair in zip(paths, zip(prep, timed, strict=True), strict=True):
        path.write_bytes(pickle.dumps(pair, pickle.HIGHEST_PROTOCOL))
    return paths, sum(map(len, prep)), sum(map(len, timed))


def run(
    *,
    create: Callable[[], str],
    drop: Callable[[str], None],
    clients: int,
    commands: int,
    budgets: int,
    seed: int,
    workdir: Path,
    settle_seconds: float = 0.0,
    ports: tuple[int, int] = (9092, 5432),
) -> PeerResult:
    """One client count in a fresh database from `create` (dropped by `drop`): preparation
    (untimed), the timed mix, the verification. `ports`: Kafka's and Postgres's, for the CPU."""
    paths, n_prep, n_timed = _write_calls(workdir, clients, commands, budgets, seed)
    result = PeerResult(clients, n_timed, budgets)
    ctx = mp.get_context("spawn")  # no inherited connections or sampler threads
    messages, go = ctx.Queue(), ctx.Event()
    procs: list[Any] = []
    dsn = create()
    try:
        install(dsn)
        procs = [
            ctx.Process(target=_client, args=(dsn, str(p), messages, go), daemon=True)
            for p in paths
        ]
        for proc in procs:
            proc.start()
        _collect(messages, procs, "ready", timeout=max(600.0, n_prep / 100))
        time.sleep(settle_seconds)
        sampler = CpuSampler([p.pid for p in procs if p.pid], *ports)
        sampler.start()
        go.set()
        reports = _collect(messages, procs, "done", timeout=max(600.0, n_timed / 100))
        cpu = sampler.stop()
        result.cpu = {("clients" if k == "consumer" else k): v for k, v in cpu.items()}
        result.cpu_us_per_command = {
            k: round(v / 100 * sampler.seconds / max(1, n_timed) * 1e6, 1)
            for k, v in result.cpu.items()
            if k not in ("machine_busy", "other")
        }
        latencies = array("I")
        for r in reports:
            latencies.frombytes(r[3])
        latencies = array("I", sorted(latencies))
        result.seconds = round(max(r[2] for r in reports) - min(r[1] for r in reports), 3)
        if result.seconds > 0:
            result.commands_per_s = round(n_timed / result.seconds, 1)
        result.p50_ms = _percentile_ms(latencies, 0.50)
        result.p99_ms = _percentile_ms(latencies, 0.99)
        result.max_ms = round(latencies[-1] / 1000, 2) if latencies else 0.0
        result.synchronous_commit = ",".join(sorted({str(r[4]) for r in reports}))
        if result.synchronous_commit != "on":
            result.problems.append(f"synchronous_commit is {result.synchronous_commit}")
        problems, result.outcomes = verify(dsn, n_prep + n_timed)
        result.problems.extend(problems)
    except RuntimeError as exc:
        result.problems.append(str(exc))
    finally:
        for proc in (p for p in procs if p.pid is not None):  # started ones
            proc.join(10 if result.problems else 60)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for path in paths:
            path.unlink(missing_ok=True)
        try:
            drop(dsn)
        except Exception as exc:  # never mask the outcome
            print(f"note: peer database not dropped: {exc}", file=sys.stderr)
    result.verified = not result.problems
    return result


def best(results: list[PeerResult]) -> PeerResult | None:
    """The verified run with the highest throughput (None if none verified)."""
    ok = [r for r in results if r.verified and r.commands_per_s > 0]
    return max(ok, key=lambda r: r.commands_per_s) if ok else None
