"""Helpers of the integration tests: produce commands, run the consumer, read topics, wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.command_consumer import CommandConsumer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.relay import Relay
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.signing import PRIVILEGED, KafkaHeaders

# Settings of a signing key made for this test session only (docs/security.md, "Signed
# privileged commands"): the `settings` fixture and the tests that build their own use it.
TEST_SIGNING: dict[str, Any] = {
    "signing_keys": {"test-session": uuid.uuid4().hex + uuid.uuid4().hex},
    "signing_key_id": "test-session",
    "signing_principal": "test-operator",
}


def signed_headers(settings: Settings, key: bytes | None, value: bytes) -> KafkaHeaders | None:
    """The signature headers of a message whose JSON is a privileged command, signed with the
    settings' key as its principal (None for any other message, or without a key)."""
    signer = settings_signer(settings)
    if signer is None or not value.startswith(b"{"):
        return None
    try:
        kind = orjson.loads(value).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    # Fuzzed messages may carry any JSON as their type: only a privileged name is signed.
    return (
        signer.headers(key or b"", value) if isinstance(kind, str) and kind in PRIVILEGED else None
    )


def produce(
    settings: Settings,
    commands: Iterable[dict[str, Any] | tuple[bytes | None, bytes]],
    sign: bool = True,
) -> int:
    """Publish commands (dicts, keyed tenant:budget) or raw (key, value) pairs; return count.
    Privileged commands are signed with the settings' key unless `sign` is False."""
    producer = Producer(producer_config(settings))
    n = 0
    for item in commands:
        if isinstance(item, dict):
            key = f"{item['tenant_id']}:{item['budget_id']}".encode()
            value = orjson.dumps(item)
        else:
            key, value = item
        headers = signed_headers(settings, key, value) if sign else None
        producer.produce(settings.topic_commands, key=key, value=value, headers=headers)
        producer.poll(0)
        n += 1
    assert producer.flush(60) == 0
    return n


@contextmanager
def running_consumer(
    settings: Settings, relay: bool = True, create: bool = True
) -> Iterator[CommandConsumer]:
    """A consumer (and relay) in background threads for the duration of the block; `create`
    False when the topics exist already (a principal that may not create them)."""
    if create:
        create_topics(settings)
    stop = threading.Event()
    consumer = CommandConsumer(settings, stop=stop)
    threads = [threading.Thread(target=consumer.run, daemon=True)]
    if relay:
        threads.append(threading.Thread(target=Relay(settings, stop=stop).run, daemon=True))
    for t in threads:
        t.start()
    try:
        assert consumer.ready.wait(60), "consumer got no partitions within 60 s"
        yield consumer
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll `predicate` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def scalar(database_url: str, query: str, params: dict[str, Any] | None = None) -> Any:
    """First column of the first row of a query, on a fresh connection."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query, params or {}).fetchone()
        return row[0] if row else None


def ledger_count(database_url: str) -> int:
    """Rows in the ledger."""
    return int(scalar(database_url, "SELECT count(*) FROM ledger"))


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 60) -> list[Any]:
    """Read `expect` messages from the start of every partition of `topic` (or fail)."""
    group = f"reader-{time.monotonic_ns()}"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
        # A little longer, to catch messages beyond the expected count.
        out.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
    finally:
        consumer.close()
    assert len(out) >= expect, f"{topic}: expected {expect} messages, got {len(out)}"
    return out


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment under which `budget-ledger` sees this test's services and topics."""
    env = dict(os.environ)
    env.update({
        "LEDGER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_TOPIC_COMMANDS": settings.topic_commands,
        "LEDGER_TOPIC_EVENTS": settings.topic_events,
        "LEDGER_TOPIC_ALERTS": settings.topic_alerts,
        "LEDGER_TOPIC_DLQ": settings.topic_dlq,
        "LEDGER_CONSUMER_GROUP": settings.consumer_group,
        "LEDGER_BATCH_MAX_MS": str(settings.batch_max_ms),
        "LEDGER_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "LEDGER_LOG_LEVEL": "warning",
        "LEDGER_SIGNING_KEYS": orjson.dumps(
            {k: v.get_secret_value() for k, v in settings.signing_keys.items()}
        ).decode(),
        "LEDGER_SIGNING_KEY_ID": settings.signing_key_id,
        "LEDGER_SIGNING_PRINCIPAL": settings.signing_principal,
    })  # fmt: skip
    return env


def consumer_process(settings: Settings, *extra: str) -> subprocess.Popen[bytes]:
    """`budget-ledger consume` as a child process with this test's settings."""
    return subprocess.Popen(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "consume", *extra],
        env=cli_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `budget-ledger ARGS` with this test's settings; return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send `sig` and reap the process."""
    proc.send_signal(sig)
    proc.wait(30)


def _cmd(kind: str, tenant: str, budget: str, command_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "type": kind,
        "tenant_id": tenant,
        "budget_id": budget,
        **fields,
    }


def open_budget(tenant: str, budget: str, cid: str, **fields: Any) -> dict[str, Any]:
    """An `open_budget` command (USD, rolling unless overridden)."""
    return _cmd(
        "open_budget", tenant, budget, cid, **{"currency": "USD", "period": "rolling", **fields}
    )


def fund(tenant: str, budget: str, cid: str, amount: str) -> dict[str, Any]:
    """A `fund` command in USD."""
    return _cmd("fund", tenant, budget, cid, amount=amount, currency="USD")


def reserve(
    tenant: str, budget: str, cid: str, amount: str, ref: str, **fields: Any
) -> dict[str, Any]:
    """A `reserve` command in USD."""
    return _cmd("reserve", tenant, budget, cid, amount=amount, currency="USD", ref_id=ref, **fields)


def charge(tenant: str, budget: str, cid: str, ref: str, **fields: Any) -> dict[str, Any]:
    """A `charge` command."""
    return _cmd("charge", tenant, budget, cid, ref_id=ref, **fields)


def release(tenant: str, budget: str, cid: str, ref: str) -> dict[str, Any]:
    """A `release` command."""
    return _cmd("release", tenant, budget, cid, ref_id=ref)


def random_stream(
    seed: int, budgets: int, commands: int, tenant: str = "acme"
) -> list[dict[str, Any]]:
    """Open and fund `budgets` budgets, then a random mix of reserve/charge/release/fund."""
    import random

    rng = random.Random(seed)
    out = []
    for b in range(budgets):
        out.append(open_budget(tenant, f"b{b}", f"open-{b}"))
        out.append(fund(tenant, f"b{b}", f"fund0-{b}", "500.00"))
    refs: dict[int, list[str]] = {b: [] for b in range(budgets)}
    for i in range(commands - len(out)):
        b = rng.randrange(budgets)
        roll = rng.random()
        if roll < 0.5 or not refs[b]:
            ref = f"r{i}"
            refs[b].append(ref)
            out.append(reserve(tenant, f"b{b}", f"c{i}", f"{rng.randint(1, 4000) / 100:.2f}", ref))
        elif roll < 0.8:
            out.append(charge(tenant, f"b{b}", f"c{i}", refs[b].pop(rng.randrange(len(refs[b])))))
        elif roll < 0.95:
            out.append(release(tenant, f"b{b}", f"c{i}", refs[b].pop(rng.randrange(len(refs[b])))))
        else:
            out.append(fund(tenant, f"b{b}", f"c{i}", f"{rng.randint(100, 20000) / 100:.2f}"))
    return out


def topics_ready(settings: Settings) -> None:
    """Create the topics and wait until every partition of the command topic has a leader."""
    create_topics(settings)
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    try:
        for p in range(settings.topic_partitions):
            tp = TopicPartition(settings.topic_commands, p)

            def answers(tp: TopicPartition = tp) -> bool:
                try:
                    probe.get_watermark_offsets(tp, timeout=2, cached=False)
                    return True
                except KafkaException:
                    return False

            wait_for(answers, timeout=30, what=f"a leader for partition {p}")
    finally:
        probe.close()


def dead_letters(settings: Settings) -> dict[bytes, dict[str, str]]:
    """Dead letters waiting in the outbox (no relay runs here), by message value."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT payload, headers FROM outbox WHERE topic = %s ORDER BY id",
            (settings.topic_dlq,),
        ).fetchall()
    return {bytes(payload): dict(headers) for payload, headers in rows}


def assert_ledger_consistent(database_url: str, commands: list[dict[str, object]]) -> None:
    """Every command exactly once, sequences gap-free, nothing negative, projections current."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT command_id FROM ledger")]
        assert sorted(ids) == sorted(str(c["command_id"]) for c in commands)
        gaps = conn.execute(
            "SELECT tenant_id, budget_id, count(*), min(sequence), max(sequence) FROM ledger"
            " GROUP BY 1, 2 HAVING count(*) <> max(sequence) OR min(sequence) <> 1"
        ).fetchall()
        assert gaps == []
        assert conn.execute("SELECT min(available) FROM ledger").fetchone()[0] >= 0
        stale = conn.execute(
            "SELECT b.budget_id FROM budget_balances b JOIN (SELECT tenant_id, budget_id,"
            " max(sequence) AS seq FROM ledger GROUP BY 1, 2) l USING (tenant_id, budget_id)"
            " WHERE b.sequence <> l.seq"
        ).fetchall()
        assert stale == []
