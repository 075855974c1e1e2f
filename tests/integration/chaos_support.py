"""Fault injection for the cluster, chaos and fuzz tests: broker kills, Postgres restarts, checks.

Everything here acts on infrastructure owned by these tests only: the three-node Kafka cluster
(`deploy/local/kafka.sh cluster`, ports 19092-19097) and a second PostgreSQL cluster (port 5433)
that nobody else uses. The shared single broker (9092) and Postgres (5432) are never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from budget_ledger.ledger.settings import Settings
from tests.conftest import ROOT
from tests.integration.support import cli_env

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
POSTGRES_SH = ROOT / "deploy" / "local" / "postgres.sh"
CHAOS_PG_PORT = int(os.environ.get("LEDGER_CHAOS_PG_PORT", "5433"))
CHAOS_PG_CLUSTER = f"ledger_{CHAOS_PG_PORT}"


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout[-2000:]}\n"
            f"{result.stderr[-2000:]}"
        )
    return result.stdout


# -- Kafka cluster -------------------------------------------------------------------------------


def kill_broker(node: int) -> None:
    """SIGKILL node `node` (1-3) of the local three-node cluster."""
    _run(["bash", str(KAFKA_SH), "cluster", "kill", str(node)])


def start_brokers(*nodes: int) -> None:
    """Start the given cluster nodes (all when none given); idempotent."""
    _run(["bash", str(KAFKA_SH), "cluster", "start", *map(str, nodes)])


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    """Broker id (= cluster node number) leading `topic`/`partition` right now."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    return int(meta.partitions[partition].leader)


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> leading broker id, for every partition of `topic`."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: int(m.leader) for p, m in meta.partitions.items()}


def group_coordinator(bootstrap: str, group: str) -> int:
    """Broker id of the coordinator of consumer group `group`."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return int(desc.coordinator.id)


def replication_of(bootstrap: str, topic: str) -> set[int]:
    """The distinct replica counts of the partitions of `topic`, once the broker that answers
    knows them: a topic just created reaches each broker's metadata a moment later (seen in CI:
    an empty answer right after the creation)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        if (meta.partitions and meta.error is None) or time.monotonic() > deadline:
            return {len(p.replicas) for p in meta.partitions.values()}
        time.sleep(0.2)


# -- the chaos Postgres cluster -------------------------------------------------------------


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    return ["sudo", "-n", *cmd]


def _pg_version() -> str:
    for line in _run(["pg_lsclusters", "-h"]).splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[1] == CHAOS_PG_CLUSTER:
            return fields[0]
    raise RuntimeError(f"cluster {CHAOS_PG_CLUSTER} does not exist")


def start_chaos_postgres() -> str:
    """Start (creating it once) the chaos tests' own Postgres cluster; return its owner DSN."""
    env = {**os.environ, "LEDGER_PG_PORT": str(CHAOS_PG_PORT)}
    out = _run(["bash", str(POSTGRES_SH), "start"], env=env, timeout=600)
    return out.strip().splitlines()[-1].partition("=")[2]


def restart_chaos_postgres() -> None:
    """Crash-restart the chaos cluster (immediate shutdown: crash recovery on start)."""
    _run(_as_postgres(["pg_ctlcluster", _pg_version(), CHAOS_PG_CLUSTER, "restart",
                       "-m", "immediate"]))  # fmt: skip


def stop_chaos_postgres() -> None:
    """Stop the chaos cluster (fast shutdown)."""
    env = {**os.environ, "LEDGER_PG_PORT": str(CHAOS_PG_PORT)}
    _run(["bash", str(POSTGRES_SH), "stop"], env=env)


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """A new migrated database on `admin_dsn`'s cluster for one test, dropped afterwards."""
    from budget_ledger.ledger.migrate import migrate

    name = f"ledger_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(admin_dsn, name)
    migrate(url)
    try:
        yield url
    finally:
        for _ in range(30):
            try:
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                break
            except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege):
                # The server restarting, or a session of a process still shutting down that the
                # owner may not terminate (another login): both pass within seconds.
                time.sleep(1)


def terminate_backends(database_url: str) -> int:
    """`pg_terminate_backend` every other client connection to the test's database (retried
    while the server is still starting); returns how many were terminated."""
    rows = query(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'",
    )
    return len(rows)


# -- checks ----------------------------------------------------------------------------------


def query(database_url: str, text: str, params: dict[str, Any] | None = None) -> list[Any]:
    """All rows of `text`, retried while the database restarts."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
                return conn.execute(text, params or {}).fetchall()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def consumed_messages(database_url: str) -> int:
    """Messages of the command topic the consumer group has committed past (all partitions)."""
    return int(query(database_url, "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions")
               [0][0])  # fmt: skip


def assert_exactly_once(database_url: str, command_ids: Iterable[tuple[str, str]]) -> None:
    """Every (tenant, command_id) has one ledger event, nothing else does; sequences gap-free;
    `available` never negative; the balance projection is at each budget's last sequence."""
    expected = sorted(command_ids)
    got = sorted(query(database_url, "SELECT tenant_id, command_id FROM ledger"))
    got_t = [tuple(r) for r in got]
    missing = sorted(set(expected) - set(got_t))
    extra = sorted(set(got_t) - set(expected))
    assert not missing, f"{len(missing)} command(s) lost, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected ledger event(s), e.g. {extra[:5]}"
    assert len(got_t) == len(expected), "a command was applied twice"
    gaps = query(
        database_url,
        "SELECT tenant_id, budget_id, count(*), min(sequence), max(sequence) FROM ledger"
        " GROUP BY 1, 2 HAVING count(*) <> max(sequence) OR min(sequence) <> 1",
    )
    assert gaps == [], f"sequence gaps: {gaps[:5]}"
    assert query(database_url, "SELECT coalesce(min(available), 0) FROM ledger")[0][0] >= 0
    stale = query(
        database_url,
        "SELECT b.tenant_id, b.budget_id, b.sequence, l.seq FROM budget_balances b"
        " JOIN (SELECT tenant_id, budget_id, max(sequence) AS seq FROM ledger GROUP BY 1, 2) l"
        " USING (tenant_id, budget_id) WHERE b.sequence <> l.seq",
    )
    assert stale == [], f"projection behind the ledger: {stale[:5]}"


def longest_gap_seconds(database_url: str, partitions: list[int] | None = None) -> float:
    """The longest pause between consecutive ledger events (by recorded_at), in seconds; only
    events of the given command partitions when `partitions` is given."""
    rows = query(
        database_url,
        "SELECT coalesce(max(gap), 0) FROM (SELECT extract(epoch FROM recorded_at"
        " - lag(recorded_at) OVER (ORDER BY recorded_at)) AS gap FROM ledger"
        " WHERE %(all)s OR kafka_partition = ANY(%(partitions)s)) g",
        {"all": partitions is None, "partitions": partitions or []},
    )
    return float(rows[0][0])


def read_all(bootstrap: str, topic: str, timeout: float = 60) -> list[Any]:
    """Every message of `topic` from the start up to the end offsets as of now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Any] = []
        done: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while any(done.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: could not read to the end within {timeout} s")
            for m in consumer.consume(1000, 0.5):
                partition, offset = m.partition(), m.offset()
                if m.error() is None and partition is not None and offset is not None:
                    out.append(m)
                    done[partition] = offset + 1
        return out
    finally:
        consumer.close()


def assert_events_topic_complete(settings: Settings, database_url: str, timeout: float = 90) -> int:
    """Every ledger event is on the events topic (same tenant, budget, sequence and hash),
    waiting up to `timeout` seconds for the relay to catch up; returns the number of events."""
    ledger = {
        (t, b, int(s)): h
        for t, b, s, h in query(database_url, "SELECT tenant_id, budget_id, sequence, hash"
                                              " FROM ledger")
    }  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[tuple[str, str, int], str] = {}
        for m in read_all(settings.kafka_bootstrap, settings.topic_events):
            e = orjson.loads(m.value())
            seen[(e["tenant_id"], e["budget_id"], int(e["sequence"]))] = e["hash"]
        missing = sorted(set(ledger) - set(seen))
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"{len(missing)} ledger event(s) missing from the topic: {missing[:5]}"
    differing = [k for k, h in ledger.items() if seen[k] != h]
    assert not differing, f"events differ from the ledger: {differing[:5]}"
    return len(ledger)


# -- processes -------------------------------------------------------------------------------


class Processes:
    """`budget-ledger consume` / `relay` child processes by name, logs in `logdir`."""

    def __init__(self, settings: Settings, logdir: Path) -> None:
        self.settings = settings
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}

    def start(self, name: str, *args: str) -> None:
        """Start (or restart) process `name` running `budget-ledger ARGS`."""
        self.args[name] = list(args)
        with (self.logdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "budget_ledger.entrypoints.cli", *args],
                env=cli_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        """SIGKILL process `name` and reap it."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def alive(self, name: str) -> bool:
        """Whether process `name` is running."""
        return self.procs[name].poll() is None

    def revive(self) -> list[str]:
        """Restart every process that is not running; returns their names."""
        dead = [n for n in self.procs if not self.alive(n)]
        for name in dead:
            self.start(name, *self.args[name])
        return dead

    def stop_all(self) -> None:
        """SIGTERM everything, SIGKILL what does not stop within 15 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)

    def tails(self, lines: int = 15) -> str:
        """The last lines of every log, for failure messages."""
        out = []
        for name in self.procs:
            text = (self.logdir / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name} (exit {self.procs[name].poll()})")
            out.extend(text[-lines:])
        return "\n".join(out)
