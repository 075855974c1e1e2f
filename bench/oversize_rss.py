"""Consumer memory when upstream sends huge commands: peak RSS of a `budget-ledger consume` process.

    .venv/bin/python -m bench.oversize_rss --huge 20 --metadata-mb 10

A fresh database and topics get one budget, `--huge` valid-looking `fund` commands whose
`metadata` holds `--metadata-mb` MB each (lz4-compressed on the wire, so the broker takes them),
then `--normal` ordinary funds. A consumer child process applies them; the script waits until the
ordinary ones are in the ledger and the huge ones are dead-lettered, then reads the child's peak
RSS (VmHWM). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer

from bench import workload
from bench.__main__ import add_service_arguments, create_database, drop_database
from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import load_settings, prefixed_names


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _command(cid: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": cid, "type": kind, "tenant_id": "rss", "budget_id": "b1", **fields}


def main(argv: list[str] | None = None) -> int:
    """Run once and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.oversize_rss")
    parser.add_argument("--huge", type=int, default=20, help="commands with huge metadata")
    parser.add_argument("--metadata-mb", type=int, default=10, help="metadata size of each")
    parser.add_argument("--normal", type=int, default=1000, help="ordinary funds after them")
    add_service_arguments(parser)
    args = parser.parse_args(argv)
    url = create_database(args.database_url)
    names = prefixed_names(f"rss{uuid.uuid4().hex[:8]}")
    settings = load_settings(
        kafka_bootstrap=args.kafka_bootstrap,
        database_url=url,
        **names,
        topic_partitions=1,
        **workload.signing_settings(),
    )
    consumer = None
    try:
        create_topics(settings, partitions=1)
        # The producer accepts what the broker would (its limit counts the compressed batch).
        producer = Producer(producer_config(settings, **{"message.max.bytes": 200_000_000}))
        key = b"rss:b1"
        send = [_command("open", "open_budget", currency="USD", period="rolling")]
        blob = "x" * (args.metadata_mb * 1_000_000)
        send += [
            _command(f"huge{i}", "fund", amount="1.00", currency="USD", metadata={"blob": blob})
            for i in range(args.huge)
        ]
        send += [
            _command(f"f{i}", "fund", amount="1.00", currency="USD") for i in range(args.normal)
        ]
        signer = settings_signer(settings)
        for command in send:
            value = orjson.dumps(command)
            headers = workload.headers_for(signer, command, key, value)
            producer.produce(settings.topic_commands, key=key, value=value, headers=headers)
            producer.poll(0)
        assert producer.flush(120) == 0, "Kafka did not take every command"
        env = dict(os.environ)
        env.update({f"LEDGER_{k.upper()}": v for k, v in names.items()})
        env.update({"LEDGER_KAFKA_BOOTSTRAP": args.kafka_bootstrap, "LEDGER_DATABASE_URL": url,
                    "LEDGER_LOG_LEVEL": "error", **workload.signing_env(settings)})  # fmt: skip
        consumer = subprocess.Popen(
            [sys.executable, "-m", "budget_ledger.entrypoints.cli", "consume"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        started = time.monotonic()
        expected = 1 + args.normal
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                applied = conn.execute("SELECT count(*) FROM ledger").fetchone()
                if applied is not None and applied[0] >= expected:
                    break
                if consumer.poll() is not None or time.monotonic() - started > 300:
                    raise RuntimeError(f"consumer stopped or stalled at {applied} events")
                time.sleep(0.1)
            # Dead letters wait in the outbox until a relay publishes them (none runs here).
            dead = conn.execute(
                'SELECT count(*) FROM outbox WHERE headers @> \'[["error_class", "too_large"]]\''
            ).fetchone()
        result = {
            "huge_commands": args.huge,
            "metadata_mb_each": args.metadata_mb,
            "ledger_events": expected,
            "dead_lettered_too_large": dead[0] if dead else 0,
            "consumer_peak_rss_mb": round(_peak_rss_mb(consumer.pid), 1),
            "seconds": round(time.monotonic() - started, 1),
        }
        print(json.dumps(result))
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(30)
        drop_database(args.database_url, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
