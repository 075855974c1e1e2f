"""The API's writes against a real ledger: the API (in-process, FastAPI's TestClient) publishes to
Kafka, a running consumer applies the commands, and the answers and balances are read back
through the GET endpoints and straight from Postgres.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from budget_ledger.consumers.kafka_config import reader_config
from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.entrypoints.api.auth import principal_of
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.signing import KEY_ID_HEADER, PRINCIPAL_HEADER, TENANT_HEADER
from tests.integration.api_world import KeySpec, Services, World, api_world, fed_consumer
from tests.integration.support import scalar, wait_for

pytestmark = pytest.mark.integration

A = "/v1/tenants/acme/budgets"


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    services = Services(kafka_bootstrap, pg_admin_dsn, template_database, app_login)
    keys: list[KeySpec] = [
        ("writer", "acme", ("read", "write"), "rules engine"),
        ("reader", "acme", ("read",), "dashboard"),
        ("operator", "acme", ("read", "write", "operator"), "finance ops"),
        ("globex", "globex", ("read", "write"), "globex writer"),
        ("platform", None, ("read", "write"), "back office"),
    ]
    with api_world(services, keys) as w, fed_consumer(w.settings, relay=False):
        yield w


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def _post(
    client: TestClient,
    world: World,
    path: str,
    body: Any,
    key: str = "writer",
    idem: str | None = None,
    wait: float | None = 10,
) -> Any:
    headers = {"Authorization": f"Bearer {world.keys[key]}"}
    headers["Idempotency-Key"] = idem or f"api-{uuid.uuid4().hex[:16]}"
    params = {} if wait is None else {"wait": wait}
    return client.post(path, json=body, headers=headers, params=params)


def _ok(client: TestClient, world: World, path: str, body: Any, **kw: Any) -> dict[str, Any]:
    response = _post(client, world, path, body, **kw)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    assert out["status"] == "recorded" and out["event"]["command_id"] == out["command_id"]
    return out


def _get(client: TestClient, world: World, path: str, key: str = "writer", **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {world.keys[key]}"}
    response = client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _open(client: TestClient, world: World, budget: str, tenant: str = "acme") -> None:
    key = "writer" if tenant == "acme" else "globex"
    body = {"budget_id": budget, "currency": "USD", "period": "rolling"}
    opened = _ok(client, world, f"/v1/tenants/{tenant}/budgets", body, key=key)
    assert opened["type"] == "budget_opened"


def _published(settings: Settings) -> int:
    """Messages in the commands topic (the sum of its partitions' end offsets)."""
    consumer = Consumer(reader_config(settings, f"probe-{uuid.uuid4().hex}"))
    try:
        topic = settings.topic_commands
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


def _rows(world: World, command_id: str) -> int:
    query = "SELECT count(*) FROM ledger WHERE tenant_id = 'acme' AND command_id = %(c)s"
    return int(scalar(world.settings.database_url, query, {"c": command_id}))


# --- every write, end to end ---------------------------------------------------------------------


def test_every_write_moves_the_balances_as_expected(client: TestClient, world: World) -> None:
    _open(client, world, "e2e")
    b = f"{A}/e2e"
    funded = _ok(client, world, f"{b}/topup", {"amount": "100.00", "currency": "USD"})
    assert funded["type"] == "budget_funded" and funded["event"]["funded"] == "100.00"
    configured = _ok(client, world, f"{b}/configure", {"soft_cap": "50.00"})
    assert configured["type"] == "budget_configured"
    held = _ok(client, world, f"{b}/reserve",
               {"amount": "30.00", "currency": "USD", "ref_id": "r1"})  # fmt: skip
    assert held["type"] == "funds_reserved" and held["event"]["reserved"] == "30.00"
    charged = _ok(client, world, f"{b}/charge", {"ref_id": "r1", "amount": "20.00"})
    assert charged["type"] == "reservation_charged" and charged["event"]["charged"] == "20.00"
    _ok(client, world, f"{b}/reserve", {"amount": "10.00", "currency": "USD", "ref_id": "r2"})
    released = _ok(client, world, f"{b}/release", {"ref_id": "r2"})
    assert released["type"] == "reservation_released" and released["event"]["reserved"] == "0.00"
    adjusted = _ok(client, world, f"{b}/adjust", {"amount": "-5.00", "reason": "double top-up"},
                   key="operator")  # fmt: skip
    assert adjusted["event"]["funded"] == "95.00"
    # Read back through the GET endpoints.
    budget = _get(client, world, b)
    assert (budget["funded"], budget["reserved"], budget["charged"], budget["available"]) == (
        "95.00",
        "0.00",
        "20.00",
        "75.00",
    )
    assert budget["config"]["soft_cap"] == "50.00"
    entries = _get(client, world, f"{b}/ledger")["entries"]
    assert len(entries) == 8 and entries[0]["command_id"] == adjusted["command_id"]
    reservations = _get(client, world, f"{b}/reservations")["reservations"]
    assert [(r["ref_id"], r["status"]) for r in reservations] == [
        ("r1", "charged"),
        ("r2", "released"),
    ]
    outcome = _get(client, world, f"/v1/tenants/acme/commands/{charged['command_id']}")
    assert outcome["event"] == charged["event"]


def test_adjust_records_the_keys_name_as_operator(client: TestClient, world: World) -> None:
    _open(client, world, "adj")
    path = f"{A}/adj/adjust"
    done = _ok(client, world, path, {"amount": "7.00", "reason": "migration"}, key="operator")
    assert done["event"]["data"]["operator"] == "finance_ops" == principal_of("finance ops", "x")
    # Client text never names the operator: the field is refused, not overridden.
    claimed = {"amount": "1.00", "reason": "x", "operator": "someone-else"}
    response = _post(client, world, path, claimed, key="operator")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "operator"]
    # The write scope is not enough for an adjust.
    response = _post(client, world, path, {"amount": "1.00", "reason": "x"}, key="writer")
    assert response.status_code == 403 and "'operator'" in response.json()["detail"]


def test_without_wait_202_and_the_outcome_appears_later(client: TestClient, world: World) -> None:
    _open(client, world, "later")
    idem = f"later-{uuid.uuid4().hex[:8]}"
    body = {"amount": "3.00", "currency": "USD"}
    response = _post(client, world, f"{A}/later/topup", body, idem=idem, wait=None)
    assert response.status_code == 202
    assert response.json() == {"command_id": idem, "status": "pending"}

    def recorded() -> bool:
        return bool(
            _get(client, world, f"/v1/tenants/acme/commands/{idem}")["status"] == "recorded"
        )

    wait_for(recorded, timeout=30, what="the outcome of the top-up")
    assert _get(client, world, f"{A}/later")["funded"] == "3.00"
    # A retry now, without wait: 202 again, and the ledger has it already.
    again = _post(client, world, f"{A}/later/topup", body, idem=idem, wait=None)
    assert again.status_code == 202 and again.json()["status"] == "recorded"


# --- idempotency ---------------------------------------------------------------------------------


def test_a_retry_gets_the_same_event_and_writes_no_second_row(
    client: TestClient, world: World
) -> None:
    _open(client, world, "idem")
    idem = f"idem-{uuid.uuid4().hex[:8]}"
    body = {"amount": "12.50", "currency": "USD", "ref_id": "x1"}
    _ok(client, world, f"{A}/idem/topup", {"amount": "100.00", "currency": "USD"})
    first = _ok(client, world, f"{A}/idem/reserve", body, idem=idem)
    published = _published(world.settings)
    # The same amount spelled differently is the same request (the ledger's fingerprint).
    retry = _ok(client, world, f"{A}/idem/reserve", {**body, "amount": "12.5"}, idem=idem)
    assert retry["event"] == first["event"]
    assert _rows(world, idem) == 1
    assert _published(world.settings) == published  # answered from the ledger, not re-sent
    assert _get(client, world, f"{A}/idem")["reserved"] == "12.50"


def test_the_same_key_with_another_body_is_409(client: TestClient, world: World) -> None:
    _open(client, world, "conf")
    idem = f"conf-{uuid.uuid4().hex[:8]}"
    _ok(client, world, f"{A}/conf/topup", {"amount": "5.00", "currency": "USD"}, idem=idem)
    published = _published(world.settings)
    for path, body in [
        (f"{A}/conf/topup", {"amount": "6.00", "currency": "USD"}),  # another amount
        (f"{A}/idem/topup", {"amount": "5.00", "currency": "USD"}),  # another budget
        (f"{A}/conf/reserve", {"amount": "5.00", "currency": "USD", "ref_id": "c"}),
    ]:
        for wait in (None, 5):
            response = _post(client, world, path, body, idem=idem, wait=wait)
            assert response.status_code == 409, (path, response.text)
            assert idem in response.json()["detail"]
    assert _published(world.settings) == published  # nothing was sent
    assert _get(client, world, f"{A}/conf")["funded"] == "5.00"


def test_a_key_reused_before_the_first_is_recorded_is_409_after_waiting(
    client: TestClient, world: World
) -> None:
    _open(client, world, "race")
    idem = f"race-{uuid.uuid4().hex[:8]}"
    first = _post(client, world, f"{A}/race/topup", {"amount": "1.00", "currency": "USD"},
                  idem=idem, wait=None)  # fmt: skip
    assert first.status_code == 202
    # Sent at once: whether the first is recorded yet or not, the second is a conflict (checked
    # before publishing, or after waiting; the ledger dead-letters the second command).
    second = _post(client, world, f"{A}/race/topup", {"amount": "2.00", "currency": "USD"},
                   idem=idem)  # fmt: skip
    assert second.status_code == 409, second.text
    wait_for(lambda: _rows(world, idem) == 1, timeout=30, what="the first top-up")
    time.sleep(0.5)
    assert _rows(world, idem) == 1
    assert _get(client, world, f"{A}/race")["funded"] == "1.00"


# --- refusals and invalid requests ---------------------------------------------------------------


def test_a_refusal_by_the_rules_is_422_with_its_reason(client: TestClient, world: World) -> None:
    _open(client, world, "poor")
    _ok(client, world, f"{A}/poor/topup", {"amount": "10.00", "currency": "USD"})
    body = {"amount": "10.01", "currency": "USD", "ref_id": "big"}
    response = _post(client, world, f"{A}/poor/reserve", body)
    assert response.status_code == 422, response.text
    refusal = response.json()
    assert refusal["reason"] == "insufficient_funds"
    assert refusal["event"]["type"] == "reservation_rejected"
    assert refusal["event"]["command_id"] == refusal["command_id"]
    charge = _post(client, world, f"{A}/poor/charge", {"ref_id": "never-reserved"})
    assert charge.status_code == 422 and charge.json()["reason"]
    assert _get(client, world, f"{A}/poor")["reserved"] == "0.00"


def test_invalid_requests_are_422_naming_the_field(client: TestClient, world: World) -> None:
    published = _published(world.settings)
    path = f"{A}/any/reserve"
    cases: list[tuple[Any, list[str]]] = [
        ({"amount": 5, "currency": "USD", "ref_id": "r"}, ["body", "amount"]),
        ({"amount": "5.00", "currency": "USD"}, ["body", "ref_id"]),
        ({"amount": "5.00", "currency": "USD", "ref_id": "r", "colour": "red"}, ["body", "colour"]),
        ({"amount": "5.001", "currency": "USD", "ref_id": "r"}, ["body"]),
        ({"amount": "5.00", "currency": "USD", "ref_id": "r", "tenant_id": "globex"},
         ["body", "tenant_id"]),
        ({"amount": "5.00", "currency": "USD", "ref_id": "r", "budget_id": "b9"},
         ["body", "budget_id"]),
        ({"amount": "5.00", "currency": "USD", "ref_id": "r", "type": "fund"}, ["body", "type"]),
        (["not", "an", "object"], ["body"]),
    ]  # fmt: skip
    for body, loc in cases:
        response = _post(client, world, path, body)
        assert response.status_code == 422, body
        detail = response.json()["detail"]
        assert detail[0]["loc"] == loc, (body, detail)
    headers = {"Authorization": f"Bearer {world.keys['writer']}", "Idempotency-Key": "k"}
    for raw in (b"{", b'{"ref_id": "a", "ref_id": "b"}', b""):
        response = client.post(f"{A}/any/release", content=raw, headers=headers)
        assert response.status_code == 422, raw
    too_big = b'{"ref_id": "' + b"x" * 70_000 + b'"}'
    assert client.post(f"{A}/any/release", content=too_big, headers=headers).status_code == 413
    # The Idempotency-Key is required, and is an id.
    auth = {"Authorization": f"Bearer {world.keys['writer']}"}
    missing = client.post(f"{A}/any/release", json={"ref_id": "r"}, headers=auth)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    spaced = _post(client, world, f"{A}/any/release", {"ref_id": "r"}, idem="a b")
    assert spaced.status_code == 422
    assert spaced.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    for wait in (0, 10.5, -1):
        response = _post(client, world, f"{A}/any/release", {"ref_id": "r"}, wait=wait)
        assert response.status_code == 422, wait
    opening = _post(client, world, A, {"budget_id": "a:b", "currency": "USD", "period": "rolling"})
    assert opening.status_code == 422
    assert opening.json()["detail"][0]["loc"] == ["body", "budget_id"]
    assert _published(world.settings) == published  # nothing invalid was sent


# --- who may write -------------------------------------------------------------------------------


def test_scopes_and_tenants_are_checked_before_anything_is_sent(
    client: TestClient, world: World
) -> None:
    published = _published(world.settings)
    body = {"amount": "1.00", "currency": "USD"}
    read_only = _post(client, world, f"{A}/b1/topup", body, key="reader")
    assert read_only.status_code == 403 and "'write'" in read_only.json()["detail"]
    other = _post(client, world, "/v1/tenants/globex/budgets/b1/topup", body, key="writer")
    assert other.status_code == 403 and "tenant" in other.json()["detail"]
    opening = {"budget_id": "x", "currency": "USD", "period": "rolling"}
    assert _post(client, world, "/v1/tenants/globex/budgets", opening).status_code == 403
    no_key = client.post(f"{A}/b1/topup", json=body, headers={"Idempotency-Key": "k1"})
    assert no_key.status_code == 401
    # 401/403 come before the body and the header are even looked at.
    assert _post(client, world, f"{A}/b1/topup", ["junk"], key="reader").status_code == 403
    assert _published(world.settings) == published


def test_tenants_with_the_same_budget_id_stay_apart(client: TestClient, world: World) -> None:
    _open(client, world, "shared")
    _open(client, world, "shared", tenant="globex")
    g = "/v1/tenants/globex/budgets/shared"
    _ok(client, world, f"{g}/topup", {"amount": "4.00", "currency": "USD"}, key="globex")
    # The platform key may write for any tenant (signed with tenant scope "*").
    _ok(client, world, f"{A}/shared/topup", {"amount": "9.00", "currency": "USD"}, key="platform")
    assert _get(client, world, f"{A}/shared")["funded"] == "9.00"
    assert _get(client, world, g, key="globex")["funded"] == "4.00"


def test_privileged_writes_need_the_services_signing_key(world: World) -> None:
    unsigned = world.settings.model_copy(update={"signing_key_id": ""})
    with TestClient(create_app(unsigned)) as c:
        headers = {"Authorization": f"Bearer {world.keys['writer']}", "Idempotency-Key": "u1"}
        response = c.post(f"{A}/e2e/topup", json={"amount": "1.00", "currency": "USD"},
                          headers=headers)  # fmt: skip
        assert response.status_code == 503
        assert "signing" in response.json()["detail"]
        # reserve/charge/release need no signature.
        response = c.post(f"{A}/nobody/release", json={"ref_id": "r"}, headers=headers)
        assert response.status_code == 202


def test_privileged_commands_are_signed_as_the_key(client: TestClient, world: World) -> None:
    # Signed with the service's key; the principal is the key's name, the scope its tenant.
    _open(client, world, "signed")
    idem = f"signed-{uuid.uuid4().hex[:8]}"
    _ok(client, world, f"{A}/signed/topup", {"amount": "1.00", "currency": "USD"}, idem=idem)
    headers = _headers_of(world.settings, idem)
    assert headers[KEY_ID_HEADER] == world.settings.signing_key_id
    assert (headers[PRINCIPAL_HEADER], headers[TENANT_HEADER]) == ("rules_engine", "acme")
    assert principal_of("x" * 128 + " y", "0123") == "api-key-0123"  # too long as an id
    assert principal_of("\u0301accent", "0123") == "api-key-0123"  # starts with a combining mark


def _headers_of(settings: Settings, command_id: str) -> dict[str, str]:
    """The Kafka headers of the command `command_id` in the commands topic."""
    consumer = Consumer(reader_config(settings, f"probe-{uuid.uuid4().hex}"))
    try:
        topic = settings.topic_commands
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            if orjson.loads(msg.value() or b"{}").get("command_id") == command_id:
                pairs: list[tuple[str, Any]] = list(msg.headers() or [])  # type: ignore[arg-type]
                return {k: v.decode() for k, v in pairs if isinstance(v, bytes)}
        raise AssertionError(f"command {command_id} not found in {topic}")
    finally:
        consumer.close()


# --- waiting holds no connection; several workers ------------------------------------------------


def test_a_waiting_write_holds_no_pooled_connection(world: World) -> None:
    import threading

    from budget_ledger.consumers.topics import create_topics
    from budget_ledger.ledger.db import pool as make_pool

    # Published to a command topic no consumer reads: no outcome ever comes, so the write waits
    # the whole time and answers 202 pending. (A dead-lettered command is answered at once:
    # test_api_dead_letters.py.)
    rogue = world.settings.model_copy(
        update={"topic_commands": f"{world.settings.topic_commands}-unread"}
    )
    create_topics(rogue)
    pool = make_pool(world.settings.database_url, "ledger_reader", 1)
    try:
        with TestClient(create_app(rogue, pool=pool)) as c:
            auth = {"Authorization": f"Bearer {world.keys['writer']}"}
            idem = f"rogue-{uuid.uuid4().hex[:8]}"
            answers: list[Any] = []

            def write() -> None:
                answers.append(
                    c.post(f"{A}/any/topup", json={"amount": "1.00", "currency": "USD"},
                           headers={**auth, "Idempotency-Key": idem}, params={"wait": 3})
                )  # fmt: skip

            writer = threading.Thread(target=write)
            started = time.monotonic()
            writer.start()
            time.sleep(0.5)
            # The pool's one connection is free while the write waits.
            assert c.get(A, headers=auth).status_code == 200
            assert time.monotonic() - started < 2.5
            writer.join(30)
            assert answers[0].status_code == 202, answers[0].text
            assert answers[0].json() == {"command_id": idem, "status": "pending"}
            assert time.monotonic() - started >= 3
            assert c.get(f"/v1/tenants/acme/commands/{idem}", headers=auth).json()["status"] == (
                "pending"
            )
    finally:
        pool.close()
    assert _rows(world, idem) == 0


def test_serve_with_two_workers_writes_and_waits(world: World) -> None:
    import socket
    import subprocess
    import sys

    import httpx

    from tests.integration.support import cli_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "serve", "--port", str(port),
         "--workers", "2"],
        env=cli_env(world.settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        wait_for(up, timeout=60, what="the API server")
        auth = {"Authorization": f"Bearer {world.keys['writer']}"}
        budget = f"served-{uuid.uuid4().hex[:6]}"

        def post(path: str, body: dict[str, Any]) -> httpx.Response:
            headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
            return httpx.post(f"{base}{path}", json=body, headers=headers,
                              params={"wait": 10}, timeout=30)  # fmt: skip

        opened = post(A, {"budget_id": budget, "currency": "USD", "period": "rolling"})
        assert opened.status_code == 200, opened.text
        for i in range(4):  # more requests than workers: each has its own producer and pool
            funded = post(f"{A}/{budget}/topup", {"amount": "1.00", "currency": "USD"})
            assert funded.status_code == 200, funded.text
            assert funded.json()["event"]["funded"] == f"{i + 1}.00"
    finally:
        proc.terminate()
        assert proc.wait(30) in (0, -15)


# --- no write makes it fail ----------------------------------------------------------------------

_FIELDS = "amount currency ref_id budget_id period reason operator type hard_cap soft_threshold_pct"
_FIELDS += " timezone expires_at metadata issued_at"
_VALUE = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=40),
    st.sampled_from(["5.00", "0", "-1.00", "USD", "JPY", "rolling", "2030-01-01T00:00:00Z"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(
        ["", "/fz/topup", "/fz/configure", "/fz/reserve", "/fz/charge", "/fz/release", "/fz/adjust"]
    ),
    body=st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(_FIELDS.split()), st.text(max_size=8)), _VALUE),
        st.binary(max_size=64),
    ),
    idem=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=140),
)
def test_no_write_is_answered_with_a_server_error(
    client: TestClient, world: World, path: str, body: dict[str, Any] | bytes, idem: str
) -> None:
    headers = {"Authorization": f"Bearer {world.keys['operator']}", "Idempotency-Key": idem}
    if isinstance(body, bytes):
        response = client.post(A + path, content=body, headers=headers)
    else:
        response = client.post(A + path, content=json.dumps(body), headers=headers)
    assert response.status_code < 500, (path, body, response.text)
    assert response.status_code in (202, 409, 422), (path, body, response.text)
