"""The keyed chain: an HMAC-SHA256 over each event's hash with a key the database does not hold.

The plain hash chain proves the order and content of a budget's events, but anyone who can
INSERT into the ledger can extend it. The MAC proves that a key holder (the consumer) wrote the
row. Rows written before the keys existed are covered by a legacy seal per budget: a MAC over
the budget's last unkeyed sequence and hash, made once with the owner's `ledger seal-legacy`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

_EVENT = b"ledger-mac-v1\n"
_SEAL = b"ledger-legacy-seal-v1\n"


@dataclass(frozen=True, slots=True)
class ChainKey:
    """The key the consumer MACs new rows with (its id is stored with every MAC)."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChainKeyring:
    """Every key whose MACs still verify (current and retired), by id."""

    keys: Mapping[str, bytes] = field(repr=False)


def _mac(secret: bytes, domain: bytes, key_id: str, text: str) -> str:
    msg = domain + key_id.encode() + b"\n" + text.encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def event_mac(key: ChainKey, event_hash: str) -> str:
    """The MAC of one ledger row: over its event hash (which covers prev_hash and the event)."""
    return _mac(key.secret, _EVENT, key.key_id, event_hash)


def _seal_text(tenant_id: str, budget_id: str, sequence: int, event_hash: str) -> str:
    return json.dumps([tenant_id, budget_id, sequence, event_hash], separators=(",", ":"))


def seal_mac(key: ChainKey, tenant_id: str, budget_id: str, sequence: int, event_hash: str) -> str:
    """The MAC of a legacy seal: the budget's rows up to `sequence` (ending in `event_hash`)."""
    return _mac(
        key.secret, _SEAL, key.key_id, _seal_text(tenant_id, budget_id, sequence, event_hash)
    )


def mac_problem(
    ring: ChainKeyring, key_id: str | None, mac: str | None, event_hash: str
) -> str | None:
    """Why a row's MAC does not verify, or None when it does (`mac` None: the caller decides)."""
    secret = ring.keys.get(key_id or "")
    if secret is None:
        return f"mac key id {key_id!r} is not among LEDGER_CHAIN_KEYS"
    if not hmac.compare_digest(_mac(secret, _EVENT, key_id or "", event_hash), mac or ""):
        return "mac mismatch: the row was not written by a holder of the chain key"
    return None


def seal_verifies(
    ring: ChainKeyring,
    key_id: str,
    mac: str,
    tenant_id: str,
    budget_id: str,
    sequence: int,
    event_hash: str,
) -> bool:
    """True when a legacy seal was made with a key of the ring."""
    secret = ring.keys.get(key_id)
    if secret is None:
        return False
    text = _seal_text(tenant_id, budget_id, sequence, event_hash)
    return hmac.compare_digest(_mac(secret, _SEAL, key_id, text), mac)
