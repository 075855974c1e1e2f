"""One benchmark phase's world: fresh topics and database, the consumers and the producer as
child processes, and the figures a phase reports."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import workload
from bench.databases import _with_db, create_database, drop_database
from bench.procstat import vm_hwm_kb
from bench.topics import delete_topics

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
    # Another process kept one core busy during the timed part (the latency phase's noise test).
    busy_core: bool = False
    seconds: float = 0.0
    commands_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    # Paced phases: the p99 of the messages produced in each second of the window, in order
    # (one stall sets a phase's p99 as surely as a slow second-long stretch; this tells which).
    p99_by_second: list[float] = field(default_factory=list)
    max_rss_mb: float = 0.0
    batches: int = 0
    verified: bool = False
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_us_per_command: dict[str, float] = field(default_factory=dict)


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
        if keep:
            print(f"kept database {self.database_url} and its topics", file=sys.stderr)
            return
        delete_topics(self.settings)
        if self.args.use_database:
            print(f"kept database {self.database_url}", file=sys.stderr)
            return
        drop_database(self.args.database_url, self.database_url)
