"""Running the phases: one consumer phase (workload files, produce, timings, verification) and
the peer phase (the old design at each client count)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from bench import peer, workload
from bench.databases import create_database, drop_database
from bench.phase import Phase, PhaseResult
from bench.procstat import CpuSampler
from bench.verify import verify
from budget_ledger.consumers.timings import read_timings
from budget_ledger.schemas.signing import Signer


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def _seconds_over(result: PhaseResult, limit_ms: float = 50.0) -> str:
    """For a paced phase: how many of its seconds had a p99 above `limit_ms`, and the worst."""
    seconds = result.p99_by_second
    if not seconds:
        return ""
    over = sum(1 for p99 in seconds if p99 > limit_ms)
    worst = max(range(len(seconds)), key=seconds.__getitem__)
    return (
        f" ({over} of {len(seconds)} seconds with p99 > {limit_ms:.0f} ms;"
        f" worst: second {worst + 1}, {seconds[worst]:.0f} ms)"
    )


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
    busy_core: bool = False,
) -> PhaseResult:
    """One consumer phase; with ``busy_core`` a process spins on one core for its timed part."""
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
    result = PhaseResult(
        mode, n_timed, budgets, consumers, batch_max_messages or 0, rate or None, busy_core
    )
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
        with _spinning(busy_core) as hog:
            if hog is not None:
                sampler.add("busy_core", [hog])
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
            if k not in ("machine_busy", "other", "busy_core")
        }
        result.max_rss_mb = round(phase.stop_consumers(), 1)

        # Messages produced from `start_ms` on are measured: the first produced one, or with a
        # warm-up, the first after it (the producer notes the time it reached message `warmup`).
        first_ms = record["first_ms"]
        start_ms = record["mark_ms"] if warmup else first_ms
        last_commit = 0
        covered = 0
        latencies: list[int] = []
        by_second: dict[int, list[int]] = {}
        for path in phase.timing_files:
            batches, stamps = read_timings(path)
            i = 0
            for commit_ms, n in batches:
                chunk = stamps[i : i + n]
                i += n
                covered += sum(1 for ts in chunk if ts >= first_ms)
                timed = [ts for ts in chunk if ts >= start_ms]
                if timed:
                    result.batches += 1
                    latencies.extend(commit_ms - ts for ts in timed)
                    last_commit = max(last_commit, commit_ms)
                if rate:  # paced: each second of produce time apart
                    for ts in timed:
                        by_second.setdefault((ts - start_ms) // 1000, []).append(commit_ms - ts)
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
        result.p99_by_second = [_percentile(sorted(by_second[k]), 0.99) for k in sorted(by_second)]

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
        f"p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms{_seconds_over(result)}, "
        f"max RSS {result.max_rss_mb:.0f} MB, verified={result.verified} {result.problems or ''}",
    )
    return result


@contextmanager
def _spinning(on: bool) -> Iterator[int | None]:
    """With ``on``: a child process that keeps one core busy (the noise of another job on a
    shared machine) until the block ends; yields its pid, else None."""
    if not on:
        yield None
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield hog.pid
    finally:
        hog.kill()
        hog.wait()


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
