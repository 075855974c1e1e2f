"""The deployment manifests hand each process only the secrets it needs (docs/security.md).

Pure file reads of deploy/k8s/ and deploy/compose.yaml: the kustomization applies no Secret (it
used to overwrite the real one with placeholders); the processes log in with the app URL and only
the migrate job with the owner's; chain keys go to the consumer and reconcile, signing keys to the
consumer (all it accepts) and the sweeper (its own); every referenced Secret key is documented in
secret.example.yaml; and each container's environment passes the settings' validation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from budget_ledger.ledger.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
EXAMPLE = K8S / "secret.example.yaml"
PROCESSES = {"consume", "relay", "sweep", "reconcile"}
OWNER_URL, APP_URL = "LEDGER_DATABASE_URL", "LEDGER_APP_DATABASE_URL"
CHAIN_KEYS, CHAIN_KEY_ID = "LEDGER_CHAIN_KEYS", "LEDGER_CHAIN_KEY_ID"
SIGNING_KEYS, SIGNING_KEY_ID = "LEDGER_SIGNING_KEYS", "LEDGER_SIGNING_KEY_ID"
# Names of settings that hold credentials or keys: never in a ConfigMap or a literal value.
SECRET_MARKERS = ("PASSWORD", "DATABASE_URL", "_KEYS", "KEY_PEM", "KAFKA_EXTRA")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


KUSTOMIZATION = _docs(K8S / "kustomization.yaml")[0]
RESOURCES = [doc for name in KUSTOMIZATION["resources"] for doc in _docs(K8S / name)]
CONFIG = {
    doc["metadata"]["name"]: doc.get("data", {}) for doc in RESOURCES if doc["kind"] == "ConfigMap"
}
EXAMPLE_SECRETS = {doc["metadata"]["name"]: doc["stringData"] for doc in _docs(EXAMPLE)}


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container and init container of the kustomization."""
    for doc in RESOURCES:
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec.get("template", {}).get("spec")
        if pod is None:
            continue
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield doc["metadata"]["name"], container


def _env(container: dict[str, Any]) -> dict[str, tuple[str, str] | str]:
    """Variable -> (Secret, key) for a secretKeyRef, or the literal/ConfigMap value."""
    env: dict[str, tuple[str, str] | str] = {}
    for source in container.get("envFrom", []):
        assert "secretRef" not in source, "secrets are named key by key (secretKeyRef)"
        env.update(CONFIG[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[var["name"]] = var["value"]
            continue
        assert ref.get("optional") is False, f"{var['name']}: a required secret, optional: false"
        env[var["name"]] = (ref["name"], ref["key"])
    return env


CONTAINERS = [(wl, c, _env(c)) for wl, c in _containers()]
BY_COMMAND = {c["args"][0]: env for _, c, env in CONTAINERS}


def test_the_kustomization_applies_no_secret() -> None:
    assert "secret.example.yaml" not in KUSTOMIZATION["resources"]
    assert not KUSTOMIZATION.get("secretGenerator")
    assert [doc["metadata"]["name"] for doc in RESOURCES if doc["kind"] == "Secret"] == []
    assert set(BY_COMMAND) == PROCESSES | {
        "migrate",
        "topics",
        "ledger",
        "serve",
        "deliver",
        "reports",
    }


def test_no_secret_in_a_configmap_or_a_literal_value() -> None:
    for data in CONFIG.values():
        assert not [k for k in data if any(m in k for m in SECRET_MARKERS)]
    for workload, container, env in CONTAINERS:
        for name in container.get("env", []):
            if any(m in name["name"] for m in SECRET_MARKERS):
                assert isinstance(env[name["name"]], tuple), (workload, name["name"])


def test_processes_log_in_as_the_app_and_only_migrate_as_the_owner() -> None:
    for command in PROCESSES:
        env = BY_COMMAND[command]
        assert env[APP_URL] == ("budget-ledger-app", APP_URL), command
        assert env.get(OWNER_URL) in (None, ("budget-ledger-reconciler", OWNER_URL)), command
    owners = [(wl, c["name"]) for wl, c, env in CONTAINERS if OWNER_URL in env]
    assert owners == [("budget-ledger-migrate", "migrate")] + [
        # reconcile writes its checkpoints with its own login (ledger_reconciler), not the owner's
        (wl, "reconcile")
        for wl in ("budget-ledger-reconcile", "budget-ledger-reconcile-full")
    ]
    for wl, container, env in CONTAINERS:
        if wl.startswith("budget-ledger-reconcile"):
            assert env[OWNER_URL] == ("budget-ledger-reconciler", OWNER_URL), wl
            assert ("--full" in container["args"]) == wl.endswith("-full"), wl
    assert BY_COMMAND["migrate"][OWNER_URL] == ("budget-ledger-owner", OWNER_URL)
    assert APP_URL not in BY_COMMAND["migrate"]
    # The topics container creates topics as a Kafka admin and has no database URL at all.
    topics = BY_COMMAND["topics"]
    assert topics["LEDGER_KAFKA_SASL_PASSWORD"] == (
        "budget-ledger-kafka-admin",
        "LEDGER_KAFKA_SASL_PASSWORD",
    )
    assert not [k for k in topics if "DATABASE_URL" in k]
    # The daily `ledger partitions ensure` runs as the app (EXECUTE on the ensure function only).
    assert BY_COMMAND["ledger"] == {
        "LEDGER_LOG_FORMAT": "json",
        APP_URL: ("budget-ledger-app", APP_URL),
    }
    # So does the daily `reports rollup` (INSERT/DELETE on report_rollups, migration 017).
    assert BY_COMMAND["reports"] == BY_COMMAND["ledger"]


def test_chain_and_signing_keys_go_only_where_they_are_used() -> None:
    assert BY_COMMAND["consume"][CHAIN_KEYS] == BY_COMMAND["reconcile"][CHAIN_KEYS]
    assert CHAIN_KEY_ID in BY_COMMAND["consume"]
    for command in ("relay", "sweep", "migrate", "topics"):
        assert not {CHAIN_KEYS, CHAIN_KEY_ID} & set(BY_COMMAND[command]), command
    verify, sweeper = BY_COMMAND["consume"][SIGNING_KEYS], BY_COMMAND["sweep"][SIGNING_KEYS]
    assert verify == ("budget-ledger-signing-verify", SIGNING_KEYS)
    assert sweeper == ("budget-ledger-signing-sweeper", SIGNING_KEYS)
    assert BY_COMMAND["sweep"][SIGNING_KEY_ID] == ("budget-ledger-signing-sweeper", SIGNING_KEY_ID)
    assert SIGNING_KEY_ID not in BY_COMMAND["consume"]  # it verifies, it never signs
    for command in ("relay", "reconcile", "migrate", "topics"):
        assert not {SIGNING_KEYS, SIGNING_KEY_ID} & set(BY_COMMAND[command]), command
    # The API signs its privileged writes with its own key, which the consumer accepts.
    assert BY_COMMAND["serve"][SIGNING_KEYS] == ("budget-ledger-signing-api", SIGNING_KEYS)
    assert not {CHAIN_KEYS, CHAIN_KEY_ID} & set(BY_COMMAND["serve"])
    api_ids = json.loads(EXAMPLE_SECRETS["budget-ledger-signing-api"][SIGNING_KEYS])
    assert set(api_ids) <= set(
        json.loads(EXAMPLE_SECRETS["budget-ledger-signing-verify"][SIGNING_KEYS])
    )
    # The consumer accepts the sweeper's key: same id in both example Secrets.
    sweeper_ids = json.loads(EXAMPLE_SECRETS["budget-ledger-signing-sweeper"][SIGNING_KEYS])
    assert set(sweeper_ids) <= set(
        json.loads(EXAMPLE_SECRETS["budget-ledger-signing-verify"][SIGNING_KEYS])
    )


def test_the_api_logs_in_with_its_own_reader_login_only() -> None:
    api = BY_COMMAND["serve"]
    login = ("budget-ledger-api", "LEDGER_API_DATABASE_URL")
    assert api["LEDGER_API_DATABASE_URL"] == login
    # Its only database login: even the reconciler's replay (ledger_app) gets the reader login.
    assert api[APP_URL] == login and OWNER_URL not in api
    assert api["LEDGER_KAFKA_SASL_USERNAME"] == ("budget-ledger-api", "LEDGER_KAFKA_SASL_USERNAME")
    assert EXAMPLE_SECRETS["budget-ledger-api"]["LEDGER_KAFKA_SASL_USERNAME"] == "ledger-api"
    # Probed on GET /healthz (no key), and reachable through its Service.
    deployment = next(d for d in RESOURCES if d["metadata"]["name"] == "budget-ledger-api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    services = [d for d in RESOURCES if d["kind"] == "Service"]
    assert [s["spec"]["selector"] for s in services] == [
        {"app": "budget-ledger", "component": "api"}
    ]


def test_every_referenced_secret_key_is_documented_in_the_example() -> None:
    refs = {ref for _, _, env in CONTAINERS for ref in env.values() if isinstance(ref, tuple)}
    assert refs == {(name, key) for name, data in EXAMPLE_SECRETS.items() for key in data}


def _valid(value: str) -> str:
    """The example value with its placeholders replaced by values the settings accept."""
    if value.startswith("{"):
        return json.dumps({key_id: "k" * 40 for key_id in json.loads(value)})
    return value.replace("REPLACE_ME", "test-password")


@pytest.mark.parametrize("command", sorted(BY_COMMAND))
def test_each_container_environment_is_valid_settings(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    for name, value in BY_COMMAND[command].items():
        if isinstance(value, tuple):
            value = _valid(EXAMPLE_SECRETS[value[0]][value[1]])
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    # Every container that talks to Kafka authenticates; migrate, `ledger partitions` and
    # `reports rollup` do not talk to it.
    assert settings.kafka_security_protocol == (
        "PLAINTEXT" if command in ("migrate", "ledger", "reports") else "SASL_SSL"
    )
    if command in PROCESSES:
        assert settings.app_dsn().startswith("postgresql://ledger_app:")
    if command in ("consume", "reconcile"):
        assert settings.chain_keyring() is not None
    if command == "consume":
        assert settings.chain_key() is not None and settings.signing_keys
    if command == "sweep":
        assert settings.signing_key_id in settings.signing_keys
    if command == "serve":
        assert settings.api_dsn().startswith("postgresql://ledger_api:")
        assert settings.signing_key_id in settings.signing_keys


def test_compose_gives_the_same_split_with_development_values() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    text = (ROOT / "deploy" / "compose.yaml").read_text()
    assert "DEVELOPMENT VALUES ONLY" in text
    services = {svc["command"][0]: svc.get("environment", {}) for svc in _services(compose)}
    assert OWNER_URL in services["migrate"] and APP_URL not in services["migrate"]
    for command in PROCESSES:
        env = services[command]
        assert env[APP_URL].startswith("postgresql://ledger_app:") and OWNER_URL not in env
    assert CHAIN_KEYS in services["consume"] and CHAIN_KEYS in services["reconcile"]
    assert CHAIN_KEYS not in services["relay"] and CHAIN_KEYS not in services["sweep"]
    assert SIGNING_KEYS in services["consume"] and SIGNING_KEY_ID in services["sweep"]
    sweeper = json.loads(services["sweep"][SIGNING_KEYS])
    assert set(sweeper) < set(json.loads(services["consume"][SIGNING_KEYS]))
    assert not {SIGNING_KEYS, CHAIN_KEYS} & set(services["relay"])


def _services(compose: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for svc in compose["services"].values():
        if svc.get("command") and "image" in svc and svc["image"].startswith("budget-ledger"):
            yield svc
