"""Fixtures that find the real Kafka broker and PostgreSQL, and isolate every test's data.

Order of preference: the `LEDGER_KAFKA_BOOTSTRAP` / `LEDGER_DATABASE_URL` environment variables;
else testcontainers when a Docker engine answers; else the local services of `deploy/local/`,
started on demand (or a failure naming the exact command to run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

if TYPE_CHECKING:
    from budget_ledger.ledger.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_PG = "postgresql://ledger_owner:ledger@127.0.0.1:5432/ledger"
LOCAL_CLUSTER = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
# The processes' own login and the keyed chain's key, as deploy/local/env.sh sets them for
# development (not secrets: test values only).
APP_ROLE, APP_PASSWORD = "ledger_app", "ledger"
CHAIN_KEYS = {"chain_keys": {"dev-chain-1": "dev-chain-key-for-tests-only-0123456789"},
              "chain_key_id": "dev-chain-1"}  # fmt: skip


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_local(script: str, *sub: str) -> None:
    cmd = ["bash", str(ROOT / "deploy" / "local" / script), *sub, "start"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.exit(
            f"could not start the local service; run `{' '.join(cmd)}` and see its output:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}",
            returncode=3,
        )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker; at the end of the session, the topics of every
    prefix it handed out are deleted (those a test made after its own clean-up included)."""
    if bootstrap := os.environ.get("LEDGER_KAFKA_BOOTSTRAP"):
        yield bootstrap
        _delete_topics(bootstrap, *_SESSION_PREFIXES)
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        _start_local("kafka.sh")
        yield LOCAL_KAFKA
        _delete_topics(LOCAL_KAFKA, *_SESSION_PREFIXES)


@pytest.fixture(scope="session")
def kafka_cluster() -> str:
    """Bootstrap servers of the local three-node cluster (RF 3, min ISR 2), started when needed.

    Always the local one (`deploy/local/kafka.sh cluster`): its tests SIGKILL and restart nodes.
    """
    _start_local("kafka.sh", "cluster")
    return LOCAL_CLUSTER


@pytest.fixture(scope="session")
def kafka_secure() -> dict[str, str]:
    """The local SASL_SSL broker with ACLs (`deploy/local/kafka.sh secure`), started when needed:
    LEDGER_KAFKA_SECURE_BOOTSTRAP, _CA (a PEM file) and _USERS_FILE (the dev passwords)."""
    _start_local("kafka.sh", "secure")
    env = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "kafka.sh"), "secure", "env"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in env.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a role that may create databases (the owner role of the local cluster)."""
    if dsn := os.environ.get("LEDGER_DATABASE_URL"):
        yield dsn
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16") as pg:
            yield pg.get_connection_url(driver=None)
    else:
        _start_local("postgres.sh")
        yield LOCAL_PG


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def as_login(dsn: str, user: str, password: str) -> str:
    """The same database under another login."""
    parts = urlsplit(dsn)
    netloc = f"{user}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def app_login(pg_admin_dsn: str, template_database: str) -> tuple[str, str]:
    """(user, password) the processes log in with: `ledger_app` (created by the migrations),
    given its development password, as deploy/local/postgres.sh does."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
            )
        )
    return APP_ROLE, APP_PASSWORD


@pytest.fixture(scope="session")
def template_database(pg_admin_dsn: str) -> Iterator[str]:
    """A database migrated once per session, cloned by every test that needs Postgres."""
    from budget_ledger.ledger.migrate import migrate

    name = f"ledger_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(_with_database(pg_admin_dsn, name))
    yield name
    _drop_database(pg_admin_dsn, name)


@contextmanager
def cloned_database(pg_admin_dsn: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database (a copy of the session's template), dropped afterwards."""
    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_database)
            )
        )
    try:
        yield _with_database(pg_admin_dsn, name)
    finally:
        _drop_database(pg_admin_dsn, name)


@pytest.fixture
def database_url(pg_admin_dsn: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    with cloned_database(pg_admin_dsn, template_database) as url:
        yield url


def _drop_database(dsn: str, name: str) -> None:
    # WITH (FORCE) cannot terminate an autovacuum worker (it needs pg_signal_backend), which
    # often visits a database right after a large COPY: wait for it to finish instead.
    for attempt in range(40):
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == 39:
                raise
            time.sleep(0.5)


# Every prefix handed out this session: a test's process (an API app, a consumer) may create a
# topic again after the test deleted its own; those were left on the broker run after run.
_SESSION_PREFIXES: set[str] = set()


def new_prefix() -> str:
    """A new prefix of a test's topics and consumer groups (its topics are deleted at the end of
    the session at the latest)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    _SESSION_PREFIXES.add(prefix)
    return prefix


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so that each test gets its own topics and consumer groups."""
    return new_prefix()


@pytest.fixture
def settings(  # type: ignore[no-untyped-def]
    kafka_bootstrap: str, database_url: str, topic_prefix: str, app_login: tuple[str, str]
):
    """Settings pointing at the real services, with this test's own topics, group, database and
    signing key; the test's topics are deleted afterwards."""
    yield service_settings(kafka_bootstrap, database_url, topic_prefix, app_login)
    _delete_topics(kafka_bootstrap, topic_prefix)


def service_settings(
    kafka_bootstrap: str,
    database_url: str,
    topic_prefix: str,
    app_login: tuple[str, str],
    **overrides: Any,
) -> Settings:
    """The tests' settings: the real services, `topic_prefix`'s topics and group, the database,
    the app login and the session's signing key (plus `overrides`)."""
    from budget_ledger.ledger.settings import load_settings, prefixed_names
    from tests.integration.support import TEST_SIGNING

    return load_settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        # The processes log in as ledger_app, not as the owner. (No chain key here: the bench's
        # fill writes rows without MACs; tests of the keyed chain add CHAIN_KEYS.)
        app_database_url=as_login(database_url, *app_login),
        **prefixed_names(topic_prefix),
        topic_partitions=4,
        batch_max_ms=20,
        session_timeout_ms=6_000,
        # The session's own signing key: the helpers sign privileged commands with it.
        **TEST_SIGNING,
        **overrides,
    )


def _delete_topics(bootstrap: str, *prefixes: str) -> None:
    # Every test makes its own topics (4 x 4 partitions and more): kept, they pile up run after
    # run on the shared broker until its heap is exhausted (15,000 partitions took 512 MB).
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics
                 if t.split(".", 1)[0] in prefixes]  # fmt: skip
        for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
            future.result(timeout=60)
    except Exception as exc:  # cleanup only: a broker a test left down must not fail the test
        print(f"could not delete the topics of {', '.join(sorted(prefixes))}: {exc}")
