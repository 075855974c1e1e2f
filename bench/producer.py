"""The benchmark's producer process: load a pre-generated message file, then produce it.

    python -m bench.producer FILE TOPIC BOOTSTRAP RESULT_JSON [--rate N] [--linger-ms MS]

Everything is read into memory before the first message is sent, so producing is only
`Producer.produce` calls. Kafka sets each message's timestamp (CreateTime) at `produce`, which
is the latency clock's start. `--rate 0` produces as fast as possible; otherwise the messages
are paced at N per second (1 ms steps). The result file records the wall-clock time (ms) of the
first and last `produce` call and of the final flush.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer

from budget_ledger.consumers.kafka_config import PARTITIONER, client_config
from budget_ledger.ledger.settings import load_settings

#: A message's headers as confluent-kafka takes them.
Headers = list[tuple[str, str | bytes | None]]


def _message(line: bytes) -> tuple[bytes, bytes, Headers | None]:
    # key TAB value [TAB headers]: a signed (privileged) command carries its headers as JSON.
    key, value, *rest = line.split(b"\t", 2)
    headers: Headers | None = [(k, v.encode()) for k, v in orjson.loads(rest[0])] if rest else None
    return key, value, headers


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.producer")
    parser.add_argument("file")
    parser.add_argument("topic")
    parser.add_argument("bootstrap")
    parser.add_argument("result")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s; 0 = unpaced")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument(
        "--mark", type=int, default=0, help="record the time just before message MARK (warm-up end)"
    )
    parser.add_argument(
        "--warmup-topic",
        default=None,
        help="produce one message here first, so the connection, topic metadata and the "
        "idempotent producer id are ready before the first timed message",
    )
    args = parser.parse_args(argv)

    messages = [_message(line) for line in Path(args.file).read_bytes().splitlines() if line]
    # The benchmark's producer speaks the ledger's transport security (LEDGER_KAFKA_* settings).
    producer = Producer(
        {
            **client_config(load_settings(kafka_bootstrap=args.bootstrap)),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": PARTITIONER,
            "linger.ms": args.linger_ms,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )
    producer.list_topics(args.topic, timeout=30)
    if args.warmup_topic:
        producer.produce(args.warmup_topic, b"warm-up")
        if producer.flush(30) != 0:
            raise SystemExit("warm-up message not delivered")
    produce, poll, topic = producer.produce, producer.poll, args.topic
    first = _now_ms()
    mark = first
    if args.rate <= 0:
        for key, value, headers in messages:
            try:
                produce(topic, value, key, headers=headers)
            except BufferError:
                poll(0.01)
                produce(topic, value, key, headers=headers)
        poll(0)
    else:
        start = time.perf_counter()
        sent = 0
        total = len(messages)
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * args.rate) + 1)
            while sent < due:
                if sent == args.mark and sent:
                    mark = _now_ms()
                key, value, headers = messages[sent]
                produce(topic, value, key, headers=headers)
                sent += 1
            poll(0)
            time.sleep(0.001)
    last = _now_ms()
    remaining = producer.flush(120)
    Path(args.result).write_bytes(
        orjson.dumps(
            {
                "count": len(messages),
                "first_ms": first,
                "mark_ms": mark,
                "last_ms": last,
                "flushed_ms": _now_ms(),
                "unflushed": remaining,
            }
        )
    )
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
