"""Webhooks end to end: endpoints registered through the API, alerts on the real alerts topic,
the deliverer (in a thread) posting to a real HTTP receiver on 127.0.0.1, signatures checked
with an independent implementation (the `standardwebhooks` package)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.topics import create_topics
from budget_ledger.consumers.webhook_deliverer import Deliverer
from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.codec import make_alert_id
from tests.conftest import new_prefix
from tests.integration.api_world import KeySpec, Services, api_world
from tests.integration.support import scalar, wait_for

pytestmark = pytest.mark.integration

FAST = {
    "webhook_allow_private": True,
    "webhook_backoff_base_seconds": 0.2,
    "webhook_backoff_max_seconds": 0.5,
    "webhook_timeout_seconds": 2.0,
}


@dataclass
class Hit:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 (port chosen by the OS). Paths choose the behaviour:
    /ok 204; /flaky 503 for the first two requests of a webhook-id, then 200; /hang sleeps
    past the deliverer's timeout; /gone 410; /slow answers 200 after 1.5 s."""

    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def of(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]


@contextmanager
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                      time.monotonic())  # fmt: skip
            with rec.lock:
                rec.hits.append(hit)
                wid = hit.headers["webhook-id"]
                seen = sum(
                    1 for h in rec.hits if h.headers["webhook-id"] == wid and h.path == self.path
                )
            code = 204
            if self.path == "/flaky" and seen <= 2:
                code = 503
            elif self.path == "/hang":
                time.sleep(10)
            elif self.path == "/gone":
                code = 410
            elif self.path == "/slow":
                time.sleep(1.5)
                code = 200
            try:
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the deliverer gave up on us (timeout)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket.listen(64)  # the default backlog (5) could drop a SYN: a 1 s retransmission
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def alert(
    tenant: str, budget: str, sequence: int, kind: str = "hard_cap_reached"
) -> dict[str, Any]:
    """An alert as the relay publishes it (schemas.codec.alert_to_wire's shape)."""
    return {
        "alert_id": make_alert_id(tenant, budget, kind, sequence), "type": kind,
        "severity": "critical", "tenant_id": tenant, "budget_id": budget,
        "utilization_pct": "100.00", "threshold": "100.00", "sequence": sequence,
        "recorded_at": "2026-11-27T03:00:00.000000Z", "data": {},
    }  # fmt: skip


def publish(settings: Settings, alerts: list[dict[str, Any]]) -> None:
    producer = Producer(producer_config(settings))
    for a in alerts:
        key = f"{a['tenant_id']}:{a['budget_id']}".encode()
        producer.produce(settings.topic_alerts, key=key, value=orjson.dumps(a))
    assert producer.flush(30) == 0


@contextmanager
def running_deliverer(settings: Settings) -> Iterator[Deliverer]:
    stop = threading.Event()
    deliverer = Deliverer(settings, stop=stop)
    thread = threading.Thread(target=deliverer.run, daemon=True)
    thread.start()
    try:
        assert deliverer.assigned.wait(60), "the deliverer got no partitions within 60 s"
        yield deliverer
    finally:
        stop.set()
        thread.join(30)


@dataclass
class World:
    settings: Settings
    client: TestClient
    keys: dict[str, str]
    rec: Receiver

    def register(self, tenant: str, path: str, **body: Any) -> dict[str, Any]:
        r = self.client.post(
            f"/v1/tenants/{tenant}/webhooks", json={"url": self.rec.url(path), **body},
            headers=self.auth(tenant),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def auth(self, label: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[label]}"}

    def log(self, tenant: str, endpoint: str) -> list[dict[str, Any]]:
        r = self.client.get(f"/v1/tenants/{tenant}/webhooks/{endpoint}/deliveries",
                            headers=self.auth(tenant))  # fmt: skip
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()["deliveries"]
        return out


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    services = Services(kafka_bootstrap, pg_admin_dsn, template_database, app_login)
    keys: list[KeySpec] = [
        ("acme", "acme", ("read", "write")), ("globex", "globex", ("read", "write")),
        ("initech", "initech", ("read", "write")), ("reader", "acme", ("read",)),
    ]  # fmt: skip
    prefix = new_prefix()
    overrides = {"webhook_group": f"{prefix}.webhooks", "webhook_disable_after_seconds": 1.0}
    with api_world(services, keys, prefix, **overrides, **FAST) as w:
        create_topics(w.settings)
        with (
            receiver() as rec,
            TestClient(create_app(w.settings)) as client,
            running_deliverer(w.settings),
        ):
            yield World(w.settings, client, w.keys, rec)


def test_register_list_delete_and_who_may(world: World) -> None:
    created = world.register("acme", "/ok", alert_kinds=["hard_cap_reached"], budget_id="b1")
    assert created["secret"].startswith("whsec_") and created["id"].startswith("whe_")
    listed = world.client.get("/v1/tenants/acme/webhooks", headers=world.auth("acme")).json()
    mine = [w for w in listed["webhooks"] if w["id"] == created["id"]]
    assert mine and "secret" not in mine[0] and mine[0]["alert_kinds"] == ["hard_cap_reached"]
    # A read-only key and another tenant's key may not.
    path = "/v1/tenants/acme/webhooks"
    assert world.client.get(path, headers=world.auth("reader")).status_code == 403
    assert world.client.get(path, headers=world.auth("globex")).status_code == 403
    gone = f"{path}/{created['id']}"
    assert world.client.delete(gone, headers=world.auth("globex")).status_code == 403
    assert world.client.delete(gone, headers=world.auth("acme")).status_code == 204
    assert world.client.delete(gone, headers=world.auth("acme")).status_code == 404
    # The reader role cannot read the secret column, even for its own tenant.
    with psycopg.connect(world.settings.database_url) as conn:
        conn.execute("SET ROLE ledger_reader")
        conn.execute("SELECT set_config('ledger.tenant_id', 'acme', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT secret FROM webhook_endpoints")


def test_a_loopback_url_is_refused_at_registration_without_the_flag(world: World) -> None:
    strict = world.settings.model_copy(update={"webhook_allow_private": False})
    with TestClient(create_app(strict)) as client:
        for url in [world.rec.url("/ok"), f"https://127.0.0.1:{world.rec.port}/ok",
                    "https://localhost/x", "https://169.254.169.254/latest/meta-data"]:  # fmt: skip
            r = client.post("/v1/tenants/acme/webhooks", json={"url": url},
                            headers=world.auth("acme"))  # fmt: skip
            assert r.status_code == 422, (url, r.text)


def test_signed_and_retried_delivered_once_after_two_failures(world: World) -> None:
    ep = world.register("acme", "/flaky", budget_id="flaky")
    a = alert("acme", "flaky", 7)
    publish(world.settings, [a])
    wait_for(lambda: len(world.rec.of("/flaky")) >= 3, timeout=30, what="three attempts")
    time.sleep(1.0)  # no fourth attempt may follow the success
    hits = world.rec.of("/flaky")
    assert [h.headers["webhook-id"] for h in hits] == [f"alrt_{a['alert_id']}"] * 3
    for h in hits:  # every attempt verifies with the independent implementation
        assert Webhook(ep["secret"]).verify(h.body, h.headers)["alert_id"] == a["alert_id"]
    received_ok = {h.headers["webhook-id"] for h in hits[2:]}
    assert len(received_ok) == 1  # the receiver de-duplicates: exactly one alert
    [d] = world.log("acme", ep["id"])
    assert d["status"] == "delivered" and d["attempts"] == 3
    assert [x["status_code"] for x in d["log"]] == [503, 503, 204]
    assert all(x["latency_ms"] >= 0 for x in d["log"])


def test_a_4xx_is_not_retried_and_a_failing_endpoint_is_disabled(world: World) -> None:
    ep = world.register("initech", "/gone", budget_id="g")
    publish(world.settings, [alert("initech", "g", 1)])
    wait_for(lambda: any(d["status"] == "failed" for d in world.log("initech", ep["id"])),
             timeout=30, what="a failed delivery")  # fmt: skip
    time.sleep(0.6)
    assert len(world.rec.of("/gone")) == 1  # 410: no retry
    time.sleep(1.0)  # past webhook_disable_after_seconds since the first failure
    publish(world.settings, [alert("initech", "g", 2)])

    def disabled() -> bool:
        r = world.client.get("/v1/tenants/initech/webhooks", headers=world.auth("initech"))
        return any(w["id"] == ep["id"] and w["disabled_at"] for w in r.json()["webhooks"])

    wait_for(disabled, timeout=30, what="the endpoint disabled")
    payloads = [
        orjson.loads(bytes(p))
        for (p,) in psycopg.connect(world.settings.database_url).execute(
            "SELECT payload FROM outbox WHERE topic = %s", (world.settings.topic_alerts,)
        )
    ]
    mine = [p for p in payloads if p["type"] == "webhook_endpoint_disabled"]
    assert len(mine) == 1 and mine[0]["data"]["endpoint_id"] == ep["id"]


def test_a_hanging_endpoint_does_not_delay_another_tenant(world: World) -> None:
    world.register("acme", "/hang", budget_id="hang")
    world.register("globex", "/ok", budget_id="fast")
    publish(world.settings, [alert("acme", "hang", n) for n in range(1, 6)])
    time.sleep(0.5)  # acme's hanging deliveries are under way
    latencies = []
    for n in range(1, 6):
        sent = time.monotonic()
        publish(world.settings, [alert("globex", "fast", n)])
        wait_for(lambda n=n: len(world.rec.of("/ok")) >= n, timeout=10, what="globex's alert")
        latencies.append(world.rec.of("/ok")[n - 1].at - sent)
    # The hanging receiver holds each attempt for the 2 s timeout; globex never waits for it.
    assert max(latencies) < 1.5, latencies


def test_redeliver_resends_with_the_same_webhook_id(world: World) -> None:
    ep = world.register("globex", "/ok", budget_id="re")
    a = alert("globex", "re", 3)
    with psycopg.connect(world.settings.database_url) as conn:  # the consumer's alert history
        conn.execute(
            "INSERT INTO alerts (tenant_id, budget_id, sequence, type, severity, utilization_bp,"
            " threshold_bp, recorded_at, payload) VALUES ('globex', 're', 3, 'hard_cap_reached',"
            " 'critical', 10000, 10000, now(), %s)",
            (orjson.dumps(a).decode(),),
        )
    publish(world.settings, [a])
    wid = f"alrt_{a['alert_id']}"

    def hits() -> int:
        return sum(1 for h in world.rec.of("/ok") if h.headers["webhook-id"] == wid)

    wait_for(lambda: hits() == 1, timeout=30, what="the first delivery")
    wait_for(lambda: world.log("globex", ep["id"])[0]["status"] == "delivered", timeout=10,
             what="the first delivery recorded")  # fmt: skip
    r = world.client.post(
        f"/v1/tenants/globex/webhooks/{ep['id']}/redeliver",
        params={"since": "2026-01-01T00:00:00Z"}, headers=world.auth("globex"),
    )  # fmt: skip
    assert r.status_code == 200 and r.json() == {"queued": 1}
    wait_for(lambda: hits() == 2, timeout=30, what="the redelivery")
    assert scalar(world.settings.database_url,
                  "SELECT count(*) FROM webhook_deliveries WHERE alert_id = %(w)s",
                  {"w": wid}) == 1  # fmt: skip


def test_deleting_an_endpoint_during_its_delivery_stops_nothing(world: World) -> None:
    ep = world.register("acme", "/slow", budget_id="del")
    publish(world.settings, [alert("acme", "del", 1)])
    wait_for(lambda: len(world.rec.of("/slow")) == 1, timeout=30, what="the slow attempt")
    r = world.client.delete(f"/v1/tenants/acme/webhooks/{ep['id']}", headers=world.auth("acme"))
    assert r.status_code == 204  # while the receiver still holds the POST
    time.sleep(2.0)  # its result arrives for a delivery that no longer exists
    world.register("globex", "/ok", budget_id="after")
    before = len(world.rec.of("/ok"))
    publish(world.settings, [alert("globex", "after", 1)])
    wait_for(lambda: len(world.rec.of("/ok")) == before + 1, timeout=30, what="the next alert")


def test_two_deliverers_send_each_alert_once(world: World) -> None:
    world.register("globex", "/ok", budget_id="two")
    alerts = [alert("globex", "two", n) for n in range(1, 41)]
    with running_deliverer(world.settings):  # a second member of the group, beside the world's
        publish(world.settings, alerts[:20])
        time.sleep(1.0)
        publish(world.settings, alerts[20:])
        wanted = {f"alrt_{a['alert_id']}" for a in alerts}

        def ours() -> list[str]:
            return [h.headers["webhook-id"] for h in world.rec.of("/ok")
                    if h.headers["webhook-id"] in wanted]  # fmt: skip

        wait_for(lambda: set(ours()) == wanted, timeout=60, what="every alert")
        time.sleep(1.0)
    got = ours()
    assert len(got) == len(wanted), sorted(w for w in got if got.count(w) > 1)
