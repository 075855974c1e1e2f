"""The alert history and dead-lettered outcomes over HTTP: commands go through Kafka to a running
consumer, which records alerts and dead letters in its batch transaction; the API (in-process,
FastAPI's TestClient) reads them back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from budget_ledger.entrypoints.api.app import create_app
from tests.integration.api_world import KeySpec, Services, World, api_world, fed_consumer
from tests.integration.support import (
    fund,
    open_budget,
    produce,
    reserve,
    scalar,
    wait_for,
)

pytestmark = pytest.mark.integration

BUDGETS = 12  # two alerts each: 24 alerts of acme


def _crossings(tenant: str, budget: str) -> list[dict[str, Any]]:
    """Open, fund 100, reserve 80 (soft_cap_exceeded), reserve 15 (hard_cap_approaching)."""
    return [
        open_budget(tenant, budget, f"{budget}-open"),
        fund(tenant, budget, f"{budget}-fund", "100.00"),
        reserve(tenant, budget, f"{budget}-r1", "80.00", "r1"),
        reserve(tenant, budget, f"{budget}-r2", "15.00", "r2"),
    ]


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    services = Services(kafka_bootstrap, pg_admin_dsn, template_database, app_login)
    keys: list[KeySpec] = [
        ("acme", "acme", ("read", "write")),
        ("globex", "globex", ("read",)),
        ("platform", None, ("read",)),
    ]
    stream = [c for i in range(BUDGETS) for c in _crossings("acme", f"b{i:02d}")]
    stream += _crossings("globex", "g1")
    with api_world(services, keys) as w, fed_consumer(w.settings, stream, relay=False):
        yield w


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def _get(client: TestClient, world: World, path: str, key: str = "acme", **params: Any) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {world.keys[key]}"}, params=params)


def _all(client: TestClient, world: World, tenant: str = "acme", **params: Any) -> list[Any]:
    """Every alert, page after page."""
    found: list[Any] = []
    cursor = None
    while True:
        extra = {"cursor": cursor} if cursor else {}
        response = _get(client, world, f"/v1/tenants/{tenant}/alerts", **params, **extra)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["alerts"]) <= params.get("limit", 100)
        found += page["alerts"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def _order(alert: dict[str, Any]) -> tuple[Any, ...]:
    return (alert["recorded_at"], alert["budget_id"], alert["sequence"], alert["type"])


# --- alerts --------------------------------------------------------------------------------------


def test_every_cap_crossing_is_in_the_history_newest_first(
    client: TestClient, world: World
) -> None:
    alerts = _all(client, world, limit=7)
    assert len(alerts) == 2 * BUDGETS
    assert alerts == sorted(alerts, key=_order, reverse=True)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)  # each once across the pages
    by_budget = {(a["budget_id"], a["sequence"], a["type"], a["severity"]) for a in alerts}
    assert by_budget == {
        (f"b{i:02d}", seq, kind, severity)
        for i in range(BUDGETS)
        for seq, kind, severity in [
            (3, "soft_cap_exceeded", "warning"),
            (4, "hard_cap_approaching", "critical"),
        ]
    }
    soft = next(a for a in alerts if a["budget_id"] == "b00" and a["sequence"] == 3)
    assert (soft["utilization_pct"], soft["threshold"]) == ("80.00", "80.00")
    assert soft["tenant_id"] == "acme"
    # The same alert as its ledger event's time.
    event = _get(client, world, "/v1/tenants/acme/budgets/b00/ledger", limit=10).json()
    (reserved,) = [e for e in event["entries"] if e["sequence"] == 3]
    assert soft["recorded_at"] == reserved["recorded_at"]


def test_one_budgets_alerts(client: TestClient, world: World) -> None:
    alerts = _all(client, world, budget_id="b05", limit=1)
    assert [(a["budget_id"], a["sequence"]) for a in alerts] == [("b05", 4), ("b05", 3)]
    assert _all(client, world, budget_id="nope") == []


def test_from_is_inclusive_and_to_exclusive(client: TestClient, world: World) -> None:
    alerts = _all(client, world)
    times = sorted({a["recorded_at"] for a in alerts})
    middle = times[len(times) // 2]
    newer = _all(client, world, **{"from": middle})
    older = _all(client, world, to=middle, limit=5)
    assert {a["alert_id"] for a in newer} == {
        a["alert_id"] for a in alerts if a["recorded_at"] >= middle
    }
    assert {a["alert_id"] for a in older} == {
        a["alert_id"] for a in alerts if a["recorded_at"] < middle
    }
    assert _all(client, world, **{"from": middle, "to": middle}) == []
    naive = _get(client, world, "/v1/tenants/acme/alerts", to="2026-01-01T00:00:00")
    assert naive.status_code == 422


def test_tenants_see_their_own_alerts_only(client: TestClient, world: World) -> None:
    globex = _all(client, world, tenant="globex", key="globex")
    assert {(a["tenant_id"], a["budget_id"]) for a in globex} == {("globex", "g1")}
    assert len(globex) == 2
    assert _get(client, world, "/v1/tenants/globex/alerts").status_code == 403
    assert _get(client, world, "/v1/tenants/acme/alerts", key="globex").status_code == 403
    assert len(_all(client, world, tenant="globex", key="platform")) == 2
    assert client.get("/v1/tenants/acme/alerts").status_code == 401


def test_a_cursor_not_of_this_list_is_400(client: TestClient, world: World) -> None:
    for cursor in ["!!", "bm9wZQ", "WzEsMiwzXQ"]:  # not base64, "nope", "[1,2,3]"
        response = _get(client, world, "/v1/tenants/acme/alerts", cursor=cursor)
        assert response.status_code == 400, cursor


# --- dead-lettered commands ----------------------------------------------------------------------


def _outcome(client: TestClient, world: World, command_id: str) -> Any:
    response = _get(client, world, f"/v1/tenants/acme/commands/{command_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_dead_lettered_command_answers_its_reason(client: TestClient, world: World) -> None:
    unsigned = fund("acme", "b00", "dl-unsigned", "5.00")
    produce(world.settings, [unsigned], sign=False)
    wait_for(lambda: _outcome(client, world, "dl-unsigned")["status"] != "pending", what="it")
    out = _outcome(client, world, "dl-unsigned")
    assert out["status"] == "dead_lettered" and out["error_class"] == "unauthorized"
    assert out["command_id"] == "dl-unsigned" and "signature" in out["reason"]
    assert out["recorded_at"].endswith("Z")
    # Another tenant's dead letter is not found in this tenant's: pending.
    globex = _get(client, world, "/v1/tenants/globex/commands/dl-unsigned", key="globex")
    assert globex.json() == {"command_id": "dl-unsigned", "status": "pending", "budget_id": None,
                             "sequence": None, "type": None, "event": None}  # fmt: skip


def test_a_reused_command_id_answers_the_recorded_event(client: TestClient, world: World) -> None:
    first = fund("acme", "b01", "dl-reused", "1.00")
    second = fund("acme", "b01", "dl-reused", "2.00")  # same id, other payload: dead-lettered
    produce(world.settings, [first, second])
    query = "SELECT count(*) FROM dead_letters WHERE command_id = 'dl-reused'"
    wait_for(lambda: scalar(world.settings.database_url, query) == 1, what="the dead letter")
    out = _outcome(client, world, "dl-reused")
    assert out["status"] == "recorded" and out["event"]["amount"] == "1.00"


def test_a_waiting_write_answers_a_dead_letter_at_once(world: World) -> None:
    # Signed with a key the ledger does not know: the consumer dead-letters the command.
    rogue = world.settings.model_copy(
        update={"signing_keys": {"rogue": SecretStr("r" * 64)}, "signing_key_id": "rogue"}
    )
    with TestClient(create_app(rogue)) as c:
        auth = {"Authorization": f"Bearer {world.keys['acme']}"}
        idem = f"rogue-{uuid.uuid4().hex[:8]}"
        body = {"amount": "1.00", "currency": "USD"}
        started = time.monotonic()
        answer = c.post("/v1/tenants/acme/budgets/b02/topup", json=body,
                        headers={**auth, "Idempotency-Key": idem}, params={"wait": 10})  # fmt: skip
        assert time.monotonic() - started < 8
        assert answer.status_code == 422, answer.text
        out = answer.json()
        assert (out["command_id"], out["status"], out["error_class"]) == (
            idem,
            "dead_lettered",
            "unauthorized",
        )
        assert "key" in out["reason"]
        # A retry with the same key is answered from the dead letter, with or without wait,
        # and nothing is sent again.
        sent = _dlq_count(world)
        for params in ({"wait": 1}, {}):
            again = c.post("/v1/tenants/acme/budgets/b02/topup", json=body,
                           headers={**auth, "Idempotency-Key": idem}, params=params)  # fmt: skip
            assert again.status_code == 422 and again.json() == out
        time.sleep(0.5)
        assert _dlq_count(world) == sent
    assert int(scalar(world.settings.database_url, "SELECT count(*) FROM dead_letters "
                      "WHERE command_id = %(c)s", {"c": idem})) == 1  # fmt: skip


def _dlq_count(world: World) -> int:
    query = "SELECT count(*) FROM outbox WHERE topic = %(t)s"
    return int(scalar(world.settings.database_url, query, {"t": world.settings.topic_dlq}))
