"""Reports as JSON and CSV text (projections/reports.py computes them): what the HTTP API
streams and the CLI `report` writes. Money is decimal text with the budget's own digits, times
RFC 3339 UTC; a tenant report is produced a budget at a time, never whole in memory."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson

from budget_ledger.projections.reports import (
    REFUSAL_REASONS,
    Balances,
    BudgetReport,
    CurrencyTotals,
    RangeSpec,
    Totals,
    TypeTotal,
)
from budget_ledger.schemas.events import ALERT_TYPES, EVENT_TYPES, rfc3339_utc
from budget_ledger.schemas.money import to_decimal_str

_BALANCE_FIELDS = ("sequence", "funded", "reserved", "charged", "available", "utilization_pct")
#: The CSV columns, one row per budget, always these in this order.
CSV_COLUMNS: tuple[str, ...] = (
    "tenant_id",
    "budget_id",
    "currency",
    "from",
    "to",
    *(f"opening_{f}" for f in _BALANCE_FIELDS),
    *(f"closing_{f}" for f in _BALANCE_FIELDS),
    "events",
    *(f"{t}_{part}" for t in EVENT_TYPES for part in ("count", "amount")),
    *(f"refused_{r}" for r in REFUSAL_REASONS),
    "refused_other",
    "peak_utilization_pct",
    *(f"alerts_{t}" for t in ALERT_TYPES),
)
# A cell a spreadsheet would run as a formula: ids are client text, so such an id is written
# with a leading apostrophe (amounts are never text: a negative amount stays "-3.00").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_KNOWN_REASONS = frozenset(REFUSAL_REASONS)


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339_utc(dt)


def balances_json(b: Balances, digits: int) -> dict[str, Any]:
    """Balances after an event (zeros and null `recorded_at` when there was none)."""
    return {
        "sequence": b.sequence,
        "funded": to_decimal_str(b.funded, digits),
        "reserved": to_decimal_str(b.reserved, digits),
        "charged": to_decimal_str(b.charged, digits),
        "available": to_decimal_str(b.available, digits),
        "utilization_pct": b.utilization_pct,
        "recorded_at": _time(b.recorded_at),
    }


def _events_json(events: dict[str, TypeTotal], digits: int) -> dict[str, Any]:
    return {
        t: {"count": v.count, "amount": to_decimal_str(v.amount, digits)} for t, v in events.items()
    }


def report_json(r: BudgetReport) -> dict[str, Any]:
    """One budget's report as a JSON object."""
    b, d = r.budget, r.budget.digits
    return {
        "tenant_id": b.tenant_id,
        "budget_id": b.budget_id,
        "currency": b.currency,
        "from": rfc3339_utc(r.since),
        "to": rfc3339_utc(r.until),
        "opening": balances_json(r.opening, d),
        "closing": balances_json(r.closing, d),
        "event_count": r.event_count,
        "events": _events_json(r.events, d),
        "refusals": r.refusals,
        "peak_utilization_pct": r.peak_utilization_pct,
        "alerts_raised": r.alerts,
    }


def totals_json(t: CurrencyTotals) -> dict[str, Any]:
    """The sums over one currency's budgets."""

    def sums(values: list[int]) -> dict[str, str]:
        names = ("funded", "reserved", "charged", "available")
        return {n: to_decimal_str(v, t.digits) for n, v in zip(names, values, strict=True)}

    return {
        "currency": t.currency,
        "budgets": t.budgets,
        "opening": sums(t.opening),
        "closing": sums(t.closing),
        "event_count": sum(v.count for v in t.events.values()),
        "events": _events_json(t.events, t.digits),
        "refusals": t.refusals,
        "alerts_raised": t.alerts,
    }


def tenant_json_chunks(
    tenant_id: str, spec: RangeSpec, reports: Iterable[BudgetReport]
) -> Iterator[bytes]:
    """A tenant report as JSON, one budget per chunk, the totals last:
    `{"tenant_id", "from", "to", "period", "budgets": [...], "totals": [...]}`."""
    head = {
        "tenant_id": tenant_id,
        "from": _time(spec.since),
        "to": _time(spec.until),
        "period": spec.period,
    }
    yield orjson.dumps(head)[:-1] + b', "budgets": ['
    totals = Totals()
    sep = b""
    for r in reports:
        totals.add(r)
        yield sep + orjson.dumps(report_json(r))
        sep = b","
    yield b'], "totals": ' + orjson.dumps([totals_json(t) for t in totals.currencies()]) + b"}"


def _id_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(r: BudgetReport) -> list[str]:
    """One budget's CSV row, in CSV_COLUMNS order."""
    b, d = r.budget, r.budget.digits
    zero = to_decimal_str(0, d)

    def money(v: int) -> str:  # most cells of a wide report are zero: render that once
        return zero if v == 0 else to_decimal_str(v, d)

    row = [_id_cell(b.tenant_id), _id_cell(b.budget_id), b.currency]
    row += [_utc_text(r.since), _utc_text(r.until)]
    for bal in (r.opening, r.closing):
        row += [str(bal.sequence), *(money(v) for v in _money(bal)), bal.utilization_pct]
    row.append(str(r.event_count))
    for t in EVENT_TYPES:
        total = r.events[t]
        row += [str(total.count), money(total.amount)]
    row += [str(r.refusals[reason]) for reason in REFUSAL_REASONS]
    other = [f"{k}:{v}" for k, v in r.refusals.items() if k not in _KNOWN_REASONS and v]
    row.append(";".join(other))
    row.append(r.peak_utilization_pct or "")
    row += [str(r.alerts[t]) for t in ALERT_TYPES]
    return row


@lru_cache(maxsize=64)
def _utc_text(dt: datetime) -> str:
    # A tenant report has a few distinct range bounds (one pair per time zone).
    return rfc3339_utc(dt)


def _money(b: Balances) -> tuple[int, int, int, int]:
    return b.funded, b.reserved, b.charged, b.available


def csv_chunks(reports: Iterable[BudgetReport]) -> Iterator[bytes]:
    """RFC 4180 CSV (CRLF line ends, UTF-8), the header row first, then one row per budget."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: Iterable[str]) -> bytes:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode()

    yield line(CSV_COLUMNS)
    for r in reports:
        yield line(csv_row(r))


def coalesced(chunks: Iterable[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """The same bytes in pieces of about `size`: a server sends a piece per write (a thread
    hop per piece for a synchronous stream), so one write per budget row would dominate."""
    pending: list[bytes] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _file_time(dt: datetime) -> str:
    return rfc3339_utc(dt)[:19].replace("-", "").replace(":", "") + "Z"


def csv_filename(tenant_id: str, budget_id: str | None, spec: RangeSpec,
                 since: datetime | None = None, until: datetime | None = None) -> str:  # fmt: skip
    """`<tenant>-<budget>-<from>-<to>.csv` (`all` for a tenant report; the period's name when
    each budget has its own range); characters other than letters, digits, `.`, `_`, `-` as `_`."""
    since, until = since or spec.since, until or spec.until
    parts = [tenant_id, budget_id or "all"]
    if since is not None and until is not None:
        parts += [_file_time(since), _file_time(until)]
    else:
        parts.append(spec.period or "report")
    return "-".join(parts) + ".csv"


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII-safe `filename` and the exact UTF-8 `filename*` (RFC 6266)."""
    safe = _file_part(filename)
    return f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(filename, safe='')}"
