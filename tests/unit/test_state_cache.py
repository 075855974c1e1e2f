"""The consumer's bounded state cache: LRU order, the bound, and identical decisions after a
budget is evicted and reloaded (from its projection rows, or its history), with only open
reservations kept in memory and settled ones looked up per batch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import immutables
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bench.replay_bench import START, command_stream, hash_partition
from budget_ledger.consumers.processor import (
    BatchContext,
    BatchOutput,
    Incoming,
    PartitionState,
    merge_states,
    process_batch,
)
from budget_ledger.consumers.state_cache import (
    BYTES_PER_RESERVATION,
    StateCache,
    estimated_bytes,
)
from budget_ledger.ledger.budget import BudgetState, initial_state
from budget_ledger.ledger.history import ReplayFailed, replay
from budget_ledger.ledger.state import Reservation, ReservationStatus, compact
from budget_ledger.projections.state_loading import reservation_from_row, state_from_projection

pytestmark = pytest.mark.unit

CTX = BatchContext("cmd", "events", "alerts", "dlq", {"USD": 2, "ZWG": 2})
Key = tuple[str, str]


def _state(budget: str, sequence: int = 0) -> BudgetState:
    return replace(initial_state("t", budget), sequence=sequence)


def test_the_least_recently_put_budget_is_evicted_first() -> None:
    cache = StateCache(2)
    cache.put(0, ("t", "a"), _state("a"))
    cache.put(0, ("t", "b"), _state("b"))
    cache.put(1, ("t", "a"), _state("a", 3))  # used again: b is now the coldest
    cache.put(1, ("t", "c"), _state("c"))
    assert cache.evict() == 1
    assert list(cache) == [("t", "a"), ("t", "c")]
    state = cache.get(("t", "a"))
    assert state is not None and state.sequence == 3
    assert cache.get(("t", "b")) is None and ("t", "b") not in cache


def test_lookups_do_not_reorder_and_puts_never_evict_by_themselves() -> None:
    cache = StateCache(1)
    cache.put(0, ("t", "a"), _state("a"))
    cache.put(0, ("t", "b"), _state("b"))
    assert len(cache) == 2  # a batch may hold more than the bound until its commit
    assert cache.get(("t", "a")) is not None
    assert cache.evict() == 1
    assert list(cache) == [("t", "b")]  # the get of a did not make it recent


def test_the_bound_holds_after_every_eviction_and_zero_is_unbounded() -> None:
    bounded, unbounded = StateCache(3), StateCache(0)
    for i in range(50):
        for cache in (bounded, unbounded):
            cache.put(i % 4, ("t", f"b{i}"), _state(f"b{i}"))
            cache.evict()
        assert len(bounded) == min(i + 1, 3)
    assert len(unbounded) == 50 and unbounded.evict() == 0


def test_a_partition_is_dropped_alone() -> None:
    cache = StateCache()
    for i in range(6):
        cache.put(i % 2, ("t", f"b{i}"), _state(f"b{i}"))
    assert cache.drop_partition(1) == 3
    assert list(cache) == [("t", "b0"), ("t", "b2"), ("t", "b4")]
    cache.clear()
    assert len(cache) == 0


def test_merge_states_keeps_a_shared_cache_within_its_bound() -> None:
    cache = StateCache(2)
    parts = {0: PartitionState(0, cache), 1: PartitionState(0, cache)}
    cache.put(1, ("t", "old"), _state("old"))
    out = BatchOutput(positions={0: (0, 3), 1: (0, 2)})
    out.new_states = {0: {("t", "a"): _state("a")}, 1: {("t", "c"): _state("c")}}
    assert merge_states(parts, out) == 1
    assert list(cache) == [("t", "a"), ("t", "c")]
    assert (parts[0].next_offset, parts[1].next_offset) == (3, 2)


def test_the_byte_bound_never_evicts_the_batch_just_committed_but_the_count_bound_does() -> None:
    heavy = _with_reservations("h", 50)
    cache = StateCache(0, estimated_bytes(heavy) - 1)  # one budget over the byte bound
    parts = {0: PartitionState(0, cache)}
    cache.put(0, ("t", "old"), _state("old"))
    out = BatchOutput(positions={0: (0, 3)})
    out.new_states = {0: {("t", "h"): heavy}}
    assert merge_states(parts, out) == 1  # only the budget the batch did not use
    assert list(cache) == [("t", "h")] and cache.over_bound()
    assert cache.evict() == 1 and len(cache) == 0 and cache.estimated_bytes == 0
    counted = StateCache(2)  # a count stays a hard bound, as LEDGER_STATE_CACHE_BUDGETS was
    for name in "abc":
        counted.put(0, ("t", name), _state(name))
    assert counted.evict(keep={("t", k) for k in "abc"}) == 1 and len(counted) == 2


def _with_reservations(budget: str, n: int, sequence: int = 0) -> BudgetState:
    held = immutables.Map(
        {
            f"r{i}": Reservation(f"r{i}", 100, ReservationStatus.RESERVED, 0, None, f"c{i}", i, i)
            for i in range(n)
        }
    )
    return replace(_state(budget, sequence), reservations=held)


def test_the_byte_bound_counts_open_reservations() -> None:
    light, heavy = _with_reservations("a", 0), _with_reservations("b", 5)
    assert estimated_bytes(heavy) == estimated_bytes(light) + 5 * BYTES_PER_RESERVATION
    cache = StateCache(0, 3 * estimated_bytes(light))  # room for 3 light budgets
    for name in "xyz":
        cache.put(0, ("t", name), _with_reservations(name, 0))
    assert cache.evict() == 0 and len(cache) == 3
    cache.put(0, ("t", "b"), heavy)  # one more budget, carrying reservations: 3 go
    assert cache.evict() == 3 and list(cache) == [("t", "b")]
    cache.put(0, ("t", "b"), _with_reservations("b", 1, 9))  # settled: lighter, weight follows
    assert cache.estimated_bytes == estimated_bytes(_with_reservations("b", 1))


class CacheMachine(RuleBasedStateMachine):
    """Random puts (states of 0-6 reservations), evictions, partition drops and clears on a
    cache of 1-3 budgets and/or a few KB, against a plain model: LRU order, the running byte
    total, the count bound after every eviction, and the byte bound except for kept budgets."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = StateCache()
        self.model: dict[Key, tuple[int, BudgetState]] = {}  # insertion order = use order

    @initialize(capacity=st.integers(0, 3), kb=st.sampled_from([0, 2, 3, 5]))
    def make(self, capacity: int, kb: int) -> None:
        self.cache = StateCache(capacity, kb * 1024)

    @rule(part=st.integers(0, 2), name=st.sampled_from("abcdef"), held=st.integers(0, 6))
    def put(self, part: int, name: str, held: int) -> None:
        state = _with_reservations(name, held)
        self.cache.put(part, ("t", name), state)
        self.model.pop(("t", name), None)
        self.model[("t", name)] = (part, state)

    @rule(keep=st.sets(st.sampled_from("abcdef"), max_size=3))
    def evict(self, keep: set[str]) -> None:
        kept = {("t", k) for k in keep}
        dropped = self.cache.evict(keep=kept)
        cap, max_bytes = self.cache.capacity, self.cache.max_bytes
        strict = max(0, len(self.model) - cap) if cap is not None else 0
        for i, key in enumerate(list(self.model)[:dropped]):
            assert i < strict or key not in kept  # past the count, kept budgets stay
            del self.model[key]
        assert cap is None or len(self.model) <= cap
        if max_bytes is not None and self._bytes() > max_bytes:
            assert next(iter(self.model)) in kept  # stopped only at a kept budget

    @rule(part=st.integers(0, 2))
    def drop(self, part: int) -> None:
        gone = [k for k, (p, _) in self.model.items() if p == part]
        assert self.cache.drop_partition(part) == len(gone)
        for key in gone:
            del self.model[key]

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()

    def _bytes(self) -> int:
        return sum(estimated_bytes(s) for _, s in self.model.values())

    @invariant()
    def agrees(self) -> None:
        assert list(self.cache) == list(self.model)
        assert self.cache.estimated_bytes == self._bytes()
        for key, (_, state) in self.model.items():
            assert self.cache.get(key) is state


CacheMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_the_cache_machine = CacheMachine.TestCase


RefKey = tuple[str, str, str]


class _Ledger:
    """The rows committed so far, with the look-ups the consumer runs against Postgres: prior
    outcomes, budget states from the projection rows (`compacted`; a row whose snapshot columns
    are cleared, as before migration 007, is replayed) or replayed (not `compacted`), and the
    settled reservations among the refs a batch names."""

    def __init__(self, compacted: bool = False, no_snapshot: frozenset[Key] = frozenset()) -> None:
        self.events: dict[Key, list[str]] = {}
        self.prior: dict[Key, tuple[str, str]] = {}
        self.balances: dict[Key, tuple[object, ...]] = {}
        self.reservations: dict[RefKey, tuple[object, ...]] = {}
        self.compacted, self.no_snapshot = compacted, no_snapshot
        self.loads = self.settled_lookups = 0

    def commit(self, out: BatchOutput) -> None:
        for row in out.ledger_rows:
            tenant, budget, fp, text = str(row[0]), str(row[1]), str(row[5]), str(row[16])
            self.events.setdefault((tenant, budget), []).append(text)
            self.prior[(tenant, str(row[4]))] = (fp, text)
        for row in out.balance_rows:
            key = (str(row[0]), str(row[1]))
            self.balances[key] = row[:-5] + (None,) * 5 if key in self.no_snapshot else row
        for row in out.reservation_rows:
            self.reservations[(str(row[0]), str(row[1]), str(row[2]))] = row

    def lookup_prior(self, keys: list[Key]) -> Mapping[Key, tuple[str, str]]:
        return {k: self.prior[k] for k in keys if k in self.prior}

    def load(self, keys: list[Key]) -> Mapping[Key, BudgetState | ReplayFailed]:
        self.loads += len(keys)
        found: dict[Key, BudgetState | ReplayFailed] = {}
        for key in keys if self.compacted else ():
            if key in self.balances:
                opened = [
                    r[2:] for (t, b, _), r in self.reservations.items()
                    if (t, b) == key and r[3] == ReservationStatus.RESERVED.value
                ]  # fmt: skip
                state = state_from_projection(self.balances[key], opened)
                if state is not None:
                    found[key] = state
        rows = [(t, b, text) for t, b in keys if (t, b) not in found
                for text in self.events.get((t, b), [])]  # fmt: skip
        for r in replay(rows):
            found[(r.tenant_id, r.budget_id)] = r if isinstance(r, ReplayFailed) or not (
                self.compacted) else compact(r)  # fmt: skip
        return {k: found.get(k, initial_state(*k)) for k in keys}

    def lookup_settled(self, keys: list[RefKey]) -> Mapping[RefKey, Reservation]:
        self.settled_lookups += 1
        rows = {k: self.reservations[k] for k in keys if k in self.reservations}
        return {
            k: reservation_from_row(r[2:])
            for k, r in rows.items()
            if r[3] != ReservationStatus.RESERVED.value
        }


def _run(
    messages: list[Incoming],
    batch: int,
    cache: StateCache,
    partitions: int,
    ledger: _Ledger | None = None,
) -> tuple[list[BatchOutput], _Ledger]:
    """The consumer's loop without Kafka or Postgres: decide, 'commit', merge, per batch. A
    `compacted` ledger runs as the consumer does (open reservations only, settled looked up)."""
    ledger = ledger or _Ledger()
    parts = {p: PartitionState(0, cache) for p in range(partitions)}
    outs = []
    now = START
    settled = ledger.lookup_settled if ledger.compacted else None
    for i in range(0, len(messages), batch):
        out = process_batch(
            messages[i : i + batch], parts, CTX, ledger.lookup_prior, ledger.load, now,
            lookup_settled=settled,
        )  # fmt: skip
        ledger.commit(out)
        merge_states(parts, out)
        if cache.capacity is not None:
            assert len(cache) <= cache.capacity
        if cache.over_bound():  # only the batch just committed may hold it over its byte bound
            assert next(iter(cache)) in {k for states in out.new_states.values() for k in states}
        if ledger.compacted:
            for key in cache:
                held = cache.get(key)
                assert held is not None and held == compact(held)  # only open ones in memory
        outs.append(out)
        now += timedelta(seconds=1)
    return outs, ledger


def _messages(commands: Iterable[dict[str, Any]], partitions: int) -> list[Incoming]:
    offsets = dict.fromkeys(range(partitions), 0)
    out = []
    for cmd in commands:
        key = f"{cmd['tenant_id']}:{cmd['budget_id']}".encode()
        part = hash_partition(key, partitions)
        out.append(Incoming(part, offsets[part], key, orjson.dumps(cmd)))
        offsets[part] += 1
    return out


def _written(outs: list[BatchOutput]) -> list[Any]:
    return [
        (o.ledger_rows, o.balance_rows, o.reservation_rows, o.outbox_rows, o.outcomes) for o in outs
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(20, 250),
    budgets=st.integers(2, 8),
    capacity=st.integers(0, 2),
    kb=st.sampled_from([0, 2, 4]),
    batch=st.integers(1, 40),
    partitions=st.integers(1, 3),
    redeliver=st.lists(st.integers(0, 249), max_size=8),
    reuse=st.lists(st.integers(0, 249), max_size=12),
    no_snapshot=st.sets(st.integers(0, 7), max_size=3),
)
def test_a_tiny_cache_decides_exactly_like_an_unbounded_one(
    seed: int,
    n: int,
    budgets: int,
    capacity: int,
    kb: int,
    batch: int,
    partitions: int,
    redeliver: list[int],
    reuse: list[int],
    no_snapshot: set[int],
) -> None:
    commands = list(command_stream(n, budgets, seed=seed, tenants=2))
    # Client retries of earlier commands, long after their budget may have been evicted.
    commands += [commands[i] for i in redeliver if i < len(commands)]
    # New commands naming earlier refs (settled or open): duplicate_ref, reservation_not_active.
    commands += [
        {**commands[i], "command_id": f"reuse-{j}"}
        for j, i in enumerate(reuse)
        if i < len(commands) and "ref_id" in commands[i]
    ]
    messages = _messages(commands, partitions)
    # Budgets whose balance rows lack the snapshot columns (written before migration 007).
    old = frozenset((f"tenant-{i % 2}", f"budget-{i}") for i in no_snapshot)
    # Bounded by 1-2 budgets, or by a few KB of estimated state (a budget weighs >= 1.1 KB).
    tiny_cache = StateCache(capacity, kb * 1024) if capacity or kb else StateCache(1)
    tiny, tiny_ledger = _run(messages, batch, tiny_cache, partitions, _Ledger(True, old))
    full, full_ledger = _run(messages, batch, StateCache(), partitions)
    assert _written(tiny) == _written(full)
    assert tiny_ledger.events == full_ledger.events
    assert full_ledger.loads <= budgets  # unbounded: each budget is loaded once
    if capacity and budgets > capacity + 1 and n > 4 * budgets:
        assert tiny_ledger.loads >= full_ledger.loads


def test_an_evicted_budget_is_reloaded_from_its_history() -> None:
    commands = list(command_stream(400, 6, seed=3, tenants=1))
    messages = _messages(commands, 2)
    outs, ledger = _run(messages, 10, StateCache(1), 2)
    assert ledger.loads > 6  # budgets came back after being evicted
    full, _ = _run(messages, 10, StateCache(), 2)
    assert _written(outs) == _written(full)
