"""The set-up the HTTP API's integration tests share: a cloned database with the services'
settings and API keys per tenant and scopes, the test's topics deleted afterwards; and a
consumer that has applied a first stream of commands."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from budget_ledger.entrypoints.api.keys import create_key
from budget_ledger.ledger.settings import Settings
from tests.conftest import _delete_topics, cloned_database, new_prefix, service_settings
from tests.integration.support import ledger_count, produce, running_consumer, wait_for

# (label, tenant or None for a platform key, scopes[, the key's name: the label if left out])
KeySpec = tuple[str, str | None, tuple[str, ...]] | tuple[str, str | None, tuple[str, ...], str]


@dataclass(frozen=True)
class Services:
    """The session fixtures an API world is made from."""

    kafka_bootstrap: str
    pg_admin_dsn: str
    template_database: str
    app_login: tuple[str, str]


@dataclass
class World:
    """The database, the app's settings and one key (its secret) per label."""

    settings: Settings
    keys: dict[str, str]


def make_keys(database_url: str, specs: Sequence[KeySpec]) -> dict[str, str]:
    """Create one API key per spec (as the owner); return each label's secret."""
    keys: dict[str, str] = {}
    with psycopg.connect(database_url) as conn:
        for label, tenant, scopes, *name in specs:
            keys[label] = create_key(conn, tenant, scopes, name[0] if name else label)[1]
    return keys


@contextmanager
def api_world(
    services: Services, keys: Sequence[KeySpec], prefix: str | None = None, **overrides: Any
) -> Iterator[World]:
    """A cloned database, the tests' settings on new topics (`prefix`'s, a new one if None;
    plus `overrides`) and the keys; the database is dropped and the topics deleted afterwards."""
    prefix = prefix or new_prefix()
    with cloned_database(services.pg_admin_dsn, services.template_database) as url:
        settings = service_settings(
            services.kafka_bootstrap, url, prefix, services.app_login, **overrides
        )
        made = make_keys(url, keys)
        try:
            yield World(settings, made)
        finally:
            _delete_topics(services.kafka_bootstrap, prefix)


@contextmanager
def fed_consumer(
    settings: Settings, stream: Sequence[dict[str, Any]] = (), relay: bool = True
) -> Iterator[None]:
    """A running consumer (and relay unless `relay` is False) that has applied `stream`: one
    ledger row per command, in a database that held none."""
    with running_consumer(settings, relay=relay):
        if stream:
            produce(settings, stream)
            url = settings.database_url
            wait_for(lambda: ledger_count(url) == len(stream), what="the commands")
        yield
