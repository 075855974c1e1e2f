"""Seeded chaos: a valid workload while consumers, the relay, brokers and Postgres fail at random.

Infrastructure of its own: the three-node Kafka cluster (topics RF 3, min.insync.replicas 2) and
a second PostgreSQL cluster on port 5433 that this test crash-restarts; the shared broker (9092)
and Postgres (5432) are never touched. Two `budget-ledger consume` processes and one `relay`
process run as children. The outcome is compared with `rules_model.RulesModel`, an independent
model of the rules.

    LEDGER_CHAOS_SEED=<n>       replay a run's workload and fault plan (the seed is printed)
    LEDGER_CHAOS_SECONDS=600    soak: fault period in seconds (default 60)
    LEDGER_CHAOS_RATE=100       commands per second offered during the fault period
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings, load_settings, prefixed_names
from tests.integration.chaos_support import (
    Processes,
    assert_events_topic_complete,
    assert_exactly_once,
    consumed_messages,
    fresh_database,
    kill_broker,
    query,
    read_all,
    restart_chaos_postgres,
    start_brokers,
    start_chaos_postgres,
    terminate_backends,
)
from tests.integration.rules_model import Workload
from tests.integration.support import TEST_SIGNING, cli, signed_headers, wait_for

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LEDGER_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
SECONDS = float(os.environ.get("LEDGER_CHAOS_SECONDS", "60"))
RATE = int(os.environ.get("LEDGER_CHAOS_RATE", "100"))
FAULTS = ("consumer_kill", "relay_kill", "broker_kill", "pg_terminate", "pg_restart")
CONSUMERS = ("consumer-1", "consumer-2")


@pytest.fixture(scope="module")
def chaos_pg_dsn() -> str:
    """Owner DSN of the chaos tests' own Postgres cluster (port 5433), started when needed."""
    return start_chaos_postgres()


@pytest.fixture
def chaos_settings(kafka_cluster: str, chaos_pg_dsn: str, topic_prefix: str) -> Iterator[Settings]:
    """This run's topics on the cluster (RF 3) and its own database on the chaos Postgres."""
    with fresh_database(chaos_pg_dsn) as url:
        yield load_settings(
            kafka_bootstrap=kafka_cluster,
            database_url=url,
            **prefixed_names(topic_prefix),
            topic_partitions=6,
            topic_replication=3,
            batch_max_ms=20,
            session_timeout_ms=6_000,
            **TEST_SIGNING,
        )


class Stream(threading.Thread):
    """Offers the workload's commands at RATE per second until stopped; fails on any loss."""

    def __init__(self, settings: Settings, workload: Workload) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.workload = workload
        self.halt = threading.Event()
        self.failures: list[str] = []
        self.sent = 0

    def _report(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported by the test, not lost in the thread
            self.failures.append(f"stream died: {exc!r}")

    def _run(self) -> None:
        producer = Producer(producer_config(self.settings))
        started = time.monotonic()
        while not self.halt.is_set():
            c = self.workload.next()
            key, value = f"{c['tenant_id']}:{c['budget_id']}".encode(), orjson.dumps(c)
            producer.produce(
                self.settings.topic_commands,
                key=key,
                value=value,
                headers=signed_headers(self.settings, key, value),
                on_delivery=self._report,
            )
            producer.poll(0)
            self.sent += 1
            if self.sent % 10 == 0:
                time.sleep(max(0.0, started + self.sent / RATE - time.monotonic()))
        remaining = producer.flush(300)
        if remaining:
            self.failures.append(f"{remaining} message(s) never acknowledged")


class Chaos:
    """The fault plan: every kind at least once, then random ones, at random moments."""

    def __init__(self, rng: random.Random, settings: Settings, procs: Processes) -> None:
        self.rng = rng
        self.settings = settings
        self.procs = procs
        self.counts: Counter[str] = Counter()
        self.broker_down: tuple[int, float] | None = None
        # A broker restart takes 6-40 s on a loaded machine: it runs beside the fault plan, so
        # the plan keeps its timing and the run stays bounded.
        self.restarting: threading.Thread | None = None
        self.restarted = False  # whether the last restart thread's start succeeded
        self.revive_at: dict[str, float] = {}

    def plan(self, seconds: float) -> list[tuple[float, str]]:
        """(offset in seconds, fault kind), sorted."""
        extra = max(0, int(seconds / 6) - len(FAULTS))
        kinds = list(FAULTS) + [self.rng.choice(FAULTS) for _ in range(extra)]
        self.rng.shuffle(kinds)
        gap = seconds / (len(kinds) + 1)
        return [
            ((i + 1) * gap + self.rng.uniform(-gap / 3, gap / 3), k) for i, k in enumerate(kinds)
        ]

    def housekeeping(self) -> None:
        """Bring back what is due: a killed broker after a few seconds, killed processes."""
        now = time.monotonic()
        if self.broker_down and now >= self.broker_down[1] and self.restarting is None:
            self.restarting = threading.Thread(target=self._restart, args=(self.broker_down[0],))
            self.restarting.start()
        if self.restarting is not None and not self.restarting.is_alive():
            self.restarting = None
            if self.restarted or self.broker_down is None:
                self.broker_down = None
            else:  # the start failed (seen once: a node still in recovery): try again soon
                self.broker_down = (self.broker_down[0], now + 2.0)
                self.counts["broker_restart_retried"] += 1
        for name, at in list(self.revive_at.items()):
            if now >= at:
                self.procs.start(name, *self.procs.args[name])
                del self.revive_at[name]

    def _restart(self, node: int) -> None:
        """The restart thread: a failed start is noted for `housekeeping`, never raised."""
        self.restarted = False
        try:
            start_brokers(node)
            self.restarted = True
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"broker {node} did not start, will retry: {str(exc)[:300]}")

    def inject(self, kind: str) -> None:
        """One fault of `kind`."""
        rng = self.rng
        if kind == "consumer_kill":
            name = rng.choice(CONSUMERS)
            if name in self.revive_at:
                return self.inject("relay_kill")
            self.procs.kill(name)
            self.revive_at[name] = time.monotonic() + rng.uniform(0.0, 4.0)
        elif kind == "relay_kill":
            if "relay" in self.revive_at:
                return self.inject("pg_terminate")
            self.procs.kill("relay")
            self.revive_at["relay"] = time.monotonic() + rng.uniform(0.0, 3.0)
        elif kind == "broker_kill":
            if self.broker_down is not None:  # one at a time: two of three keep the ISR at 2
                return self.inject("consumer_kill")
            node = rng.randint(1, 3)
            kill_broker(node)
            self.broker_down = (node, time.monotonic() + rng.uniform(3.0, 10.0))
        elif kind == "pg_terminate":
            terminate_backends(self.settings.database_url)
        elif kind == "pg_restart":
            restart_chaos_postgres()
        self.counts[kind] += 1
        return None


def _dead_letters(settings: Settings) -> dict[tuple[str, str], str]:
    """(original partition, offset) -> error_class; the relay may publish a row twice."""
    out = {}
    for m in read_all(settings.kafka_bootstrap, settings.topic_dlq):
        h = {k: v.decode() for k, v in m.headers() or []}
        out[(h.get("original_partition", "?"), h.get("original_offset", "?"))] = h.get(
            "error_class", "?"
        )
    return out


def wait_dead_letters(settings: Settings, expect: int, timeout: float = 60) -> dict[Any, str]:
    """The DLQ's distinct dead letters once there are `expect` of them (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while len(found := _dead_letters(settings)) < expect and time.monotonic() < deadline:
        time.sleep(1)
    return found


def test_chaos_loses_nothing_doubles_nothing_and_matches_the_model(
    chaos_settings: Settings, tmp_path: Path
) -> None:
    settings = chaos_settings
    print(f"\nchaos seed {SEED} (replay: LEDGER_CHAOS_SEED={SEED}), {SECONDS:.0f} s at {RATE}/s")
    rng = random.Random(SEED)
    create_topics(settings)
    workload = Workload(SEED)
    procs = Processes(settings, tmp_path)
    for name in CONSUMERS:
        procs.start(name, "consume", "--batch-max-messages", "500")
    procs.start("relay", "relay")
    chaos = Chaos(rng, settings, procs)
    stream = Stream(settings, workload)
    try:
        stream.start()
        started = time.monotonic()
        for at, kind in chaos.plan(SECONDS):
            while time.monotonic() < started + at:
                chaos.housekeeping()
                time.sleep(0.1)
            chaos.inject(kind)
        while time.monotonic() < started + SECONDS:
            chaos.housekeeping()
            time.sleep(0.1)
        stream.halt.set()
        stream.join(300)
        # Heal everything, then let the ledger drain.
        if chaos.restarting is not None:
            chaos.restarting.join(120)
        start_brokers()
        chaos.broker_down = None
        procs.revive()
        assert stream.failures == [], stream.failures[:3]
        total = stream.sent
        assert total >= RATE * SECONDS / 2, f"only {total} commands offered in {SECONDS} s"
        try:
            wait_for(lambda: consumed_messages(settings.database_url) == total, timeout=180,
                     what=f"all {total} messages consumed")  # fmt: skip
            assert_events_topic_complete(settings, settings.database_url)
        except AssertionError:
            print(procs.tails())
            raise
        dlq = wait_dead_letters(settings, workload.model.conflicts)
    finally:
        procs.stop_all()
        start_brokers()

    model = workload.model
    # Every command exactly once, with the model's outcome.
    assert_exactly_once(settings.database_url, model.outcomes)
    rows = query(settings.database_url,
                 "SELECT tenant_id, command_id, type, event->>'reason' FROM ledger")  # fmt: skip
    actual = {(t, c): (kind, reason) for t, c, kind, reason in rows}
    wrong = [
        (k, model.outcomes[k], actual[k]) for k in model.outcomes if actual[k] != model.outcomes[k]
    ]
    assert not wrong, (
        f"{len(wrong)} outcome(s) differ from the model (id, model, ledger): {wrong[:5]}"
    )
    # Balances and reservations equal the model's.
    balances = {
        (t, b): (f, r, c, a)
        for t, b, f, r, c, a in query(settings.database_url,
            "SELECT tenant_id, budget_id, funded, reserved, charged, available"
            " FROM budget_balances WHERE opened")
    }  # fmt: skip
    expected = {k: (b.funded, b.reserved, b.charged, b.available) for k, b in model.budgets.items()}
    assert balances == expected
    reservations = {
        (t, b, ref): [amount, status]
        for t, b, ref, amount, status in query(settings.database_url,
            "SELECT tenant_id, budget_id, ref_id, amount, status FROM reservations")
    }  # fmt: skip
    assert reservations == {
        (*k, ref): res for k, b in model.budgets.items() for ref, res in b.reservations.items()
    }
    # Conflicting retries are dead-lettered, nothing else is.
    assert Counter(dlq.values()) == Counter(
        {"idempotency_conflict": model.conflicts} if model.conflicts else {}
    )
    for source in ("ledger", "kafka"):
        result = cli(settings, "reconcile", "--source", source, "--no-alerts")
        assert result.returncode == 0, result.stdout + result.stderr

    refusals = model.refusals()
    print(
        f"chaos seed {SEED}: {total} commands sent ({len(model.outcomes)} distinct, "
        f"{model.duplicates} duplicates, {model.conflicts} conflicting retries -> DLQ), "
        f"{sum(refusals.values())} refusals {dict(refusals)}; faults {dict(chaos.counts)}; "
        f"lost 0, doubled 0, reconcile clean"
    )
