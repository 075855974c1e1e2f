"""A tiny migration runner: numbered `.sql` files applied in order, each recorded once."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import psycopg

# Serialises concurrent `migrate` runs (e.g. several pods starting at once).
_LOCK_KEY = 0x1ED6E7


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version (file stem) and SQL text."""

    version: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped in `ledger/migrations`, in file-name order."""
    folder = resources.files("budget_ledger.ledger") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(version=f.name.removesuffix(".sql"), sql=f.read_text("utf-8")) for f in files]


def migrate(dsn: str, target: str | None = None) -> list[str]:
    """Apply the pending migrations, each in its own transaction; return the versions applied.

    With `target` (a version such as "001_ledger"), stop after that version (tests of upgrades).
    """
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in available_migrations():
                if target is not None and migration.version > target:
                    break
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)",
                        (migration.version,),
                    )
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
