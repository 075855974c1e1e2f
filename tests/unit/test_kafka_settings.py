"""Kafka transport security settings: validation, the librdkafka mapping, hidden secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from budget_ledger.consumers.kafka_config import (
    admin_config,
    client_config,
    command_consumer_config,
    producer_config,
    reader_config,
)
from budget_ledger.ledger.settings import (
    Settings,
    SettingsError,
    kafka_security_properties,
    load_settings,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Zq81-never-shown"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIEv-secret-key-material\n-----END PRIVATE KEY-----\n"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB-ca\n-----END CERTIFICATE-----\n"


def _sasl_ssl(**extra: object) -> Settings:
    return load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="ledger",
        kafka_sasl_password=PASSWORD,
        kafka_ssl_ca_pem="/etc/ledger/ca.pem",
        **extra,
    )


def test_default_is_plaintext_without_credentials() -> None:
    assert kafka_security_properties(load_settings()) == {"security.protocol": "plaintext"}


def test_sasl_ssl_maps_to_librdkafka_properties_with_scram_sha_512_by_default() -> None:
    props = kafka_security_properties(_sasl_ssl())
    assert props == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ledger",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/ledger/ca.pem",
    }


def test_pem_text_goes_inline_and_paths_go_to_locations() -> None:
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_pem=CA_PEM,
        kafka_ssl_cert_pem="/run/secrets/client.pem",
        kafka_ssl_key_pem=KEY_PEM,
    )
    assert kafka_security_properties(settings) == {
        "security.protocol": "ssl",
        "ssl.ca.pem": CA_PEM,
        "ssl.certificate.location": "/run/secrets/client.pem",
        "ssl.key.pem": KEY_PEM,
    }


def test_oauthbearer_needs_no_password_and_takes_its_properties_from_extra() -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_extra={
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.client.secret": "oidc-secret-xyz",
        },
    )
    props = kafka_security_properties(settings)
    assert props["sasl.mechanism"] == "OAUTHBEARER"
    assert props["sasl.oauthbearer.client.secret"] == "oidc-secret-xyz"
    assert "sasl.username" not in props
    assert "oidc-secret-xyz" not in repr(settings)


def test_every_client_config_carries_the_security_properties() -> None:
    settings = _sasl_ssl(kafka_extra={"client.id": "ledger-1"})
    configs = [
        producer_config(settings),
        command_consumer_config(settings),
        admin_config(settings),
        reader_config(settings, "probe"),
        client_config(settings),
    ]
    for config in configs:
        assert config["security.protocol"] == "sasl_ssl"
        assert config["sasl.password"] == PASSWORD
        assert config["client.id"] == "ledger-1"
    # The ledger's own properties are still there.
    assert configs[0]["enable.idempotence"] is True
    assert configs[1]["isolation.level"] == "read_committed"


def test_no_other_module_builds_a_kafka_configuration_by_hand() -> None:
    # Every client goes through consumers/kafka_config.py (or, on the projections floor, puts
    # kafka_security_properties next to its bootstrap servers), so none can miss the security.
    allowed = {"consumers/kafka_config.py", "projections/kafka_check.py", "ledger/settings.py"}
    offenders = []
    for folder in ("consumers", "projections", "entrypoints", "ledger", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in allowed and '"bootstrap.servers"' in path.read_text():
                offenders.append(rel)
    assert offenders == []
    text = (ROOT / "projections" / "kafka_check.py").read_text()
    assert text.count('"bootstrap.servers"') == text.count("**kafka_security_properties(")


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "LEDGER_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "ledger"},
            "LEDGER_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "ledger", "kafka_sasl_password": PASSWORD}, "has no SASL"),
        ({"kafka_ssl_ca_pem": "/ca.pem"}, "has no SSL"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_pem": KEY_PEM},
            "needs its key",
        ),
        ({"kafka_extra": {"acks": "1"}}, "LEDGER_KAFKA_EXTRA"),
        ({"kafka_extra": {"sasl.password": PASSWORD}}, "LEDGER_KAFKA_EXTRA"),
        ({"kafka_security_protocol": "SASL_SSL_X"}, "LEDGER_KAFKA_SECURITY_PROTOCOL"),
    ],
)
def test_inconsistent_security_settings_are_refused_without_showing_secrets(
    overrides: dict[str, object], names: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    assert names in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert "secret-key-material" not in str(caught.value)


def test_secrets_are_masked_in_repr_str_and_dumps() -> None:
    settings = _sasl_ssl(
        kafka_ssl_cert_pem="/c.pem",
        kafka_ssl_key_pem=KEY_PEM,
        kafka_extra={"sasl.oauthbearer.client.secret": "extra-secret"},
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in text
        assert "secret-key-material" not in text
        assert "extra-secret" not in text


def test_password_from_the_environment_is_not_in_help_or_errors() -> None:
    env = {
        **os.environ,
        "LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LEDGER_KAFKA_SASL_USERNAME": "ledger",
        "LEDGER_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    cli = [sys.executable, "-m", "budget_ledger.entrypoints.cli"]
    for args in (["--help"], ["consume", "--help"], ["send", "--help"]):
        result = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    # A configuration error with the password set: one line, no password.
    bad = {**env, "LEDGER_KAFKA_SECURITY_PROTOCOL": "SSL"}
    result = subprocess.run(
        [*cli, "topics", "create"], capture_output=True, text=True, timeout=60, env=bad
    )
    assert result.returncode == 2
    assert "has no SASL" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_grants_table_gives_upstreams_commands_in_and_outcomes_out_only() -> None:
    from budget_ledger.consumers.acls import Principals, grants

    settings = load_settings()
    table = grants(settings, Principals(upstreams=("User:rules-engine",)))
    topic_ops = {(g.principal, g.name, g.operation) for g in table if g.resource == "topic"}
    engine = {(name, op) for p, name, op in topic_ops if p == "User:rules-engine"}
    assert engine == {
        ("budget.commands", "WRITE"),
        ("budget.events", "READ"),
        ("budget.commands.dlq", "READ"),
    }
    alerts = {(name, op) for p, name, op in topic_ops if p == "User:alerts-reader"}
    assert alerts == {("budget.alerts", "READ")}
    # The HTTP API publishes commands and reads nothing from Kafka (nor joins a group).
    api = {(name, op) for p, name, op in topic_ops if p == "User:ledger-api"}
    assert api == {("budget.commands", "WRITE")}
    assert not [g for g in table if g.principal == "User:ledger-api" and g.resource == "group"]
    ledger = {(name, op) for p, name, op in topic_ops if p == "User:ledger"}
    assert {("budget.commands", "READ"), ("budget.events", "WRITE")} <= ledger
    assert {("budget.alerts", "WRITE"), ("budget.commands.dlq", "WRITE")} <= ledger
    # Prefixed grants only on consumer groups, never on topics.
    assert {g.resource for g in table if g.pattern == "prefixed"} == {"group"}


def test_acls_apply_dry_run_prints_the_table_for_the_given_principals() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "acls", "apply", "--dry-run",
         "--upstream", "loyalty-bot", "--alerts-reader", "User:pager", "--api", "web-api"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "User:loyalty-bot\tWRITE\ttopic\tliteral\tbudget.commands" in result.stdout
    assert "User:pager\tREAD\ttopic\tliteral\tbudget.alerts" in result.stdout
    assert "User:web-api\tWRITE\ttopic\tliteral\tbudget.commands" in result.stdout
    assert "ledger-api" not in result.stdout
    assert "rules-engine" not in result.stdout


def test_an_upstream_whose_group_prefix_covers_the_ledger_group_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", "acls", "apply", "--dry-run",
         "--upstream", "budget"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "User:budget" in result.stderr and "covers a group of the ledger" in result.stderr


def test_a_json_setting_that_does_not_parse_is_a_one_line_error_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from budget_ledger.ledger.settings import SettingsError, load_settings

    monkeypatch.setenv("LEDGER_SIGNING_KEYS", '{"k1": "s3cret-not-json')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "signing_keys" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_the_command_consumers_prefetch_queue_and_fetch_wait_follow_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGER_KAFKA_FETCH_WAIT_MS", raising=False)
    monkeypatch.delenv("LEDGER_KAFKA_FETCH_QUEUE_MESSAGES", raising=False)
    monkeypatch.delenv("LEDGER_KAFKA_FETCH_QUEUE_KB", raising=False)
    defaults = command_consumer_config(load_settings())
    # Well under librdkafka's own defaults (100,000 messages, 64 MB per partition), which held
    # ~100 MB of commands in a consumer with a backlog (docs/scaling.md, "Consumer memory").
    assert defaults["queued.min.messages"] == 10_000
    assert defaults["queued.max.messages.kbytes"] == 8_192
    monkeypatch.setenv("LEDGER_KAFKA_FETCH_QUEUE_MESSAGES", "4000")
    monkeypatch.setenv("LEDGER_KAFKA_FETCH_QUEUE_KB", "2048")
    tuned = command_consumer_config(load_settings())
    assert (tuned["queued.min.messages"], tuned["queued.max.messages.kbytes"]) == (4_000, 2_048)
    with pytest.raises(SettingsError):
        load_settings(kafka_fetch_queue_messages=10)
    # The broker holds a fetch for 64 KB at most this long (docs/performance.md, "Fetch wait").
    assert defaults["fetch.wait.max.ms"] == 15
    monkeypatch.setenv("LEDGER_KAFKA_FETCH_WAIT_MS", "5")
    assert command_consumer_config(load_settings())["fetch.wait.max.ms"] == 5
    with pytest.raises(SettingsError):
        load_settings(kafka_fetch_wait_ms=0)
    # librdkafka accepts the properties (its constructor checks names and ranges; no broker).
    Consumer({**tuned, "bootstrap.servers": "127.0.0.1:1"}).close()
