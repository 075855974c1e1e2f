"""Micro-benchmark of the pure domain on one core.

(a) ``apply`` (decide + evolve + alerts) over parsed commands already in domain form (integer
    minor units): the rules alone;
(b) the consumer's per-command CPU path: raw JSON bytes -> ``parse_command`` -> ``record``
    (translate with the budget's digits, decide, seal with the hash chain, evolve, alerts,
    ``orjson.dumps`` of the event).

Workload: 10,000 budgets, 50% reserve / 30% charge / 15% release / 5% fund.
Run from the repository root: ``python -m bench.domain_bench [--commands N] [--budgets N]``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from budget_ledger.ledger.budget import BudgetState, apply, initial_state
from budget_ledger.ledger.commands import Command
from budget_ledger.ledger.record import record
from budget_ledger.schemas.commands import parse_command
from budget_ledger.schemas.money import DEFAULT_CURRENCIES
from budget_ledger.schemas.to_domain import domain_command

TENANT = "bench"


def _workload(n_commands: int, n_budgets: int, seed: int = 7) -> list[bytes]:
    """Raw command messages; charges and releases target reservations that are still open."""
    rng = random.Random(seed)
    open_refs: list[list[str]] = [[] for _ in range(n_budgets)]
    out: list[bytes] = []
    for i in range(n_commands):
        b = rng.randrange(n_budgets)
        base = {"command_id": f"c{i}", "tenant_id": TENANT, "budget_id": f"b{b}"}
        roll = rng.random()
        refs = open_refs[b]
        if roll < 0.50 or not refs:
            ref = f"r{i}"
            refs.append(ref)
            amount = f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}"
            cmd = {**base, "type": "reserve", "amount": amount, "currency": "USD", "ref_id": ref}
        elif roll < 0.80:
            cmd = {**base, "type": "charge", "ref_id": refs.pop(rng.randrange(len(refs)))}
        elif roll < 0.95:
            cmd = {**base, "type": "release", "ref_id": refs.pop(rng.randrange(len(refs)))}
        else:
            cmd = {**base, "type": "fund", "amount": "1000.00", "currency": "USD"}
        out.append(orjson.dumps(cmd))
    return out


def _opened_budgets(n_budgets: int, now: datetime) -> dict[tuple[str, str], BudgetState]:
    states = {}
    for b in range(n_budgets):
        body = {"command_id": f"open{b}", "type": "open_budget", "tenant_id": TENANT,
                "budget_id": f"b{b}", "currency": "USD", "period": "monthly",
                "hard_cap": "10000000.00", "period_allowance": "5000000.00"}  # fmt: skip
        cmd = parse_command(orjson.dumps(body))
        key = (TENANT, f"b{b}")
        states[key] = record(initial_state(*key), cmd, now, DEFAULT_CURRENCIES).state
    return states


def _timed(label: str, n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    rate = n / dt
    print(f"{label:<58} {n:>8} commands in {dt:6.2f} s = {rate:>10,.0f} commands/s")
    return rate


def main() -> None:
    """Run both measurements and print commands/s."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", type=int, default=200_000)
    ap.add_argument("--budgets", type=int, default=10_000)
    args = ap.parse_args()

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    raws = _workload(args.commands, args.budgets)
    parsed: list[Command] = [domain_command(parse_command(r), 2, DEFAULT_CURRENCIES) for r in raws]

    states = _opened_budgets(args.budgets, now)

    def run_apply() -> None:
        s = dict(states)
        for cmd in parsed:
            key = (cmd.tenant_id, cmd.budget_id)
            s[key], _ev, _alerts = apply(s[key], cmd, now)

    def run_full() -> None:
        s = dict(states)
        for raw in raws:
            cmd = parse_command(raw)
            key = (cmd.tenant_id, cmd.budget_id)
            s[key] = record(s[key], cmd, now, DEFAULT_CURRENCIES).state

    a = _timed("(a) apply (decide+evolve+alerts), domain commands", len(parsed), run_apply)
    b = _timed("(b) parse -> record (translate, decide, seal, evolve)", len(raws), run_full)
    print(f"targets: (a) >= 100,000/s {'MET' if a >= 100_000 else 'MISSED'}; "
          f"(b) >= 30,000/s {'MET' if b >= 30_000 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
