"""The end-to-end benchmark's workload: seeded command streams written to a file up front.

`prepare` opens and funds every budget; `mix` is the timed stream: ~50% reserve, 30% charge,
15% release, 5% fund over uniformly chosen budgets, including refusals (reserves beyond the
available funds, charges of unknown or already-settled reservations, partial charges beyond the
reserved amount). Every command id is unique, so every message must become exactly one ledger
event. The file holds one message per line, ``key TAB value``, and for a privileged command
(open, fund) ``key TAB value TAB headers`` with its signature headers as a JSON list of
``[name, value]`` pairs; JSON values never contain a raw newline or tab.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from budget_ledger.schemas.signing import PRIVILEGED, KafkaHeaders, Signer

TENANTS = 10


def signing_settings() -> dict[str, Any]:
    """Settings of a signing key made for one benchmark run: its privileged commands are signed,
    as the ledger requires (the key is never written anywhere but the consumers' environment)."""
    return {
        "signing_keys": {"bench-run": secrets.token_hex(32)},
        "signing_key_id": "bench-run",
        "signing_principal": "bench-operator",
    }


def signing_env(settings: Any) -> dict[str, str]:
    """The LEDGER_SIGNING_* variables of `settings`, for a child process."""
    keys = {k: v.get_secret_value() for k, v in settings.signing_keys.items()}
    return {
        "LEDGER_SIGNING_KEYS": orjson.dumps(keys).decode(),
        "LEDGER_SIGNING_KEY_ID": settings.signing_key_id,
        "LEDGER_SIGNING_PRINCIPAL": settings.signing_principal,
    }


def headers_for(
    signer: Signer | None, command: dict[str, Any], key: bytes, value: bytes
) -> KafkaHeaders | None:
    """The signature headers of a privileged command (None for the others or without a signer)."""
    if signer is None or command.get("type") not in PRIVILEGED:
        return None
    return signer.headers(key, value)


def budget_key(b: int, space: str = "") -> tuple[str, str]:
    """(tenant_id, budget_id) of budget number `b`; `space` prefixes the tenant ids (a run in a
    database where an earlier run's budgets already exist)."""
    return f"{space}tenant-{b % TENANTS}", f"budget-{b}"


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def prepare(budgets: int, prefix: str, space: str = "") -> Iterator[dict[str, Any]]:
    """Open and fund every budget (two commands per budget)."""
    for b in range(budgets):
        tenant, budget = budget_key(b, space)
        base = {"tenant_id": tenant, "budget_id": budget}
        yield {
            **base,
            "command_id": f"{prefix}open-{b}",
            "type": "open_budget",
            "currency": "USD",
            "period": "rolling",
        }
        yield {
            **base,
            "command_id": f"{prefix}fund-{b}",
            "type": "fund",
            "amount": "300.00",
            "currency": "USD",
        }


def mix(
    n: int, budgets: int, prefix: str, seed: int = 6, space: str = ""
) -> Iterator[dict[str, Any]]:
    """`n` commands: ~50% reserve, 30% charge, 15% release, 5% fund, with refusals."""
    rng = random.Random(seed)
    open_refs: list[list[tuple[str, int]]] = [[] for _ in range(budgets)]
    settled: list[list[str]] = [[] for _ in range(budgets)]
    for i in range(n):
        b = rng.randrange(budgets)
        tenant, budget = budget_key(b, space)
        cmd: dict[str, Any] = {
            "command_id": f"{prefix}c-{i}",
            "tenant_id": tenant,
            "budget_id": budget,
        }
        roll = rng.random()
        refs = open_refs[b]
        if roll < 0.50:
            ref, amount = f"r-{i}", rng.randint(100, 4_000)
            refs.append((ref, amount))
            cmd.update(type="reserve", amount=_money(amount), currency="USD", ref_id=ref)
        elif roll < 0.80:
            cmd["type"] = "charge"
            if not refs or rng.random() < 0.02:
                # Unknown or already settled reservation: refused.
                cmd["ref_id"] = rng.choice(settled[b]) if settled[b] else f"missing-{i}"
            else:
                ref, amount = refs.pop(rng.randrange(len(refs)))
                settled[b].append(ref)
                cmd["ref_id"] = ref
                if rng.random() < 0.2:  # partial charge; sometimes more than reserved: refused
                    cmd["amount"] = _money(rng.randint(1, amount + amount // 10))
        elif roll < 0.95:
            cmd["type"] = "release"
            if not refs:
                cmd["ref_id"] = rng.choice(settled[b]) if settled[b] else f"missing-{i}"
            else:
                ref, _ = refs.pop(rng.randrange(len(refs)))
                settled[b].append(ref)
                cmd["ref_id"] = ref
        else:
            cmd.update(type="fund", amount=_money(rng.randint(5_000, 40_000)), currency="USD")
        if len(settled[b]) > 50:
            del settled[b][:25]
        yield cmd


def write(path: Path, commands: Iterator[dict[str, Any]], signer: Signer | None = None) -> int:
    """Write commands as `key TAB json [TAB headers]` lines (privileged ones signed by `signer`);
    return how many."""
    n = 0
    with open(path, "wb") as f:
        for cmd in commands:
            key = f"{cmd['tenant_id']}:{cmd['budget_id']}".encode()
            value = orjson.dumps(cmd)
            f.write(key + b"\t" + value)
            headers = headers_for(signer, cmd, key, value)
            if headers is not None:
                f.write(
                    b"\t"
                    + orjson.dumps(
                        [[k, v.decode() if isinstance(v, bytes) else v] for k, v in headers]
                    )
                )
            f.write(b"\n")
            n += 1
    return n
