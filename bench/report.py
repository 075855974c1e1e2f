"""The benchmark's output: the machine, the phase table, the targets and one JSON document."""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from bench import peer
from bench.phase import PhaseResult

#: What the CPU goal counts: the consumers' and PostgreSQL's CPU a command.
_CPU_GOAL_OF = ("consumer", "postgres")


def cpu_probe_ms() -> float:
    """Milliseconds a fixed pure-Python loop takes (best of three): the machine's speed at the
    moment. On this shared VM it moved between 78 and 117 ms on an idle guest, so figures of
    runs with different probes are not comparable."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        s = 0
        for i in range(1_000_000):
            s += i * i % 7
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


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
        "cpu_probe_ms": cpu_probe_ms(),
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
    return aligned(rows)


def peer_table(peers: list[peer.PeerResult]) -> str:
    """The peer's runs: one row per client count, the best marked."""
    top = peer.best(peers)
    head = (
        "peer (old design)",
        "commands",
        "seconds",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "verified",
    )
    rows = [head]
    for r in peers:
        rows.append(
            (
                f"{r.clients} clients" + (" (best)" if r is top else ""),
                f"{r.commands:,}",
                f"{r.seconds:.2f}",
                f"{r.commands_per_s:,.0f}",
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                "yes" if r.verified else "NO",
            )
        )
    return aligned(rows)


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """Rows as text columns: the first left-aligned, the others right-aligned, a rule under the
    header row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    started: float,
    results: list[PhaseResult],
    baseline: PhaseResult | None,
    peers: list[peer.PeerResult],
) -> bool:
    """Print the table (or with --json, the JSON document) of a run; whether all verified."""
    verified = all(r.verified for r in results) and all(p.verified for p in peers)
    thr = next((r for r in results if r.mode == "throughput"), None)
    lat = next((r for r in results if r.mode == "latency"), None)
    busy = next((r for r in results if r.mode == "latency-busy"), None)
    ratio = (
        thr.commands_per_s / baseline.commands_per_s
        if thr and baseline and baseline.commands_per_s
        else None
    )
    best_peer = peer.best(peers)
    peer_ratio = thr.commands_per_s / best_peer.commands_per_s if thr and best_peer else None
    at_5k = args.latency_rate >= 5_000
    # The performance issue's goals (docs/performance.md): the throughput phase's CPU a command
    # is the consumers' plus PostgreSQL's.
    cpu = None if thr is None else sum(thr.cpu_us_per_command.get(k, 0) for k in _CPU_GOAL_OF)
    rss = max((r.max_rss_mb for r in results if r.mode != "baseline"), default=None)
    targets = {
        "throughput_30k": None if thr is None else thr.commands_per_s >= 30_000,
        "ratio_5x_peer": None if peer_ratio is None else peer_ratio >= 5,
        "p99_under_50ms_at_5k": None if lat is None or not at_5k else lat.p99_ms < 50,
        "p99_under_50ms_at_5k_one_core_busy": None
        if busy is None or not at_5k
        else busy.p99_ms < 50,
        "cpu_45us_per_command": None if not cpu else cpu <= 45,
        "max_rss_255mb": None if rss is None else rss <= 255,
    }
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["cpu_probe_ms_end"] = cpu_probe_ms()
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
            f"load average {info['load_average']} -> {info['load_average_end']}, CPU probe "
            f"{info['cpu_probe_ms']} -> {info['cpu_probe_ms_end']} ms (a fixed loop: lower is "
            "a faster machine)"
        )
        print(table(results, baseline))
        if peers:
            print()
            print(peer_table(peers))
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
    return verified
