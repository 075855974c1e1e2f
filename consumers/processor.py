"""One micro-batch of commands: validate, de-duplicate, decide in order, and collect the writes.

Pure apart from the look-ups it is handed (prior outcomes, budget states, settled reservations),
so the Kafka loop can retry a batch from scratch after a failed commit without side effects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import orjson

from budget_ledger.consumers.state_cache import StateCache
from budget_ledger.ledger.budget import BudgetState
from budget_ledger.ledger.chain_mac import ChainKey, event_mac
from budget_ledger.ledger.frozen import native_init, picklable
from budget_ledger.ledger.history import ReplayFailed
from budget_ledger.ledger.idempotency import classify, fingerprint
from budget_ledger.ledger.record import record
from budget_ledger.ledger.state import Reservation, compact
from budget_ledger.projections.rows import BalanceRow, ReservationRow, balance_row, reservation_row
from budget_ledger.projections.state_loading import RefKey, with_settled
from budget_ledger.schemas.commands import (
    Adjust,
    Charge,
    Command,
    CommandInvalid,
    Release,
    Reserve,
    message_too_large,
    parse_command,
)
from budget_ledger.schemas.limits import MAX_MESSAGE_BYTES
from budget_ledger.schemas.signing import PRIVILEGED, Refusal, verify

BudgetKey = tuple[str, str]
CommandKey = tuple[str, str]
# (fingerprint, event JSON) of a command already in the ledger.
PriorOutcome = tuple[str, str]
PriorLookup = Callable[[list[CommandKey]], Mapping[CommandKey, PriorOutcome]]
BudgetLoader = Callable[[list[BudgetKey]], Mapping[BudgetKey, BudgetState | ReplayFailed]]
SettledLookup = Callable[[list[RefKey]], Mapping[RefKey, Reservation]]
OutboxRow = tuple[str, bytes | None, bytes, str | None]
# The `alerts` row of one alert (migration 012): tenant, budget, sequence, type, severity,
# utilization_bp, threshold_bp, recorded_at, wire JSON.
AlertRow = tuple[str, str, int, str, str, int, int, datetime, str]
# The `dead_letters` row of a refused command whose ids could be read: tenant, command_id,
# command type (None: unparsed), error class, reason, topic, partition, offset.
DeadLetterRow = tuple[str, str, str | None, str, str, str, int, int]
# (partition, offset) of one message.
MessageKey = tuple[int, int]

INTERNAL_ERROR = "internal_error"
# A privileged command without a valid signature (the `check` header names the failed check).
UNAUTHORIZED = "unauthorized"
# Postgres refused a row this message produced (found by bisecting the batch; see poison.py).
STORAGE_REFUSED = "storage_refused"
MAX_REASON_CHARS = 1_000
# Ids echoed in a dead letter's headers are cut here (valid ones are at most 128 characters).
MAX_ID_CHARS = 256
# Where a ledger row keeps the Kafka coordinates of the command that produced it.
LEDGER_ROW_PARTITION, LEDGER_ROW_OFFSET = 14, 15


@dataclass(frozen=True, slots=True)
class Incoming:
    """A Kafka message as the processor needs it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # Kafka message timestamp (ms; the producer's create time), for latency metrics only.
    timestamp_ms: int = 0
    # Size of a value cut to MAX_MESSAGE_BYTES on arrival (0: the value is whole). Such a
    # message is refused unread, and only the cut copy is held and dead-lettered.
    original_size: int = 0
    # Kafka headers (name, value); the signature of a privileged command travels here.
    headers: tuple[tuple[str, bytes | None], ...] = ()

    # Written out: compiled, the stores are native; interpreted, `native_init` puts quick_init's
    # in its place (a frozen class cannot assign its own fields in Python).
    def __init__(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int = 0,
        original_size: int = 0,
        headers: tuple[tuple[str, bytes | None], ...] = (),
    ) -> None:
        self.partition = partition  # type: ignore[misc]
        self.offset = offset  # type: ignore[misc]
        self.key = key  # type: ignore[misc]
        self.value = value  # type: ignore[misc]
        self.timestamp_ms = timestamp_ms  # type: ignore[misc]
        self.original_size = original_size  # type: ignore[misc]
        self.headers = headers  # type: ignore[misc]

    @classmethod
    def bounded(
        cls,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ts: int,
        headers: tuple[tuple[str, bytes | None], ...] = (),
    ) -> Incoming:
        """An incoming message whose value is cut to MAX_MESSAGE_BYTES if it is larger."""
        if value is not None and len(value) > MAX_MESSAGE_BYTES:
            return cls(partition, offset, key, value[:MAX_MESSAGE_BYTES], ts, len(value), headers)
        return cls(partition, offset, key, value, ts, 0, headers)


native_init(Incoming, __file__)
picklable(Incoming)


@dataclass(slots=True)
class PartitionState:
    """What the consumer knows of one owned partition: its next offset and its budgets' state."""

    next_offset: int
    # The consumer shares one bounded cache between its partitions; the default is unbounded.
    budgets: StateCache = field(default_factory=StateCache)


@dataclass(slots=True)
class BatchOutput:
    """Everything one batch writes, plus the state it moves to once committed."""

    ledger_rows: list[tuple[object, ...]] = field(default_factory=list)
    balance_rows: list[BalanceRow] = field(default_factory=list)
    reservation_rows: list[ReservationRow] = field(default_factory=list)
    outbox_rows: list[OutboxRow] = field(default_factory=list)
    # Written in the same transaction as the ledger rows and positions, so exactly once.
    alert_rows: list[AlertRow] = field(default_factory=list)
    dead_letter_rows: list[DeadLetterRow] = field(default_factory=list)
    # partition -> (expected stored position, new position)
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)
    new_states: dict[int, dict[BudgetKey, BudgetState]] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead_letters: int = 0
    dead_letter_classes: Counter[str] = field(default_factory=Counter)

    @property
    def is_empty(self) -> bool:
        """True when the batch moved nothing (all messages were stale)."""
        return not self.positions


@dataclass(frozen=True, slots=True)
class BatchContext:
    """Names and tables the processor needs from the settings."""

    topic: str
    events_topic: str
    alerts_topic: str
    dlq_topic: str
    currencies: Mapping[str, int]
    # Active signing keys (key id -> secret) for privileged commands. None: signatures are not
    # checked, for trusted in-process input only (replay bench, fixture builder); the consumer
    # always passes its configured keys, so with none configured every privileged one is refused.
    signing_keys: Mapping[str, bytes] | None = None
    # The keyed chain's current key: each ledger row gets (mac, mac_key_id) appended (COPY it
    # with `copy_ledger_mac`). None: rows without a MAC, for `copy_ledger`.
    chain_key: ChainKey | None = None


picklable(BatchContext)


def process_batch(
    messages: Iterable[Incoming],
    partitions: Mapping[int, PartitionState],
    ctx: BatchContext,
    lookup_prior: PriorLookup,
    load_budgets: BudgetLoader,
    now: datetime | None = None,
    poisoned: Mapping[MessageKey, str] | None = None,
    lookup_settled: SettledLookup | None = None,
) -> BatchOutput:
    """Turn a batch of messages into the rows of one transaction; partitions are not mutated.

    Any exception one message causes (parse, fingerprint, rules, encoding) dead-letters that
    message only. `poisoned` names (partition, offset) of messages Postgres refused in an earlier
    attempt of this batch: they are dead-lettered (`storage_refused`) without being applied.

    Step 1: validate every message (JSON, schema, key, the signature of a privileged command)
    — invalid ones become dead letters.
    Step 2: look up the prior outcome of every command id in the ledger (one query).
    Step 3: load the budgets not in the state cache (never seen, or evicted; one query).
    With `lookup_settled`, states hold open reservations only: the settled records of the refs
    the commands name and memory lacks are fetched (one query) and merged in before deciding,
    and the states kept after the batch are compacted again. Without it (in-process callers
    that keep full states) nothing is compacted.
    Step 4: decide every command in partition order against the in-memory state.
    Step 5: collect the projection rows of every budget and reservation the batch touched.
    """
    now = now or datetime.now(UTC)
    out = BatchOutput()

    # Step 1
    valid: list[tuple[Incoming, Command, str]] = []
    for msg in messages:
        part = partitions.get(msg.partition)
        if part is None:
            continue  # revoked while the batch was being fetched
        stored, current = out.positions.get(msg.partition, (part.next_offset, part.next_offset))
        if msg.offset < current:
            continue  # already applied (a fetch from before a seek)
        out.positions[msg.partition] = (stored, msg.offset + 1)
        try:
            command = _validate(msg, ctx)
        except CommandInvalid as exc:
            _reject(out, msg, ctx, exc.error_class, exc.reason)
            continue
        except Exception as exc:  # a parser bug must not stop the partition
            _reject(out, msg, ctx, INTERNAL_ERROR, _failure("parse this message", exc))
            continue
        if ctx.signing_keys is not None and command.type in PRIVILEGED:
            checked = _authorize(msg, command, ctx.signing_keys)
            if isinstance(checked, Refusal):
                _reject(out, msg, ctx, UNAUTHORIZED, checked.reason, command, checked.check)
                continue
            command = checked
        if poisoned and (msg.partition, msg.offset) in poisoned:
            reason = poisoned[(msg.partition, msg.offset)]
            _reject(out, msg, ctx, STORAGE_REFUSED, reason, command)
            continue
        try:
            fp = fingerprint(command)
        except Exception as exc:
            _reject(
                out, msg, ctx, INTERNAL_ERROR, _failure("fingerprint this command", exc), command
            )
            continue
        valid.append((msg, command, fp))
    if not valid:
        return out

    # Step 2
    prior: dict[CommandKey, PriorOutcome] = dict(
        lookup_prior(list({(c.tenant_id, c.command_id) for _, c, _ in valid}))
    )

    # Step 3
    homes = {(c.tenant_id, c.budget_id): m.partition for m, c, _ in valid}
    missing = [k for k, p in homes.items() if k not in partitions[p].budgets]
    loaded = load_budgets(missing) if missing else {}
    settled: dict[BudgetKey, list[Reservation]] = {}
    if lookup_settled is not None:
        wanted = _unknown_refs(valid, prior, partitions, homes, loaded)
        for (tenant, budget, _), res in (lookup_settled(wanted) if wanted else {}).items():
            settled.setdefault((tenant, budget), []).append(res)

    # Step 4
    touched: dict[BudgetKey, tuple[int, BudgetState, int]] = {}  # key -> (partition, state, seq0)
    for msg, command, fp in valid:
        ckey = (command.tenant_id, command.command_id)
        verdict = classify(prior[ckey][0] if ckey in prior else None, fp)
        if verdict == "duplicate":
            # Clients retry safely: re-publish the original outcome, write nothing new.
            out.outbox_rows.append(
                (
                    ctx.events_topic,
                    msg.key,
                    prior[ckey][1].encode(),
                    _headers(("redelivered", "true")),
                )
            )
            out.outcomes[(command.type, "duplicate")] += 1
            continue
        if verdict == "conflict":
            reason = f"command_id {command.command_id!r} was already used with another payload"
            _reject(out, msg, ctx, "idempotency_conflict", reason, command)
            continue

        bkey = (command.tenant_id, command.budget_id)
        if bkey in touched:
            state = touched[bkey][1]
        else:
            found = partitions[msg.partition].budgets.get(bkey) or loaded[bkey]
            if isinstance(found, ReplayFailed):
                # Never decide against a state its history could not produce.
                reason = f"budget {bkey[0]}:{bkey[1]} cannot be loaded: {found.reason}"
                _reject(out, msg, ctx, INTERNAL_ERROR, reason, command)
                continue
            state = with_settled(found, settled[bkey]) if bkey in settled else found
        if state.opened and state.currency not in ctx.currencies:
            # History still reads with the recorded digits; new commands wait for the table.
            reason = (
                f"budget {bkey[0]}:{bkey[1]} is in {state.currency}, which is not in the "
                f"currency table (LEDGER_CURRENCIES); it was opened with {state.digits} digits"
            )
            _reject(out, msg, ctx, "unknown_currency", reason, command)
            continue
        # Everything this message produces is built before any of it is kept, so a failure
        # at any step leaves the batch as if the message had not been there.
        try:
            done = record(state, command, now, ctx.currencies)
            event, new_state, text = done.event, done.state, done.text
            row: tuple[object, ...] = (
                event.tenant_id, event.budget_id, event.sequence, event.type, event.command_id,
                fp, event.ref_id, event.currency, event.amount, event.funded, event.reserved,
                event.charged, event.available, ctx.topic, msg.partition, msg.offset, text,
                event.recorded_at, event.prev_hash, event.hash, event.reason, event.utilization_bp,
            )  # fmt: skip
            if ctx.chain_key is not None:
                row = (*row, event_mac(ctx.chain_key, event.hash), ctx.chain_key.key_id)
            wires = [orjson.dumps(a) for a in done.alert_wires]
            alerts = [(ctx.alerts_topic, msg.key, w, None) for w in wires]
            alert_rows = [
                (a.tenant_id, a.budget_id, a.sequence, a.type, a.severity, a.utilization_bp,
                 a.threshold_bp, a.recorded_at, w.decode())
                for a, w in zip(done.alerts, wires, strict=True)
            ]  # fmt: skip
        except Exception as exc:  # a bug in the rules must not stop every other budget
            _reject(out, msg, ctx, INTERNAL_ERROR, _failure("decide this command", exc), command)
            continue
        touched[bkey] = (
            msg.partition,
            new_state,
            touched[bkey][2] if bkey in touched else state.sequence,
        )
        out.ledger_rows.append(row)
        out.outbox_rows.extend(alerts)
        out.alert_rows.extend(alert_rows)
        prior[ckey] = (fp, text)
        out.outcomes[(command.type, event.reason or "accepted")] += 1

    # Step 5
    for bkey, loaded_state in loaded.items():
        if not isinstance(loaded_state, ReplayFailed):  # a failed one is tried again next time
            out.new_states.setdefault(homes[bkey], {})[bkey] = loaded_state
    changed = _collect_reservation_rows(out, touched, valid)
    for bkey, (partition, state, _) in touched.items():
        out.balance_rows.append(balance_row(state, now))
        if lookup_settled is not None:
            # Only refs merged in or moved by this batch can be settled: the rest came open.
            refs = changed.get(bkey, set()).union(r.ref_id for r in settled.get(bkey, ()))
            state = compact(state, refs)
        out.new_states.setdefault(partition, {})[bkey] = state
    return out


def _unknown_refs(
    valid: list[tuple[Incoming, Command, str]],
    prior: Mapping[CommandKey, PriorOutcome],
    partitions: Mapping[int, PartitionState],
    homes: Mapping[BudgetKey, int],
    loaded: Mapping[BudgetKey, BudgetState | ReplayFailed],
) -> list[RefKey]:
    """(tenant, budget, ref_id) named by the batch's reserve/charge/release commands that the
    budget's state does not hold: the settled ones among them are looked up."""
    wanted: dict[RefKey, None] = {}
    for _, command, _ in valid:
        ref = _ref_of(command)
        if ref is None or (command.tenant_id, command.command_id) in prior:
            continue  # no ref, or a repeated command id: it will not be decided
        bkey = (command.tenant_id, command.budget_id)
        state = partitions[homes[bkey]].budgets.get(bkey) or loaded.get(bkey)
        if isinstance(state, BudgetState) and state.sequence and ref not in state.reservations:
            wanted[(bkey[0], bkey[1], ref)] = None
    return list(wanted)


def _collect_reservation_rows(
    out: BatchOutput,
    touched: Mapping[BudgetKey, tuple[int, BudgetState, int]],
    valid: list[tuple[Incoming, Command, str]],
) -> dict[BudgetKey, set[str]]:
    """Append the rows of the reservations the batch moved; returns their refs by budget."""
    seen: set[tuple[BudgetKey, str]] = set()
    scanned: set[BudgetKey] = set()
    for _, command, _ in valid:
        bkey = (command.tenant_id, command.budget_id)
        if bkey not in touched:
            continue
        _, state, seq0 = touched[bkey]
        ref = _ref_of(command)
        if ref is None:
            if command.type == "expire_reservations" and bkey not in scanned:
                scanned.add(bkey)
                for r in state.reservations.values():
                    if r.updated_seq > seq0 and (bkey, r.ref_id) not in seen:
                        seen.add((bkey, r.ref_id))
                        out.reservation_rows.append(reservation_row(state, r))
            continue
        if (bkey, ref) in seen:
            continue
        reservation = state.reservations.get(ref)
        if reservation is not None and reservation.updated_seq > seq0:
            seen.add((bkey, ref))
            out.reservation_rows.append(reservation_row(state, reservation))
    changed: dict[BudgetKey, set[str]] = {}
    for bkey, ref in seen:
        changed.setdefault(bkey, set()).add(ref)
    return changed


#: The command types that name a reward: every wire model with a ``ref_id`` field
#: (tests/unit/test_processor.py checks this list against the models).
REF_COMMANDS: Final = (Reserve, Charge, Release)


def _ref_of(command: Command) -> str | None:
    """The reward a command names, if its type has one."""
    # Not getattr(command, "ref_id", None): a pydantic model without the field raises (and
    # catches) an AttributeError through Python code, ~2 us a call.
    return command.ref_id if isinstance(command, REF_COMMANDS) else None


def _validate(msg: Incoming, ctx: BatchContext) -> Command:
    if msg.value is None:
        raise CommandInvalid("empty", "the message has no value")
    if msg.original_size:
        raise message_too_large(msg.original_size)
    command = parse_command(msg.value, ctx.currencies)
    expected = f"{command.tenant_id}:{command.budget_id}".encode()
    if msg.key != expected:
        got = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        raise CommandInvalid(
            "key_mismatch",
            f"message key {got!r} does not match tenant_id:budget_id {expected.decode()!r}",
        )
    return command


def _authorize(msg: Incoming, command: Command, keys: Mapping[str, bytes]) -> Command | Refusal:
    """The command when its signature holds; an adjust then names the signed principal as its
    operator (the ledger records who signed, not the free-text field)."""
    verified = verify(msg.headers, msg.key, msg.value or b"", keys, command.tenant_id)
    if isinstance(verified, Refusal):
        return verified
    if isinstance(command, Adjust) and command.operator != verified.principal:
        return command.model_copy(update={"operator": verified.principal})
    return command


def _headers(*pairs: tuple[str, str]) -> str:
    return orjson.dumps([list(p) for p in pairs]).decode()


def _failure(what: str, exc: BaseException) -> str:
    return f"the ledger failed to {what}: {type(exc).__name__}: {exc}"


def _reject(
    out: BatchOutput,
    msg: Incoming,
    ctx: BatchContext,
    error_class: str,
    reason: str,
    command: Command | None = None,
    check: str | None = None,
) -> None:
    ids = (command.tenant_id, command.command_id) if command is not None else _raw_ids(msg)
    out.outbox_rows.append(_dead_letter(msg, ctx, error_class, reason, ids, check))
    if ids is not None:
        kind = command.type if command is not None else None
        out.dead_letter_rows.append(
            (_storable(ids[0]), _storable(ids[1]), kind, error_class,
             _storable(reason[:MAX_REASON_CHARS]), ctx.topic, msg.partition, msg.offset)
        )  # fmt: skip
    out.dead_letters += 1
    out.dead_letter_classes[error_class] += 1
    if command is not None:
        out.outcomes[(command.type, error_class)] += 1


def _storable(text: str) -> str:
    """`text` as Postgres text takes it (no U+0000, no lone surrogate): the dead letter of a
    message refused for such a character must not be refused for the same character."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _raw_ids(msg: Incoming) -> tuple[str, str] | None:
    """(tenant_id, command_id) of a message refused before it became a command, if readable."""
    try:
        data = orjson.loads(msg.value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    tenant, command_id = data.get("tenant_id"), data.get("command_id")
    if isinstance(tenant, str) and isinstance(command_id, str):
        return tenant[:MAX_ID_CHARS], command_id[:MAX_ID_CHARS]
    return None


def _dead_letter(
    msg: Incoming,
    ctx: BatchContext,
    error_class: str,
    reason: str,
    ids: tuple[str, str] | None = None,
    check: str | None = None,
) -> OutboxRow:
    pairs = [
        ("error_class", error_class),
        ("reason", reason[:MAX_REASON_CHARS]),
        ("original_topic", ctx.topic),
        ("original_partition", str(msg.partition)),
        ("original_offset", str(msg.offset)),
    ]
    if ids is not None:
        # Clients await an outcome by (tenant_id, command_id): these let them fail fast.
        pairs += [("tenant_id", ids[0]), ("command_id", ids[1])]
    if msg.original_size:
        pairs += [("truncated", "true"), ("original_size", str(msg.original_size))]
    if check is not None:
        pairs.append(("check", check))
    # The headers are stored as jsonb, which refuses U+0000: the dead letter of a message
    # refused for a NUL must not be refused for the same NUL.
    headers = _headers(*((k, v.replace("\x00", "\ufffd")) for k, v in pairs))
    return (ctx.dlq_topic, msg.key, msg.value or b"", headers)


def merge_states(partitions: MutableMapping[int, PartitionState], out: BatchOutput) -> int:
    """After a successful commit: move positions on, keep the batch's final budget states, then
    evict the coldest budgets beyond the cache's bounds; returns how many were evicted."""
    for partition, (_, new_offset) in out.positions.items():
        part = partitions.get(partition)
        if part is not None:
            part.next_offset = new_offset
    batch: set[BudgetKey] = set()
    for partition, states in out.new_states.items():
        part = partitions.get(partition)
        if part is not None:
            for bkey, state in states.items():
                part.budgets.put(partition, bkey, state)
            batch.update(states)
    # Every owned cache, not only those this batch wrote to: one held over its byte bound by the
    # previous batch is brought back within it now. Partitions may share one cache: evict once.
    caches = {id(part.budgets): part.budgets for part in partitions.values()}
    # The byte bound keeps the batch's own budgets even past it: a budget heavier than the whole
    # bound must not be reloaded by every batch that uses it.
    return sum(cache.evict(keep=batch) for cache in caches.values())
