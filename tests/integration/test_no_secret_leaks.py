"""No secret in any output: one full run of the CLI with every secret set to a distinctive value.

The signing key, the chain key, the database passwords (LEDGER_APP_DATABASE_URL and
LEDGER_DATABASE_URL, logins made for this test) and, on the secure broker, SASL passwords are
set; the run migrates, creates topics, consumes with the relay, sends signed, unsigned and forged
funds, adjusts, sweeps and reconciles with JSON logs at debug level; then every `--help` and
deliberately failing invocations. No secret (nor its base64 or hex form, nor a 16-character
prefix) may appear in anything written to stdout or stderr, and the run must have done what it
should.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.consumers.kafka_config import admin_config
from budget_ledger.entrypoints.cli import build_parser
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.events import rfc3339_utc
from tests.conftest import as_login
from tests.integration.support import cli_env, produce, read_topic, scalar, wait_for

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "budget_ledger.entrypoints.cli"]
TENANT = "acme"


def _secret(tag: str) -> str:
    # Letters and digits only: a URL or JSON carries it as is, so a leak is found verbatim.
    return tag + secrets.token_hex(20)


def _forms(secret: str) -> list[str]:
    """What a leak of `secret` could look like: itself, a 16-character prefix (a truncated
    print), and its bytes in base64 (standard and URL-safe, padding stripped) and hex."""
    raw = secret.encode()
    return [
        secret,
        secret[:16],
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    ]


class Transcript:
    """Every stdout/stderr the run produced, by label, so a failure names the invocation."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str]] = []

    def run(
        self, label: str, env: dict[str, str], *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `budget-ledger ARGS` under `env`, record its output, return it."""
        done = subprocess.run(
            [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        self.add(label, done.stdout + done.stderr)
        return done

    def add(self, label: str, text: str) -> None:
        """Record output produced elsewhere (a background process)."""
        self.parts.append((label, text))

    def leaks(self, secrets_by_name: dict[str, str]) -> list[str]:
        """(secret name, form, invocation) of every secret form found in the output."""
        found = []
        for name, secret in secrets_by_name.items():
            for form in _forms(secret):
                found += [f"{name} as {form!r} in {label}" for label, text in self.parts
                          if form in text]  # fmt: skip
        return found


def _help_paths() -> list[list[str]]:
    """Every sub-command path of the CLI (`[]`, `["migrate"]`, `["relay", "set-aside"]`, ...)."""
    paths: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        paths.append(prefix)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*prefix, name])

    walk(build_parser(), [])
    return paths


@pytest.fixture
def logins(settings: Settings) -> Iterator[dict[str, tuple[str, str]]]:
    """Logins of this test with distinctive passwords, dropped afterwards: "app", a member of
    ledger_app, which the processes SET ROLE to (its BYPASSRLS then applies), and "owner", a
    member of ledger_owner (the test database is migrated already, so it creates nothing)."""
    made = {kind: (f"leak_{kind}_{uuid.uuid4().hex[:8]}", _secret(f"{kind}pw"))
            for kind in ("app", "owner")}  # fmt: skip
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for kind, (role, password) in made.items():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                    sql.Identifier(role), sql.Literal(password), sql.Identifier(f"ledger_{kind}")
                )
            )
    yield made
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for role, _ in made.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _secure_env(
    base: dict[str, str], kafka_secure: dict[str, str], user: str, password: str
) -> dict[str, str]:
    """`base` pointed at the secure broker as `user`."""
    return {**base, "LEDGER_KAFKA_BOOTSTRAP": kafka_secure["LEDGER_KAFKA_SECURE_BOOTSTRAP"],
            "LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGER_KAFKA_SASL_USERNAME": user,
            "LEDGER_KAFKA_SASL_PASSWORD": password,
            "LEDGER_KAFKA_SSL_CA_PEM": kafka_secure["LEDGER_KAFKA_SECURE_CA"]}  # fmt: skip


def _admin_password(kafka_secure: dict[str, str]) -> str:
    lines = Path(kafka_secure["LEDGER_KAFKA_SECURE_USERS_FILE"]).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)["LEDGER_KAFKA_PASSWORD_ADMIN"]


def test_no_secret_in_any_output_of_a_full_run(
    settings: Settings,
    logins: dict[str, tuple[str, str]],
    kafka_secure: dict[str, str],
    tmp_path: Path,
) -> None:
    sign, forged, short = _secret("sig"), _secret("forged"), _secret("short")[:24]
    chain, wrong_db, wrong_sasl = _secret("chain"), _secret("wrongdb"), _secret("wrongsasl")
    stray_sasl = _secret("saslx")
    role, db_password = logins["app"]
    owner, owner_password = logins["owner"]
    admin_sasl = _admin_password(kafka_secure)
    app_url = as_login(settings.database_url, role, db_password)
    env = {
        **cli_env(settings),
        "LEDGER_LOG_FORMAT": "json",
        "LEDGER_LOG_LEVEL": "debug",
        "LEDGER_SIGNING_KEYS": orjson.dumps({"leak-k1": sign}).decode(),
        "LEDGER_SIGNING_KEY_ID": "leak-k1",
        "LEDGER_SIGNING_PRINCIPAL": "leak-operator",
        "LEDGER_CHAIN_KEYS": orjson.dumps({"leak-c1": chain}).decode(),
        "LEDGER_CHAIN_KEY_ID": "leak-c1",
        "LEDGER_DATABASE_URL": as_login(settings.database_url, owner, owner_password),
        "LEDGER_APP_DATABASE_URL": app_url,
    }
    t = Transcript()
    budget = f"b-{uuid.uuid4().hex[:8]}"

    def command(kind: str, cid: str, **fields: str) -> str:
        return orjson.dumps({"command_id": cid, "type": kind, "tenant_id": TENANT,
                             "budget_id": budget, **fields}).decode()  # fmt: skip

    # A wrong SASL password against the secure broker: librdkafka retries for the send's 30 s,
    # so it runs in the background while the main flow goes on.
    wrong_sasl_env = _secure_env(env, kafka_secure, "ledger", wrong_sasl)
    wrong_sasl_send = subprocess.Popen(
        [*CLI, "send", command("reserve", "r-never", amount="1.00", currency="USD", ref_id="x")],
        env=wrong_sasl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    # The full run on the plain broker: the app login, the signing and chain keys.
    migrated = t.run("migrate", env, "migrate")  # as the owner-level login: nothing pending
    assert migrated.returncode == 0 and "applied 0 migration(s)" in migrated.stdout, migrated.stderr
    assert t.run("topics create", env, "topics", "create").returncode == 0
    consumer_out, consumer_err = tmp_path / "consume.out", tmp_path / "consume.err"
    with consumer_out.open("w") as out, consumer_err.open("w") as err:
        consumer = subprocess.Popen([*CLI, "consume", "--with-relay"], env=env, stdout=out,
                                    stderr=err)  # fmt: skip
    try:
        wait = ("--wait", "--timeout", "60")
        open_1 = command("open_budget", "open-1", currency="USD", period="rolling")
        opened = t.run("send open_budget", env, "send", *wait, open_1)
        assert opened.returncode == 0, opened.stderr
        funded = t.run("send fund (signed)", env, "send", *wait,
                       command("fund", "fund-1", amount="100.00", currency="USD"))  # fmt: skip
        assert funded.returncode == 0, funded.stderr
        # A fund signed with a secret the consumer does not hold, under its key id: forged.
        forged_env = {**env, "LEDGER_SIGNING_KEYS": orjson.dumps({"leak-k1": forged}).decode()}
        fund_forged = command("fund", "fund-forged", amount="900.00", currency="USD")
        forgery = t.run("send fund (forged)", forged_env, "send", *wait, fund_forged)
        assert forgery.returncode == 1 and "unauthorized" in forgery.stderr, forgery.stderr
        # An unsigned fund straight to the topic (the CLI refuses to send one, below).
        produce(settings, [orjson.loads(command("fund", "fund-unsigned", amount="900.00",
                                                currency="USD"))], sign=False)  # fmt: skip
        expires = rfc3339_utc(datetime.now(UTC) + timedelta(seconds=3))
        held = t.run("send reserve", env, "send", *wait,
                     command("reserve", "res-1", amount="10.00", currency="USD", ref_id="rw-1",
                             expires_at=expires))  # fmt: skip
        assert held.returncode == 0, held.stderr
        adjusted = t.run("adjust", env, "adjust", "--tenant", TENANT, "--budget", budget,
                         "--amount", "-5.00", "--reason", "leak test", "--operator",
                         "alice@finance", "--timeout", "60")  # fmt: skip
        assert adjusted.returncode == 0, adjusted.stderr
        time.sleep(max(0.0, (datetime.fromisoformat(expires) - datetime.now(UTC)).total_seconds()))
        swept = t.run("sweep --once", env, "sweep", "--once")
        assert swept.returncode == 0 and "published 1" in swept.stdout, swept.stderr
        wait_for(lambda: scalar(settings.database_url, "SELECT count(*) FROM ledger WHERE tenant_id"
                                " = %(t)s AND type = 'reservations_expired'", {"t": TENANT}) == 1,
                 what="the sweeper's expiry in the ledger")  # fmt: skip
        dlq = read_topic(settings, settings.topic_dlq, 2)
        wait_for(lambda: scalar(settings.database_url, "SELECT count(*) FROM outbox") == 0,
                 what="the relay to publish the outbox")  # fmt: skip
        reconciled = t.run("reconcile", env, "reconcile")
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    finally:
        consumer.terminate()
        consumer.wait(30)
    t.add("consume --with-relay", consumer_out.read_text() + consumer_err.read_text())

    # The run did what it should: the signed commands are in the ledger (every row MACed with
    # the chain key), the adjustment names its signer, the unsigned and forged funds were
    # dead-lettered as unauthorized and changed nothing, and the logs are JSON at debug level.
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT type, command_id, mac_key_id, event->'data'->>'operator' FROM ledger"
            " WHERE tenant_id = %s AND budget_id = %s ORDER BY sequence", (TENANT, budget)
        ).fetchall()  # fmt: skip
        funded_total = conn.execute(
            "SELECT funded FROM budget_balances WHERE tenant_id = %s AND budget_id = %s",
            (TENANT, budget),
        ).fetchone()
    assert [r[0] for r in rows] == ["budget_opened", "budget_funded", "funds_reserved",
                                    "budget_adjusted", "reservations_expired"]  # fmt: skip
    assert {r[2] for r in rows} == {"leak-c1"}
    assert rows[3][3] == "alice@finance"
    # 100.00 funded, 5.00 adjusted away; neither refused 900.00 arrived.
    assert funded_total is not None and funded_total[0] == 9_500
    checks = {dict(m.headers() or []).get("check", b"").decode() for m in dlq}
    assert checks == {"signature_missing", "signature_mismatch"}, checks
    logs = [line for line in consumer_err.read_text().splitlines() if line.startswith("{")]
    assert any(orjson.loads(line).get("level") == "debug" for line in logs), logs[:5]

    # Every --help, with all the secrets in the environment.
    for path in _help_paths():
        shown = t.run(f"{' '.join(path)} --help", env, *path, "--help", timeout=60)
        assert shown.returncode == 0 and "usage:" in shown.stdout, shown.stderr

    # Deliberately failing invocations: each exits non-zero and says why, without the secret.
    reserve = command("reserve", "r-fail", amount="1.00", currency="USD", ref_id="y")
    fund = command("fund", "f-fail", amount="1.00", currency="USD")
    failing = {
        "unknown signing key id": ({"LEDGER_SIGNING_KEY_ID": "no-such-key"}, ["send", fund]),
        "short signing key": (
            {"LEDGER_SIGNING_KEYS": orjson.dumps({"leak-k1": short}).decode()}, ["send", fund]
        ),
        "signing keys not JSON": ({"LEDGER_SIGNING_KEYS": f'{{"leak-k1": "{sign}"'},
                                  ["send", fund]),
        "chain key id unknown": ({"LEDGER_CHAIN_KEY_ID": "no-such-key"}, ["reconcile"]),
        "unsigned fund from the CLI": ({"LEDGER_SIGNING_KEY_ID": ""}, ["send", fund]),
        "adjust without a key": ({"LEDGER_SIGNING_KEY_ID": ""},
                                 ["adjust", "--tenant", TENANT, "--budget", budget, "--amount",
                                  "1.00", "--reason", "x"]),
        "wrong db password (reconcile)": (
            {"LEDGER_APP_DATABASE_URL": as_login(settings.database_url, role, wrong_db)},
            ["reconcile"],
        ),
        "wrong db password (sweep)": (
            {"LEDGER_APP_DATABASE_URL": as_login(settings.database_url, role, wrong_db)},
            ["sweep", "--once"],
        ),
        "wrong owner password (migrate)": (
            {"LEDGER_DATABASE_URL": as_login(settings.database_url, owner, wrong_db)},
            ["migrate"],
        ),
        "app url not postgres": (
            {"LEDGER_APP_DATABASE_URL": f"mysql://{role}:{db_password}@127.0.0.1/x"},
            ["reconcile"],
        ),
        "sasl without password": (
            {"LEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LEDGER_KAFKA_SASL_USERNAME": "ledger"},
            ["send", reserve],
        ),
        "sasl password without sasl": ({"LEDGER_KAFKA_SASL_USERNAME": "ledger",
                                        "LEDGER_KAFKA_SASL_PASSWORD": stray_sasl},
                                       ["send", reserve]),
    }  # fmt: skip
    for label, (overrides, args) in failing.items():
        failed = t.run(label, {**env, **overrides}, *args)
        assert failed.returncode != 0, f"{label}: {failed.stdout}"
        assert failed.stderr.strip(), f"{label}: no error message"

    # The secure broker: the admin's real password creates the topics; a wrong one is refused.
    admin_env = _secure_env(env, kafka_secure, "admin", admin_sasl)
    try:
        created = t.run("topics create (SASL admin)", admin_env, "topics", "create")
        assert created.returncode == 0, created.stderr
    finally:
        admin = settings.model_copy(update={
            "kafka_bootstrap": admin_env["LEDGER_KAFKA_BOOTSTRAP"],
            "kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "admin",
            "kafka_sasl_password": SecretStr(admin_sasl),
            "kafka_ssl_ca_pem": admin_env["LEDGER_KAFKA_SSL_CA_PEM"]})  # fmt: skip
        _delete_topics(admin)
    sasl_out, sasl_err = wrong_sasl_send.communicate(timeout=120)
    t.add("send with a wrong SASL password", sasl_out + sasl_err)
    assert wrong_sasl_send.returncode != 0
    assert "SASL authentication error" in sasl_err, sasl_err[-2000:]

    leaks = t.leaks({
        "signing key": sign, "forged signing key": forged, "short signing key": short,
        "chain key": chain, "app DB password": db_password, "owner DB password": owner_password,
        "wrong DB password": wrong_db,
        "SASL admin password": admin_sasl, "wrong SASL password": wrong_sasl,
        "stray SASL password": stray_sasl,
    })  # fmt: skip
    assert leaks == [], "\n".join(leaks)


def _delete_topics(admin: Settings) -> None:
    client = AdminClient(admin_config(admin))
    names = [admin.topic_commands, admin.topic_events, admin.topic_alerts, admin.topic_dlq]
    for future in client.delete_topics(names, operation_timeout=10).values():
        future.result(timeout=15)
