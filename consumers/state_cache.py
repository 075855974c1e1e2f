"""A bounded, least-recently-used cache of budget states, one per consumer process.

The consumer keeps the state of every budget it decides for; without a bound that grows with
every budget ever seen. Past `capacity` budgets, or past `max_bytes` of estimated state, the
coldest budgets are dropped and reloaded on demand by the batch's one loader query. Only
committed states are ever put here (`merge_states` runs after the batch's transaction), so an
evicted budget reloads exactly as it was, and nothing the current batch touched can be evicted
before its commit.

The byte bound exists because a budget's state is not of a fixed size: it carries its open
reservations (and monitors), so a count bound alone lets memory grow as reservations pile up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator

from budget_ledger.ledger.budget import BudgetState

BudgetKey = tuple[str, str]

# Estimated resident bytes of a cached state (tracemalloc, CPython 3.11; docs/scaling.md): an
# opened budget with its config, hash and the cache's own entry ~1 KB; each open reservation
# (its map node, record, ref_id, command_id and integers) ~300-350 B, plus ~100 B when it
# expires; a monitor ~250 B. Rounded up: the bound should hold, not the estimate be exact.
BYTES_PER_BUDGET = 1_100
BYTES_PER_RESERVATION = 360
BYTES_PER_EXPIRY = 110
BYTES_PER_MONITOR = 260


def estimated_bytes(state: BudgetState) -> int:
    """The memory one cached state takes, estimated in O(1) from its sizes (no traversal)."""
    return (
        BYTES_PER_BUDGET
        + BYTES_PER_RESERVATION * len(state.reservations)
        + BYTES_PER_EXPIRY * len(state.expiring)
        + BYTES_PER_MONITOR * len(state.monitors)
    )


class StateCache:
    """Budget states by (tenant, budget), oldest use first, bounded by `capacity` budgets and by
    `max_bytes` of estimated state (each None or 0 = no such bound).

    One cache serves all partitions of a consumer (the bound is per process, which is what
    memory is); each entry remembers its partition so a revoked partition's budgets can be
    dropped. Lookups do not reorder: `process_batch` must not mutate state, and every budget a
    committed batch touched is `put` again, which marks it recently used.
    """

    __slots__ = ("_entries", "_weight", "capacity", "max_bytes")

    def __init__(self, capacity: int | None = None, max_bytes: int | None = None) -> None:
        self.capacity = capacity or None
        self.max_bytes = max_bytes or None
        self._entries: OrderedDict[BudgetKey, tuple[int, BudgetState, int]] = OrderedDict()
        self._weight = 0  # sum of the entries' estimated bytes, kept as they come and go

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[BudgetKey]:
        return iter(self._entries)

    @property
    def estimated_bytes(self) -> int:
        """Estimated bytes of all cached states (`estimated_bytes` summed)."""
        return self._weight

    def get(self, key: BudgetKey) -> BudgetState | None:
        """The cached state of `key`, or None (its use is not recorded)."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def put(self, partition: int, key: BudgetKey, state: BudgetState) -> None:
        """Keep `state` as the most recently used; does not evict (call `evict` after a batch)."""
        old = self._entries.get(key)
        if old is not None:
            self._weight -= old[2]
        weight = estimated_bytes(state)
        self._entries[key] = (partition, state, weight)
        self._entries.move_to_end(key)
        self._weight += weight

    def over_bound(self) -> bool:
        """Whether the cache holds more budgets or more estimated bytes than its bounds."""
        return (self.capacity is not None and len(self._entries) > self.capacity) or (
            self.max_bytes is not None and self._weight > self.max_bytes
        )

    def evict(self, keep: Collection[BudgetKey] = ()) -> int:
        """Drop the least recently used budgets until within both bounds; returns how many.

        The count bound is strict. The byte bound never drops one of `keep` (the batch just
        committed): a budget heavier than the whole bound would otherwise be reloaded by every
        batch that uses it, so the bytes may exceed the bound by that batch's budgets."""
        dropped = 0
        if self.capacity is not None:
            while len(self._entries) > self.capacity:
                self._drop_oldest()
                dropped += 1
        if self.max_bytes is not None:
            while self._entries and self._weight > self.max_bytes:
                if next(iter(self._entries)) in keep:  # the batch's budgets were put last
                    break
                self._drop_oldest()
                dropped += 1
        return dropped

    def _drop_oldest(self) -> None:
        self._weight -= self._entries.popitem(last=False)[1][2]

    def drop_partition(self, partition: int) -> int:
        """Forget every budget of `partition` (revoked or rewound); returns how many."""
        gone = [k for k, (p, _, _) in self._entries.items() if p == partition]
        for key in gone:
            self._weight -= self._entries.pop(key)[2]
        return len(gone)

    def clear(self) -> None:
        """Forget every budget."""
        self._entries.clear()
        self._weight = 0
