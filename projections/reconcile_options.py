"""What a reconcile run covers and how it runs (shared by the shard scan, the parallel driver
and the run itself)."""

from __future__ import annotations

from dataclasses import dataclass, field

from budget_ledger.ledger.chain_mac import ChainKeyring


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """What to reconcile and how."""

    tenant: str | None = None
    budget: str | None = None
    workers: int = 1
    progress: bool = True
    role: str | None = "ledger_app"
    # Events the relay has not published are a note until they are this old, then drift.
    unpublished_grace_seconds: float = 300.0
    # The keys of the keyed chain (settings.chain_keyring()): with them every row must carry a
    # valid MAC or be covered by its budget's legacy seal. None: MACs are not checked.
    chain_keys: ChainKeyring | None = field(default=None, repr=False)
    # Replay only the budgets whose ledger moved past their checkpoint (`reconcile` without
    # --full); False replays every budget (`--full`, and what callers of the library get).
    incremental: bool = False
    # Incremental runs after the first: candidates are the budgets of ledger rows recorded since
    # the last recorded run began minus this margin (batches that began before it and committed
    # after, consumer clock skew). settings.reconcile_margin_seconds.
    candidate_margin_seconds: float = 3600.0
