"""The ordered replay of one budget's ledger rows through `evolve`, verifying its chain.

A `BudgetReplay` is fed the budget's ledger rows in physical order and applies them strictly in
sequence order; each applied row's link is checked (sequence, `prev_hash`, the hash recomputed
through `schemas.hashing.event_digest`, the row's columns against the hashed event (type,
`reason`, `utilization_bp`) and the replayed balances). Only the first broken link of a budget
is kept. An event that `evolve` cannot fold (an evolver raising) is a broken link of that
budget, never the end of the whole replay.

A replay may start from a verified state at the budget's reconcile checkpoint
(`BudgetReplay.start_at_checkpoint`, incremental runs): it is then fed the checkpointed row,
which must still carry the checkpointed hash, and the rows after it (or only the rows after it,
when that row lies before the range an incremental run reads: `base_trusted`). Anything else (the
checkpointed row changed or gone) falls back to an ordered re-read of the whole history, which
names the broken link exactly as a full run does.

Rows read from a checkpoint are bounded by `recorded_at` (so Postgres reads only the recent
partitions; `bounded`): a row after the checkpoint recorded before that bound (a consumer clock
off by more than the margin) is not read, which shows as a gap before a later row or as a replay
ending before the balance projection's sequence (`unseen_rows`). Either falls back to the
ordered re-read of the whole history, never to a clean result over rows it did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from budget_ledger.ledger.budget import BudgetState, initial_state
from budget_ledger.ledger.chain_mac import ChainKeyring, mac_problem, seal_verifies
from budget_ledger.ledger.frozen import picklable
from budget_ledger.ledger.history import fold
from budget_ledger.ledger.state import compact
from budget_ledger.projections.checkpoint_state import StateUnreadable, decode_state
from budget_ledger.schemas.codec import pct_bp
from budget_ledger.schemas.hashing import event_digest

# Ledger row layout of `reconcile_ledger_scan` / `reconcile_budget_events`.
_SEQ, _TYPE, _FUNDED, _RESERVED, _CHARGED, _AVAILABLE, _BODY = 2, 3, 4, 5, 6, 7, 8
_MAC, _MAC_KEY_ID = 9, 10
# The report's columns (migration 014); both NULL in rows written before it.
_REASON, _UTILIZATION_BP = 11, 12
_BALANCE_SEQ = 10  # the sequence in `drift.balance_from_row`'s tuple
# A budget whose rows arrive out of sequence order buffers them until the missing one arrives;
# past this many buffered rows it stops buffering and is re-read in order at the end instead.
MAX_PENDING = 10_000
_LOADS = orjson.loads


@dataclass(frozen=True, slots=True)
class LegacySeal:
    """A budget's legacy seal: rows up to `sequence` (ending in `hash`) may lack a MAC."""

    sequence: int
    hash: str
    mac: str
    key_id: str


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first link of a budget's chain that does not verify."""

    tenant_id: str
    budget_id: str
    sequence: int
    problem: str


picklable(LegacySeal, BrokenLink)


class BudgetReplay:
    """The replay of one budget: its state, its first broken link, and its projection rows.

    Rows are fed in the ledger's physical order; they are applied strictly in sequence order
    (`last_seq + 1`), so the replay and the first broken link are exactly those of an ordered
    read. A row that comes early is held in `pending` until its predecessors arrived; a repeated
    sequence (or too many held rows) marks the budget for an ordered re-read (`reread`).
    The projection rows (`balance`, `reservations`) are filled by the caller, for the drift check.
    """

    __slots__ = (
        "balance",
        "base",
        "base_seen",
        "base_trusted",
        "bounded",
        "broken",
        "checkpoint",
        "checkpoint_state",
        "events",
        "keys",
        "last_at",
        "last_seq",
        "legacy_hash",
        "legacy_through",
        "pending",
        "reread",
        "reservations",
        "settled_after",
        "state",
    )

    def __init__(
        self,
        tenant_id: str,
        budget_id: str,
        keys: ChainKeyring | None = None,
        seal: LegacySeal | None = None,
    ) -> None:
        self.state: BudgetState = initial_state(tenant_id, budget_id)
        # With keys, every row needs a valid MAC except those up to a verified legacy seal.
        self.keys = keys
        self.legacy_through, self.legacy_hash = 0, ""
        if (
            keys is not None
            and seal is not None
            and seal_verifies(
                keys, seal.key_id, seal.mac, tenant_id, budget_id, seal.sequence, seal.hash
            )
        ):
            self.legacy_through, self.legacy_hash = seal.sequence, seal.hash
        self.broken: BrokenLink | None = None
        self.balance: tuple[Any, ...] | None = None
        self.reservations: dict[str, list[Any]] = {}
        self.events = 0
        self.last_seq = 0  # the sequence of the last row applied (not the state's: see apply)
        self.pending: dict[int, tuple[Any, ...]] | None = None
        self.reread = False
        # (sequence, hash) a past run verified clean: that row must still carry that hash.
        self.checkpoint: tuple[int, str] | None = None
        # Full runs: the state stored at the checkpoint, checked when the replay reaches it.
        self.checkpoint_state: str | None = None
        # Started from the checkpoint's state: its sequence (0: replayed from the first event),
        # whether the checkpointed row was seen with its hash, and whether it need not be (it
        # lies before the range an incremental run reads; checked if it comes all the same).
        self.base = 0
        self.base_seen = False
        self.base_trusted = False
        # Reservations settled at or before this sequence were verified by an earlier run: the
        # drift check leaves them out (and their projection rows are not read).
        self.settled_after = 0
        # The rows were read with a lower bound on recorded_at (see `unseen_rows`).
        self.bounded = False
        # The hashed recorded_at text of the last row applied: stored with a new checkpoint.
        self.last_at: str | None = None

    def start_at_checkpoint(self, state: BudgetState) -> None:
        """Replay from ``state``, verified at the checkpoint (its sequence and hash): the rows
        fed must begin with the checkpointed row itself."""
        self.state = state
        self.last_seq = self.base = self.settled_after = state.sequence
        self.checkpoint = (state.sequence, state.last_hash)

    def feed(self, row: tuple[Any, ...]) -> None:
        """Take the next row in physical order; apply it (and any held successors) when it is
        the next in sequence, else hold it."""
        seq = row[_SEQ]
        if seq == self.last_seq + 1:
            self.apply(row)
            self.last_seq = seq
            pending = self.pending
            if pending:
                while (nxt := self.last_seq + 1) in pending:
                    self.apply(pending.pop(nxt))
                    self.last_seq = nxt
        elif seq == self.base and not self.base_seen and not self.reread:
            self._check_base(row)
        elif not self.reread:
            pending = self.pending
            if pending is None:
                pending = self.pending = {}
            if seq <= self.last_seq or seq in pending or len(pending) >= MAX_PENDING:
                self._reread()  # a repeated sequence, or too much to hold: re-read in order
            else:
                pending[seq] = row

    def _check_base(self, row: tuple[Any, ...]) -> None:
        """The checkpointed row: still there with the checkpointed hash, else re-read whole.
        (It may come after rows that follow it: the state has moved on, the checkpoint not.)"""
        cp = self.checkpoint
        try:
            same = cp is not None and _LOADS(row[_BODY]).get("hash") == cp[1]
        except (orjson.JSONDecodeError, AttributeError):
            same = False
        if same:
            self.base_seen = True
        else:
            self._reread()

    def _reread(self) -> None:
        self.reread = True
        self.pending = None
        self.last_seq = -2  # nothing matches any more: every later row is ignored

    def lost_base(self) -> bool:
        """After the scan: started from a checkpoint whose row never came (deleted, or the
        ledger ends before it), or was not read (`base_trusted`) and no row after it came
        (the run expected some) or they broke (the checkpointed row may be what changed);
        marks the budget for the ordered re-read, which names the first broken link as a full
        run does."""
        if not self.base or self.base_seen or self.reread:
            return False
        if self.base_trusted and self.events and self.broken is None:
            return False  # the rows after it linked to the checkpointed hash
        self._reread()
        return True

    def unseen_rows(self) -> bool:
        """After a bounded scan: rows may lie outside the bound (a gap in the rows read, or
        the balance projection is past the replay); marks the budget for the ordered re-read."""
        if not self.bounded or self.reread:
            return False
        behind = self.balance is not None and self.balance[_BALANCE_SEQ] > self.last_seq
        if self.pending or behind:
            self._reread()
            return True
        return False

    def end_of_scan(self) -> None:
        """Rows still held follow a real gap: apply them in sequence order (the first tells)."""
        if self.pending:
            for seq in sorted(self.pending):
                self.apply(self.pending[seq])
                self.last_seq = seq
            self.pending = None

    def restart(self) -> None:
        """Forget the replay (keep the projection rows read): for the ordered re-read, which
        starts from the first event even when the replay had started from a checkpoint."""
        st = self.state
        self.state = initial_state(st.tenant_id, st.budget_id)
        self.broken = None
        self.events = 0
        self.pending = None
        self.base = 0
        self.bounded = False
        self.last_at = None

    def apply(self, row: tuple[Any, ...]) -> None:
        """Verify one ledger row's link and fold its event into the state."""
        self.events += 1
        s = self.state
        seq = row[_SEQ]
        try:
            d = _LOADS(row[_BODY])
            stored_hash = d.pop("hash")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._break(seq, "event is not a ledger event (unparseable or no hash)")
            return
        self.last_at = d.get("recorded_at")
        if self.broken is None:
            problem = _link_problem(s, seq, d, stored_hash, row)
            cp = self.checkpoint
            if problem is None and cp is not None and seq == cp[0] and stored_hash != cp[1]:
                problem = "checkpoint mismatch: the verified row's hash changed"
            if problem is None and self.keys is not None:
                problem = self._mac_problem(seq, stored_hash, row)
            if problem:
                self._break(seq, problem)
        d["hash"] = stored_hash
        try:
            self.state = s = fold(s, d)
        except Exception as exc:  # an event that does not decode or fold: a finding
            # Tolerance belongs to the replay only (live consumption fails loudly): the event
            # is a broken link of this budget and the replay goes on with the others.
            self._break(seq, f"event does not replay: {type(exc).__name__}: {exc}")
            return
        # The row's balance columns must say what the replay says (a column edited behind the
        # event's back, or decide/evolve disagreeing, shows up here).
        if self.broken is None and (
            row[_FUNDED] != s.funded_in_period
            or row[_RESERVED] != s.reserved_total
            or row[_CHARGED] != s.charged_in_period
            or row[_AVAILABLE] != s.available
        ):
            self._break(seq, _column_problem(s, row))
        if self.checkpoint_state is not None and self.checkpoint and seq == self.checkpoint[0]:
            self._check_stored_state(seq)

    def _check_stored_state(self, seq: int) -> None:
        """A whole replay reaching the checkpoint: the state stored there (what incremental runs
        start from) must be the replayed one."""
        text, self.checkpoint_state = self.checkpoint_state, None
        try:
            same = decode_state(text or "") == compact(self.state)
        except StateUnreadable:
            same = False
        if not same:
            self._break(seq, "checkpoint state differs from the replay")

    def end_of_checkpoint(self) -> None:
        """After the replay: a budget whose ledger ends before its checkpoint lost rows."""
        cp = self.checkpoint
        if cp is not None and self.state.sequence < cp[0]:
            self._break(
                cp[0],
                f"checkpointed rows missing: the ledger ends at sequence "
                f"{self.state.sequence}, {cp[0]} was verified",
            )

    def _mac_problem(self, seq: int, stored_hash: str, row: tuple[Any, ...]) -> str | None:
        """The keyed chain: a valid MAC, or a row of the sealed legacy prefix."""
        assert self.keys is not None
        if row[_MAC] is not None:
            return mac_problem(self.keys, row[_MAC_KEY_ID], row[_MAC], stored_hash)
        if seq > self.legacy_through:
            return "mac missing: the row was not written by a holder of the chain key"
        if seq == self.legacy_through and stored_hash != self.legacy_hash:
            return "legacy seal mismatch: the sealed row's hash changed"
        return None

    def _break(self, seq: int, problem: str) -> None:
        if self.broken is None:
            self.broken = BrokenLink(self.state.tenant_id, self.state.budget_id, seq, problem)


def _link_problem(
    s: BudgetState, seq: int, d: dict[str, Any], stored_hash: str, row: tuple[Any, ...]
) -> str | None:
    if seq != s.sequence + 1:
        kind = "duplicate" if seq <= s.sequence else "gap"
        return f"sequence {kind}: expected {s.sequence + 1}, found {seq}"
    if d.get("prev_hash") != s.last_hash:
        return f"prev_hash does not match the hash of sequence {s.sequence}"
    if event_digest(s.last_hash, row[_BODY], d) != stored_hash:
        return "hash mismatch: the event was altered after it was written"
    if d.get("sequence") != seq or d.get("type") != row[_TYPE]:
        return "row columns (sequence/type) differ from the hashed event"
    reason, bp = row[_REASON], row[_UTILIZATION_BP]
    if bp is not None or reason is not None:  # both NULL: a row written before migration 014
        return _report_column_problem(d, reason, bp)
    return None


def _report_column_problem(d: dict[str, Any], reason: Any, bp: Any) -> str | None:
    """The row's `reason` and `utilization_bp` columns against the hashed event (the report
    reads the columns instead of the event when utilization_bp is not NULL)."""
    if reason != d.get("reason"):
        return f"column reason differs from the hashed event: {reason!r} ({d.get('reason')!r})"
    try:
        expected: int | None = pct_bp(d["utilization_pct"])
    except (KeyError, ValueError, TypeError, AttributeError):
        expected = None
    if bp is None or bp != expected:
        return (
            f"column utilization_bp differs from the hashed event: {bp} "
            f"(event utilization_pct {d.get('utilization_pct')!r})"
        )
    return None


def _column_problem(s: BudgetState, row: tuple[Any, ...]) -> str:
    cols = {
        "funded": (row[_FUNDED], s.funded_in_period),
        "reserved": (row[_RESERVED], s.reserved_total),
        "charged": (row[_CHARGED], s.charged_in_period),
        "available": (row[_AVAILABLE], s.available),
    }
    bad = ", ".join(f"{k} {a} (replay {e})" for k, (a, e) in cols.items() if a != e)
    return f"row balance columns differ from the replay: {bad}"
