"""`POST /v1/tenants/{tid}/budgets...`: the writes. Each publishes one command to Kafka and
answers 202, or with `?wait=` the ledger's outcome (docs/api.md, "Writes").

The body holds the command's own fields; `type` comes from the endpoint, `tenant_id` (and
`budget_id`, except when opening) from the path, `command_id` from the `Idempotency-Key` header
and an adjust's `operator` from the API key. The wire command is parsed by the consumer's own
parser, so what the API accepts is what the ledger accepts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Annotated, Any, Final

import orjson
import pydantic
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from budget_ledger.consumers.client import (
    SigningUnavailable,
    command_key,
    settings_signer,
    signature_headers,
)
from budget_ledger.entrypoints.api.auth import Caller, TenantId, principal_of, require_briefly
from budget_ledger.entrypoints.api.budgets import BudgetId
from budget_ledger.entrypoints.api.commands import dead_lettered
from budget_ledger.entrypoints.api.models import (
    AUTH_ERRORS,
    CommandOut,
    DeadLetteredOut,
    Problem,
    RefusalOut,
    ValidationProblem,
    WriteAccepted,
)
from budget_ledger.entrypoints.api.publisher import CommandPublisher, NotDelivered
from budget_ledger.ledger.idempotency import fingerprint
from budget_ledger.ledger.settings import Settings
from budget_ledger.projections.alert_reads import DeadLetter, dead_letter
from budget_ledger.projections.api_reads import CommandOutcome, command_outcome, tenant_session
from budget_ledger.schemas.commands import (
    COMMAND_ADAPTER,
    COMMAND_MODELS,
    Command,
    CommandInvalid,
    parse_command,
)
from budget_ledger.schemas.limits import MAX_ID_LENGTH, MAX_MESSAGE_BYTES
from budget_ledger.schemas.signing import ANY_TENANT, PRIVILEGED, KafkaHeaders

MAX_WAIT: Final = 10.0

router = APIRouter(
    prefix="/v1/tenants/{tid}/budgets",
    tags=["writes"],
    responses={
        200: {"model": CommandOut, "description": "with `wait`: the command was applied"},
        **AUTH_ERRORS,
        409: {"model": Problem, "description": "the Idempotency-Key was used with another body"},
        413: {"model": Problem, "description": "a body over 64 KiB"},
        422: {
            "model": RefusalOut | DeadLetteredOut | ValidationProblem,
            "description": "an invalid body or header (`detail` a list); with `wait`: the "
            "ledger refused the command (`reason`, `detail`, `event`); or the ledger "
            "dead-lettered the command, now or earlier under this Idempotency-Key "
            "(`status` dead_lettered, `error_class`, `reason`)",
        },
        503: {"model": Problem, "description": "Kafka or the database is unavailable"},
    },
)


def _invalid(loc: tuple[str, ...], kind: str, msg: str) -> RequestValidationError:
    # The same 422 shape as FastAPI's own validation errors: {"detail": [{type, loc, msg}]}.
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None}])


async def _body(request: Request) -> bytes:
    """The raw body, at most a command's size (413 beyond)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_MESSAGE_BYTES:
        raise HTTPException(413, f"the body is over {MAX_MESSAGE_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise HTTPException(413, f"the body is over {MAX_MESSAGE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Repeated(Exception):
    pass


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise _Repeated(k)
        seen[k] = v
    return seen


def _fields(raw: bytes, given: Mapping[str, str]) -> dict[str, Any]:
    """The body as a JSON object of fields; 422 for anything else, or for a field in `given`
    (field -> where it comes from)."""
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid(("body",), "json_invalid", f"invalid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise _invalid(("body",), "schema", "the body is a JSON object of the command's fields")
    try:
        # The consumer refuses a repeated key (it could hide a second value): so does the API.
        json.loads(raw, object_pairs_hook=_refuse_repeats)
    except _Repeated as dup:
        name = str(dup.args[0])
        raise _invalid(("body", name), "duplicate_key", f"key {name!r} appears twice") from None
    for name, source in given.items():
        if name in fields:
            raise _invalid(("body", name), "extra_forbidden", f"{name} comes from {source}")
    return fields


# Where a refused envelope field came from, for the 422's `loc`.
_SOURCES: Final = {
    "command_id": ("header", "idempotency-key"),
    "tenant_id": ("path", "tid"),
    "budget_id": ("path", "bid"),
}


def _parse(raw: bytes, settings: Settings, kind: str) -> Command:
    """The wire command, parsed as the consumer parses it; 422 naming the field otherwise."""
    try:
        return parse_command(raw, settings.currencies)
    except CommandInvalid as exc:
        raise _invalid(_error_loc(raw, settings, kind), exc.error_class, exc.reason) from None


def _error_loc(raw: bytes, settings: Settings, kind: str) -> tuple[str, ...]:
    # Only on the error path: validate again to learn which field the first error is about.
    try:
        COMMAND_ADAPTER.validate_json(raw, context={"currencies": settings.currencies})
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
        loc = [str(p) for p in errors[0]["loc"]] if errors else []
        if loc and loc[0] in COMMAND_MODELS:
            loc = loc[1:]
        if loc and loc[0] in _SOURCES and not (kind == "open_budget" and loc[0] == "budget_id"):
            return _SOURCES[loc[0]]
        return ("body", *loc)
    return ("body",)


def _signature(
    settings: Settings, caller: Caller, principal: str, command: Command, raw: bytes
) -> KafkaHeaders | None:
    """A privileged command's signature headers: the service's key, the key's name as principal,
    the key's tenant as scope (`*` for a platform key)."""
    if command.type not in PRIVILEGED:
        return None
    signer = settings_signer(settings, principal, caller.key.tenant_id or ANY_TENANT)
    try:
        return signature_headers(signer, command, command_key(command), raw)
    except SigningUnavailable:
        raise HTTPException(503, "this API has no signing key for privileged commands") from None


Outcome = CommandOutcome | DeadLetter


def _recorded(pool: ConnectionPool, tenant_id: str, command_id: str) -> Outcome | None:
    """The command's event in the ledger, else its dead letter (None: neither yet)."""
    with tenant_session(pool, tenant_id) as conn:
        return command_outcome(conn, tenant_id, command_id) or dead_letter(
            conn, tenant_id, command_id
        )


async def _await_outcome(
    pool: ConnectionPool, tenant_id: str, command_id: str, seconds: float
) -> Outcome | None:
    """Poll the ledger for the command's outcome for up to `seconds` (None: not yet). Any API
    worker sees any outcome this way, and each poll holds a connection only for its query."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pause = 0.02
    while True:
        outcome = await run_in_threadpool(_recorded, pool, tenant_id, command_id)
        left = deadline - loop.time()
        if outcome is not None or left <= 0:
            return outcome
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.25)


def _accepted(command_id: str, status: str) -> JSONResponse:
    return JSONResponse({"command_id": command_id, "status": status}, status_code=202)


def _conflict(command_id: str) -> HTTPException:
    return HTTPException(
        409,
        f"Idempotency-Key {command_id!r} was used for another request (a different body, budget "
        "or endpoint); use a new key for a new request",
    )


def _settled(command_id: str, outcome: Outcome, digest: str) -> JSONResponse:
    """The answer for an outcome: 200 applied, 422 refused or dead-lettered, 409 another
    request's."""
    if isinstance(outcome, DeadLetter):
        return JSONResponse(dead_lettered(command_id, outcome).model_dump(), status_code=422)
    if outcome.fingerprint != digest:
        raise _conflict(command_id)
    event = outcome.event
    reason = event.get("reason")
    if reason is None:
        body = CommandOut(
            command_id=command_id,
            status="recorded",
            budget_id=outcome.budget_id,
            sequence=outcome.sequence,
            type=outcome.type,
            event=event,
        )
        return JSONResponse(body.model_dump(), status_code=200)
    data = event.get("data")
    detail = data.get("detail") if isinstance(data, dict) else None
    refusal = RefusalOut(command_id=command_id, reason=str(reason), detail=detail, event=event)
    return JSONResponse(refusal.model_dump(), status_code=422)


async def _write(
    request: Request,
    caller: Caller,
    kind: str,
    command_id: str,
    wait: float | None,
    path_fields: Mapping[str, str],
    *,
    body: bytes | None = None,
    defaults: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build, check, publish and (with `wait`) await one command; ``body`` replaces the
    request's (a DELETE has none), ``defaults`` are fields the body may leave out."""
    settings: Settings = request.app.state.settings
    pool: ConnectionPool = request.app.state.pool
    publisher: CommandPublisher = request.app.state.publisher
    principal = principal_of(caller.key.name, caller.key.key_id)
    given = {"type": "the endpoint", "tenant_id": "the path",
             "command_id": "the Idempotency-Key header"}  # fmt: skip
    given.update({name: "the path" for name in path_fields})
    own: dict[str, str] = {}
    if kind == "adjust":
        # Who corrected the budget is the key, never text the client sends.
        given["operator"] = "the API key's name"
        own["operator"] = principal
    fields = _fields(await _body(request) if body is None else body, given)
    if defaults:
        fields = {**defaults, **fields}
    wire = {"type": kind, "tenant_id": caller.tenant_id, "command_id": command_id,
            **path_fields, **fields, **own}  # fmt: skip
    try:
        raw = orjson.dumps(wire)
    except orjson.JSONEncodeError as exc:
        raise _invalid(("body",), "json_invalid", f"invalid JSON: {exc}") from None
    command = _parse(raw, settings, kind)
    digest = fingerprint(command)
    # A retry of a recorded command is answered from the ledger, a reused key refused, a
    # dead-lettered key answered with its dead letter (the key is spent), and none is published
    # again.
    prior = await run_in_threadpool(_recorded, pool, caller.tenant_id, command_id)
    if prior is not None:
        if wait is None and isinstance(prior, CommandOutcome) and prior.fingerprint == digest:
            return _accepted(command_id, "recorded")
        return _settled(command_id, prior, digest)
    headers = _signature(settings, caller, principal, command, raw)
    try:
        await publisher.publish(command_key(command), raw, headers)
    except NotDelivered:
        raise HTTPException(
            503, "Kafka did not take the command; retry with the same Idempotency-Key"
        ) from None
    if wait is None:
        return _accepted(command_id, "pending")
    outcome = await _await_outcome(pool, caller.tenant_id, command_id, wait)
    if outcome is None:
        return _accepted(command_id, "pending")
    return _settled(command_id, outcome, digest)


def _body_doc(kind: str, given: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI request body of a write: the command's JSON Schema without `given` fields."""
    schema = COMMAND_MODELS[kind].model_json_schema()
    body = {
        "title": f"{schema['title']}Body",
        "description": schema.get("description", ""),
        "type": "object",
        "additionalProperties": False,
        "properties": {k: v for k, v in schema["properties"].items() if k not in given},
        "required": [k for k in schema.get("required", []) if k not in given],
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


_ENVELOPE: Final = ("type", "tenant_id", "command_id")
_ON_BUDGET: Final = (*_ENVELOPE, "budget_id")

Writer = Annotated[Caller, Depends(require_briefly("write"))]
Operator = Annotated[Caller, Depends(require_briefly("operator"))]
IdempotencyKey = Annotated[
    str,
    Header(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="The command's `command_id`: a retry with the same key and body gets the "
        "same result, the same key with another body a 409",
    ),
]
Wait = Annotated[
    float | None,
    Query(gt=0, le=MAX_WAIT, description="seconds to wait for the ledger's outcome (at most 10)"),
]
_WRITE: Final[dict[str, Any]] = {"status_code": 202, "response_model": WriteAccepted}


@router.post(
    "", **_WRITE, openapi_extra=_body_doc("open_budget", _ENVELOPE), summary="open a budget"
)
async def open_budget(
    request: Request, tid: TenantId, caller: Writer, idempotency_key: IdempotencyKey,
    wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`open_budget`; `budget_id` is in the body."""
    return await _write(request, caller, "open_budget", idempotency_key, wait, {})


_ADJUST: Final = (*_ON_BUDGET, "operator")


@router.post(
    "/{bid}/topup", **_WRITE, openapi_extra=_body_doc("fund", _ON_BUDGET), summary="add funds"
)
async def topup(
    request: Request, tid: TenantId, bid: BudgetId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`fund`."""
    return await _write(request, caller, "fund", idempotency_key, wait, {"budget_id": bid})


@router.post(
    "/{bid}/configure",
    **_WRITE,
    openapi_extra=_body_doc("configure_budget", _ON_BUDGET),
    summary="change the limits from now on",
)
async def configure(
    request: Request, tid: TenantId, bid: BudgetId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`configure_budget`: only the fields sent change; `null` clears a limit."""
    path = {"budget_id": bid}
    return await _write(request, caller, "configure_budget", idempotency_key, wait, path)


@router.post(
    "/{bid}/reserve",
    **_WRITE,
    openapi_extra=_body_doc("reserve", _ON_BUDGET),
    summary="hold funds for a reward",
)
async def reserve(
    request: Request, tid: TenantId, bid: BudgetId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`reserve`."""
    return await _write(request, caller, "reserve", idempotency_key, wait, {"budget_id": bid})


@router.post(
    "/{bid}/charge",
    **_WRITE,
    openapi_extra=_body_doc("charge", _ON_BUDGET),
    summary="charge a reservation",
)
async def charge(
    request: Request, tid: TenantId, bid: BudgetId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`charge` (all of the reservation, or a smaller `amount`)."""
    return await _write(request, caller, "charge", idempotency_key, wait, {"budget_id": bid})


@router.post(
    "/{bid}/release",
    **_WRITE,
    openapi_extra=_body_doc("release", _ON_BUDGET),
    summary="release a reservation",
)
async def release(
    request: Request, tid: TenantId, bid: BudgetId, caller: Writer,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`release`."""
    return await _write(request, caller, "release", idempotency_key, wait, {"budget_id": bid})


@router.post(
    "/{bid}/adjust",
    **_WRITE,
    openapi_extra=_body_doc("adjust", _ADJUST),
    summary="an audited correction of funded (operator scope)",
)
async def adjust(
    request: Request, tid: TenantId, bid: BudgetId, caller: Operator,
    idempotency_key: IdempotencyKey, wait: Wait = None,
) -> JSONResponse:  # fmt: skip
    """`adjust`: signed amount and reason; the operator recorded is the key's name."""
    return await _write(request, caller, "adjust", idempotency_key, wait, {"budget_id": bid})
