"""Reports rendered as JSON and CSV (entrypoints/report_render.py), without a database."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import orjson
import pytest

from budget_ledger.entrypoints.report_render import (
    CSV_COLUMNS,
    coalesced,
    content_disposition,
    csv_chunks,
    csv_filename,
    tenant_json_chunks,
)
from budget_ledger.ledger.state import BudgetConfig
from budget_ledger.projections.api_reads import BudgetView
from budget_ledger.projections.reports import (
    REFUSAL_REASONS,
    Balances,
    BudgetReport,
    RangeSpec,
    TypeTotal,
    complete,
)
from budget_ledger.schemas.events import ALERT_TYPES, EVENT_TYPES

pytestmark = pytest.mark.unit

SINCE, UNTIL = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def _report(budget_id: str, currency: str = "USD", digits: int = 2) -> BudgetReport:
    view = BudgetView(
        "acme", budget_id, currency, digits, 0, 0, 0, 0, 0, "0.00", 5, None,
        BudgetConfig("rolling"), SINCE,
    )  # fmt: skip
    events = {"budget_funded": TypeTotal(2, 150_000), "budget_adjusted": TypeTotal(1, -300)}
    return BudgetReport(
        view,
        SINCE,
        UNTIL,
        Balances(),
        Balances(5, 149_700, 1_000, 0, 148_700, "0.67", UNTIL),
        complete(events, EVENT_TYPES, TypeTotal()),
        complete({"insufficient_funds": 2, "some_future_reason": 1}, REFUSAL_REASONS, 0),
        "0.67",
        complete({}, ALERT_TYPES, 0),
    )


def test_the_csv_has_a_fixed_header_and_one_row_per_budget() -> None:
    text = b"".join(csv_chunks([_report("b1"), _report("=cmd|' /C calc'!A0", "JPY", 0)]))
    rows = list(csv.DictReader(io.StringIO(text.decode(), newline=""), dialect="excel"))
    assert len(rows) == 2 and list(rows[0]) == list(CSV_COLUMNS)
    assert len(set(CSV_COLUMNS)) == len(CSV_COLUMNS)
    first = rows[0]
    assert first["budget_funded_amount"] == "1500.00" and first["budget_adjusted_amount"] == "-3.00"
    assert first["opening_funded"] == "0.00" and first["closing_available"] == "1487.00"
    assert first["refused_insufficient_funds"] == "2"
    assert first["refused_other"] == "some_future_reason:1"
    assert rows[1]["closing_funded"] == "149700" and rows[1]["budget_funded_amount"] == "150000"
    # An id a spreadsheet would run as a formula is written as text.
    assert rows[1]["budget_id"] == "'=cmd|' /C calc'!A0"
    assert text.endswith(b"\r\n") and text.count(b"\r\n") == 3


def test_the_tenant_json_is_streamed_a_budget_at_a_time_and_parses() -> None:
    chunks = list(
        tenant_json_chunks("acme", RangeSpec(SINCE, UNTIL), [_report("b1"), _report("b2")])
    )
    assert len(chunks) == 4  # head, one per budget, totals
    whole = orjson.loads(b"".join(chunks))
    assert [b["budget_id"] for b in whole["budgets"]] == ["b1", "b2"]
    assert whole["from"] == "2026-11-01T00:00:00.000000Z" and whole["period"] is None
    (usd,) = whole["totals"]
    assert usd["budgets"] == 2 and usd["closing"]["funded"] == "2994.00"
    assert usd["events"]["budget_funded"] == {"count": 4, "amount": "3000.00"}
    empty = orjson.loads(b"".join(tenant_json_chunks("acme", RangeSpec(period="week"), [])))
    assert empty == {"tenant_id": "acme", "from": None, "to": None, "period": "week",
                     "budgets": [], "totals": []}  # fmt: skip


def test_file_names() -> None:
    spec = RangeSpec(SINCE, UNTIL)
    name = csv_filename("acme", "b1", spec)
    assert name == "acme-b1-20261101T000000Z-20261201T000000Z.csv"
    assert csv_filename("acme", None, RangeSpec(period="month")) == "acme-all-month.csv"
    header = content_disposition(csv_filename('ac"me/é', "b 1", spec))
    assert header.startswith('attachment; filename="ac_me__-b_1-20261101T000000Z-')
    assert "filename*=UTF-8''ac%22me%2F%C3%A9-b%201-" in header


def test_streamed_pieces_are_coalesced_without_changing_the_bytes() -> None:
    rows = [bytes([65 + i % 26]) * 700 for i in range(300)]
    pieces = list(coalesced(iter(rows), size=64 * 1024))
    assert b"".join(pieces) == b"".join(rows)
    assert len(pieces) == 4 and all(len(p) >= 64 * 1024 for p in pieces[:-1])
    assert list(coalesced(iter([]))) == []
