"""`bench.scaling restart`: the first command after a consumer restart on a filled database."""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import psycopg

from bench.scaling_history import HOT, PARTITIONS, _with_db
from bench.topics import delete_topics


def restart(args: argparse.Namespace) -> int:
    """The first command after a consumer restart: a consumer on fresh topics over the filled
    database is killed (SIGKILL) and started again; once the new one owns every partition, one
    command for the hot budget is produced: the time until its ledger row is committed includes
    loading that budget's state into the new process's empty cache."""
    import os
    import signal
    import subprocess
    import uuid

    from confluent_kafka import Producer

    from bench import workload
    from budget_ledger.consumers.kafka_config import producer_config
    from budget_ledger.consumers.topics import create_topics
    from budget_ledger.ledger.settings import load_settings, prefixed_names

    url = _with_db(load_settings().database_url, args.database)
    names = prefixed_names(f"restart{uuid.uuid4().hex[:8]}")
    settings = load_settings(database_url=url, **names, topic_partitions=PARTITIONS)
    create_topics(settings, partitions=PARTITIONS)
    env = dict(os.environ)
    env.update({f"LEDGER_{k.upper()}": v for k, v in names.items()})
    env.update({"LEDGER_DATABASE_URL": url, "LEDGER_APP_DATABASE_URL": "",
                "LEDGER_LOG_LEVEL": "error", **workload.signing_env(settings)})  # fmt: skip
    producer = Producer(producer_config(settings))
    conn = psycopg.connect(url, autocommit=True)

    def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "budget_ledger.entrypoints.cli", "consume"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)

    def send(n: int) -> tuple[str, float]:
        command_id = f"restart-{uuid.uuid4().hex}-{n}"
        # A reserve: not a privileged command, so it needs no signature.
        body = {"type": "reserve", "command_id": command_id, "tenant_id": HOT[0],
                "budget_id": HOT[1], "amount": "0.01", "currency": "USD",
                "ref_id": command_id}  # fmt: skip
        producer.produce(settings.topic_commands, key=f"{HOT[0]}:{HOT[1]}".encode(),
                         value=orjson.dumps(body))  # fmt: skip
        producer.flush(10)
        return command_id, time.perf_counter()

    def committed(command_id: str, since: float, timeout: float = 120) -> float:
        while time.perf_counter() - since < timeout:
            row = conn.execute(  # the idempotency guard's key: the ledger has no command index
                "SELECT 1 FROM ledger_commands WHERE tenant_id = %s AND command_id = %s",
                (HOT[0], command_id),
            ).fetchone()
            if row is not None:
                return (time.perf_counter() - since) * 1000
            time.sleep(0.002)
        raise RuntimeError(f"{command_id} not committed within {timeout} s")

    def owns_all(old: frozenset[str] = frozenset(), timeout: float = 120) -> frozenset[str]:
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        from budget_ledger.consumers.kafka_config import admin_config

        admin = AdminClient(admin_config(settings))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            group = settings.consumer_group
            desc = admin.describe_consumer_groups([group])[group].result(10)
            # A killed member keeps its partitions until its session times out: wait for the
            # new member to own them all.
            members = frozenset(m.member_id for m in desc.members)
            owned = sum(len(m.assignment.topic_partitions) for m in desc.members)
            if (
                desc.state == ConsumerGroupState.STABLE
                and owned == PARTITIONS
                and not members & old
            ):
                time.sleep(1.0)  # the assignment callback (seek to the stored position) runs
                return members
            time.sleep(0.2)
        raise RuntimeError("the consumer did not get its partitions")

    consumer = start()
    try:
        members = owns_all()
        warm = committed(*send(0))
        print(f"first consumer: first command for {HOT[0]}:{HOT[1]} committed {warm:.0f} ms "
              "after it was produced")  # fmt: skip
        for run in range(1, args.runs + 1):
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
            restarted = time.perf_counter()
            consumer = start()
            members = owns_all(members)
            first = committed(*send(run))
            again = committed(*send(run + 1000))
            whole = (time.perf_counter() - restarted) * 1000
            print(f"restart {run}: first command for {HOT[0]}:{HOT[1]} committed {first:.0f} ms "
                  f"after it was produced (the next one {again:.0f} ms; restart to both "
                  f"committed {whole:.0f} ms, including the group rebalance)")  # fmt: skip
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        conn.close()
        delete_topics(settings)
    return 0
