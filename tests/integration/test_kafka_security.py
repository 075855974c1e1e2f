"""The ledger against the secure local broker (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer).

Every principal authenticates with its own SCRAM user of `deploy/local/kafka.sh secure`; the
grants are those of `budget-ledger acls apply`. The ledger service runs the full flow, an
upstream service reserves, charges and releases, and everything outside the grants table is
refused by the broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr

from budget_ledger.consumers.acls import Principals, apply_acls, grants
from budget_ledger.consumers.client import Accepted, LedgerClient
from budget_ledger.consumers.kafka_config import (
    admin_config,
    client_config,
    producer_config,
    reader_config,
)
from budget_ledger.consumers.topics import create_topics
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.signing import sign
from tests.integration.support import running_consumer

pytestmark = pytest.mark.integration

USERS = ("admin", "ledger", "rules-engine", "reward-service", "alerts-reader", "ledger-api")


def _passwords(kafka_secure: dict[str, str]) -> dict[str, str]:
    lines = Path(kafka_secure["LEDGER_KAFKA_SECURE_USERS_FILE"]).read_text().splitlines()
    by_var = dict(line.split("=", 1) for line in lines if "=" in line)
    return {u: by_var["LEDGER_KAFKA_PASSWORD_" + u.upper().replace("-", "_")] for u in USERS}


@pytest.fixture
def principal(
    settings: Settings, kafka_secure: dict[str, str]
) -> Iterator[Callable[..., Settings]]:
    """`principal(user, password=None)`: this test's settings, authenticated as `user` on the
    secure broker; the test's topics are made and granted as admin and removed afterwards."""
    passwords = _passwords(kafka_secure)

    def as_user(user: str, password: str | None = None) -> Settings:
        return settings.model_copy(
            update={
                "kafka_bootstrap": kafka_secure["LEDGER_KAFKA_SECURE_BOOTSTRAP"],
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_username": user,
                "kafka_sasl_password": SecretStr(password or passwords.get(user, "x")),
                "kafka_ssl_ca_pem": kafka_secure["LEDGER_KAFKA_SECURE_CA"],
            }
        )

    admin_settings = as_user("admin")
    create_topics(admin_settings)
    yield as_user
    admin = AdminClient(admin_config(admin_settings))
    filters = [
        AclBindingFilter(
            ResourceType.TOPIC if g.resource == "topic" else ResourceType.GROUP,
            g.name,
            ResourcePatternType.LITERAL,
            g.principal,
            "*",
            AclOperation[g.operation],
            AclPermissionType.ALLOW,
        )
        for g in grants(admin_settings, Principals())
        if g.pattern == "literal"  # the prefixed group grants are shared by every test
    ]
    for future in admin.delete_acls(filters).values():
        future.result(timeout=30)
    topics = [s for s in (settings.topic_commands, settings.topic_events,
                          settings.topic_alerts, settings.topic_dlq)]  # fmt: skip
    for future in admin.delete_topics(topics, operation_timeout=10).values():
        future.result(timeout=15)


def _produce_error(settings: Settings, topic: str) -> KafkaError | None:
    """Produce one message to `topic`; the delivery error (None when delivered)."""
    producer = Producer(producer_config(settings, **{"message.timeout.ms": 15_000}))
    errors: list[KafkaError | None] = []
    producer.produce(topic, key=b"t:b", value=b"{}", on_delivery=lambda e, m: errors.append(e))
    producer.flush(30)
    assert errors, "no delivery report within 30 s"
    return errors[0]


def _subscribe_error(settings: Settings, topic: str, group: str) -> KafkaError | None:
    """Subscribe to `topic` in `group` and poll; the first error the consumer reports."""
    consumer = Consumer(reader_config(settings, group, **{"auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                return msg.error()  # type: ignore[no-any-return]
        return None
    finally:
        consumer.close()


def _authentication_error(settings: Settings) -> KafkaError | None:
    """The error a client with these credentials gets from the broker (None: it connected)."""
    errors: list[KafkaError] = []
    producer = Producer(client_config(settings, error_cb=errors.append))
    # Metadata needs an authenticated connection; error_cb is served by poll.
    with contextlib.suppress(Exception):
        producer.list_topics(timeout=10)
    producer.poll(1)
    return next((e for e in errors if e.code() == KafkaError._AUTHENTICATION), None)


def test_full_flow_with_authenticated_principals_and_acls(
    principal: Callable[..., Settings],
    capfd: pytest.CaptureFixture[str],
    kafka_secure: dict[str, str],
) -> None:
    admin, ledger, engine = principal("admin"), principal("ledger"), principal("rules-engine")
    assert apply_acls(admin, Principals()).created
    again = apply_acls(admin, Principals())
    assert again.created == [] and len(again.present) == len(grants(admin, Principals()))

    tenant, budget = "acme", f"b-{uuid.uuid4().hex[:8]}"
    with running_consumer(ledger, create=False), LedgerClient(ledger) as operator:
        opened = operator.send({"type": "open_budget", "tenant_id": tenant, "budget_id": budget,
                                "currency": "USD", "period": "rolling"})  # fmt: skip
        funded = operator.fund(tenant, budget, "100.00", "USD")
        assert operator.await_outcome(opened, 60).accepted
        assert operator.await_outcome(funded, 60).accepted
        with LedgerClient(engine) as upstream:
            held = upstream.reserve(tenant, budget, "30.00", "USD", "rw-1")
            spare = upstream.reserve(tenant, budget, "20.00", "USD", "rw-2")
            assert upstream.await_outcome(held, 60).accepted
            assert upstream.await_outcome(spare, 60).accepted
            charged = upstream.await_outcome(upstream.charge(tenant, budget, "rw-1"), 60)
            released = upstream.await_outcome(upstream.release(tenant, budget, "rw-2"), 60)
    assert isinstance(charged, Accepted) and isinstance(released, Accepted)
    assert released.balances.charged == Decimal("30.00")
    assert released.balances.available == Decimal("70.00")

    # The CLI applies the same table, as admin, through the environment: nothing left to add.
    env = {**os.environ, "LEDGER_KAFKA_BOOTSTRAP": admin.kafka_bootstrap,
           "LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGER_KAFKA_SASL_USERNAME": "admin",
           "LEDGER_KAFKA_SASL_PASSWORD": admin.kafka_sasl_password.get_secret_value(),
           "LEDGER_KAFKA_SSL_CA_PEM": admin.kafka_ssl_ca_pem,
           "LEDGER_TOPIC_COMMANDS": admin.topic_commands, "LEDGER_TOPIC_EVENTS": admin.topic_events,
           "LEDGER_TOPIC_ALERTS": admin.topic_alerts, "LEDGER_TOPIC_DLQ": admin.topic_dlq,
           "LEDGER_CONSUMER_GROUP": admin.consumer_group}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "acls", "apply"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0 ACL(s) created" in result.stdout
    print(result.stdout, result.stderr)  # into capfd, for the check below

    # No password of any user appears in anything this run wrote (our logs, librdkafka's).
    out, err = capfd.readouterr()
    for password in _passwords(kafka_secure).values():
        assert password not in out + err


def test_a_principal_without_a_grant_gets_an_authorization_error(
    principal: Callable[..., Settings],
) -> None:
    admin, engine = principal("admin"), principal("rules-engine")
    apply_acls(admin, Principals())
    # The rules engine may write commands, but not events or alerts, and may not read alerts.
    assert _produce_error(engine, engine.topic_commands) is None
    produced = _produce_error(engine, engine.topic_events)
    assert produced is not None and produced.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    read = _subscribe_error(engine, engine.topic_alerts, f"rules-engine-{uuid.uuid4().hex}")
    assert read is not None and read.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # An alert subscriber reads alerts, and writes nothing.
    reader = principal("alerts-reader")
    assert (
        _subscribe_error(reader, reader.topic_alerts, f"alerts-reader-{uuid.uuid4().hex}") is None
    )
    produced = _produce_error(reader, reader.topic_commands)
    assert produced is not None and produced.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_api_principal_publishes_the_writes_and_reads_no_topic(
    principal: Callable[..., Settings],
) -> None:
    from fastapi.testclient import TestClient

    from budget_ledger.entrypoints.api.app import create_app
    from budget_ledger.entrypoints.api.keys import create_key

    admin, ledger, api = principal("admin"), principal("ledger"), principal("ledger-api")
    apply_acls(admin, Principals())
    with psycopg.connect(api.database_url) as conn:
        key = create_key(conn, "acme", ("read", "write"), "secure api")[1]
    budget = f"b-{uuid.uuid4().hex[:8]}"
    with running_consumer(ledger, create=False), LedgerClient(ledger) as operator:
        opened = operator.send({"type": "open_budget", "tenant_id": "acme", "budget_id": budget,
                                "currency": "USD", "period": "rolling"})  # fmt: skip
        assert operator.await_outcome(opened, 60).accepted
        assert operator.await_outcome(operator.fund("acme", budget, "50.00", "USD"), 60).accepted
        # The API, logged in to Kafka as ledger-api, publishes a reserve and waits for it.
        with TestClient(create_app(api)) as client:
            held = client.post(
                f"/v1/tenants/acme/budgets/{budget}/reserve",
                json={"amount": "20.00", "currency": "USD", "ref_id": "rw-1"},
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
                params={"wait": 10},
            )
    assert held.status_code == 200, held.text
    assert held.json()["type"] == "funds_reserved"
    # Nothing else: no events written, no topic read.
    produced = _produce_error(api, api.topic_events)
    assert produced is not None and produced.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    read = _subscribe_error(api, api.topic_events, f"ledger-api-{uuid.uuid4().hex}")
    assert read is not None and read.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )


def test_unknown_user_and_wrong_password_are_refused_by_the_broker(
    principal: Callable[..., Settings],
) -> None:
    assert _authentication_error(principal("ledger")) is None
    unknown = _authentication_error(principal("mallory", "guess-123"))
    assert unknown is not None and "SCRAM-SHA-512" in unknown.str()
    wrong = _authentication_error(principal("ledger", "not-the-password"))
    assert wrong is not None
    assert "not-the-password" not in wrong.str()


def _dead_letters(settings: Settings, expect: int) -> list[dict[str, str]]:
    """The headers of `expect` dead letters, read from the DLQ topic as `settings`' principal."""
    group = f"{settings.kafka_sasl_username}-{uuid.uuid4().hex}"
    consumer = Consumer(reader_config(settings, group))
    topic = settings.topic_dlq
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[dict[str, str]] = []
    deadline = time.monotonic() + 90
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in consumer.consume(100, 0.5):
                if m.error() is None:
                    out.append({k: (v or b"").decode() for k, v in (m.headers() or [])})
    finally:
        consumer.close()
    assert len(out) == expect, f"expected {expect} dead letters, got {len(out)}"
    return out


def test_an_upstream_principal_cannot_fund_adjust_open_or_close(
    principal: Callable[..., Settings],
) -> None:
    """The rules engine reaches the commands topic (its ACL), but every privileged command it
    sends without the ledger's signature (unsigned, forged, retired key, a genuine signature
    lifted onto another payload) is dead-lettered `unauthorized` and changes nothing."""
    admin, ledger = principal("admin"), principal("ledger")
    # The upstream holds no signing key (it is not given one in a real deployment).
    engine = principal("rules-engine").model_copy(update={"signing_keys": {}, "signing_key_id": ""})
    apply_acls(admin, Principals())
    tenant, budget = "acme", f"b-{uuid.uuid4().hex[:8]}"
    key = f"{tenant}:{budget}".encode()

    def body(kind: str, **fields: object) -> bytes:
        cid = f"up-{uuid.uuid4().hex[:12]}"
        return json.dumps({"type": kind, "command_id": cid, "tenant_id": tenant,
                           "budget_id": budget, **fields}).encode()  # fmt: skip

    real_id = ledger.signing_key_id
    real = ledger.signing_keys[real_id].get_secret_value().encode()
    fund = body("fund", amount="1000.00", currency="USD")
    genuine = sign(key, body("fund", amount="1.00", currency="USD"), key_id=real_id,
                   secret=real, principal="test-operator")  # fmt: skip
    attempts = [
        (fund, None),  # unsigned
        (body("adjust", amount="500.00", reason="x", operator="ops"), None),
        (body("open_budget", currency="USD", period="monthly"), None),
        (body("close_period", period_end="2026-01-01T00:00:00Z"), None),
        (fund, sign(key, fund, key_id=real_id, secret=b"f" * 64, principal="rules-engine")),
        (fund, sign(key, fund, key_id="retired-2025", secret=real, principal="rules-engine")),
        (fund, genuine),  # a real signature of another payload
    ]
    with running_consumer(ledger, create=False), LedgerClient(ledger) as operator:
        opened = operator.send({"type": "open_budget", "tenant_id": tenant, "budget_id": budget,
                                "currency": "USD", "period": "rolling"})  # fmt: skip
        assert operator.await_outcome(opened, 60).accepted
        assert operator.await_outcome(operator.fund(tenant, budget, "100.00", "USD"), 60).accepted
        producer = Producer(producer_config(engine))
        for value, headers in attempts:
            producer.produce(engine.topic_commands, key=key, value=value, headers=headers)
        assert producer.flush(30) == 0
        letters = _dead_letters(engine, len(attempts))
        # Still authorized for its own job: a reserve goes through unsigned.
        with LedgerClient(engine) as upstream:
            held = upstream.reserve(tenant, budget, "30.00", "USD", "rw-1")
            assert upstream.await_outcome(held, 60).accepted

    assert {d["error_class"] for d in letters} == {"unauthorized"}
    assert sorted(d["check"] for d in letters) == sorted(
        ["signature_missing"] * 4 + ["signature_mismatch", "key_unknown", "signature_mismatch"]
    )
    with psycopg.connect(ledger.database_url) as conn:
        rows = conn.execute(
            "SELECT sequence, type FROM ledger WHERE tenant_id = %s AND budget_id = %s"
            " ORDER BY sequence",
            (tenant, budget),
        ).fetchall()
        funded = conn.execute(
            "SELECT funded FROM budget_balances WHERE tenant_id = %s AND budget_id = %s",
            (tenant, budget),
        ).fetchone()
    assert rows == [(1, "budget_opened"), (2, "budget_funded"), (3, "funds_reserved")]
    assert funded == (10000,)
