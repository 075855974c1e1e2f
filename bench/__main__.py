"""End-to-end benchmark of the command consumer: Kafka → ledger committed in Postgres.

    .venv/bin/python -m bench                      # defaults: 1,000,000 commands, 10,000 budgets
    .venv/bin/python -m bench --commands 5000 --budgets 100 --baseline-commands 500 \\
        --latency-rate 500 --latency-seconds 2 --json

Three phases, each on a fresh database (created next to LEDGER_DATABASE_URL, dropped afterwards)
and fresh topics, with the consumers as real `python -m budget_ledger.entrypoints.cli consume`
child processes:

- throughput: `--commands` commands over `--budgets` budgets, produced unpaced;
- baseline: the same consumer with one command per transaction (`--batch-max-messages 1`), on a
  smaller slice (`--baseline-commands`, budgets scaled to keep the same commands per budget);
- latency: a fixed offered load (`--latency-rate` commands/s for `--latency-seconds`);
- peer: the old system's design on the same workload, no Kafka (`bench/peer.py`): one
  transaction per command through `FOR UPDATE` stored functions, `--peer-clients` concurrent
  clients (each count in its own fresh database, verified); `ratio_to_peer` = throughput / the
  best of them (`--no-peer` skips it).

Before each timed part, the budgets are opened and funded through the same consumers (not
timed), so the consumers are warm. The workload is generated into a file first and produced by a
separate process (`bench.producer`). Throughput = timed commands / (last batch commit - first
produce). Latency = commit time of the message's batch - its Kafka timestamp. Max RSS = VmHWM of
the consumer processes. After every phase the ledger is verified: one event per command,
gap-free sequences per budget, no dead letters, and `reconcile` clean. Exit code 1 if any
verification fails (a fast wrong answer is not a result), 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql

from bench import peer, workload
from bench.procstat import CpuSampler, vm_hwm_kb
from budget_ledger.consumers.timings import read_timings
from budget_ledger.schemas.signing import Signer

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class PhaseResult:
    """One phase's figures and verification."""

    mode: str
    commands: int
    budgets: int
    consumers: int
    batch_max_messages: int
    offered_rate: float | None
    seconds: float = 0.0
    commands_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    max_rss_mb: float = 0.0
    batches: int = 0
    verified: bool = False
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_us_per_command: dict[str, float] = field(default_factory=dict)


# --- infrastructure ---------------------------------------------------------------------------


def _with_db(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def create_database(admin_dsn: str, template: str | None = None, migrated: bool = True) -> str:
    """A new migrated database (`migrated=False`: empty); with `template`, a copy of that
    (filled) database."""
    from budget_ledger.ledger.migrate import migrate

    name = f"bench_{uuid.uuid4().hex[:10]}"
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)
    url = _with_db(admin_dsn, name)
    if migrated:
        migrate(url)
    return url


def drop_database(admin_dsn: str, url: str) -> None:
    """Drop a benchmark database; waits for sessions (e.g. autovacuum) to go, retries a while."""
    name = urlsplit(url).path.lstrip("/")
    stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
    for _ in range(30):
        try:
            with psycopg.connect(admin_dsn, autocommit=True) as conn:
                conn.execute(stmt)
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(1.0)
    print(f"note: database {name} is still in use and was not dropped", file=sys.stderr)


class Phase:
    """Fresh topics + database, consumers as child processes, producer as a child process."""

    def __init__(
        self,
        args: argparse.Namespace,
        mode: str,
        workdir: Path,
        signing: dict[str, Any] | None = None,
    ) -> None:
        from budget_ledger.ledger.settings import load_settings, prefixed_names

        self.args = args
        self.mode = mode
        self.workdir = workdir
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.database_url = (
            _with_db(args.database_url, args.use_database)
            if args.use_database
            else create_database(args.database_url, args.template_database)
        )
        self.settings = load_settings(
            kafka_bootstrap=args.kafka_bootstrap,
            database_url=self.database_url,
            **prefixed_names(prefix),
            topic_partitions=args.partitions,
            **(signing or {}),
        )
        from budget_ledger.consumers.topics import create_topics

        create_topics(self.settings, partitions=args.partitions)
        self.consumers: list[subprocess.Popen[bytes]] = []
        self.timing_files: list[Path] = []
        self.produced = 0
        self._poll_conn: psycopg.Connection | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "LEDGER_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                "LEDGER_DATABASE_URL": s.database_url,
                "LEDGER_TOPIC_COMMANDS": s.topic_commands,
                "LEDGER_TOPIC_EVENTS": s.topic_events,
                "LEDGER_TOPIC_ALERTS": s.topic_alerts,
                "LEDGER_TOPIC_DLQ": s.topic_dlq,
                "LEDGER_CONSUMER_GROUP": s.consumer_group,
                "LEDGER_TOPIC_PARTITIONS": str(self.args.partitions),
                "LEDGER_LOG_LEVEL": "warning",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                **workload.signing_env(s),
            }
        )
        return env

    def start_consumers(self, n: int, batch_max_messages: int | None) -> None:
        extra = ["--batch-max-messages", str(batch_max_messages)] if batch_max_messages else []
        for i in range(n):
            timings = self.workdir / f"{self.mode}-{i}.timings"
            env = self.env()
            env["LEDGER_BENCH_TIMINGS"] = str(timings)
            self.timing_files.append(timings)
            self.consumers.append(
                subprocess.Popen(
                    [PY, "-m", "budget_ledger.entrypoints.cli", "consume", *extra],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.workdir / f"{self.mode}-{i}.log", "wb"),  # noqa: SIM115
                )
            )
        self._wait_assigned(n)

    def _wait_assigned(self, n: int, timeout: float = 90) -> None:
        """Until every partition has a position row and the group is stable with n members."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        from budget_ledger.consumers.kafka_config import admin_config

        admin = AdminClient(admin_config(self.settings))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            rows = self._scalar(
                "SELECT count(*) FROM consumer_positions WHERE consumer_group = %s",
                (self.settings.consumer_group,),
            )
            if rows == self.args.partitions:
                group = self.settings.consumer_group
                desc = admin.describe_consumer_groups([group])[group].result(10)
                assigned = [m for m in desc.members if m.assignment.topic_partitions]
                total = sum(len(m.assignment.topic_partitions) for m in desc.members)
                if (
                    desc.state == ConsumerGroupState.STABLE
                    and len(assigned) == n
                    and total == self.args.partitions
                ):
                    time.sleep(1.0)  # let the last assignment's callbacks finish
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.mode}: consumers did not get their partitions in {timeout} s")

    def _check_alive(self) -> None:
        for i, c in enumerate(self.consumers):
            if c.poll() is not None:
                log = (self.workdir / f"{self.mode}-{i}.log").read_text(errors="replace")
                raise RuntimeError(
                    f"{self.mode}: consumer {i} exited ({c.returncode}):\n{log[-3000:]}"
                )

    def _scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        # One long-lived session: a new connection per poll would fork a backend each time.
        if self._poll_conn is None or self._poll_conn.closed:
            self._poll_conn = psycopg.connect(self.database_url, autocommit=True)
        row = self._poll_conn.execute(query, params).fetchone()
        return row[0] if row else None

    def applied(self) -> int:
        return int(
            self._scalar(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
                " WHERE consumer_group = %s",
                (self.settings.consumer_group,),
            )
        )

    def produce(
        self, path: Path, rate: float = 0.0, linger_ms: int = 20, mark: int = 0
    ) -> dict[str, Any]:
        """Run the producer process over a pre-generated file; return its timing record."""
        result = path.with_suffix(".produced.json")
        cmd = [
            PY,
            "-m",
            "bench.producer",
            str(path),
            self.settings.topic_commands,
            self.settings.kafka_bootstrap,
            str(result),
            "--rate",
            str(rate),
            "--linger-ms",
            str(linger_ms),
            "--warmup-topic",
            self.settings.topic_events,  # the phase's own topic; nothing reads it
            "--mark",
            str(mark),
        ]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env())
        self.producer_pid = proc.pid
        return {"proc": proc, "result": result}

    def wait_produced(self, handle: dict[str, Any]) -> dict[str, Any]:
        proc = handle["proc"]
        if proc.wait() != 0:
            raise RuntimeError(f"{self.mode}: the producer failed (exit {proc.returncode})")
        record: dict[str, Any] = orjson.loads(handle["result"].read_bytes())
        self.produced += record["count"]
        return record

    def wait_applied(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (got := self.applied()) < expected:
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.mode}: only {got} of {expected} messages applied")
            time.sleep(0.05)

    def stop_consumers(self) -> float:
        """SIGTERM the consumers (they write their timings); return the max VmHWM in MB."""
        peak = max((vm_hwm_kb(c.pid) for c in self.consumers), default=0)
        for c in self.consumers:
            c.send_signal(signal.SIGTERM)
        for c in self.consumers:
            try:
                c.wait(60)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        return peak / 1024

    def cleanup(self, keep: bool) -> None:
        if self._poll_conn is not None:
            self._poll_conn.close()
        for c in self.consumers:
            if c.poll() is None:
                c.kill()
                c.wait()
        if keep or self.args.use_database:
            print(f"kept database {self.database_url}", file=sys.stderr)
            return
        drop_database(self.args.database_url, self.database_url)
        try:
            from confluent_kafka.admin import AdminClient

            from budget_ledger.consumers.kafka_config import admin_config

            s = self.settings
            admin = AdminClient(admin_config(s))
            for f in admin.delete_topics(
                [s.topic_commands, s.topic_events, s.topic_alerts, s.topic_dlq]
            ).values():
                f.result(30)
        except Exception as exc:
            print(f"note: topics not deleted: {exc}", file=sys.stderr)


# --- verification -----------------------------------------------------------------------------


def verify(phase: Phase, expected: int) -> tuple[list[str], dict[str, int]]:
    """Every command one event, gap-free sequences, no dead letters, reconcile clean (on a
    history database: of the workload's tenants only, the history is not re-read)."""
    problems: list[str] = []
    space = phase.args.tenant_space
    tenants = [workload.budget_key(t, space)[0] for t in range(workload.TENANTS)]
    with psycopg.connect(phase.database_url, autocommit=True) as conn:
        events = conn.execute(
            "SELECT count(*) FROM ledger WHERE tenant_id = ANY(%s)", (tenants,)
        ).fetchone()[0]  # type: ignore[index]
        if events != expected:
            problems.append(f"ledger holds {events} events for {expected} commands")
        gaps = conn.execute(
            "SELECT count(*) FROM (SELECT min(sequence) AS lo, max(sequence) AS hi, count(*) AS n"
            " FROM ledger WHERE tenant_id = ANY(%s) GROUP BY tenant_id, budget_id) s"
            " WHERE lo <> 1 OR hi <> n",
            (tenants,),
        ).fetchone()[0]  # type: ignore[index]
        if gaps:
            problems.append(f"{gaps} budget(s) with sequence gaps")
        dlq = conn.execute(
            "SELECT count(*) FROM outbox WHERE topic = %s", (phase.settings.topic_dlq,)
        ).fetchone()[0]  # type: ignore[index]
        if dlq:
            problems.append(f"{dlq} dead letter(s)")
        outcomes = {
            str(t): int(n)
            for t, n in conn.execute(
                "SELECT type, count(*) FROM ledger WHERE tenant_id = ANY(%s)"
                " GROUP BY type ORDER BY 2 DESC",
                (tenants,),
            )
        }
    try:
        from budget_ledger.projections import reconcile as rec
    except ImportError:
        rec = None  # type: ignore[assignment]
    if rec is not None:
        # On a history (a bench.scaling database, reconciled up to date before the run): an
        # incremental run, which replays exactly the budgets written since: the workload's.
        history = bool(phase.args.template_database or phase.args.use_database)
        opts = rec.ReconcileOptions(
            workers=1,
            progress=False,
            role=phase.settings.database_role,
            unpublished_grace_seconds=1e9,
            incremental=history,
        )
        report = rec.reconcile(phase.database_url, opts)
        replayed = report.events
        if not report.clean:
            lines = list(rec.iter_lines(report))
            problems.append("reconcile not clean: " + "; ".join(lines[1:6]))
        if replayed != expected:
            problems.append(f"reconcile replayed {replayed} events, expected {expected}")
    else:
        problems.append("note: projections.reconcile not available, reconcile skipped")
    return [p for p in problems if not p.startswith("note:")], outcomes


# --- one phase --------------------------------------------------------------------------------


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def run_phase(
    args: argparse.Namespace,
    workdir: Path,
    mode: str,
    commands: int,
    budgets: int,
    consumers: int,
    batch_max_messages: int | None,
    rate: float = 0.0,
    warmup: int = 0,
) -> PhaseResult:
    prefix = f"{mode}-"
    prep_file = workdir / f"{mode}.prepare.msgs"
    timed_file = workdir / f"{mode}.timed.msgs"
    # Opens and funds are privileged: signed with a key made for this phase, as an operator would.
    signing = workload.signing_settings()
    signer = Signer(
        signing["signing_key_id"],
        signing["signing_keys"][signing["signing_key_id"]].encode(),
        signing["signing_principal"],
    )
    space = args.tenant_space
    n_prep = workload.write(prep_file, workload.prepare(budgets, prefix, space), signer)
    n_all = workload.write(
        timed_file,
        workload.mix(warmup + commands, budgets, prefix, seed=args.seed, space=space),
        signer,
    )
    n_timed = n_all - warmup
    result = PhaseResult(mode, n_timed, budgets, consumers, batch_max_messages or 0, rate or None)
    _say(
        args,
        f"[{mode}] {n_prep:,} preparation + "
        + (f"{warmup:,} warm-up + " if warmup else "")
        + f"{n_timed:,} timed commands, "
        f"{budgets:,} budgets, {consumers} consumer(s), batch "
        f"{batch_max_messages or 'default'}" + (f", {rate:,.0f}/s offered" if rate else ""),
    )
    phase = Phase(args, mode, workdir, signing)
    try:
        phase.start_consumers(consumers, batch_max_messages)
        prep = phase.produce(prep_file)
        phase.wait_produced(prep)
        phase.wait_applied(n_prep, timeout=600)
        # Let the previous phase's clean-up (database drop, topic deletion) and autovacuum of
        # the preparation's rows settle, so the timed part measures the steady state.
        time.sleep(args.settle_seconds)

        sampler = CpuSampler(
            consumers=[c.pid for c in phase.consumers],
            kafka_port=int(args.kafka_bootstrap.rsplit(":", 1)[1]),
            pg_port=urlsplit(args.database_url).port or 5432,
        )
        handle = phase.produce(timed_file, rate=rate, linger_ms=5 if rate else 20, mark=warmup)
        sampler.add("producer", [handle["proc"].pid])
        sampler.start()
        record = phase.wait_produced(handle)
        phase.wait_applied(n_prep + n_all, timeout=max(600, 3 * commands / 500))
        result.cpu = sampler.stop()
        window = sampler.seconds
        result.cpu_us_per_command = {
            k: round(v / 100 * window / n_all * 1e6, 1)
            for k, v in result.cpu.items()
            if k not in ("machine_busy", "other")
        }
        result.max_rss_mb = round(phase.stop_consumers(), 1)

        # Messages produced from `start_ms` on are measured: the first produced one, or with a
        # warm-up, the first after it (the producer notes the time it reached message `warmup`).
        first_ms = record["first_ms"]
        start_ms = record["mark_ms"] if warmup else first_ms
        last_commit = 0
        covered = 0
        latencies: list[int] = []
        for path in phase.timing_files:
            batches, stamps = read_timings(path)
            i = 0
            for commit_ms, n in batches:
                chunk = stamps[i : i + n]
                i += n
                covered += sum(1 for ts in chunk if ts >= first_ms)
                timed = [commit_ms - ts for ts in chunk if ts >= start_ms]
                if timed:
                    result.batches += 1
                    latencies.extend(timed)
                    last_commit = max(last_commit, commit_ms)
        latencies.sort()
        if covered != n_all:
            result.problems.append(f"timings cover {covered} of {n_all} produced messages")
        result.commands = len(latencies)
        result.seconds = round((last_commit - start_ms) / 1000, 3)
        result.commands_per_s = (
            round(len(latencies) / result.seconds, 1) if result.seconds > 0 else 0.0
        )
        result.p50_ms = _percentile(latencies, 0.50)
        result.p99_ms = _percentile(latencies, 0.99)
        result.max_ms = float(latencies[-1]) if latencies else 0.0

        problems, result.outcomes = verify(phase, n_prep + n_all)
        result.problems.extend(problems)
        result.verified = not result.problems
    finally:
        try:
            phase.cleanup(args.keep)
        except Exception as exc:  # never mask the phase outcome
            print(f"note: cleanup failed: {exc}", file=sys.stderr)
        for f in (prep_file, timed_file):
            f.unlink(missing_ok=True)
    _say(
        args,
        f"[{mode}] {result.commands_per_s:,.0f} commands/s over {result.seconds:.2f} s, "
        f"p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, max RSS "
        f"{result.max_rss_mb:.0f} MB, verified={result.verified} {result.problems or ''}",
    )
    return result


# --- output -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "host": platform.node(),
    }


def table(results: list[PhaseResult], baseline: PhaseResult | None) -> str:
    head = (
        "mode",
        "commands",
        "seconds",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "max RSS MB",
        "vs baseline",
        "verified",
    )
    rows = [head]
    for r in results:
        ratio = (
            f"{r.commands_per_s / baseline.commands_per_s:.1f}x"
            if baseline and baseline.commands_per_s and r.offered_rate is None
            else ""
        )
        mode = r.mode + (f" @{r.offered_rate:,.0f}/s" if r.offered_rate else "")
        mode += f" ({r.consumers}c, batch {r.batch_max_messages or 'dflt'})"
        rows.append(
            (
                mode,
                f"{r.commands:,}",
                f"{r.seconds:.2f}",
                f"{r.commands_per_s:,.0f}",
                f"{r.p50_ms:.0f}",
                f"{r.p99_ms:.0f}",
                f"{r.max_rss_mb:.0f}",
                ratio,
                "yes" if r.verified else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_peer(args: argparse.Namespace, workdir: Path) -> list[peer.PeerResult]:
    """The peer phase: the old design at each of `--peer-clients`, each in a fresh database."""
    commands = args.peer_commands if args.peer_commands is not None else min(args.commands, 200_000)
    ports = (
        int(args.kafka_bootstrap.rsplit(":", 1)[1]),
        urlsplit(args.database_url).port or 5432,
    )
    out = []
    for clients in args.peer_clients:
        _say(
            args,
            f"[peer] {2 * args.budgets:,} preparation + {commands:,} timed commands, "
            f"{args.budgets:,} budgets, {clients} clients, one transaction per command",
        )
        r = peer.run(
            create=lambda: create_database(args.database_url, migrated=False),
            drop=lambda url: drop_database(args.database_url, url),
            clients=clients,
            commands=commands,
            budgets=args.budgets,
            seed=args.seed,
            workdir=workdir,
            settle_seconds=args.settle_seconds,
            ports=ports,
        )
        _say(
            args,
            f"[peer] {clients} clients: {r.commands_per_s:,.0f} commands/s over "
            f"{r.seconds:.2f} s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms per call, "
            f"verified={r.verified} {r.problems or ''}",
        )
        out.append(r)
    return out


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="End-to-end benchmark: Kafka -> ledger committed (throughput, baseline, "
        "latency at a fixed load, max RSS), with verification of the ledger after every phase.",
    )
    p.add_argument(
        "--commands", type=int, default=1_000_000, help="timed commands of the throughput phase"
    )
    p.add_argument(
        "--budgets", type=int, default=10_000, help="budgets of the throughput and latency phases"
    )
    p.add_argument(
        "--baseline-commands",
        type=int,
        default=20_000,
        help="timed commands of the one-per-transaction baseline (0 = skip); budgets are "
        "scaled to keep the throughput phase's commands per budget",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        default=5_000,
        help="offered load of the latency phase (commands/s)",
    )
    p.add_argument(
        "--latency-seconds", type=float, default=20, help="duration of the latency phase (0 = skip)"
    )
    p.add_argument(
        "--consumers", type=int, default=2, help="consumer processes (default 2: one per core)"
    )
    p.add_argument("--partitions", type=int, default=12, help="partitions of the command topic")
    p.add_argument(
        "--batch-max-messages",
        type=int,
        default=None,
        help="consumer batch size (default: the consumer's)",
    )
    p.add_argument("--skip-throughput", action="store_true", help="run only the other phases")
    p.add_argument(
        "--peer-clients",
        type=int,
        nargs="+",
        default=[4, 8, 16],
        help="client processes of the peer (the old design), one run each; the best is the peer",
    )
    p.add_argument(
        "--peer-commands",
        type=int,
        default=None,
        help="timed commands of the peer: the first N of the throughput phase's stream, same "
        "budgets and seed (default: --commands, at most 200,000)",
    )
    p.add_argument("--no-peer", action="store_true", help="skip the peer phase")
    p.add_argument(
        "--latency-warmup-seconds",
        type=float,
        default=2.0,
        help="offered load before the measured latency window (applied and verified, not measured)",
    )
    p.add_argument("--seed", type=int, default=6)
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=5.0,
        help="pause between the (untimed) preparation and the timed part of each phase",
    )
    p.add_argument(
        "--template-database",
        default=None,
        help="start each phase from a copy of this database (a history of other tenants, e.g. "
        "filled by bench.scaling); no session may be connected to it",
    )
    p.add_argument(
        "--use-database",
        default=None,
        help="run in this existing database, kept afterwards (a history too large to copy); "
        "once per database and --tenant-space: the workload's budgets then exist",
    )
    p.add_argument(
        "--tenant-space",
        default="",
        help="prefix of the workload's tenant ids, so --use-database can run again on new budgets",
    )
    p.add_argument("--workdir", default=None, help="keep consumer logs and timings here")
    p.add_argument("--keep", action="store_true", help="keep the databases and topics")
    p.add_argument(
        "--json", action="store_true", help="print one JSON document (progress goes to stderr)"
    )
    add_service_arguments(p)
    return p.parse_args(argv)


def add_service_arguments(p: argparse.ArgumentParser) -> None:
    """--kafka-bootstrap and --database-url, defaulting to the local services' variables."""
    p.add_argument(
        "--kafka-bootstrap", default=os.environ.get("LEDGER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "LEDGER_DATABASE_URL", "postgresql://ledger_owner:ledger@127.0.0.1:5432/ledger"
        ),
        help="a role that may CREATE DATABASE (default LEDGER_DATABASE_URL)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from budget_ledger.ledger.logs import configure_logging

    configure_logging("console", "warning")  # logs go to stderr; stdout is the table or JSON
    started = time.time()
    info = machine()
    results: list[PhaseResult] = []
    baseline: PhaseResult | None = None
    peers: list[peer.PeerResult] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.skip_throughput and args.commands > 0:
            results.append(
                run_phase(
                    args,
                    workdir,
                    "throughput",
                    args.commands,
                    args.budgets,
                    args.consumers,
                    args.batch_max_messages,
                )
            )
        if not args.no_peer:
            peers = run_peer(args, workdir)
        if args.baseline_commands > 0:
            per_budget = max(1.0, args.commands / max(1, args.budgets))
            b_budgets = max(1, round(args.baseline_commands / per_budget))
            baseline = run_phase(args, workdir, "baseline", args.baseline_commands, b_budgets, 1, 1)
            results.append(baseline)
        if args.latency_seconds > 0 and args.latency_rate > 0:
            n = int(args.latency_rate * args.latency_seconds)
            results.append(
                run_phase(
                    args,
                    workdir,
                    "latency",
                    n,
                    args.budgets,
                    args.consumers,
                    args.batch_max_messages,
                    rate=args.latency_rate,
                    warmup=int(args.latency_rate * args.latency_warmup_seconds),
                )
            )
    verified = all(r.verified for r in [*results, *peers])
    thr = next((r for r in results if r.mode == "throughput"), None)
    lat = next((r for r in results if r.mode == "latency"), None)
    ratio = (
        thr.commands_per_s / baseline.commands_per_s
        if thr and baseline and baseline.commands_per_s
        else None
    )
    best_peer = peer.best(peers)
    peer_ratio = thr.commands_per_s / best_peer.commands_per_s if thr and best_peer else None
    targets = {
        "throughput_20k": None if thr is None else thr.commands_per_s >= 20_000,
        "ratio_5x_peer": None if peer_ratio is None else peer_ratio >= 5,
        "ratio_8x": None if ratio is None else ratio >= 8,
        "p99_under_50ms_at_5k": None
        if lat is None or args.latency_rate < 5_000
        else lat.p99_ms < 50,
    }
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {
        "verified": verified,
        "machine": info,
        "ratio_to_peer": None if peer_ratio is None else round(peer_ratio, 2),
        "peer_best_clients": None if best_peer is None else best_peer.clients,
        "ratio_to_baseline": None if ratio is None else round(ratio, 2),
        "baseline_note": "the baseline runs on a smaller slice (--baseline-commands) with budgets "
        "scaled to the same commands per budget; one command per transaction",
        "targets": targets,
        "phases": [asdict(r) for r in results],
        "peer": [asdict(r) for r in peers],
        "wall_seconds": round(time.time() - started, 1),
    }
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print()
        print(
            f"machine: {info['nproc']} cores, {info['memory_gb']} GB, Python {info['python']}, "
            f"load average {info['load_average']} -> {info['load_average_end']}"
        )
        print(table(results, baseline))
        if peers:
            print()
            print(peer.table(peers))
            if peer_ratio is not None and thr and best_peer:
                print(
                    f"ratio_to_peer: {peer_ratio:.2f}x (throughput {thr.commands_per_s:,.0f}/s"
                    f" / best peer {best_peer.commands_per_s:,.0f}/s at {best_peer.clients}"
                    " clients)"
                )
        if baseline:
            print(
                f"baseline: one command per transaction, on {baseline.commands:,} commands "
                f"(a smaller slice; {baseline.budgets:,} budgets, same commands per budget)"
            )
        for r in results:
            if r.cpu:
                print(
                    f"CPU {r.mode} (% of one core): "
                    + ", ".join(f"{k} {v:.0f}" for k, v in r.cpu.items())
                    + "; CPU us/command: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_us_per_command.items())
                )
        for pr in peers:
            if pr.cpu:
                print(
                    f"CPU peer {pr.clients} clients (% of one core): "
                    + ", ".join(f"{k} {v:.0f}" for k, v in pr.cpu.items())
                    + "; CPU us/command: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in pr.cpu_us_per_command.items())
                )
        print(
            "targets: "
            + ", ".join(
                f"{k}={'n/a' if v is None else ('met' if v else 'MISSED')}"
                for k, v in targets.items()
            )
        )
        for r in results:
            for problem in r.problems:
                print(f"VERIFICATION FAILED [{r.mode}]: {problem}")
        for pr in peers:
            for problem in pr.problems:
                print(f"VERIFICATION FAILED [peer {pr.clients} clients]: {problem}")
        print("verified: " + ("yes" if verified else "NO"))
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
