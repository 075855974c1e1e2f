"""Hypothesis fuzzing through the real consumer: garbage and near-valid commands among valid ones.

One `budget-ledger consume` process and one `relay` process (children) on the test's own topics
and database. Each example is a batch of messages: valid commands, random bytes, and valid
commands with one thing broken (wrong types, huge numbers, extreme timestamps, control and format
characters, duplicate keys, unknown fields, wrong message keys, deep or huge metadata). Asserted:
the consumer never dies; every valid command is applied exactly once, at its own offset; every
message sent is accounted for by its (partition, offset) - a ledger event or a dead letter,
never both, never neither.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings
from tests.integration.chaos_support import Processes, consumed_messages, query, read_all
from tests.integration.support import signed_headers

pytestmark = pytest.mark.integration

TENANT = "fz"
BUDGETS = ("f0", "f1", "f2")
# (key, value, command_id of a valid command or None)
Message = tuple[bytes | None, bytes, str | None]

SPECIAL_STRINGS = (
    "",
    " ",
    "\u0000",
    "a\u0000b",
    "\u0007\u001b[31m",
    "\u200b",
    "\u202eevil",
    "\ufeff",
    "\uff1a",
    "fz:f0",
    "x" * 300,
    "é" * 70,
    "\U0001d54f",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-23:59",
    "1970-01-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2025-01-01T00:00:00",
    "999999999999999.99",
    "99999999999999999999999999999999",
    "999999999999999.9999",
    "-1.00",
    "0.00",
    "1e3",
    "NaN",
    "Infinity",
    "0x10",
    "1.001",
    " 1.00",
    "\uff11.\uff10\uff10",
)
STRINGS = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8", categories=("Cc", "Cf", "Zs", "Co", "Mn")), max_size=8),
)
ANY_VALUE = st.one_of(
    STRINGS,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
TIMESTAMPS = st.one_of(
    st.sampled_from(SPECIAL_STRINGS[13:18]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        ("0001-01-01T00:00:00-23:59", "9999-12-31T23:59:59+14:00", "2200-01-01T00:00:00Z")
    ),
)
AMOUNTS = st.one_of(
    st.sampled_from(SPECIAL_STRINGS[18:]),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
)
METADATA = st.recursive(
    st.one_of(
        STRINGS, st.integers(min_value=-(2**63), max_value=2**63 - 1), st.none(), st.booleans()
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(STRINGS, inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ("command_id", "type", "tenant_id", "budget_id", "amount", "currency", "ref_id",
          "issued_at", "expires_at", "metadata")  # fmt: skip


def _valid(kind: str, budget: str, n: int) -> dict[str, Any]:
    cid = f"v-{uuid.uuid4().hex}"
    c: dict[str, Any] = {"command_id": cid, "type": kind, "tenant_id": TENANT, "budget_id": budget}
    if kind == "fund":
        c.update(amount=f"{n % 500 + 1}.{n % 100:02d}", currency="USD")
    elif kind == "reserve":
        c.update(amount=f"{n % 40 + 1}.00", currency="USD", ref_id=f"r-{cid}")
    else:  # release of an unknown ref: a refusal, still exactly one ledger event
        c.update(ref_id=f"r-{n}")
    return c


KINDS = st.sampled_from(("fund", "reserve", "release"))


def _key(c: dict[str, Any]) -> bytes:
    return f"{c['tenant_id']}:{c['budget_id']}".encode()


@st.composite
def valid_message(draw: st.DrawFn) -> Message:
    c = _valid(draw(KINDS), draw(st.sampled_from(BUDGETS)), draw(st.integers(0, 10_000)))
    return (_key(c), orjson.dumps(c), c["command_id"])


DEEP = "__deep_metadata__"


@st.composite
def broken_message(draw: st.DrawFn) -> Message:
    c = _valid(draw(KINDS), draw(st.sampled_from(BUDGETS)), draw(st.integers(0, 10_000)))
    c["command_id"] = f"m-{uuid.uuid4().hex}"  # never the id of a valid command
    key: bytes | None = _key(c)
    how = draw(st.sampled_from((
        "bytes", "field", "drop", "unknown", "dup_key", "wrong_key", "deep", "huge", "surrogate",
        "truncate", "not_object", "id_chars", "timestamp", "amount", "metadata", "configure",
    )))  # fmt: skip
    if how == "bytes":
        return (draw(st.one_of(st.none(), st.binary(max_size=20))), draw(st.binary(max_size=300)),
                None)  # fmt: skip
    if how == "field":
        field = draw(st.sampled_from(FIELDS))
        c[field] = draw(ANY_VALUE)
        if field == "command_id":  # two equal payloads under one id would be a silent retry
            c["metadata"] = {"u": uuid.uuid4().hex}
    elif how == "drop":
        c.pop(draw(st.sampled_from(("command_id", "type", "tenant_id", "budget_id", "amount"))),
              None)  # fmt: skip
    elif how == "unknown":
        c[draw(st.text(min_size=1, max_size=10))] = draw(ANY_VALUE)
    elif how == "wrong_key":
        key = draw(st.sampled_from((None, b"", b"fz:other", b"FZ:f0", b"fz:f0 ", b"fz\x00:f0")))
    elif how == "deep":
        c["metadata"] = DEEP
    elif how == "huge":
        c["metadata"] = {"blob": "x" * draw(st.sampled_from((9_000, 70_000, 400_000)))}
    elif how == "timestamp":
        c[draw(st.sampled_from(("issued_at", "expires_at")))] = draw(TIMESTAMPS)
    elif how == "amount":
        c["amount"] = draw(AMOUNTS)
    elif how == "metadata":
        c["metadata"] = draw(st.dictionaries(STRINGS, METADATA, max_size=5))
    elif how == "configure":  # a cap far below what is already reserved
        cap = draw(st.sampled_from(("0.01", "0.00", "1.00")))
        c = {"command_id": c["command_id"], "type": "configure_budget", "tenant_id": TENANT,
             "budget_id": c["budget_id"], "hard_cap": cap}  # fmt: skip
    elif how == "id_chars":
        field = draw(st.sampled_from(("command_id", "ref_id", "tenant_id", "budget_id")))
        c[field] = f"{c.get(field, 'x')}{draw(STRINGS)}"
        key = _key(c) if field in ("tenant_id", "budget_id") and draw(st.booleans()) else key
    raw = _encode(c, draw)
    if how == "deep":  # written by hand: no encoder nests 2,000 levels
        depth = draw(st.sampled_from((9, 64, 300, 2000)))
        raw = raw.replace(b'"' + DEEP.encode() + b'"', b'{"a":' * depth + b'"deep"' + b"}" * depth)
    if how == "dup_key":
        dup = draw(st.sampled_from(("tenant_id", "amount", "command_id", "type")))
        raw = raw[:-1] + b',"' + dup.encode() + b'":"evil"}'
    elif how == "surrogate":
        raw = raw[:-1] + b',"metadata":{"s":"\\ud800"}}'
    elif how == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "not_object":
        raw = draw(st.sampled_from((b"[]", b"null", b"1", b'"fund"', b"{}", b"[" * 5000)))
    return (key, raw, None)


def _encode(c: dict[str, Any], draw: st.DrawFn) -> bytes:
    try:
        return orjson.dumps(c)
    except (orjson.JSONEncodeError, TypeError):
        # Values orjson will not write (integers beyond 64 bits, over-deep nesting): by hand.
        import json

        return json.dumps(c, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


HUGE_FUND = {"type": "fund", "tenant_id": TENANT, "budget_id": "f0", "amount": "999999999999999.99",
             "currency": "USD"}  # fmt: skip


@st.composite
def batches(draw: st.DrawFn) -> list[Message]:
    """Valid and broken messages mixed; sometimes a burst of 100 maximal funds on one budget
    (enough to pass any 64-bit balance)."""
    batch = draw(st.lists(st.one_of(valid_message(), broken_message()), min_size=30, max_size=80))
    if draw(st.integers(0, 9)) == 0:
        for _ in range(100):
            c = {"command_id": f"m-{uuid.uuid4().hex}", **HUGE_FUND}
            batch.insert(draw(st.integers(0, len(batch))), (_key(c), orjson.dumps(c), None))
    return batch


class Sender:
    """One idempotent producer; remembers where each message landed."""

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
        self.topic = settings.topic_commands
        self.settings = settings
        self.landed: dict[tuple[int, int], Message] = {}

    def send(self, messages: list[Message]) -> list[tuple[int, int]]:
        """Produce `messages` in order; return their (partition, offset)."""
        coords: list[tuple[int, int] | None] = [None] * len(messages)

        def report(i: int) -> Any:
            def cb(err: Any, msg: Any) -> None:
                assert err is None, f"message {i} not delivered: {err}"
                coords[i] = (msg.partition(), msg.offset())

            return cb

        for i, (key, value, _cid) in enumerate(messages):
            headers = signed_headers(self.settings, key, value)
            self.producer.produce(
                self.topic, key=key, value=value, headers=headers, on_delivery=report(i)
            )
            self.producer.poll(0)
        assert self.producer.flush(60) == 0
        done = [c for c in coords if c is not None]
        assert len(done) == len(messages), "a delivery report is missing"
        self.landed.update(zip(done, messages, strict=True))
        return done


def _stuck_message(settings: Settings, sender: Sender) -> str:
    """The first unconsumed message of each partition (the failing batch starts there)."""
    rows = query(settings.database_url, "SELECT partition, next_offset FROM consumer_positions")
    out = []
    for partition, offset in rows:
        msg = sender.landed.get((partition, offset))
        if msg is not None:
            out.append(f"partition {partition} offset {offset}: key={msg[0]!r} "
                       f"value={msg[1][:300]!r}{'...' if len(msg[1]) > 300 else ''}")  # fmt: skip
    return "\n".join(out) or "(no unconsumed message found)"


def test_fuzzed_messages_never_stop_the_consumer_and_are_all_accounted_for(
    settings: Settings, tmp_path: Path
) -> None:
    create_topics(settings)
    procs = Processes(settings, tmp_path)
    procs.start("consumer", "consume")
    procs.start("relay", "relay")
    sender = Sender(settings)
    valid: dict[str, tuple[int, int]] = {}
    try:
        opening = [
            {"command_id": f"open-{b}", "type": "open_budget", "tenant_id": TENANT,
             "budget_id": b, "currency": "USD", "period": "rolling"}
            for b in BUDGETS
        ]  # fmt: skip
        sent = sender.send([(_key(c), orjson.dumps(c), c["command_id"]) for c in opening])
        for c, where in zip(opening, sent, strict=True):
            valid[c["command_id"]] = where

        @hsettings(
            max_examples=40,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),  # a dead consumer cannot be shrunk against
            suppress_health_check=list(HealthCheck),
        )
        @given(batch=batches())
        def one_batch(batch: list[Message]) -> None:
            coords = sender.send(batch)
            for (_k, _v, cid), where in zip(batch, coords, strict=True):
                if cid is not None:
                    valid[cid] = where
            total = len(sender.landed)
            deadline = time.monotonic() + 60
            while consumed_messages(settings.database_url) < total:
                assert procs.alive("consumer"), (
                    "the consumer died; unconsumed message(s):\n"
                    + _stuck_message(settings, sender) + "\n" + procs.tails(30)
                )  # fmt: skip
                assert time.monotonic() < deadline, (
                    "the consumer stopped making progress; unconsumed message(s):\n"
                    + _stuck_message(settings, sender) + "\n" + procs.tails(30)
                )  # fmt: skip
                time.sleep(0.05)
            assert procs.alive("consumer"), procs.tails(30)

        one_batch()

        total = len(sender.landed)
        ledger = {
            (int(p), int(o)): cid
            for p, o, cid in query(settings.database_url,
                                   "SELECT kafka_partition, kafka_offset, command_id FROM ledger")
        }  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            dlq = {
                (int(h["original_partition"]), int(h["original_offset"])): h.get("error_class")
                for h in (
                    {k: v.decode() for k, v in m.headers() or []}
                    for m in read_all(settings.kafka_bootstrap, settings.topic_dlq)
                )
            }
            if len(ledger) + len(dlq) >= total or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert procs.alive("consumer") and procs.alive("relay"), procs.tails(30)
    finally:
        procs.stop_all()

    # Every valid command exactly once, at the offset it was sent to.
    by_id = {cid: where for where, cid in ledger.items()}
    assert len(by_id) == len(ledger), "a command id appears twice in the ledger"
    wrong = {
        cid: (where, by_id.get(cid)) for cid, where in valid.items() if by_id.get(cid) != where
    }
    assert not wrong, f"valid commands not applied exactly once at their offset: {wrong}"
    # Every message: a ledger event or a dead letter, never both, never neither.
    both = set(ledger) & set(dlq)
    assert not both, f"both applied and dead-lettered: {sorted(both)[:5]}"
    unaccounted = set(sender.landed) - set(ledger) - set(dlq)
    assert not unaccounted, "messages neither applied nor dead-lettered: " + "; ".join(
        f"{c}: {sender.landed[c][0]!r} {sender.landed[c][1][:200]!r}"
        for c in sorted(unaccounted)[:5]
    )
    assert len(ledger) + len(dlq) == total
    print(
        f"\nfuzz: {total} messages, {len(valid)} valid, {len(ledger)} applied, "
        f"{len(dlq)} dead-lettered by class {dict(sorted(_count(dlq.values()).items()))}"
    )


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out
