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
- latency: a fixed offered load (`--latency-rate` commands/s for `--latency-seconds`), then
  the same again while another process keeps one core busy (`latency-busy`;
  `--no-busy-latency` skips it);
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
import sys
import tempfile
import time
from pathlib import Path

from bench import peer

# The phases, the verification and the output live in sibling modules, one job each; the names
# other benchmarks import from bench.__main__ stay importable from here.
from bench.databases import _with_db, create_database, drop_database
from bench.phase import PY, ROOT, Phase, PhaseResult
from bench.phases import _say, run_peer, run_phase
from bench.report import machine, report, table
from bench.verify import verify

__all__ = [
    "PY",
    "ROOT",
    "Phase",
    "PhaseResult",
    "_say",
    "_with_db",
    "add_service_arguments",
    "create_database",
    "drop_database",
    "machine",
    "main",
    "parse_args",
    "report",
    "run_peer",
    "run_phase",
    "table",
    "verify",
]


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
    p.add_argument(
        "--no-busy-latency",
        action="store_true",
        help="skip the second latency phase, run while another process keeps one core busy",
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
            for busy in (False,) if args.no_busy_latency else (False, True):
                results.append(
                    run_phase(
                        args,
                        workdir,
                        "latency-busy" if busy else "latency",
                        n,
                        args.budgets,
                        args.consumers,
                        args.batch_max_messages,
                        rate=args.latency_rate,
                        warmup=int(args.latency_rate * args.latency_warmup_seconds),
                        busy_core=busy,
                    )
                )
    verified = report(args, info, started, results, baseline, peers)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
