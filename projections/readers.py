"""Per-tenant SQL readers: a login role mapped to one tenant, isolated by row-level security.

Runs on an owner connection (it creates roles). The password is turned into a SCRAM verifier by
libpq on this side, so the plain text never reaches the server (nor its statement log).
"""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg import sql
from pydantic import SecretStr

from budget_ledger.projections.store import queries

MAX_NAME_BYTES = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)


class ReaderRefused(Exception):
    """The role cannot become (or stay) a reader of this tenant; the message says why."""


def create_reader(
    conn: psycopg.Connection, tenant: str, role: str, password: SecretStr
) -> Literal["created", "password_reset"]:
    """Create login `role` reading only `tenant` (or reset the password of that same reader)."""
    if not tenant or not role or len(role.encode()) > MAX_NAME_BYTES:
        raise ReaderRefused(f"a role name of 1 to {MAX_NAME_BYTES} bytes and a tenant are needed")
    if not password.get_secret_value():
        raise ReaderRefused("the password is empty")
    q = queries()
    verifier = conn.pgconn.encrypt_password(
        password.get_secret_value().encode(), role.encode(), b"scram-sha-256"
    ).decode()
    names = {"role": sql.Identifier(role), "verifier": sql.Literal(verifier)}
    with conn.transaction():
        row = conn.execute(q["reader_mapping"], {"role": role}).fetchone()
        mapped, exists = (row[0], row[1]) if row else (None, False)
        if mapped is not None and mapped != tenant:
            raise ReaderRefused(f"role {role!r} already reads tenant {mapped!r}")
        if exists and mapped is None:
            # Never turn an existing role (ledger_app, a person's login...) into a reader.
            raise ReaderRefused(f"role {role!r} exists and is not a tenant reader")
        if exists:
            conn.execute(sql.SQL(q["reset_reader_password"]).format(**names))
            return "password_reset"
        conn.execute(sql.SQL(q["create_reader_role"]).format(**names))
        conn.execute(q["insert_reader_mapping"], {"role": role, "tenant": tenant})
    return "created"
