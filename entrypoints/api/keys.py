"""API keys: their text form, hashing, and the owner's store (`api_keys`, migration 010).

A key is ``blk_<key_id>_<secret>``: ``key_id`` (16 hex digits) is the row to look up, so
verification is one primary-key read and one constant-time comparison of SHA-256 digests.
The secret carries 256 random bits, so a plain SHA-256 (no slow KDF) cannot be brute-forced;
only the digest is stored, and the key is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from budget_ledger.projections.api_reads import queries

KEY_PREFIX: Final = "blk_"
SCOPES: Final = ("read", "write", "operator")
MAX_NAME_LENGTH: Final = 128
_KEY_RE: Final = re.compile(r"blk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key as the API and `keys list` see it (never its secret or hash)."""

    key_id: str
    tenant_id: str | None  # None: a platform key, may act for any tenant
    name: str
    scopes: frozenset[str]
    created_at: datetime | None
    revoked_at: datetime | None


def new_key() -> tuple[str, str]:
    """A fresh (key_id, full key text)."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> bytes:
    """The SHA-256 digest stored for a key (of the whole text, id included)."""
    return hashlib.sha256(key.encode("ascii")).digest()


def key_id_of(key: str) -> str | None:
    """The key id of well-formed key text, or None (anything else: not a key of ours)."""
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else None


def key_matches(key: str, stored_hash: bytes) -> bool:
    """Whether `key` hashes to `stored_hash`, compared in constant time."""
    return hmac.compare_digest(key_hash(key), stored_hash)


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"read,write"`` as a tuple in canonical order; ValueError naming an unknown scope."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    if not wanted:
        raise ValueError("at least one scope is needed: " + ",".join(SCOPES))
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; known: {','.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def create_key(
    conn: psycopg.Connection, tenant_id: str | None, scopes: tuple[str, ...], name: str
) -> tuple[ApiKey, str]:
    """Store a new key (its hash only) and return it with its text, to be shown once."""
    key_id, key = new_key()
    row = conn.execute(
        queries()["insert_api_key"],
        {
            "key_id": key_id,
            "tenant": tenant_id,
            "name": name,
            "scopes": list(scopes),
            "hash": key_hash(key),
        },
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING
    return ApiKey(key_id, tenant_id, name, frozenset(scopes), row[0], None), key


def list_keys(conn: psycopg.Connection, tenant_id: str | None = None) -> list[ApiKey]:
    """Every key (or one tenant's), oldest first, without hashes."""
    rows = conn.execute(queries()["list_api_keys"], {"tenant": tenant_id}).fetchall()
    return [ApiKey(r[0], r[1], r[2], frozenset(r[3]), r[4], r[5]) for r in rows]


def revoke_key(conn: psycopg.Connection, key_id: str) -> bool:
    """Revoke a key now; False when no such key is active (unknown or revoked already)."""
    return conn.execute(queries()["revoke_api_key"], {"key_id": key_id}).fetchone() is not None


def verify_key(conn: psycopg.Connection, key: str) -> ApiKey | None:
    """The active key that `key` is, or None (malformed, unknown, wrong secret or revoked).

    Runs on the API's reader role through the SECURITY DEFINER function `ledger_api_key`."""
    key_id = key_id_of(key)
    if key_id is None:
        return None
    return active_key(key, conn.execute(queries()["lookup_api_key"], {"key_id": key_id}).fetchone())


def active_key(key: str, row: tuple[Any, ...] | None) -> ApiKey | None:
    """The active key that `key` is, given the stored row of its id (None: no such id)."""
    if row is None:
        key_matches(key, bytes(32))  # the same work as for a known id: no timing hint
        return None
    stored_id, tenant_id, name, scopes, stored_hash, revoked_at = row[:6]
    if not key_matches(key, bytes(stored_hash)) or revoked_at is not None:
        return None
    return ApiKey(stored_id, tenant_id, name, frozenset(scopes), None, revoked_at)
