"""A Python client for upstream services: typed commands, correctly keyed, and their outcomes.

    client = LedgerClient(settings)
    ref = client.reserve("acme", "b-1", amount="5.00", currency="USD", ref_id="rw-1")
    outcome = client.await_outcome(ref, timeout=5)   # Accepted | Refused
    if isinstance(outcome, Refused): ...             # outcome.reason, e.g. "insufficient_funds"

Sends are batched: `send` queues the command (librdkafka delivers in the background); `flush()`
waits for Kafka's acknowledgements, and `await_outcome` flushes first. Outcomes are matched by
(tenant_id, command_id) — command ids are unique per tenant only. A command the ledger
dead-letters raises :class:`CommandDeadLettered` with the reason instead of timing out.
"""

from __future__ import annotations

import getpass
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import orjson
import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from budget_ledger.consumers.kafka_config import producer_config, reader_config
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.commands import Command, parse_command
from budget_ledger.schemas.signing import ANY_TENANT, PRIVILEGED, KafkaHeaders, Signer

log = structlog.get_logger("client")

CommandKey = tuple[str, str]  # (tenant_id, command_id)


def command_key(command: Command) -> bytes:
    """The message key that sends every command of a budget to one partition."""
    return f"{command.tenant_id}:{command.budget_id}".encode()


class SigningUnavailable(Exception):
    """A privileged command is to be signed but no signing key is configured."""


def settings_signer(
    settings: Settings, principal: str | None = None, tenant: str = ANY_TENANT
) -> Signer | None:
    """The signer of this process (LEDGER_SIGNING_KEY_ID), acting as `principal` (default
    LEDGER_SIGNING_PRINCIPAL, else the login name); None when no signing key is configured."""
    key_id = settings.signing_key_id
    if not key_id:
        return None
    secret = settings.signing_keys[key_id].get_secret_value().encode()
    return Signer(key_id, secret, principal or settings.signing_principal or _login(), tenant)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (e.g. a container's arbitrary uid)
        return "unknown-operator"


def signature_headers(
    signer: Signer | None, command: Command, key: bytes, raw: bytes
) -> KafkaHeaders | None:
    """The signature headers `command` needs (None for reserve/charge/release); raises
    SigningUnavailable for a privileged command without a signer."""
    if command.type not in PRIVILEGED:
        return None
    if signer is None:
        raise SigningUnavailable(
            f"{command.type} must be signed: set LEDGER_SIGNING_KEYS and LEDGER_SIGNING_KEY_ID"
        )
    return signer.headers(key, raw)


def send_raw_command(
    settings: Settings,
    raw: bytes,
    producer: Producer | None = None,
    signer: Signer | None = None,
) -> str:
    """Validate raw JSON as a command and publish it with its key, signed by `signer` (default:
    this process's signing key) when it is privileged; return the key."""
    command = parse_command(raw, settings.currencies)
    headers = signature_headers(
        signer or settings_signer(settings), command, command_key(command), raw
    )
    own = producer is None
    producer = producer or Producer(producer_config(settings))
    key = command_key(command)
    producer.produce(settings.topic_commands, key=key, value=raw, headers=headers)
    if own and producer.flush(30):
        raise TimeoutError("Kafka did not acknowledge the command within 30 s")
    return key.decode()


@dataclass(frozen=True, slots=True)
class CommandRef:
    """What `send` returns: enough to await the command's outcome."""

    tenant_id: str
    budget_id: str
    command_id: str

    @property
    def key(self) -> CommandKey:
        """The ledger's idempotency key: (tenant_id, command_id)."""
        return (self.tenant_id, self.command_id)


@dataclass(frozen=True, slots=True)
class Balances:
    """A budget's balances right after an event; money as exact Decimals, never floats."""

    funded: Decimal
    reserved: Decimal
    charged: Decimal
    available: Decimal
    utilization_pct: Decimal


@dataclass(frozen=True, slots=True)
class Outcome:
    """The ledger event that answered a command (see :class:`Accepted`, :class:`Refused`)."""

    tenant_id: str
    budget_id: str
    command_id: str
    event_type: str
    sequence: int
    balances: Balances
    ref_id: str | None
    amount: Decimal | None
    currency: str | None
    redelivered: bool  # the answer to a retried command, re-published by the ledger
    event: Mapping[str, Any]  # the whole wire event, read-only

    @property
    def accepted(self) -> bool:
        """True for :class:`Accepted`."""
        return isinstance(self, Accepted)


@dataclass(frozen=True, slots=True)
class Accepted(Outcome):
    """The command was applied (e.g. `funds_reserved`)."""


@dataclass(frozen=True, slots=True)
class Refused(Outcome):
    """The ledger refused the command (`reservation_rejected`, `command_rejected`): `reason` is
    one of the documented refusal reasons, e.g. `insufficient_funds`."""

    reason: str


class CommandDeadLettered(Exception):
    """The ledger could not take the command at all and put it on the dead-letter topic."""

    def __init__(self, error_class: str, reason: str, ref: CommandKey | None = None) -> None:
        super().__init__(f"dead-lettered ({error_class}): {reason}")
        self.error_class = error_class
        self.reason = reason
        self.ref = ref


class CommandNotDelivered(Exception):
    """Kafka refused the command (the producer's delivery report carried an error)."""


class OutcomeTimeout(TimeoutError):
    """No outcome within the timeout (is the ledger's consumer running?)."""


def outcome_from_event(event: Mapping[str, Any], redelivered: bool = False) -> Outcome:
    """The typed outcome of a decoded wire event."""
    amount = event.get("amount")
    fields: dict[str, Any] = {
        "tenant_id": event["tenant_id"],
        "budget_id": event["budget_id"],
        "command_id": event["command_id"],
        "event_type": event["type"],
        "sequence": int(event["sequence"]),
        "balances": Balances(
            funded=Decimal(event["funded"]),
            reserved=Decimal(event["reserved"]),
            charged=Decimal(event["charged"]),
            available=Decimal(event["available"]),
            utilization_pct=Decimal(event["utilization_pct"]),
        ),
        "ref_id": event.get("ref_id"),
        "amount": None if amount is None else Decimal(amount),
        "currency": event.get("currency"),
        "redelivered": redelivered,
        "event": MappingProxyType(dict(event)),
    }
    reason = event.get("reason")
    return Accepted(**fields) if reason is None else Refused(**fields, reason=str(reason))


Answer = Outcome | CommandDeadLettered | CommandNotDelivered


def wire_command(kind: str, tenant_id: str, budget_id: str, **fields: Any) -> dict[str, Any]:
    """A command's wire fields (a new dict)."""
    return {"type": kind, "tenant_id": tenant_id, "budget_id": budget_id, **fields}


def dead_letter_owner(
    headers: Mapping[str, str],
    value: bytes | None,
    commands_topic: str,
    sent_at: Mapping[tuple[int, int], CommandKey],
    offset_of: Mapping[CommandKey, tuple[int, int]],
) -> CommandKey | None:
    """Which command a dead letter is about: (tenant_id, command_id), or None when unknown.

    `sent_at`/`offset_of` map this client's own deliveries (partition, offset) <-> command.
    """
    # 1. Where the dead command was in the commands topic: exact for our own sends.
    if headers.get("original_topic") == commands_topic:
        try:
            where = (int(headers["original_partition"]), int(headers["original_offset"]))
        except (KeyError, ValueError):
            where = None
        if where is not None and where in sent_at:
            return sent_at[where]
    # 2. The ids the consumer parsed, else the ids in the original JSON.
    tenant, command_id = headers.get("tenant_id"), headers.get("command_id")
    if tenant is None or command_id is None:
        try:
            original = orjson.loads(value or b"")
            tenant, command_id = original["tenant_id"], original["command_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
    ckey = (str(tenant), str(command_id))
    # Our own command has a known offset, which did not match: this dead letter is another
    # producer's message reusing the id (e.g. an idempotency conflict), not ours.
    return None if ckey in offset_of else ckey


def _end_offset(consumer: Consumer, topic: str, partition: int, patience: float = 15.0) -> int:
    # A topic created a moment ago may not have a leader yet: that is worth a short wait.
    deadline = time.monotonic() + patience
    while True:
        try:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            return int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _text_headers(msg: Message) -> dict[str, str]:
    pairs: list[tuple[str, Any]] = list(msg.headers() or [])  # type: ignore[arg-type]
    return {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for k, v in pairs
        if v is not None
    }


class LedgerClient:
    """Publishes commands and matches their outcomes on the events and dead-letter topics.

    Thread-safe for concurrent `send`s; one thread at a time should poll (`await_outcome`);
    :class:`consumers.async_client.AsyncLedgerClient` serialises that for asyncio.
    """

    def __init__(
        self,
        settings: Settings,
        producer: Producer | None = None,
        max_tracked: int = 100_000,
        signer: Signer | None = None,
    ) -> None:
        self.settings = settings
        # Signs privileged commands (fund, adjust, ...): by default with this process's signing
        # key when it has one; upstream services hold none and send reserve/charge/release only.
        self.signer = signer or settings_signer(settings)
        self.max_tracked = max_tracked
        self._producer = producer or Producer(producer_config(settings))
        self._listener: Consumer | None = None
        self._lock = threading.Lock()
        self._pending: dict[CommandKey, bytes] = {}  # awaited command -> its message key
        self._wanted_keys: dict[bytes, int] = {}  # message key -> pending commands on it
        self._answers: dict[CommandKey, Answer] = {}
        self._sent_at: dict[tuple[int, int], CommandKey] = {}  # (partition, offset) -> command
        self._offset_of: dict[CommandKey, tuple[int, int]] = {}

    # -- sending ---------------------------------------------------------------------------

    def send(self, command: Mapping[str, Any], track: bool = True) -> CommandRef:
        """Validate and queue one command (a mapping of wire fields, left unchanged); a missing
        `command_id` gets a new UUID. Raises `CommandInvalid` before anything is sent.

        `track=False` is fire-and-forget: no outcome is kept (and no listener is started).
        A privileged command is signed; without a signer it raises SigningUnavailable."""
        fields = dict(command)
        fields.setdefault("command_id", str(uuid.uuid4()))
        raw = orjson.dumps(fields)
        parsed = parse_command(raw, self.settings.currencies)
        ref = CommandRef(parsed.tenant_id, parsed.budget_id, parsed.command_id)
        key = command_key(parsed)
        headers = signature_headers(self.signer, parsed, key, raw)
        if track:
            self.listen()
            self.watch(ref)
        self._produce(key, raw, ref.key, headers)
        return ref

    def _produce(
        self,
        key: bytes,
        raw: bytes,
        ckey: CommandKey,
        headers: KafkaHeaders | None = None,
    ) -> None:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                if ckey not in self._pending:
                    return
                if err is not None:
                    self._answers[ckey] = CommandNotDelivered(str(err))
                    return
                where = (msg.partition() or 0, msg.offset() or 0)
                self._sent_at[where] = ckey
                self._offset_of[ckey] = where

        while True:
            try:
                self._producer.produce(
                    self.settings.topic_commands,
                    key=key,
                    value=raw,
                    headers=headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # the local queue is full: let librdkafka deliver some first
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until Kafka acknowledged every queued command; TimeoutError if it did not."""
        left = self._producer.flush(timeout)
        if left:
            raise TimeoutError(f"Kafka did not acknowledge {left} command(s) within {timeout} s")

    def fund(
        self,
        tenant_id: str,
        budget_id: str,
        amount: str,
        currency: str,
        *,
        track: bool = True,
        **extra: Any,
    ) -> CommandRef:
        """Add funds to a budget."""
        command = wire_command(
            "fund", tenant_id, budget_id, amount=amount, currency=currency, **extra
        )
        return self.send(command, track)

    def reserve(
        self,
        tenant_id: str,
        budget_id: str,
        amount: str,
        currency: str,
        ref_id: str,
        *,
        track: bool = True,
        **extra: Any,
    ) -> CommandRef:
        """Hold funds for a reward about to be issued."""
        command = wire_command(
            "reserve",
            tenant_id,
            budget_id,
            amount=amount,
            currency=currency,
            ref_id=ref_id,
            **extra,
        )
        return self.send(command, track)

    def charge(
        self, tenant_id: str, budget_id: str, ref_id: str, *, track: bool = True, **extra: Any
    ) -> CommandRef:
        """The reward was redeemed: charge its reservation (optionally a smaller `amount`)."""
        command = wire_command("charge", tenant_id, budget_id, ref_id=ref_id, **extra)
        return self.send(command, track)

    def release(
        self, tenant_id: str, budget_id: str, ref_id: str, *, track: bool = True, **extra: Any
    ) -> CommandRef:
        """The reward expired or was cancelled: free its reservation."""
        command = wire_command("release", tenant_id, budget_id, ref_id=ref_id, **extra)
        return self.send(command, track)

    # -- listening -------------------------------------------------------------------------

    def listen(self) -> None:
        """Start reading the events and DLQ topics from their current ends (idempotent).

        `send` calls it before its first message, so no outcome of a later command is missed;
        call it yourself before `watch`ing a command another process sends.
        """
        if self._listener is not None:
            return
        consumer = Consumer(reader_config(self.settings, f"ledger-client-{uuid.uuid4()}"))
        assignment = []
        for topic in (self.settings.topic_events, self.settings.topic_dlq):
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                consumer.close()
                raise RuntimeError(f"cannot listen to topic {topic}: {meta.error}")
            for p in meta.partitions:
                assignment.append(TopicPartition(topic, p, _end_offset(consumer, topic, p)))
        consumer.assign(assignment)
        self._listener = consumer

    def watch(self, ref: CommandRef) -> None:
        """Keep the outcome of `ref` when it arrives (`send` does this for its own commands)."""
        key = f"{ref.tenant_id}:{ref.budget_id}".encode()
        with self._lock:
            if ref.key in self._pending:
                return
            if len(self._pending) >= self.max_tracked:
                # Sent but never awaited: the oldest tracked command is dropped, so memory
                # stays bounded for callers that only send (better: send with track=False).
                oldest = next(iter(self._pending))
                log.warning("client_untracked", tenant_id=oldest[0], command_id=oldest[1],
                            max_tracked=self.max_tracked)  # fmt: skip
                self._forget_locked(oldest)
            self._pending[ref.key] = key
            self._wanted_keys[key] = self._wanted_keys.get(key, 0) + 1

    def await_outcome(self, ref: CommandRef, timeout: float = 10.0) -> Outcome:
        """The outcome of `ref` (Accepted or Refused); raises CommandDeadLettered when the ledger
        dead-lettered it, OutcomeTimeout when nothing came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self.watch(ref)
        self.flush(max(timeout, 1.0))
        while True:
            answer = self.take(ref)
            if answer is not None:
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                self.forget(ref)
                raise OutcomeTimeout(
                    f"no outcome for command {ref.command_id!r} of tenant {ref.tenant_id!r} "
                    f"within {timeout} s"
                )
            self.poll(min(left, 0.2))

    def take(self, ref: CommandRef) -> Outcome | None:
        """The outcome of `ref` if it already arrived (then forgotten), else None; raises like
        `await_outcome` for a dead letter."""
        with self._lock:
            answer = self._answers.pop(ref.key, None)
            if answer is None:
                return None
        self.forget(ref)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def take_ready(self, ref: CommandRef) -> bool:
        """Whether the answer of `ref` has arrived (and not been taken yet)."""
        return ref.key in self._answers

    def forget(self, ref: CommandRef) -> None:
        """Stop waiting for `ref` and drop what is kept about it."""
        with self._lock:
            self._forget_locked(ref.key)

    def _forget_locked(self, ckey: CommandKey) -> None:
        key = self._pending.pop(ckey, None)
        self._answers.pop(ckey, None)
        where = self._offset_of.pop(ckey, None)
        if where is not None:
            self._sent_at.pop(where, None)
        if key is not None:
            left = self._wanted_keys.get(key, 0) - 1
            if left > 0:
                self._wanted_keys[key] = left
            else:
                self._wanted_keys.pop(key, None)

    def poll(self, timeout: float) -> int:
        """Read what arrived on the events and DLQ topics for up to `timeout` seconds; return
        how many awaited commands got their answer."""
        if self._listener is None:
            time.sleep(timeout)
            return 0
        found = 0
        for msg in self._listener.consume(1000, timeout):
            if msg.error() is not None:
                continue
            if msg.topic() == self.settings.topic_dlq:
                found += self._on_dead_letter(msg)
            else:
                found += self._on_event(msg)
        return found

    def _on_event(self, msg: Message) -> int:
        # Cheap filters first: only budgets with an awaited command are decoded at all, and when
        # the event names its command in a header, only awaited commands.
        key = msg.key()
        if key not in self._wanted_keys:
            return 0
        headers = _text_headers(msg)
        named = headers.get("command_id")
        if named is not None and isinstance(key, bytes):
            tenant = key.split(b":", 1)[0].decode("utf-8", "replace")
            if (tenant, named) not in self._pending:
                return 0
        value = msg.value()
        if not value:
            return 0
        try:
            event = orjson.loads(value)
            ckey = (event["tenant_id"], event["command_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return 0
        with self._lock:
            if ckey not in self._pending or ckey in self._answers:
                return 0
            try:
                self._answers[ckey] = outcome_from_event(
                    event, redelivered=headers.get("redelivered") == "true"
                )
            except (KeyError, ValueError, ArithmeticError) as exc:
                log.warning("client_undecodable_event", tenant_id=ckey[0], command_id=ckey[1],
                            error=str(exc))  # fmt: skip
                return 0
        return 1

    def _on_dead_letter(self, msg: Message) -> int:
        headers = _text_headers(msg)
        with self._lock:
            ckey = dead_letter_owner(
                headers, msg.value(), self.settings.topic_commands, self._sent_at, self._offset_of
            )
            if ckey is None or ckey not in self._pending or ckey in self._answers:
                return 0
            self._answers[ckey] = CommandDeadLettered(
                headers.get("error_class", "unknown"),
                headers.get("reason", "no reason given"),
                ckey,
            )
        return 1

    def close(self) -> None:
        """Flush queued commands and stop listening."""
        self._producer.flush(10)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
