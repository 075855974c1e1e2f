"""Balance monitors end to end: commands through Kafka to a running consumer, which evaluates the
monitors as the single writer and writes each `balance_monitor` alert in its batch transaction
(alerts table and, through the outbox, the alerts topic) exactly once per crossing; a consumer
restart loads the armed state from the projection; reconcile (twice: from checkpoints too) and
rebuild agree; and the HTTP endpoints publish and read monitors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.entrypoints.api.keys import create_key
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.rebuild import rebuild
from budget_ledger.projections.reconcile import reconcile
from budget_ledger.projections.reconcile_options import ReconcileOptions
from tests.conftest import _delete_topics, cloned_database, new_prefix, service_settings
from tests.integration.support import (
    _cmd,
    fund,
    ledger_count,
    open_budget,
    produce,
    read_topic,
    release,
    reserve,
    running_consumer,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration

T = "acme"


@dataclass
class World:
    settings: Settings
    url: str
    key: str


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    prefix = new_prefix()
    with cloned_database(pg_admin_dsn, template_database) as url:
        settings = service_settings(kafka_bootstrap, url, prefix, app_login)
        with psycopg.connect(url) as conn:
            key = create_key(conn, T, ("read", "write"), "monitors")[1]
        try:
            yield World(settings, url, key)
        finally:
            _delete_topics(kafka_bootstrap, prefix)


def set_monitor(budget: str, cid: str, mid: str, metric: str, op: str, threshold: str) -> Any:
    return _cmd("set_monitor", T, budget, cid, monitor_id=mid, metric=metric, operator=op,
                threshold=threshold)  # fmt: skip


def monitor_alerts(url: str, budget: str) -> list[tuple[int, str, str]]:
    """(sequence, monitor_id, value) of the budget's balance_monitor rows, in order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT sequence, payload FROM alerts WHERE tenant_id = %s AND budget_id = %s"
            " AND type = 'balance_monitor' ORDER BY sequence, monitor_id",
            (T, budget),
        ).fetchall()
    return [(seq, p["data"]["monitor_id"], p["data"]["value"]) for seq, p in rows]


def armed(url: str, budget: str) -> dict[str, bool]:
    text = scalar(
        url,
        "SELECT monitors::text FROM budget_balances WHERE tenant_id = %(t)s AND budget_id = %(b)s",
        {"t": T, "b": budget},
    )
    return {mid: m["armed"] for mid, m in orjson.loads(text or "{}").items()}


def test_one_alert_per_crossing_rearmed_across_a_consumer_restart(world: World) -> None:
    url, settings = world.url, world.settings
    first = [
        open_budget(T, "b1", "b1-open"),
        fund(T, "b1", "b1-fund", "100.00"),
        set_monitor("b1", "b1-m", "low", "available", "<", "50.00"),
        reserve(T, "b1", "b1-r1", "60.00", "r1"),  # available 40: fires (seq 4)
        reserve(T, "b1", "b1-r2", "5.00", "r2"),  # 35, still below: nothing
        release(T, "b1", "b1-rel", "r1"),  # 95: re-armed
        # Two monitors crossing on one event: two alerts of the same sequence.
        open_budget(T, "b2", "b2-open"),
        fund(T, "b2", "b2-fund", "10.00"),
        set_monitor("b2", "b2-m1", "half", "utilization_pct", ">=", "50"),
        set_monitor("b2", "b2-m2", "res", "reserved", ">", "4.99"),
        reserve(T, "b2", "b2-r1", "5.00", "r1"),
    ]
    with running_consumer(settings):
        produce(settings, first)
        wait_for(lambda: ledger_count(url) == len(first), what="the first commands")
    assert monitor_alerts(url, "b1") == [(4, "low", "40.00")]
    assert armed(url, "b1") == {"low": True}
    assert monitor_alerts(url, "b2") == [(5, "half", "50.00"), (5, "res", "5.00")]
    # A new consumer loads b1 from its projection row, armed flag included.
    second = [
        reserve(T, "b1", "b1-r3", "60.00", "r3"),  # 35 (r2 still held): the second crossing (seq 7)
        reserve(T, "b1", "b1-r4", "1.00", "r4"),  # still below: nothing
    ]
    with running_consumer(settings):
        produce(settings, second)
        wait_for(lambda: ledger_count(url) == len(first) + len(second), what="the rest")
        alerts = read_topic(settings, settings.topic_alerts, expect=4)
    assert monitor_alerts(url, "b1") == [(4, "low", "40.00"), (7, "low", "35.00")]
    assert armed(url, "b1") == {"low": False}
    on_topic = [orjson.loads(m.value()) for m in alerts]
    monitor = [a for a in on_topic if a["type"] == "balance_monitor"]
    assert len(monitor) == 4 and len({a["alert_id"] for a in monitor}) == 4
    # The replay agrees with the projection (then again from the checkpoints it wrote), and a
    # rebuild writes the same monitors.
    for _ in range(2):
        report = reconcile(url, ReconcileOptions(progress=False), checkpoint_dsn=url)
        assert report.clean, report.drifts
    before = {b: armed(url, b) for b in ("b1", "b2")}
    with psycopg.connect(url) as conn:
        rebuild(conn)
    assert {b: armed(url, b) for b in ("b1", "b2")} == before
    assert reconcile(url, ReconcileOptions(progress=False)).clean


# --- the HTTP endpoints --------------------------------------------------------------------------


def _auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.key}"}


def test_the_api_sets_lists_and_removes_monitors(world: World) -> None:
    url, settings = world.url, world.settings
    with running_consumer(settings, relay=False), TestClient(create_app(settings)) as client:
        produce(settings, [open_budget(T, "api", "api-open"), fund(T, "api", "api-fund", "20")])
        wait_for(lambda: scalar(url, "SELECT count(*) FROM ledger WHERE budget_id = 'api'") == 2)
        base = f"/v1/tenants/{T}/budgets/api/monitors"
        body = {"metric": "funded", "operator": "<", "threshold": "50"}
        set_ = client.post(base, json=body, params={"wait": 10},
                           headers={**_auth(world), "Idempotency-Key": "api-set-1"})  # fmt: skip
        assert set_.status_code == 200, set_.text
        event = set_.json()["event"]
        assert event["type"] == "monitor_set"
        generated = event["data"]["monitor_id"]
        assert generated.startswith("m-") and event["data"]["threshold_amount"] == "50.00"
        # Set while it holds (20 < 50): fired on the set event.
        assert monitor_alerts(url, "api") == [(3, generated, "20.00")]
        named = client.post(base, json={**body, "monitor_id": "pct", "metric": "utilization_pct",
                                        "operator": ">", "threshold": "87.5"},
                            params={"wait": 10},
                            headers={**_auth(world), "Idempotency-Key": "api-set-2"})  # fmt: skip
        assert named.status_code == 200, named.text
        listed = client.get(base, headers=_auth(world))
        assert listed.status_code == 200, listed.text
        assert listed.json() == {
            "budget_id": "api", "currency": "USD", "sequence": 4,
            "monitors": [
                {"monitor_id": generated, "metric": "funded", "operator": "<",
                 "threshold": "50.00", "armed": False, "state": "fired"},
                {"monitor_id": "pct", "metric": "utilization_pct", "operator": ">",
                 "threshold": "87.50", "armed": True, "state": "armed"},
            ],
        }  # fmt: skip
        bad = client.post(base, json={**body, "metric": "balance"},
                          headers={**_auth(world), "Idempotency-Key": "api-bad"})  # fmt: skip
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "metric"
        gone = client.delete(f"{base}/pct", params={"wait": 10},
                             headers={**_auth(world), "Idempotency-Key": "api-del"})  # fmt: skip
        assert gone.status_code == 200 and gone.json()["type"] == "monitor_removed", gone.text
        again = client.delete(f"{base}/pct", params={"wait": 10},
                              headers={**_auth(world), "Idempotency-Key": "api-del-2"})  # fmt: skip
        assert again.status_code == 422 and again.json()["reason"] == "monitor_not_found"
        after = client.get(base, headers=_auth(world)).json()
        assert [m["monitor_id"] for m in after["monitors"]] == [generated]
        assert (
            client.get(f"/v1/tenants/{T}/budgets/nope/monitors", headers=_auth(world)).status_code
            == 404
        )
        # Two monitors crossing on one event, read back one alert per page: none is skipped.
        produce(settings, [
            set_monitor("api", "api-m1", "r-a", "reserved", ">=", "1"),
            set_monitor("api", "api-m2", "r-b", "reserved", ">=", "2"),
            reserve(T, "api", "api-r1", "5.00", "r1"),
        ])  # fmt: skip
        wait_for(lambda: len(monitor_alerts(url, "api")) == 3, what="the two alerts")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"budget_id": "api", "limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = client.get(f"/v1/tenants/{T}/alerts", params=params, headers=_auth(world))
            assert page.status_code == 200, page.text
            seen += [a["data"]["monitor_id"] for a in page.json()["alerts"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == ["r-b", "r-a", generated]


def test_a_bad_monitor_through_kafka_is_dead_lettered_with_its_reason(world: World) -> None:
    url, settings = world.url, world.settings
    bad = set_monitor("b1", "bad-metric", "x", "balance", "<", "1")
    with running_consumer(settings, relay=False):
        produce(settings, [bad])
        query = "SELECT reason FROM dead_letters WHERE command_id = 'bad-metric'"
        wait_for(lambda: scalar(url, query) is not None, what="the dead letter")
    reason = scalar(url, query)
    assert "metric" in reason and "'available'" in reason, reason
