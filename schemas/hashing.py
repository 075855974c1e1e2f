"""Canonical JSON encoding and the per-budget SHA-256 hash chain (tamper evidence).

``canonical(d)`` is orjson with sorted keys: UTF-8, no insignificant whitespace, non-ASCII
characters written as themselves (not ``\\u`` escapes). Only ``str``, ``int``, ``bool``, ``None``,
``list`` and ``dict`` (with ``str`` keys) are allowed: these survive a Postgres JSONB round trip
unchanged, so the reconciler can recompute a hash from the stored JSONB. Floats are refused.

``hash = sha256(prev_hash.encode("ascii") + canonical(wire_event_without_hash)).hexdigest()``
with ``prev_hash = GENESIS_HASH`` (`ledger.events`) for a budget's first event.

The ledger stores each event as exactly the bytes that were hashed with ``"hash"`` appended as
the last key (`seal_body`, migration 024): a reader finds the hashed bytes by cutting that key
off (`event_digest`) instead of re-encoding the parsed event. Rows stored before migration 024
(JSONB's own rendering) are re-encoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson

_OPTS: Final = orjson.OPT_SORT_KEYS
_SCALARS: Final = (str, int, bool, type(None))


def _check(value: Any) -> None:
    # Exact type checks (not isinstance) would reject str subclasses like StrEnum members,
    # which orjson encodes as plain strings; isinstance is right here. bool is an int subclass.
    if isinstance(value, _SCALARS):
        if isinstance(value, float):  # pragma: no cover - floats are not in _SCALARS
            raise TypeError("floats are not allowed in canonical JSON")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"canonical JSON keys must be strings, got {type(k).__name__}")
            _check(v)
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check(v)
        return
    raise TypeError(f"{type(value).__name__} is not allowed in canonical JSON")


def canonical(d: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a JSON object (sorted keys, compact, UTF-8); TypeError on floats etc."""
    obj = d if isinstance(d, dict) else dict(d)
    _check(obj)
    return orjson.dumps(obj, option=_OPTS)


def chain_hash(prev_hash: str, wire_event_without_hash: Mapping[str, Any]) -> str:
    """Hex SHA-256 linking an event (its wire form minus ``hash``) to its predecessor.

    Same bytes as ``canonical`` but without its type walk: this is the per-command hot path,
    and the schemas already guarantee JSON-stable values. A value that is not (e.g. a float
    planted in a stored event) simply yields a different hash, which the reconciler reports
    as a broken link instead of crashing.
    """
    obj = wire_event_without_hash
    if not isinstance(obj, dict):
        obj = dict(obj)
    return _digest(prev_hash, orjson.dumps(obj, option=_OPTS))


def _digest(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


# What `seal_body` appends: `,"hash":"` + 64 hex digits + `"}` in place of the body's `}`.
_HASH_KEY: Final = ',"hash":"'
_SUFFIX_LEN: Final = len(_HASH_KEY) + 64 + 2


def seal_body(prev_hash: str, wire_event_without_hash: dict[str, Any]) -> tuple[str, str]:
    """`chain_hash` of an event, and the text the ledger stores for it: the hashed bytes with
    ``"hash"`` appended as the last key."""
    body = orjson.dumps(wire_event_without_hash, option=_OPTS)
    digest = _digest(prev_hash, body)
    return digest, f'{body[:-1].decode()}{_HASH_KEY}{digest}"}}'


def event_digest(prev_hash: str, text: str, wire_event_without_hash: Mapping[str, Any]) -> str:
    """The hash a stored event's hashed part gives on ``prev_hash``: over its exact bytes when
    ``text`` is in `seal_body`'s layout, else (a JSONB-era row) over the re-encoded dict."""
    if text[-_SUFFIX_LEN : -_SUFFIX_LEN + len(_HASH_KEY)] == _HASH_KEY and text[-2:] == '"}':
        return _digest(prev_hash, f"{text[:-_SUFFIX_LEN]}}}".encode())
    return chain_hash(prev_hash, wire_event_without_hash)
