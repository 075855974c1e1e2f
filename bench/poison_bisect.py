"""What one row Postgres refuses costs a batch: the bisection's probes and time.

    .venv/bin/python -m bench.poison_bisect --messages 2000 --poison 1

A fresh database gets a CHECK that refuses `ref_id = 'poison'` (Python accepts it), the command
topic gets `--messages` reserves over 50 budgets with `--poison` of them carrying that ref_id, all
produced before the consumer starts so they arrive in full batches. Prints the time until every
good command is committed, the batches' commit-time histogram sum, and the bisection probes.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer

from bench import workload
from bench.__main__ import add_service_arguments, create_database, drop_database
from budget_ledger.consumers import metrics
from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.command_consumer import CommandConsumer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import load_settings, prefixed_names


def _commands(n: int, poison: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in range(50):
        base = {"tenant_id": "bench", "budget_id": f"b{b}"}
        out.append({**base, "command_id": f"o{b}", "type": "open_budget", "currency": "USD",
                    "period": "rolling"})  # fmt: skip
        out.append({**base, "command_id": f"f{b}", "type": "fund", "amount": "100000.00",
                    "currency": "USD"})  # fmt: skip
    bad = {len(out) + (i + 1) * (n - len(out)) // (poison + 1) for i in range(poison)}
    for i in range(n - len(out)):
        ref = "poison" if len(out) in bad else f"r{i}"
        budget = {"tenant_id": "bench", "budget_id": f"b{i % 50}"}
        out.append({**budget, "command_id": f"r{i}", "type": "reserve", "amount": "1.00",
                    "currency": "USD", "ref_id": ref})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Run once and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.poison_bisect")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--poison", type=int, default=1)
    parser.add_argument("--batch-max-messages", type=int, default=2000)
    add_service_arguments(parser)
    args = parser.parse_args(argv)
    url = create_database(args.database_url)
    settings = load_settings(
        kafka_bootstrap=args.kafka_bootstrap,
        database_url=url,
        **prefixed_names(f"pb{uuid.uuid4().hex[:8]}"),
        topic_partitions=1,
        batch_max_messages=args.batch_max_messages,
        log_level="warning",
        **workload.signing_settings(),
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE ledger ADD CONSTRAINT no_poison CHECK (ref_id <> 'poison')")
        create_topics(settings, partitions=1)
        commands = _commands(args.messages, args.poison)
        producer = Producer(producer_config(settings))
        signer = settings_signer(settings)
        for c in commands:
            key, value = f"{c['tenant_id']}:{c['budget_id']}".encode(), orjson.dumps(c)
            headers = workload.headers_for(signer, c, key, value)
            producer.produce(settings.topic_commands, key=key, value=value, headers=headers)
            producer.poll(0)
        producer.flush(60)
        probes0 = metrics.BISECT_PROBES._value.get()
        stop = threading.Event()
        consumer = CommandConsumer(settings, stop=stop)
        started = time.perf_counter()
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        good = len(commands) - args.poison
        with psycopg.connect(url, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM ledger").fetchone() != (good,):
                time.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join(30)
        print(json.dumps({
            "messages": len(commands),
            "poisoned": args.poison,
            "seconds_to_all_committed": round(elapsed, 3),
            "batch_seconds_sum": round(metrics.BATCH_SECONDS._sum.get(), 3),
            "bisect_probes": metrics.BISECT_PROBES._value.get() - probes0,
            "isolated": metrics.POISON_ISOLATED._value.get(),
        }))  # fmt: skip
    finally:
        drop_database(args.database_url, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
