"""Money on the wire: ISO 4217 currency table and exact decimal-string <-> minor-unit conversion.

Money is never a float anywhere in the ledger. On the wire an amount is a decimal string
(``"12.50"``); inside the domain it is an ``int`` of minor units (``1250``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: Default currency table: ISO 4217 code -> number of minor digits. Configurable by callers.
DEFAULT_CURRENCIES: Final[Mapping[str, int]] = MappingProxyType({"USD": 2, "ZWG": 2})

#: Unsigned decimal text, no exponent, no leading zeros, at most 15 integer digits so that
#: minor units always fit a Postgres bigint (15 + up to 3 minor digits < 9.2e18).
UNSIGNED_AMOUNT_PATTERN: Final = r"^(0|[1-9][0-9]{0,14})(\.[0-9]+)?$"
SIGNED_AMOUNT_PATTERN: Final = r"^-?(0|[1-9][0-9]{0,14})(\.[0-9]+)?$"
# Wire text of balances is not bounded like command input (sums can grow past 15 digits).
#: Powers of ten by minor digits (a table: `10**n` is typed Any and is slower).
POW10: Final[tuple[int, ...]] = tuple(10**n for n in range(19))
_DECIMAL_RE: Final = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")


def fraction_digits(text: str) -> int:
    """Number of digits after the decimal point in ``text`` (0 when there is none)."""
    dot = text.find(".")
    return 0 if dot < 0 else len(text) - dot - 1


def to_minor(text: str, digits: int) -> int:
    """Convert decimal text (``"-12.5"``) to integer minor units; ValueError if not exact."""
    if not _DECIMAL_RE.match(text):
        raise ValueError(f"{text!r} is not a decimal amount like '12.50'")
    whole, _, frac = text.partition(".")
    if len(frac) > digits:
        raise ValueError(f"{text!r} has {len(frac)} decimal places; at most {digits} allowed")
    negative = whole.startswith("-")
    if negative:
        whole = whole[1:]
    # Pure integer arithmetic: no Decimal or float rounding can creep in.
    minor = int(whole) * POW10[digits] + (int(frac.ljust(digits, "0")) if digits else 0)
    return -minor if negative else minor


def to_decimal_str(minor: int, digits: int) -> str:
    """Minor units as decimal text with exactly ``digits`` places (``-300`` -> ``"-3.00"``)."""
    text = str(minor)
    if minor >= 0 and len(text) > digits > 0:  # fast path: plain string slicing
        return f"{text[:-digits]}.{text[-digits:]}"
    if digits == 0:
        return text
    if minor < 0:
        q, r = divmod(-minor, POW10[digits])
        return f"-{q}.{r:0{digits}d}"
    q, r = divmod(minor, POW10[digits])
    return f"{q}.{r:0{digits}d}"


def normalize_decimal(text: str) -> str:
    """Canonical spelling of decimal text: ``"12.50"`` -> ``"12.5"``, ``"3.0"`` -> ``"3"``."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
