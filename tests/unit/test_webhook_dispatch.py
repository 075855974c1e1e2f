"""The deliverer's bookkeeping without I/O: the alert rows of a batch, the disabled alert, and
room under the thread bound."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from budget_ledger.consumers.webhook_deliverer import Deliverer, alert_rows, disabled_alert
from budget_ledger.ledger.settings import load_settings

pytestmark = pytest.mark.unit


@dataclass
class FakeMessage:
    raw: bytes
    off: int = 0

    def value(self) -> bytes:
        return self.raw

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.off


def test_alert_rows_keep_good_alerts_and_skip_the_rest() -> None:
    good = {"alert_id": "abc", "type": "hard_cap_reached", "tenant_id": "t", "budget_id": "b"}
    msgs: list[Any] = [
        FakeMessage(orjson.dumps(good)),
        FakeMessage(b"not json"),
        FakeMessage(orjson.dumps({"type": "x"})),  # no tenant, no id
        FakeMessage(orjson.dumps({**good, "alert_id": "n", "data": {"t": "\x00"}})),
        FakeMessage(orjson.dumps({**good, "alert_id": "d", "budget_id": None})),
    ]
    cols = alert_rows(msgs)
    assert cols["ids"] == ["alrt_abc", "alrt_d"]
    assert cols["budgets"] == ["b", None]
    assert cols["tenants"] == ["t", "t"]


def test_the_disabled_alert() -> None:
    at = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    a = orjson.loads(disabled_alert("t", "whe_1", "https://x/", at, at))
    assert a["type"] == "webhook_endpoint_disabled" and a["tenant_id"] == "t"
    assert a["data"] == {"endpoint_id": "whe_1", "url": "https://x/",
                         "failing_since": "2026-11-27T03:00:00.000000Z"}  # fmt: skip
    assert len(a["alert_id"]) == 32


@dataclass
class FakeWorker:
    pending: int
    retired: bool = False

    def retire(self) -> None:
        self.retired = True


def test_room_is_made_by_retiring_an_idle_thread_only() -> None:
    d = Deliverer(load_settings())
    busy, idle = FakeWorker(2), FakeWorker(0)
    d.workers = {"a": busy, "b": idle}  # type: ignore[dict-item]
    assert d._retire_one_idle() is True
    assert idle.retired and not busy.retired and list(d.workers) == ["a"]
    assert d._retire_one_idle() is False
