"""The consumer's bounded state cache: LRU order, the bound, and identical decisions after a
budget is evicted and reloaded (from its projection rows, or its history), with only open
reservations kept in memory and settled ones looked up per batch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.replay_bench import START, command_stream, hash_partition
from budget_ledger.consumers.processor import (
    BatchContext,
    BatchOutput,
    Incoming,
    PartitionState,
    merge_states,
    process_batch,
)
from budget_ledger.consumers.state_cache import StateCache
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
    out = BatchOutput(positions={0: (0, 3), 1: (0, 2)})
    out.new_states = {
        0: {("t", "a"): _state("a"), ("t", "b"): _state("b")},
        1: {("t", "c"): _state("c")},
    }
    assert merge_states(parts, out) == 1
    assert len(cache) == 2 and ("t", "c") in cache
    assert (parts[0].next_offset, parts[1].next_offset) == (3, 2)


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
    capacity=st.integers(1, 2),
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
    tiny, tiny_ledger = _run(messages, batch, StateCache(capacity), partitions, _Ledger(True, old))
    full, full_ledger = _run(messages, batch, StateCache(), partitions)
    assert _written(tiny) == _written(full)
    assert tiny_ledger.events == full_ledger.events
    assert full_ledger.loads <= budgets  # unbounded: each budget is loaded once
    if budgets > capacity + 1 and n > 4 * budgets:
        assert tiny_ledger.loads >= full_ledger.loads


def test_an_evicted_budget_is_reloaded_from_its_history() -> None:
    commands = list(command_stream(400, 6, seed=3, tenants=1))
    messages = _messages(commands, 2)
    outs, ledger = _run(messages, 10, StateCache(1), 2)
    assert ledger.loads > 6  # budgets came back after being evicted
    full, _ = _run(messages, 10, StateCache(), 2)
    assert _written(outs) == _written(full)
