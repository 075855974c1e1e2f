"""Authentication and authorization of API requests: `Authorization: Bearer <key>`.

401 for no key, a malformed, unknown or revoked key or a wrong secret (one answer for all, so
a caller learns nothing about which); 403 for a tenant the key may not act for, or a missing
scope (named). Only a key that passes is the request's one transaction bound to the tenant
with: by the database, in the statement that reads the key (reads: `session`,
`hot_read`), or by `projections.api_reads.bind_tenant` after the check (the others).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from budget_ledger.entrypoints.api.keys import ApiKey, active_key, key_hash, key_id_of, verify_key
from budget_ledger.projections.api_reads import (
    Read,
    keyed_reads,
    keyed_session,
    read_transaction,
)
from budget_ledger.schemas.limits import MAX_ID_LENGTH, id_problem

_bearer = HTTPBearer(auto_error=False, description="An API key: `budget-ledger keys create`")

# Ids in paths: the wire's own bounds (1-128 characters), and no control characters, which
# Postgres text refuses (\x00) or which could forge log lines.
ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
TenantId = Annotated[str, Path(pattern=ID_PATTERN, description="The tenant")]


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified key acting for the tenant of the request's path."""

    key: ApiKey
    tenant_id: str


def _unauthorized() -> HTTPException:
    return HTTPException(401, "missing, unknown or revoked API key", {"WWW-Authenticate": "Bearer"})


def db_pool(request: Request) -> ConnectionPool:
    """The app's connection pool (opened by its lifespan)."""
    pool: ConnectionPool = request.app.state.pool
    return pool


def transaction(
    pool: Annotated[ConnectionPool, Depends(db_pool)],
) -> Iterator[psycopg.Connection]:
    """The request's one read-only transaction (FastAPI makes it once per request): the key
    look-up runs in it first, without a tenant, then the handler's queries, bound to one."""
    with read_transaction(pool) as conn:
        yield conn


def authenticate(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    conn: Annotated[psycopg.Connection, Depends(transaction)],
) -> ApiKey:
    """The active key of the request (401 otherwise)."""
    return _active_key(conn, _bearer_secret(credentials))


def _bearer_secret(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The key the request presents (401 when there is none)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized()
    return credentials.credentials


def _active_key(conn: psycopg.Connection, secret: str) -> ApiKey:
    """The active key `secret` names (401 otherwise)."""
    # No tenant is bound yet, so the reader sees no row of any table here; it reaches the key
    # table only through the SECURITY DEFINER function ledger_api_key (migration 010).
    key = verify_key(conn, secret)
    if key is None:
        raise _unauthorized()
    return key


def require(scope: str) -> Callable[..., Caller]:
    """A dependency: the key must hold `scope` and may act for the path's tenant."""

    def check(tid: TenantId, key: Annotated[ApiKey, Depends(authenticate)]) -> Caller:
        return check_caller(key, tid, scope)

    return check


def check_caller(key: ApiKey, tid: str, scope: str) -> Caller:
    """The caller when `key` may act for tenant `tid` and holds `scope` (403 otherwise)."""
    # A tenant key on another tenant's path: refused before any query, so no data of that
    # tenant can be in the answer. A platform key (no tenant) may act for any tenant.
    if key.tenant_id is not None and key.tenant_id != tid:
        raise HTTPException(403, "this API key may not act for this tenant")
    if scope not in key.scopes:
        raise HTTPException(403, f"this API key lacks the scope {scope!r}")
    return Caller(key, tid)


def require_briefly(scope: str) -> Callable[..., Caller]:
    """Like `require`, for writes: the key is looked up in a short transaction of its own, so
    no pooled connection is held while the handler publishes and waits for the outcome."""

    def check(
        tid: TenantId,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        pool: Annotated[ConnectionPool, Depends(db_pool)],
    ) -> Caller:
        secret = _bearer_secret(credentials)
        with read_transaction(pool) as conn:
            key = _active_key(conn, secret)
        return check_caller(key, tid, scope)

    return check


@dataclass(frozen=True, slots=True)
class ReadAccess:
    """A read request's key and the path's tenant, not verified yet (`session`, `hot_read`)."""

    pool: ConnectionPool
    hot_pool: AsyncConnectionPool
    secret: str
    tenant_id: str


async def read_access(
    tid: TenantId,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    request: Request,
) -> ReadAccess:
    """A read request's key and tenant (401 when it presents no key). Async and without I/O,
    so FastAPI calls it in the event loop: no hop to its thread pool."""
    state = request.app.state
    return ReadAccess(state.pool, state.hot_pool, _bearer_secret(credentials), tid)


Access = Annotated[ReadAccess, Depends(read_access)]


async def hot_read(access: ReadAccess, reads: Sequence[Read]) -> list[tuple[Any, ...] | None]:
    """The first row of each read, in the request's one read-only transaction, bound to the
    path's tenant once the key is verified (401/403 otherwise, before any row is used).

    For the hot reads (a budget, its utilization): the whole transaction is one round trip on
    the asyncio pool (`projections.api_reads.keyed_reads`), in the request's own task — a sync
    session costs hand-offs to a thread and back, more CPU at 500 requests/s than the queries.
    """
    key_id, digest = _presented(access)
    tenant = access.tenant_id
    row, rows = await keyed_reads(access.hot_pool, key_id, digest, tenant, "read", reads)
    _verify(access, row)
    return rows


def _presented(access: ReadAccess) -> tuple[str, bytes]:
    """The id and digest of the key the request presents (401 when it is not a key of ours)."""
    key_id = key_id_of(access.secret)
    if key_id is None:
        raise _unauthorized()
    return key_id, key_hash(access.secret)


def _verify(access: ReadAccess, row: tuple[Any, ...] | None) -> None:
    """401/403 unless the key's `row` (a session's first statement) is an active key that may
    read the tenant; an error if the database bound the tenant otherwise than that says."""
    key = active_key(access.secret, row)
    if key is None:
        raise _unauthorized()
    check_caller(key, access.tenant_id, "read")
    if row is None or row[-1] != access.tenant_id:
        # Python and SQL decide the same thing; should they ever differ, answer nothing.
        raise RuntimeError("the key check and the tenant binding disagree")


def session(access: Access) -> Iterator[psycopg.Connection]:
    """The request's one read-only transaction, bound to the path's tenant once the key is
    verified, may act for it and holds `read` (401/403 otherwise): a dependency for the other
    reads (pages, and reports that stream while they hold it), which FastAPI enters and leaves
    in its thread pool. The database binds the tenant in the statement that reads the key, on
    the same conditions as `check_caller` (projections.api_reads.keyed_session).
    """
    key_id, digest = _presented(access)
    with keyed_session(access.pool, key_id, digest, access.tenant_id, "read") as (row, conn):
        _verify(access, row)
        yield conn


ReadSession = Annotated[psycopg.Connection, Depends(session)]


def principal_of(key_name: str, key_id: str) -> str:
    """Who a key signs as, and an adjust's `operator`: the key's name as an id (NFKC, spaces as
    `_`), or `api-key-<key_id>` when the name cannot be one."""
    name = unicodedata.normalize("NFKC", key_name).replace(" ", "_")
    if len(name) <= MAX_ID_LENGTH and id_problem(name) is None:
        return name
    return f"api-key-{key_id}"
