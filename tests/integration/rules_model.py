"""An independent, deliberately simple model of the budget rules, and a seeded workload over it.

The chaos test compares the real ledger with this model. It shares no code with `ledger/`: a
budget is a handful of integers (minor units) and a dict of reservations, and each rule is a few
plain `if`s written from the rules in docs/domain.md (fund, reserve, charge in full or in part,
release, refusals, idempotency by tenant and command id). Only rolling budgets without expiries
are modelled.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Command = dict[str, Any]
# What one command must produce: (event type, refusal reason or None); or "duplicate" (same id
# and payload: no new ledger event) or "conflict" (same id, other payload: dead-lettered).
Outcome = tuple[str, str | None]


@dataclass
class Budget:
    """One budget's balances in minor units, and its reservations: ref_id -> [amount, status]."""

    currency: str
    hard_cap: int | None = None
    funded: int = 0
    reserved: int = 0
    charged: int = 0
    reservations: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def limit(self) -> int:
        """Funded, capped by the hard cap."""
        if self.hard_cap is not None and self.hard_cap < self.funded:
            return self.hard_cap
        return self.funded

    @property
    def available(self) -> int:
        """Limit minus committed, floored at zero."""
        return max(0, self.limit - self.reserved - self.charged)


def minor(text: str) -> int:
    """'12.34' -> 1234 (two minor digits, as USD and ZWG have)."""
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def money(units: int) -> str:
    """1234 -> '12.34'."""
    return f"{units // 100}.{units % 100:02d}"


class RulesModel:
    """Expected outcome of each command, and the balances after all of them."""

    def __init__(self) -> None:
        self.budgets: dict[tuple[str, str], Budget] = {}
        self.seen: dict[tuple[str, str], Command] = {}
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.duplicates = 0
        self.conflicts = 0

    def apply(self, c: Command) -> Outcome | str:
        """Record `c` and return its expected outcome ("duplicate"/"conflict" for repeats)."""
        ident = (c["tenant_id"], c["command_id"])
        if ident in self.seen:
            if self.seen[ident] == c:
                self.duplicates += 1
                return "duplicate"
            self.conflicts += 1
            return "conflict"
        self.seen[ident] = dict(c)
        outcome = self._decide(c)
        self.outcomes[ident] = outcome
        return outcome

    def _decide(self, c: Command) -> Outcome:
        key = (c["tenant_id"], c["budget_id"])
        b = self.budgets.get(key)
        kind = c["type"]
        if kind == "open_budget":
            if b is not None:
                return ("command_rejected", "budget_exists")
            cap = c.get("hard_cap")
            self.budgets[key] = Budget(c["currency"], None if cap is None else minor(cap))
            return ("budget_opened", None)
        if b is None:
            return ("command_rejected", "unknown_budget")
        if kind == "fund":
            if c["currency"] != b.currency:
                return ("command_rejected", "currency_mismatch")
            b.funded += minor(c["amount"])
            return ("budget_funded", None)
        if kind == "reserve":
            amount = minor(c["amount"])
            if c["currency"] != b.currency:
                return ("reservation_rejected", "currency_mismatch")
            if c["ref_id"] in b.reservations:
                return ("reservation_rejected", "duplicate_ref")
            if amount > b.limit - b.reserved - b.charged:
                capped = b.hard_cap is not None and b.hard_cap <= b.funded
                return ("reservation_rejected", "hard_cap_exceeded" if capped
                        else "insufficient_funds")  # fmt: skip
            b.reservations[c["ref_id"]] = [amount, "reserved"]
            b.reserved += amount
            return ("funds_reserved", None)
        res = b.reservations.get(c["ref_id"])
        if res is None:
            return ("command_rejected", "reservation_not_found")
        if res[1] != "reserved":
            return ("command_rejected", "reservation_not_active")
        if kind == "release":
            b.reserved -= res[0]
            res[1] = "released"
            return ("reservation_released", None)
        assert kind == "charge", kind
        amount = res[0] if c.get("amount") is None else minor(c["amount"])
        if amount > res[0]:
            return ("command_rejected", "amount_exceeds_reservation")
        b.reserved -= res[0]
        b.charged += amount
        res[1] = "charged"
        return ("reservation_charged", None)

    def refusals(self) -> Counter[str]:
        """Expected refusals by reason."""
        return Counter(r for _, r in self.outcomes.values() if r is not None)


class Workload:
    """A seeded stream of commands over several budgets, with the model's verdict for each."""

    TENANTS = ("acme", "globex")

    def __init__(self, seed: int, budgets: int = 12) -> None:
        self.rng = random.Random(seed)
        self.model = RulesModel()
        self.keys = [(self.TENANTS[i % 2], f"b{i}") for i in range(budgets)]
        self.sent: list[Command] = []
        self._n = 0
        self._opening: list[Command] = []
        for i, (tenant, budget) in enumerate(self.keys):
            cap = money(self.rng.randint(20_000, 60_000)) if i % 4 == 3 else None
            currency = "ZWG" if i % 5 == 4 else "USD"
            opened = self._cmd("open_budget", tenant, budget, currency=currency, period="rolling")
            if cap is not None:
                opened["hard_cap"] = cap
            self._opening.append(opened)
            self._opening.append(self._cmd("fund", tenant, budget, amount=money(
                self.rng.randint(10_000, 100_000)), currency=currency))  # fmt: skip

    def _cmd(self, kind: str, tenant: str, budget: str, **fields: Any) -> Command:
        self._n += 1
        return {"command_id": f"c{self._n}", "type": kind, "tenant_id": tenant,
                "budget_id": budget, **fields}  # fmt: skip

    def _record(self, c: Command) -> Command:
        self.model.apply(c)
        self.sent.append(c)
        return c

    def next(self) -> Command:
        """The next command (recorded in the model)."""
        if self._opening:
            return self._record(self._opening.pop(0))
        return self._record(self._pick())

    def _pick(self) -> Command:
        rng = self.rng
        tenant, budget = rng.choice(self.keys)
        b = self.model.budgets[(tenant, budget)]
        active = [r for r, (_, s) in b.reservations.items() if s == "reserved"]
        done = [r for r, (_, s) in b.reservations.items() if s != "reserved"]
        roll = rng.random()
        mine = [c for c in self.sent[-400:] if (c["tenant_id"], c["budget_id"]) == (tenant, budget)]
        if roll < 0.04 and mine:  # a client retry: the very same command again
            return dict(rng.choice(mine))
        if roll < 0.06 and mine:  # the same command id with another payload
            other = dict(rng.choice(mine))
            other["metadata"] = {"retry": "altered", "n": self._n}
            return other
        if roll < 0.38 or not active:
            ref = f"r{self._n + 1}"
            if done and rng.random() < 0.05:  # a ref that was used before
                ref = rng.choice(done)
            amount = rng.randint(1, 3_000) if rng.random() < 0.9 else rng.randint(50_000, 200_000)
            currency = b.currency if rng.random() < 0.97 else ("USD" if b.currency == "ZWG"
                                                              else "ZWG")  # fmt: skip
            return self._cmd("reserve", tenant, budget, amount=money(amount), currency=currency,
                             ref_id=ref)  # fmt: skip
        if roll < 0.58:
            ref = rng.choice(active)
            fields: dict[str, Any] = {"ref_id": ref}
            full = b.reservations[ref][0]
            part = rng.random()
            if part < 0.4:
                fields["amount"] = money(rng.randint(1, full))
            elif part < 0.47:
                fields["amount"] = money(full + rng.randint(1, 500))
            return self._cmd("charge", tenant, budget, **fields)
        if roll < 0.76:
            return self._cmd("release", tenant, budget, ref_id=rng.choice(active))
        if roll < 0.80 and done:
            return self._cmd(rng.choice(("charge", "release")), tenant, budget,
                             ref_id=rng.choice(done))  # fmt: skip
        if roll < 0.82:
            return self._cmd("release", tenant, budget, ref_id=f"nope{self._n}")
        if roll < 0.83:
            return self._cmd("fund", tenant, f"ghost{rng.randint(1, 3)}", amount="1.00",
                             currency="USD")  # fmt: skip
        if roll < 0.84:
            return self._cmd("open_budget", tenant, budget, currency=b.currency, period="rolling")
        currency = b.currency if rng.random() < 0.95 else ("USD" if b.currency == "ZWG" else "ZWG")
        return self._cmd("fund", tenant, budget, amount=money(rng.randint(100, 20_000)),
                         currency=currency)  # fmt: skip
