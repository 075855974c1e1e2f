"""Which failures of a batch one message caused, and which message: a search over batch prefixes.

Deciding a batch is pure given its look-ups, so any prefix of a batch is itself a valid batch.
When Postgres refuses a batch because of its data, the consumer replays prefixes in trial
transactions (rolled back) and bisects to the message whose addition makes the batch fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg
from psycopg import errors

# Unique constraints that a concurrent writer can violate (another partition's consumer took the
# same tenant command_id; a stale in-memory budget): replaying the batch resolves them.
# Since migration 008 the command_id key is ledger_commands' (it kept the old name) and a
# violated key of the partitioned ledger is named after its partition (ledger_y2026m11_...).
RACE_CONSTRAINTS = frozenset(
    {"ledger_tenant_id_command_id_key", "ledger_tenant_id_budget_id_sequence_key"}
)
# The ledger's (partition, offset) key is fixed by the position, never by the message's content:
# a violation means the stored positions are behind the ledger, which no dead letter can fix.
POSITION_CONSTRAINTS = frozenset({"ledger_pkey"})
_LEDGER_PARTITION_KEY = re.compile(r"ledger_(?:y\d{4}m\d{2}|default|legacy)_(pkey|sequence_key)")
# e.g. 'COPY ledger, line 93, column funded: "9299999999999999907"'
_COPY_CONTEXT = re.compile(r"COPY (\w+), line (\d+)")


def constraint_of(exc: BaseException) -> str | None:
    """The constraint a Postgres error names, if any."""
    if isinstance(exc, psycopg.Error):
        return exc.diag.constraint_name
    return None


def _ledger_key(constraint: str | None) -> str | None:
    """A ledger partition's key as the parent's name ("ledger_pkey"), else the name as is."""
    match = _LEDGER_PARTITION_KEY.fullmatch(constraint or "")
    if match is None:
        return constraint
    return "ledger_pkey" if match.group(1) == "pkey" else "ledger_tenant_id_budget_id_sequence_key"


def is_race(exc: BaseException) -> bool:
    """A unique violation that replaying the batch resolves (the rewind-and-retry path)."""
    return (
        isinstance(exc, errors.UniqueViolation)
        and _ledger_key(constraint_of(exc)) in RACE_CONSTRAINTS
    )


def is_position_conflict(exc: BaseException) -> bool:
    """The ledger already holds a row for this (partition, offset): positions are behind it."""
    return (
        isinstance(exc, errors.UniqueViolation)
        and _ledger_key(constraint_of(exc)) in POSITION_CONSTRAINTS
    )


def is_data_error(exc: BaseException) -> bool:
    """A failure caused by the values written, so one message of the batch can be blamed.

    psycopg's DataError family (bad text such as NUL, numeric overflow, invalid JSON escapes, out
    of range dates; raised by the server or by psycopg's own dumpers), integrity errors (check,
    not-null, unique) other than the position key, and Python-side encoding errors.
    """
    if isinstance(exc, psycopg.DataError | UnicodeError):
        return True
    return isinstance(exc, psycopg.IntegrityError) and not is_position_conflict(exc)


def describe(exc: BaseException) -> str:
    """One line naming the error's class, SQLSTATE and message, for a dead letter's reason."""
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    name = type(exc).__name__ + (f" ({state})" if state else "")
    return f"{name}: {' '.join(str(exc).split())}"


def copy_line(exc: BaseException) -> tuple[str, int] | None:
    """(table, 1-based line) of the COPY row Postgres names in the error's context, if any."""
    if not isinstance(exc, psycopg.Error):
        return None
    match = _COPY_CONTEXT.search(exc.diag.context or "")
    return (match.group(1), int(match.group(2))) if match else None


def first_failing(n: int, fails: Callable[[int], bool], hint: int | None = None) -> int | None:
    """The 0-based index i such that prefix i passes and prefix i + 1 fails, or None.

    `fails(k)` runs the first k messages. None when the whole batch (k = n) passes, i.e. the
    failure did not reproduce. The empty prefix passes by definition. A `hint` (the message
    Postgres named) is taken after two probes confirm it; otherwise bisect: O(log n) calls to
    `fails`, plus one for the whole batch; needs no monotonicity: lo passes, hi fails.
    """
    if hint is not None and 0 <= hint < n and fails(hint + 1) and not fails(hint):
        return hint
    if n <= 0 or not fails(n):
        return None
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return hi - 1
