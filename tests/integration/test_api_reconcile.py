"""`POST .../budgets/{bid}/reconcile` (operator) against a real ledger fed through Kafka, and
`budget-ledger adjust --wait` (accepted 0; refused or dead-lettered 1, with the reason)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.api_reads import tenant_connection
from budget_ledger.projections.reconcile_options import ReconcileOptions
from budget_ledger.projections.shard import replay_shard
from tests.conftest import as_login
from tests.integration.api_world import KeySpec, Services, World, api_world, fed_consumer
from tests.integration.support import (
    cli,
    fund,
    open_budget,
    reserve,
)

pytestmark = pytest.mark.integration

A = "/v1/tenants/acme/budgets"


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    services = Services(kafka_bootstrap, pg_admin_dsn, template_database, app_login)
    keys: list[KeySpec] = [
        ("operator", "acme", ("read", "operator")),
        ("writer", "acme", ("read", "write")),
        ("globex", "globex", ("read", "operator")),
    ]
    stream: list[dict[str, Any]] = []
    for budget in ("clean", "tampered", "chain", "adjusted"):
        stream += [
            open_budget("acme", budget, f"{budget}-open"),
            fund("acme", budget, f"{budget}-fund", "100.00"),
            reserve("acme", budget, f"{budget}-r1", "30.00", "r1"),
        ]
    with api_world(services, keys) as w, fed_consumer(w.settings, stream):
        yield w


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def _reconcile(client: TestClient, world: World, budget: str, key: str = "operator") -> Any:
    auth = {"Authorization": f"Bearer {world.keys[key]}"}
    return client.post(f"{A}/{budget}/reconcile", headers=auth)


def test_a_clean_budget_has_no_drift(client: TestClient, world: World) -> None:
    response = _reconcile(client, world, "clean")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "tenant_id": "acme",
        "budget_id": "clean",
        "events": 3,
        "clean": True,
        "chain": {"status": "ok", "sequence": None, "problem": None},
        "mac_checked": False,
        "drift": [],
        "adjust": None,
    }


def test_a_tampered_balance_row_is_drift_with_the_fixing_adjust(
    client: TestClient, world: World
) -> None:
    with psycopg.connect(world.settings.database_url) as conn:  # the owner
        conn.execute(
            "UPDATE budget_balances SET funded = 12500, available = 9500 "
            "WHERE tenant_id = 'acme' AND budget_id = 'tampered'"
        )
        conn.execute(
            "UPDATE reservations SET amount = 2000 "
            "WHERE tenant_id = 'acme' AND budget_id = 'tampered' AND ref_id = 'r1'"
        )
    out = _reconcile(client, world, "tampered").json()
    assert out["clean"] is False and out["chain"]["status"] == "ok"
    drift = {(d["table"], d["key"], d["field"]): d for d in out["drift"]}
    assert set(drift) == {
        ("budget_balances", "tampered", "funded"),
        ("budget_balances", "tampered", "available"),
        ("reservations", "r1", "amount"),
    }
    funded = drift[("budget_balances", "tampered", "funded")]
    assert (funded["expected"], funded["stored"], funded["difference"]) == (
        "100.00",
        "125.00",
        "25.00",
    )
    amount = drift[("reservations", "r1", "amount")]
    assert (amount["expected"], amount["stored"], amount["difference"]) == (
        "30.00",
        "20.00",
        "-10.00",
    )
    assert out["adjust"] == {
        "amount": "25.00",
        "reason": "reconcile: funded drift, ledger 100.00, stored 125.00",
    }


def test_a_broken_chain_names_its_first_bad_link(client: TestClient, world: World) -> None:
    with psycopg.connect(world.settings.database_url) as conn:
        conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
        conn.execute(
            "UPDATE ledger SET event = jsonb_set(event::jsonb, '{command_id}', '\"forged\"')::json "
            "WHERE tenant_id = 'acme' AND budget_id = 'chain' AND sequence = 2"
        )
        conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    out = _reconcile(client, world, "chain").json()
    assert out["clean"] is False
    assert out["chain"]["status"] == "broken" and out["chain"]["sequence"] == 2
    assert out["chain"]["problem"]


def test_reconcile_needs_the_operator_scope_and_a_known_budget(
    client: TestClient, world: World
) -> None:
    forbidden = _reconcile(client, world, "clean", key="writer")
    assert forbidden.status_code == 403 and "operator" in forbidden.json()["detail"]
    assert _reconcile(client, world, "nope").status_code == 404
    other = client.post(
        "/v1/tenants/globex/budgets/clean/reconcile",
        headers={"Authorization": f"Bearer {world.keys['operator']}"},
    )
    assert other.status_code == 403
    # Globex's operator does not see acme's budget of the same name.
    globex = client.post(
        "/v1/tenants/globex/budgets/clean/reconcile",
        headers={"Authorization": f"Bearer {world.keys['globex']}"},
    )
    assert globex.status_code == 404
    assert client.post(f"{A}/clean/reconcile").status_code == 401


def test_an_api_whose_login_is_only_a_reader_reconciles_its_tenant_only(world: World) -> None:
    # As deployed (deploy/k8s/api-deployment.yaml): the API's login is a member of
    # ledger_reader and nothing else; the replay runs as that role under row-level security.
    user, password = f"api_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    url = world.settings.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE ledger_reader").format(
                sql.Identifier(user), sql.Literal(password)
            )
        )
    try:
        reader_url = as_login(url, user, password)
        api = world.settings.model_copy(update={"api_database_url": SecretStr(reader_url)})
        with TestClient(create_app(api)) as c:
            auth = {"Authorization": f"Bearer {world.keys['operator']}"}
            response = c.post(f"{A}/clean/reconcile", headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["clean"] is True and response.json()["events"] == 3
        # The reconciler's queries, without any tenant or budget filter, bound to another
        # tenant: none of acme's rows (ledger, projections, checkpoints) are seen.
        with tenant_connection(reader_url, "ledger_reader", "globex") as conn:
            seen = replay_shard(conn, ReconcileOptions(progress=False))
        assert (seen.budgets, seen.events, seen.drifts) == (0, 0, [])
        with tenant_connection(reader_url, "ledger_reader", "acme") as conn:
            assert replay_shard(conn, ReconcileOptions(progress=False)).budgets == 4
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))


# --- budget-ledger adjust --wait -----------------------------------------------------------------


def _adjust(settings: Settings, amount: str, *extra: str) -> Any:
    return cli(settings, "adjust", "--tenant", "acme", "--budget", "adjusted", "--amount", amount,
               "--reason", "test", "--operator", "ops", *extra)  # fmt: skip


def test_adjust_wait_exits_0_when_applied_and_1_with_the_reason_when_refused(
    world: World,
) -> None:
    applied = _adjust(world.settings, "-10.00", "--wait", "20")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "budget_adjusted" in applied.stdout and "funded=90.00" in applied.stdout
    # 90.00 funded: taking 200.00 away would make funded negative.
    refused = _adjust(world.settings, "-200.00", "--wait")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused: negative_funds" in refused.stderr


def test_adjust_wait_exits_1_with_the_reason_when_dead_lettered(world: World) -> None:
    # Signed with a key the ledger does not hold: the consumer dead-letters it.
    rogue = world.settings.model_copy(
        update={"signing_keys": {"rogue": SecretStr("r" * 64)}, "signing_key_id": "rogue"}
    )
    dead = _adjust(rogue, "1.00", "--wait", "20")
    assert dead.returncode == 1, dead.stdout + dead.stderr
    assert "dead-lettered (unauthorized)" in dead.stderr
