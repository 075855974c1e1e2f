"""Consumer memory with a bounded state cache against an unbounded one.

    .venv/bin/python -m bench.state_cache_rss --commands 200000 --budgets 50000 --cache 10000 0

For each `--cache` size (0 = unbounded, -1 = the consumer's default) a fresh database and topics
get the same seeded command stream (`bench.replay_bench.command_stream`: opens first, then a
random mix over every budget), produced while one `budget-ledger consume` child process with
LEDGER_STATE_CACHE_BUDGETS (and LEDGER_STATE_CACHE_MB, from `--cache-mb`) set applies it (the
producer stays at most 200k messages ahead). The child's RSS is sampled at every tenth of the
stream; at the end the script reads its peak RSS (VmHWM), its RSS (VmRSS) and its state-cache
metrics. It also measures, in process, the memory one cached budget state takes (tracemalloc
over the states of the same stream). Prints one JSON line. Other LEDGER_* variables of the
caller (e.g. LEDGER_KAFKA_FETCH_QUEUE_KB) reach the consumer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer

from bench import workload
from bench.__main__ import add_service_arguments, create_database, drop_database
from bench.procstat import vm_hwm_kb
from bench.replay_bench import build_rows, command_stream
from bench.topics import delete_topics
from budget_ledger.consumers.client import settings_signer
from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import load_settings, prefixed_names

PARTITIONS = 4
METRICS_PORT = 19_411


def bytes_per_budget(commands: int, budgets: int, seed: int) -> float:
    """Average traced bytes of one budget's state after `commands` commands over `budgets`."""
    stream = list(command_stream(commands, budgets, seed=seed))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    states = {}
    for out in build_rows(iter(stream), partitions=1):
        states.update(out.new_states.get(0, {}))
        del out
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / max(1, len(states))


def _rss_kb(pid: int) -> int:
    """Current resident set size (VmRSS) of a live process, in kB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    wanted = ("ledger_state_loads_total", "ledger_state_evictions_total",
              "ledger_state_cached_budgets", "ledger_state_cached_bytes")  # fmt: skip
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.split(" ")[0] in wanted
    }


def _label(bound: int) -> int | str:
    """A cache bound as given on the command line: a number, "unbounded" (0), "default" (-1)."""
    return bound if bound > 0 else ("unbounded" if bound == 0 else "default")


def run_once(args: argparse.Namespace, cache: int) -> dict[str, Any]:
    """Apply the seeded stream with one consumer whose cache holds `cache` budgets: its RSS
    sampled as history grows (each tenth of the stream), its peak and its end RSS."""
    url = create_database(args.database_url)
    names = prefixed_names(f"cache{uuid.uuid4().hex[:8]}")
    settings = load_settings(
        kafka_bootstrap=args.kafka_bootstrap,
        database_url=url,
        **names,
        topic_partitions=PARTITIONS,
        **workload.signing_settings(),
    )
    consumer = None
    total = args.commands
    samples: list[dict[str, float]] = []
    try:
        create_topics(settings, partitions=PARTITIONS)
        env = dict(os.environ)
        env.update({f"LEDGER_{k.upper()}": v for k, v in names.items()})
        env.update({
            "LEDGER_KAFKA_BOOTSTRAP": args.kafka_bootstrap, "LEDGER_DATABASE_URL": url,
            "LEDGER_APP_DATABASE_URL": "", "LEDGER_LOG_LEVEL": "error",
            "LEDGER_HTTP_PORT": str(args.metrics_port), **workload.signing_env(settings),
        })  # fmt: skip
        if cache >= 0:
            env["LEDGER_STATE_CACHE_BUDGETS"] = str(cache)
        else:  # the consumer's default
            env.pop("LEDGER_STATE_CACHE_BUDGETS", None)
        if args.cache_mb >= 0:
            env["LEDGER_STATE_CACHE_MB"] = str(args.cache_mb)
        else:
            env.pop("LEDGER_STATE_CACHE_MB", None)
        # Started first and fed while it runs, so its memory follows the history it has applied
        # (a stream produced in full beforehand would also fill librdkafka's fetch queue at once).
        consumer = subprocess.Popen(
            [sys.executable, "-m", "budget_ledger.entrypoints.cli", "consume"],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        started = time.monotonic()
        conn = psycopg.connect(url, autocommit=True)
        next_sample = total // 10

        def consumed() -> int:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
            ).fetchone()
            return int(row[0]) if row is not None else 0

        def sample(done: int) -> None:
            nonlocal next_sample
            while done >= next_sample > 0 and len(samples) < 10:
                samples.append({
                    "commands_applied": done,
                    "rss_mb": round(_rss_kb(consumer.pid) / 1024, 1),
                    "peak_rss_mb": round(vm_hwm_kb(consumer.pid) / 1024, 1),
                    "seconds": round(time.monotonic() - started, 1),
                })  # fmt: skip
                next_sample += total // 10

        producer = Producer(producer_config(settings))
        signer = settings_signer(settings)
        for i, command in enumerate(command_stream(total, args.budgets, seed=args.seed)):
            key = f"{command['tenant_id']}:{command['budget_id']}".encode()
            value = orjson.dumps(command)
            headers = workload.headers_for(signer, command, key, value)
            while True:
                try:
                    producer.produce(settings.topic_commands, key=key, value=value, headers=headers)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.5)
            producer.poll(0)
            if i % 20_000 == 0:
                sample(consumed())
                # Stay at most ~200k messages ahead of the consumer: RSS is the consumer's.
                while i - consumed() > 200_000 and consumer.poll() is None:
                    time.sleep(0.5)
        assert producer.flush(120) == 0, "Kafka did not take every command"
        while True:
            done = consumed()
            sample(done)
            if done >= total:
                break
            if consumer.poll() is not None or time.monotonic() - started > args.timeout:
                raise RuntimeError(f"consumer stopped or stalled at {done} messages")
            time.sleep(0.2)
        events = conn.execute("SELECT count(*) FROM ledger").fetchone()
        conn.close()
        seconds = time.monotonic() - started
        time.sleep(0.5)  # the cache gauge is set just after the last commit
        return {
            "cache_budgets": _label(cache),
            "cache_mb": _label(args.cache_mb),
            "ledger_events": events[0] if events else 0,
            "consumer_peak_rss_mb": round(vm_hwm_kb(consumer.pid) / 1024, 1),
            # After the last batch: the cached states, without the fetch queue's peak.
            "consumer_rss_end_mb": round(_rss_kb(consumer.pid) / 1024, 1),
            "seconds": round(seconds, 1),
            "commands_per_s": round(total / seconds),
            "samples": samples,
            **_metrics(args.metrics_port),
        }
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(30)
        delete_topics(settings)
        drop_database(args.database_url, url)


def main(argv: list[str] | None = None) -> int:
    """Run each cache size once and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.state_cache_rss")
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--budgets", type=int, default=50_000)
    parser.add_argument("--cache", type=int, nargs="+", default=[10_000, 0],
                        help="cache sizes (0 = unbounded, -1 = the default)")  # fmt: skip
    parser.add_argument("--cache-mb", type=int, default=-1,
                        help="LEDGER_STATE_CACHE_MB of every run (0 = no byte bound, -1 = the "
                        "default)")  # fmt: skip
    parser.add_argument("--no-trace", action="store_true",
                        help="skip the in-process bytes-per-budget measurement")  # fmt: skip
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                        help="the consumer's /metrics port")  # fmt: skip
    add_service_arguments(parser)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "commands": args.commands,
        "budgets": args.budgets,
        # Traced on a tenth of the stream (same commands per budget): tracemalloc is slow.
        "bytes_per_cached_budget": None
        if args.no_trace
        else round(bytes_per_budget(args.commands // 10, max(1, args.budgets // 10), args.seed)),
        "runs": [run_once(args, cache) for cache in args.cache],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
