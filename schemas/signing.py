"""Signed privileged commands: the `ledger-sig-v1` header format, signing and verification.

A privileged command (`PRIVILEGED`) carries four Kafka headers: `ledger-key-id`,
`ledger-principal` (who acts), `ledger-tenant` (the tenant the principal may act on, or `*`)
and `ledger-sig-v1`, the lowercase hex HMAC-SHA256, under the named key, of

    b"ledger-sig-v1" + field(key_id) + field(principal) + field(tenant) + field(key) + field(value)

where ``field(x)`` is the 4-byte big-endian length of ``x`` followed by ``x`` (strings in UTF-8,
``key`` and ``value`` the exact bytes of the Kafka message). Length prefixes make the encoding
unambiguous: no two different field tuples give the same bytes. Pure: standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

VERSION: Final = b"ledger-sig-v1"
SIG_HEADER: Final = "ledger-sig-v1"
KEY_ID_HEADER: Final = "ledger-key-id"
PRINCIPAL_HEADER: Final = "ledger-principal"
TENANT_HEADER: Final = "ledger-tenant"
HEADERS: Final = (SIG_HEADER, KEY_ID_HEADER, PRINCIPAL_HEADER, TENANT_HEADER)
ANY_TENANT: Final = "*"

#: Command types accepted only with a valid signature; reserve, charge, release need none.
#: A monitor change is configuration, like configure_budget: signed too.
PRIVILEGED: Final = frozenset(
    {
        "open_budget",
        "configure_budget",
        "fund",
        "adjust",
        "close_period",
        "expire_reservations",
        "set_monitor",
        "remove_monitor",
    }
)

#: Key ids: short and printable, so they can be logged and named in a dead letter.
KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Principals: like command ids (1-128 characters, no whitespace).
PRINCIPAL_PATTERN: Final = re.compile(r"\S{1,128}")
_MAC_PATTERN: Final = re.compile(r"[0-9a-f]{64}")

# The checks a refusal names (the `check` header of the dead letter).
CHECK_MISSING: Final = "signature_missing"
CHECK_MALFORMED: Final = "signature_malformed"
CHECK_KEY: Final = "key_unknown"
CHECK_MAC: Final = "signature_mismatch"
CHECK_TENANT: Final = "tenant_scope"

Headers = Iterable[tuple[str, bytes | str | None]]
#: Headers as confluent-kafka's `produce(headers=...)` takes them.
KafkaHeaders = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Verified:
    """A valid signature: who signed, for which tenant scope, with which key."""

    principal: str
    tenant: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A signature that does not authorise the message: the failed check and why."""

    check: str
    reason: str


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def canonical_bytes(key_id: str, principal: str, tenant: str, key: bytes, value: bytes) -> bytes:
    """The exact bytes the MAC covers (see the module docstring)."""
    return b"".join(
        (
            VERSION,
            _field(key_id.encode()),
            _field(principal.encode()),
            _field(tenant.encode()),
            _field(key),
            _field(value),
        )
    )


def mac_hex(
    secret: bytes, key_id: str, principal: str, tenant: str, key: bytes, value: bytes
) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical bytes under `secret`."""
    canon = canonical_bytes(key_id, principal, tenant, key, value)
    return hmac.new(secret, canon, hashlib.sha256).hexdigest()


def sign(
    key: bytes,
    value: bytes,
    *,
    key_id: str,
    secret: bytes,
    principal: str,
    tenant: str = ANY_TENANT,
) -> KafkaHeaders:
    """The four signature headers of a message, ready for `Producer.produce(headers=...)`."""
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError("a key id is 1-64 characters of A-Z a-z 0-9 . _ -")
    if not PRINCIPAL_PATTERN.fullmatch(principal) or not PRINCIPAL_PATTERN.fullmatch(tenant):
        raise ValueError("a principal or tenant is 1-128 characters without whitespace")
    mac = mac_hex(secret, key_id, principal, tenant, key, value)
    return [
        (KEY_ID_HEADER, key_id.encode()),
        (PRINCIPAL_HEADER, principal.encode()),
        (TENANT_HEADER, tenant.encode()),
        (SIG_HEADER, mac.encode()),
    ]


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs messages as one principal with one key; `repr` never shows the secret."""

    key_id: str
    secret: bytes
    principal: str
    tenant: str = ANY_TENANT

    def headers(self, key: bytes, value: bytes) -> KafkaHeaders:
        """The signature headers of one message."""
        return sign(
            key,
            value,
            key_id=self.key_id,
            secret=self.secret,
            principal=self.principal,
            tenant=self.tenant,
        )

    def as_principal(self, principal: str, tenant: str = ANY_TENANT) -> Signer:
        """The same key, signing as another principal (and tenant scope)."""
        return Signer(self.key_id, self.secret, principal, tenant)

    def __repr__(self) -> str:
        return (
            f"Signer(key_id={self.key_id!r}, principal={self.principal!r}, tenant={self.tenant!r})"
        )


def _read(headers: Headers) -> dict[str, str] | Refusal:
    found: dict[str, str] = {}
    for name, raw in headers:
        if name not in HEADERS:
            continue
        if name in found:
            # Two readers could pick different copies: a repeated header is never guessed at.
            return Refusal(CHECK_MALFORMED, f"header {name} appears more than once")
        if raw is None:
            return Refusal(CHECK_MALFORMED, f"header {name} has no value")
        try:
            found[name] = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            return Refusal(CHECK_MALFORMED, f"header {name} is not UTF-8")
    return found


def verify(
    headers: Headers,
    key: bytes | None,
    value: bytes,
    keys: Mapping[str, bytes],
    tenant_id: str | None = None,
) -> Verified | Refusal:
    """Check a message's signature headers against the active `keys` (key id -> secret); with
    `tenant_id`, also that the signed tenant scope is `*` or that tenant."""
    found = _read(headers)
    if isinstance(found, Refusal):
        return found
    if not found:
        return Refusal(
            CHECK_MISSING, "a privileged command needs a signature (no ledger-* headers)"
        )
    missing = [h for h in HEADERS if h not in found]
    if missing:
        return Refusal(CHECK_MALFORMED, "missing signature header(s): " + ", ".join(missing))
    key_id, principal = found[KEY_ID_HEADER], found[PRINCIPAL_HEADER]
    tenant, mac = found[TENANT_HEADER], found[SIG_HEADER]
    if not KEY_ID_PATTERN.fullmatch(key_id):
        return Refusal(CHECK_MALFORMED, "ledger-key-id is not a valid key id")
    if not PRINCIPAL_PATTERN.fullmatch(principal) or not PRINCIPAL_PATTERN.fullmatch(tenant):
        return Refusal(CHECK_MALFORMED, "ledger-principal or ledger-tenant is empty or too long")
    if not _MAC_PATTERN.fullmatch(mac):
        return Refusal(CHECK_MALFORMED, "ledger-sig-v1 is not 64 lowercase hex digits")
    secret = keys.get(key_id)
    if secret is None:
        return Refusal(CHECK_KEY, f"key id {key_id!r} is not an active signing key")
    expected = mac_hex(secret, key_id, principal, tenant, key or b"", value)
    if not hmac.compare_digest(expected, mac):
        return Refusal(
            CHECK_MAC, "the signature does not match this message, principal and tenant scope"
        )
    if tenant_id is not None and tenant not in (ANY_TENANT, tenant_id):
        return Refusal(
            CHECK_TENANT,
            f"principal {principal!r} is scoped to tenant {tenant!r}, not {tenant_id!r}",
        )
    return Verified(principal, tenant, key_id)
