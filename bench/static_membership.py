"""How long a SIGKILLed consumer's partitions stall, with and without static group membership.

    .venv/bin/python -m bench.static_membership            # the four scenarios below
    .venv/bin/python -m bench.static_membership --scenarios static-restart --rate 100

Each scenario gets a fresh database and topics, starts two
`python -m budget_ledger.entrypoints.cli consume` processes, offers a steady load of `fund`
commands over many budgets (so every partition gets work all the time), SIGKILLs consumer 0,
and optionally restarts it at once with the same environment (so the same
LEDGER_GROUP_INSTANCE_ID). The stall is, per partition, the time from
the kill to the first ledger row recorded after it; the dead member's partitions have the long
ones, and the figure reported is the longest. Every command is then checked to be applied once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer

from bench import workload
from bench.__main__ import add_service_arguments, create_database, drop_database
from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings, load_settings, prefixed_names

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {
    # name: (static membership, restart the killed member at once)
    "dynamic": (False, False),
    "dynamic-restart": (False, True),
    "static": (True, False),
    "static-restart": (True, True),
}


def _env(settings: Settings, instance_id: str, session_ms: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "LEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_TOPIC_COMMANDS": settings.topic_commands,
        "LEDGER_TOPIC_EVENTS": settings.topic_events,
        "LEDGER_TOPIC_ALERTS": settings.topic_alerts,
        "LEDGER_TOPIC_DLQ": settings.topic_dlq,
        "LEDGER_CONSUMER_GROUP": settings.consumer_group,
        "LEDGER_SESSION_TIMEOUT_MS": str(session_ms),
        "LEDGER_GROUP_INSTANCE_ID": instance_id,
        "LEDGER_LOG_LEVEL": "warning",
        **workload.signing_env(settings),
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })  # fmt: skip
    return env


def _consumer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "consume"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # the child writes its log; ours closes when we exit
    )


def _count(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class Load:
    """Open and fund `budgets` budgets, then `rate` fund commands/s round robin until stopped."""

    def __init__(self, settings: Settings, budgets: int, rate: int) -> None:
        self.settings = settings
        self.budgets = budgets
        self.rate = rate
        self.sent = 0
        self.stop = threading.Event()
        self.producer = Producer(producer_config(settings))
        self.signer = settings_signer(settings)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, command: dict[str, Any]) -> None:
        key, value = (
            f"{command['tenant_id']}:{command['budget_id']}".encode(),
            orjson.dumps(command),
        )
        headers = workload.headers_for(self.signer, command, key, value)
        self.producer.produce(self.settings.topic_commands, key=key, value=value, headers=headers)
        self.producer.poll(0)
        self.sent += 1

    def open(self) -> None:
        for b in range(self.budgets):
            base = {"tenant_id": "bench", "budget_id": f"b{b}"}
            self._send({**base, "command_id": f"open-{b}", "type": "open_budget",
                        "currency": "USD", "period": "rolling"})  # fmt: skip
        self.producer.flush(30)

    def _run(self) -> None:
        i = 0
        started = time.monotonic()
        while not self.stop.is_set():
            b = i % self.budgets
            self._send({"tenant_id": "bench", "budget_id": f"b{b}", "command_id": f"f-{i}",
                        "type": "fund", "amount": "1.00", "currency": "USD"})  # fmt: skip
            i += 1
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.producer.flush(30)


def run_scenario(args: argparse.Namespace, name: str, workdir: Path) -> dict[str, Any]:
    static, restart = SCENARIOS[name]
    prefix = f"sm{uuid.uuid4().hex[:8]}"
    url = create_database(args.database_url)
    settings = load_settings(
        kafka_bootstrap=args.kafka_bootstrap,
        database_url=url,
        **prefixed_names(prefix),
        topic_partitions=args.partitions,
        **workload.signing_settings(),
    )
    create_topics(settings, partitions=args.partitions)
    envs = [_env(settings, f"{prefix}-m{i}" if static else "", args.session_ms) for i in range(2)]
    procs = [_consumer(envs[i], workdir / f"{name}-{i}.log") for i in range(2)]
    load = Load(settings, args.budgets, args.rate)
    try:
        _wait(lambda: _count(url, "SELECT count(*) FROM consumer_positions") == args.partitions,
              60, "both consumers to get their partitions")  # fmt: skip
        time.sleep(3)  # the group settles (a second member may join after the first's assign)
        load.open()
        load.thread.start()
        _wait(lambda: _count(url, "SELECT count(DISTINCT kafka_partition) FROM ledger")
              == args.partitions, 60, "every partition to commit")  # fmt: skip
        time.sleep(args.warmup)
        procs[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        procs[0].wait()
        if restart:
            procs[0] = _consumer(envs[0], workdir / f"{name}-0.log")
        time.sleep(args.session_ms / 1000 + args.after)
        load.stop.set()
        load.thread.join(60)
        _wait(lambda: _count(url, "SELECT count(*) FROM ledger") == load.sent, 120,
              "every command applied")  # fmt: skip
        with psycopg.connect(url, autocommit=True) as conn:
            firsts = conn.execute(
                "SELECT kafka_partition, extract(epoch FROM min(recorded_at)) FROM ledger"
                " WHERE recorded_at > to_timestamp(%s) GROUP BY 1 ORDER BY 1",
                (killed_at,),
            ).fetchall()
            doubles = conn.execute(
                "SELECT count(*) - count(DISTINCT (tenant_id, command_id)) FROM ledger"
            ).fetchone()
        gaps = {int(p): round(float(t) - killed_at, 2) for p, t in firsts}
        return {
            "scenario": name,
            "static_membership": static,
            "restarted": restart,
            "session_timeout_ms": args.session_ms,
            "stall_seconds": max(gaps.values()),
            "stalled_partitions": sorted(p for p, g in gaps.items() if g > 1.0),
            "first_commit_after_kill_s": gaps,
            "commands": load.sent,
            "applied_twice": int(doubles[0]) if doubles else 0,
        }
    finally:
        load.stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        drop_database(args.database_url, url)


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print one JSON line per scenario."""
    parser = argparse.ArgumentParser(prog="python -m bench.static_membership")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--budgets", type=int, default=60)
    parser.add_argument("--rate", type=int, default=200, help="fund commands per second")
    parser.add_argument("--session-ms", type=int, default=10_000)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=5.0, help="seconds past the session timeout")
    add_service_arguments(parser)
    parser.add_argument("--workdir", default="/tmp/static-membership")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in args.scenarios:
        print(json.dumps(run_scenario(args, name, workdir)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
