"""Input limits of the wire contract: ids, free text, timestamps, metadata and message size.

Plain functions over plain values (no pydantic), used by the validators in ``schemas.commands``
and by ``parse_command``. Each ``*_problem`` returns None when the value is acceptable, else the
tail of a readable sentence ("contains control character U+0000 at position 3") that the caller
prefixes with the field name. docs/input-limits.md states every rule and why.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any, Final

import orjson

#: A raw command message larger than this is refused before any JSON parsing.
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Longest id (command_id, tenant_id, budget_id, ref_id, operator), in characters.
MAX_ID_LENGTH: Final = 128
#: Longest free-text field (adjust ``reason``), in characters.
MAX_TEXT_LENGTH: Final = 1000
#: Largest ``metadata``, as compact UTF-8 JSON (it is copied into every event and hashed).
MAX_METADATA_BYTES: Final = 8 * 1024
#: Deepest ``metadata`` nesting: the metadata object itself is level 1.
MAX_METADATA_DEPTH: Final = 8
#: Metadata integers beyond this do not survive JSON tooling (JavaScript, jq) intact.
MAX_SAFE_INT: Final = 2**53
#: Every timestamp, once converted to UTC, must lie in [TIMESTAMP_MIN, TIMESTAMP_MAX).
TIMESTAMP_MIN: Final = datetime(2000, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX: Final = datetime(2200, 1, 1, tzinfo=UTC)

_MIN_NAIVE: Final = TIMESTAMP_MIN.replace(tzinfo=None)
_MAX_NAIVE: Final = TIMESTAMP_MAX.replace(tzinfo=None)
# C0 controls, DEL, C1 controls and (lone) surrogates: never valid in any string of a command.
_BAD_TEXT: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A key written with whitespace before its colon; the fast duplicate-key count cannot see it.
_SPACED_KEY: Final = re.compile(rb'"[ \t\r\n]+:')
_CATEGORY_NAMES: Final = {
    "Cc": "control character",
    "Cf": "invisible format character",
    "Cs": "surrogate",
    "Co": "private-use character",
    "Cn": "unassigned code point",
    "Zs": "space",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}


def _char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


# --- ids -------------------------------------------------------------------------------------


def id_problem(value: str) -> str | None:
    """None if ``value`` is a well-formed id: visible characters only (no control, format,
    separator, surrogate, private-use or unassigned code point, no space), already in Unicode
    NFKC form, not starting with a combining mark."""
    # isprintable() is False exactly for the categories C* and Z* (except the ASCII space).
    if value.isprintable() and " " not in value:
        if value.isascii():
            return None  # ASCII is always NFKC and has no combining marks
        if unicodedata.is_normalized("NFKC", value) and unicodedata.category(value[0])[0] != "M":
            return None
    return _describe_id(value)


def _describe_id(value: str) -> str:
    rule = "(an id is visible characters in Unicode NFKC form)"
    for i, ch in enumerate(value):
        category = unicodedata.category(ch)
        if ch == " " or category in _CATEGORY_NAMES:
            kind = _CATEGORY_NAMES.get(category, "space")
            return f"contains {kind} {_char(ch)} at position {i} {rule}"
        folded = unicodedata.normalize("NFKC", ch)
        if folded != ch:
            return (
                f"contains compatibility character {_char(ch)} at position {i}, which reads as "
                f"{folded!r} {rule}"
            )
    if value and unicodedata.category(value[0])[0] == "M":
        return f"starts with combining mark {_char(value[0])} {rule}"
    return f"is not in Unicode NFKC form (e.g. a decomposed accent) {rule}"


# --- free text -------------------------------------------------------------------------------


def text_problem(value: str) -> str | None:
    """None unless ``value`` holds a control character or a lone surrogate."""
    if value.isprintable():
        return None
    bad = _BAD_TEXT.search(value)
    if bad is None:
        return None  # only separators/format characters: allowed in free text
    kind = "surrogate" if "\ud800" <= bad.group() <= "\udfff" else "control character"
    return f"contains {kind} U+{ord(bad.group()):04X} at position {bad.start()}"


# --- timestamps ------------------------------------------------------------------------------


def timestamp_problem(value: datetime) -> str | None:
    """None if ``value`` (timezone-aware) lies in [2000-01-01Z, 2200-01-01Z) once in UTC.

    Compared without ``astimezone``: that conversion itself overflows at year 1 and 9999.
    """
    offset = value.utcoffset()
    if offset is not None and 1999 <= value.year <= 2200:
        utc = value.replace(tzinfo=None) - offset
        if _MIN_NAIVE <= utc < _MAX_NAIVE:
            return None
    return (
        f"{value.isoformat()} is out of range: it must lie between 2000-01-01T00:00:00Z "
        "(inclusive) and 2200-01-01T00:00:00Z (exclusive) in UTC"
    )


# --- metadata --------------------------------------------------------------------------------


class MetadataInvalid(ValueError):
    """Metadata refused: ``error_class`` ("schema", "too_large", "invalid_text") and ``detail``."""

    def __init__(self, error_class: str, detail: str, path: list[Any] | None = None) -> None:
        super().__init__(detail)
        self.error_class = error_class
        self.detail = detail
        self.path = path if path is not None else []

    def where(self) -> str:
        """The readable problem, naming the place in the metadata (``at ['a'][0]: ...``)."""
        if not self.path:
            return self.detail
        return "at " + "".join(f"[{p!r}]" for p in self.path) + ": " + self.detail


def check_metadata(value: dict[str, Any]) -> int:
    """The number of object keys in ``value`` (at any depth) if it is acceptable metadata,
    else raise :class:`MetadataInvalid`.

    Acceptable: only strings, integers within +/-2**53, booleans, null, lists and objects
    (what survives a JSONB round trip byte for byte: it is hashed), at most 8 levels deep,
    at most 8 KiB of compact JSON, no control character or lone surrogate in any key or string.
    """
    keys = _scan(value, 1)  # one pass: shape, depth and the key count for the duplicate check
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise MetadataInvalid("invalid_text", "contains a lone surrogate") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise MetadataInvalid(
            "too_large", f"is {len(encoded)} bytes of JSON; at most {MAX_METADATA_BYTES} allowed"
        )
    # orjson writes control characters as escapes and DEL/C1 as raw bytes (0x7F, 0xC2 0x80-0x9F):
    # without any of those bytes no string holds one, and the walk is skipped.
    if 92 in encoded or 127 in encoded or 0xC2 in encoded:  # backslash, DEL, C1 lead byte
        _text_walk(value, [])
    return keys


def _scan(value: Any, depth: int) -> int:
    if depth > MAX_METADATA_DEPTH:
        raise MetadataInvalid("too_large", f"nests deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        keys = len(value)
        pairs: Any = value.items()
    else:
        keys = 0
        pairs = enumerate(value)
    for k, v in pairs:
        t = type(v)
        # Exact types first (all that JSON gives); anything else takes _scan_other.
        if t is str or t is bool or v is None:
            continue
        if t is int and -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
            continue
        try:
            if t is dict or t is list:
                keys += _scan(v, depth + 1)
            else:
                keys += _scan_other(v, depth)
        except MetadataInvalid as exc:
            exc.path.insert(0, k)
            raise
    return keys


def _scan_other(v: Any, depth: int) -> int:
    if isinstance(v, dict | list):
        return _scan(v, depth + 1)
    if isinstance(v, str | bool):
        return 0
    if isinstance(v, int):
        if -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
            return 0
        raise MetadataInvalid("schema", "integers must be within +/-2**53")
    raise MetadataInvalid(
        "schema",
        "only strings, integers, booleans, null, lists and objects are allowed "
        f"(got {type(v).__name__})",
    )


def _text_walk(value: Any, path: list[Any]) -> None:
    if isinstance(value, str):
        found = text_problem(value)
        if found is not None:
            raise MetadataInvalid("invalid_text", found, path)
    elif isinstance(value, dict):
        for k, item in value.items():
            found = text_problem(k)
            if found is not None:
                raise MetadataInvalid("invalid_text", f"key {k!r} {found}", path)
            _text_walk(item, [*path, k])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _text_walk(item, [*path, i])


# --- duplicate keys --------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def duplicate_key(raw: bytes, parsed_keys: int) -> str | None:
    """The first key repeated within one object of the valid JSON ``raw`` (None if none).

    ``parsed_keys`` is how many keys the parsed value holds (duplicates collapse there). Fast
    path, exact: without a backslash every ``"`` in ``raw`` delimits a string, a string directly
    followed by ``:`` is a key (a value string cannot be), and a value string starting with
    ``:`` only adds to the count; so when no key has whitespace before its colon, the count of
    ``":`` equals ``parsed_keys`` only if no key was repeated. Anything else takes the slow
    path: a full parse that refuses a repeated key. Cheaper still when the message has no
    colon but the keys' (no timestamps, no ':' in values): each key needs one colon, so as many
    colons as parsed keys means no repeated key.
    """
    if 92 not in raw:  # no backslash (int membership: a memchr)
        # Every ':' is a key's separator: nothing to prove. Else count the '":' as above.
        if raw.count(58) == parsed_keys:
            return None
        if raw.count(b'":') == parsed_keys and not _SPACED_KEY.search(raw):
            return None
    try:
        json.loads(raw, object_pairs_hook=_refuse_repeats)
    except _DuplicateKey as dup:
        return str(dup.args[0])
    return None
