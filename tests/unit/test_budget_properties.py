"""Properties of the rules over random command sequences for several budgets.

The machine models the consumer: it keeps every (tenant, command_id) it has applied with the
command's fingerprint and event, so redeliveries and id reuse go through the real
``classify``. After every step: available >= 0, conservation of reserved/charged, fold of the
emitted events == live state, allowed reservation moves only, an intact hash chain, and every
amount and balance within the stored range (MAX_MINOR): amounts go up to the largest a command
may carry, and one budget may be in a 4-digit currency, where a single fund reaches the maximum.
Balance monitors come and go: a ``balance_monitor`` alert fires exactly when a model of the
monitors, evaluated on each event's own balances, sees its condition start to hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from budget_ledger.ledger.budget import (
    GENESIS_HASH,
    RESERVATION_EDGES,
    BudgetState,
    LedgerEvent,
    evolve,
    initial_state,
)
from budget_ledger.ledger.idempotency import classify, fingerprint
from budget_ledger.ledger.record import record
from budget_ledger.ledger.state import MAX_MINOR
from budget_ledger.schemas.codec import event_from_wire, event_to_wire
from budget_ledger.schemas.commands import CommandInvalid, parse_command
from budget_ledger.schemas.hashing import chain_hash

pytestmark = pytest.mark.unit

TENANT = "t1"
BUDGETS = ("b1", "b2", "b3")
REFS = tuple(f"r{i}" for i in range(20))
START = datetime(2026, 1, 1, tzinfo=UTC)

TABLE = {"USD": 2, "CLF": 4}
#: The largest fund per currency: 15 integer digits in USD; 10**18 minor units in CLF.
LARGEST = {"USD": "999999999999999.99", "CLF": "100000000000000"}
# Mostly everyday amounts, sometimes near the largest a USD command may carry (10**17 - 1).
amounts = (st.integers(1, 20_000) | st.integers(10**16, 10**17 - 1)).map(
    lambda c: f"{c // 100}.{c % 100:02d}"
)
budgets = st.sampled_from(BUDGETS)
refs = st.sampled_from(REFS)


class LedgerMachine(RuleBasedStateMachine):
    """Random commands against three budgets, through a model of the consumer."""

    raw_commands = Bundle("raw_commands")

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.n = 0
        self.states: dict[str, BudgetState] = {b: initial_state(TENANT, b) for b in BUDGETS}
        self.events: dict[str, list[LedgerEvent]] = {b: [] for b in BUDGETS}
        self.seen: dict[str, tuple[str, LedgerEvent]] = {}  # command_id -> (fingerprint, event)
        # The monitors model: budget -> monitor_id -> ((metric, operator, threshold), holds).
        self.monitors: dict[str, dict[str, tuple[tuple[str, str, int], bool]]] = {
            b: {} for b in BUDGETS
        }

    # --- the consumer model ---

    def deliver(self, raw: bytes) -> None:
        try:
            command = parse_command(raw, TABLE)
        except CommandInvalid as exc:
            event(f"dead letter:{exc.error_class}")  # e.g. 15 digits in CLF: out_of_range
            return
        fp = fingerprint(command)
        prior = self.seen.get(command.command_id)
        verdict = classify(prior[0] if prior else None, fp)
        b = command.budget_id
        if verdict == "duplicate":
            return  # the original outcome is re-published; nothing changes
        if verdict == "conflict":
            return  # dead-lettered with idempotency_conflict; nothing changes
        before = self.states[b]
        done = record(before, command, self.now, TABLE)
        after, outcome = done.state, done.event
        self._check_moves(before, after)
        self._check_monitor_alerts(b, outcome, done.alerts)
        self.states[b] = after
        self.events[b].append(outcome)
        self.seen[command.command_id] = (fp, outcome)
        event(f"{outcome.type}:{outcome.reason}")

    def _raw(self, b: str, type_: str, **fields: Any) -> bytes:
        self.n += 1
        body = {"type": type_, "command_id": f"c{self.n}", "tenant_id": TENANT, "budget_id": b}
        return orjson.dumps({**body, **fields})

    def _check_monitor_alerts(self, b: str, ev: LedgerEvent, alerts: Any) -> None:
        """The monitors' alerts of ``ev`` are exactly the model's crossings."""
        model = self.monitors[b]
        if ev.type == "budget_opened" and ev.reason is None:
            model.clear()
        elif ev.type == "monitor_set":
            d = ev.data
            key = "threshold_bp" if d["metric"] == "utilization_pct" else "threshold_amount"
            old = model.get(d["monitor_id"])
            cond = (d["metric"], d["operator"], d[key])
            # A new condition counts as not holding before (a set that holds fires at once).
            model[d["monitor_id"]] = (cond, old[1] if old and old[0] == cond else False)
        elif ev.type == "monitor_removed":
            model.pop(ev.data["monitor_id"], None)
        values = {"available": ev.available, "utilization_pct": ev.utilization_bp,
                  "reserved": ev.reserved, "charged": ev.charged, "funded": ev.funded}  # fmt: skip
        ops = {"<": int.__lt__, "<=": int.__le__, ">": int.__gt__, ">=": int.__ge__}
        expected = []
        for mid, ((metric, op, threshold), held) in sorted(model.items()):
            holds = ops[op](values[metric], threshold)
            if holds and not held:
                expected.append(mid)
            model[mid] = ((metric, op, threshold), holds)
        fired = [a.data["monitor_id"] for a in alerts if a.type == "balance_monitor"]
        assert fired == expected
        if expected:
            event("balance_monitor fired")

    def _check_moves(self, before: BudgetState, after: BudgetState) -> None:
        for ref, res in after.reservations.items():
            old = before.reservations.get(ref)
            if old is None:
                assert res.status == "reserved"
            elif old.status != res.status:
                assert (old.status, res.status) in RESERVATION_EDGES

    # --- rules ---

    @initialize()
    def open_some(self) -> None:
        self.deliver(self._raw("b1", "open_budget", currency="USD", period="monthly",
                               period_allowance="100", hard_cap="150", rollover=True,
                               reservation_ttl_seconds=120))  # fmt: skip
        self.deliver(self._raw("b2", "open_budget", currency="USD", period="rolling",
                               soft_cap="50"))  # fmt: skip
        # b3 in a 4-digit currency: one largest fund reaches MAX_MINOR.
        self.deliver(self._raw("b3", "open_budget", currency="CLF", period="monthly",
                               rollover=True))  # fmt: skip

    def _currency(self, b: str) -> str:
        return self.states[b].currency or "USD"

    @rule(target=raw_commands, b=budgets, period=st.sampled_from(["rolling", "monthly"]),
          currency=st.sampled_from(["USD", "CLF"]), allowance=st.none() | amounts,
          rollover=st.booleans())  # fmt: skip
    def open_budget(
        self, b: str, period: str, currency: str, allowance: str | None, rollover: bool
    ) -> bytes:
        raw = self._raw(b, "open_budget", currency=currency, period=period,
                        period_allowance=allowance, rollover=rollover)  # fmt: skip
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, amount=amounts)
    def fund(self, b: str, amount: str) -> bytes:
        raw = self._raw(b, "fund", amount=amount, currency=self._currency(b))
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets)
    def fund_the_largest(self, b: str) -> bytes:
        currency = self._currency(b)
        raw = self._raw(b, "fund", amount=LARGEST[currency], currency=currency)
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, ref=refs, amount=amounts,
          ttl=st.none() | st.integers(1, 300))  # fmt: skip
    def reserve(self, b: str, ref: str, amount: str, ttl: int | None) -> bytes:
        extra = (
            {} if ttl is None else {"expires_at": (self.now + timedelta(seconds=ttl)).isoformat()}
        )
        raw = self._raw(b, "reserve", amount=amount, currency=self._currency(b), ref_id=ref,
                        **extra)  # fmt: skip
        self.deliver(raw)
        return raw

    def _known_ref(self, b: str, pick: int, ref: str) -> str:
        # Mostly aim at reservations that exist (any status), sometimes at unknown ones.
        known = sorted(self.states[b].reservations)
        return known[pick % len(known)] if known and pick % 5 else ref

    @rule(target=raw_commands, b=budgets, ref=refs, pick=st.integers(0, 99),
          amount=st.none() | amounts)  # fmt: skip
    def charge(self, b: str, ref: str, pick: int, amount: str | None) -> bytes:
        extra = {} if amount is None else {"amount": amount}
        raw = self._raw(b, "charge", ref_id=self._known_ref(b, pick, ref), **extra)
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, ref=refs, pick=st.integers(0, 99))
    def release(self, b: str, ref: str, pick: int) -> bytes:
        raw = self._raw(b, "release", ref_id=self._known_ref(b, pick, ref))
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets)
    def expire(self, b: str) -> bytes:
        raw = self._raw(b, "expire_reservations", as_of=self.now.isoformat())
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets)
    def close_period(self, b: str) -> bytes:
        raw = self._raw(b, "close_period", period_end=self.now.isoformat())
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, amount=amounts, negative=st.booleans())
    def adjust(self, b: str, amount: str, negative: bool) -> bytes:
        raw = self._raw(b, "adjust", amount=("-" if negative else "") + amount, reason="fix",
                        operator="ops")  # fmt: skip
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, cap=st.none() | amounts,
          pct=st.integers(1, 100))  # fmt: skip
    def configure(self, b: str, cap: str | None, pct: int) -> bytes:
        raw = self._raw(b, "configure_budget", hard_cap=cap, soft_threshold_pct=pct)
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, mid=st.sampled_from(["m1", "m2", "m3"]),
          metric=st.sampled_from(["available", "utilization_pct", "reserved", "charged",
                                  "funded"]),
          op=st.sampled_from(["<", "<=", ">", ">="]), value=st.integers(0, 20_000))  # fmt: skip
    def set_monitor(self, b: str, mid: str, metric: str, op: str, value: int) -> bytes:
        threshold = f"{value // 100}.{value % 100:02d}"
        raw = self._raw(b, "set_monitor", monitor_id=mid, metric=metric, operator=op,
                        threshold=threshold)  # fmt: skip
        self.deliver(raw)
        return raw

    @rule(target=raw_commands, b=budgets, mid=st.sampled_from(["m1", "m2", "m3"]))
    def remove_monitor(self, b: str, mid: str) -> bytes:
        raw = self._raw(b, "remove_monitor", monitor_id=mid)
        self.deliver(raw)
        return raw

    @rule(seconds=st.integers(1, 200))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(raw=raw_commands)
    def redeliver(self, raw: bytes) -> None:
        snapshot = (dict(self.states), {b: len(e) for b, e in self.events.items()})
        self.deliver(raw)
        assert snapshot == (self.states, {b: len(e) for b, e in self.events.items()})

    @rule(raw=raw_commands, amount=amounts)
    def reuse_command_id(self, raw: bytes, amount: str) -> None:
        body = orjson.loads(raw)
        body["metadata"] = {"changed": amount}
        snapshot = dict(self.states)
        self.deliver(orjson.dumps(body))  # same command_id, other payload: conflict
        assert snapshot == self.states

    # --- invariants ---

    @invariant()
    def balances_are_sane(self) -> None:
        for s in self.states.values():
            assert s.available >= 0
            assert s.reserved_total >= 0 and s.charged_in_period >= 0 and s.funded_in_period >= 0
            assert s.available == max(0, s.limit - s.committed)

    @invariant()
    def within_the_stored_range(self) -> None:
        for b, s in self.states.items():
            assert 0 <= s.funded_in_period <= MAX_MINOR
            assert 0 <= s.committed <= MAX_MINOR
            assert 0 <= s.available <= max(s.limit, 0) <= MAX_MINOR
            assert all(0 < r.reserved_amount <= MAX_MINOR for r in s.reservations.values())
            for ev in self.events[b]:
                assert ev.amount is None or abs(ev.amount) <= MAX_MINOR
                assert all(0 <= v <= MAX_MINOR for v in (ev.funded, ev.reserved, ev.charged))

    @invariant()
    def conservation(self) -> None:
        for b, s in self.states.items():
            held = [r.reserved_amount for r in s.reservations.values() if r.status == "reserved"]
            assert s.reserved_total == sum(held)
            charged = 0
            for ev in self.events[b]:
                if ev.type == "reservation_charged":
                    charged += ev.amount or 0
                elif ev.type == "period_closed":
                    charged = 0
            assert s.charged_in_period == charged
            assert set(s.expiring) == {
                r.ref_id for r in s.reservations.values()
                if r.status == "reserved" and r.expires_at is not None
            }  # fmt: skip

    @invariant()
    def fold_equals_live_state(self) -> None:
        for b, s in self.states.items():
            folded = reduce(evolve, self.events[b], initial_state(TENANT, b))
            assert folded == s
            # ...also through the wire form, as the reconciler replays it from Postgres.
            via_wire = reduce(
                evolve,
                (event_from_wire(orjson.loads(orjson.dumps(event_to_wire(e, _dg(e)))), _dg(e))
                 for e in self.events[b]),
                initial_state(TENANT, b),
            )  # fmt: skip
            assert via_wire == s

    @invariant()
    def monitors_match_the_model(self) -> None:
        for b, s in self.states.items():
            model = self.monitors[b]
            assert set(s.monitors) == set(model)
            for mid, m in s.monitors.items():
                assert ((m.metric, m.operator, m.threshold), not m.armed) == model[mid]

    @invariant()
    def hash_chain_verifies(self) -> None:
        for events in self.events.values():
            prev = GENESIS_HASH
            for i, ev in enumerate(events, start=1):
                assert ev.sequence == i
                wire = event_to_wire(ev, _dg(ev))
                del wire["hash"]
                assert ev.prev_hash == prev
                assert chain_hash(prev, orjson.loads(orjson.dumps(wire))) == ev.hash
                prev = ev.hash


def _dg(ev: LedgerEvent) -> int:
    return TABLE.get(ev.currency or "", 0)


LedgerMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerMachine = LedgerMachine.TestCase
