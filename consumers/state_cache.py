"""A bounded, least-recently-used cache of budget states, one per consumer process.

The consumer keeps the state of every budget it decides for; without a bound that grows with
every budget ever seen. Past `capacity` the coldest budgets are dropped and reloaded on demand
by the batch's one loader query. Only committed states are ever put here (`merge_states` runs
after the batch's transaction), so an evicted budget reloads exactly as it was, and nothing the
current batch touched can be evicted before its commit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from budget_ledger.ledger.budget import BudgetState

BudgetKey = tuple[str, str]


class StateCache:
    """Budget states by (tenant, budget), oldest use first; `capacity` None or 0 is unbounded.

    One cache serves all partitions of a consumer (the bound is per process, which is what
    memory is); each entry remembers its partition so a revoked partition's budgets can be
    dropped. Lookups do not reorder: `process_batch` must not mutate state, and every budget a
    committed batch touched is `put` again, which marks it recently used.
    """

    __slots__ = ("_entries", "capacity")

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity or None
        self._entries: OrderedDict[BudgetKey, tuple[int, BudgetState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[BudgetKey]:
        return iter(self._entries)

    def get(self, key: BudgetKey) -> BudgetState | None:
        """The cached state of `key`, or None (its use is not recorded)."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def put(self, partition: int, key: BudgetKey, state: BudgetState) -> None:
        """Keep `state` as the most recently used; does not evict (call `evict` after a batch)."""
        self._entries[key] = (partition, state)
        self._entries.move_to_end(key)

    def evict(self) -> int:
        """Drop the least recently used budgets beyond the capacity; returns how many."""
        if self.capacity is None:
            return 0
        excess = len(self._entries) - self.capacity
        for _ in range(max(0, excess)):
            self._entries.popitem(last=False)
        return max(0, excess)

    def drop_partition(self, partition: int) -> int:
        """Forget every budget of `partition` (revoked or rewound); returns how many."""
        gone = [k for k, (p, _) in self._entries.items() if p == partition]
        for key in gone:
            del self._entries[key]
        return len(gone)

    def clear(self) -> None:
        """Forget every budget."""
        self._entries.clear()
