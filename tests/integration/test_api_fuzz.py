"""Property-based fuzzing of the HTTP API against its own OpenAPI document (schemathesis).

Every operation the document holds when the test runs is exercised — the list is not fixed here,
so an endpoint added later is fuzzed too — in-process (the app's own lifespan, pool and Kafka
producer), against a real ledger: a migrated database, the test's own topics and a running
consumer, so writes are applied and reads find budgets. Each response must be a non-5xx, with a
status code, content type, headers and body that the document declares for that operation.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema

from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.ledger.settings import Settings
from tests.integration.api_world import KeySpec, Services, api_world, fed_consumer
from tests.integration.support import (
    fund,
    open_budget,
    reserve,
)

pytestmark = pytest.mark.integration

TENANT, BUDGET = "acme", "fz"
# Examples per operation and generation mode: ~20 operations x 2 modes x 40 stays well under two
# minutes on 2 cores. Derandomized: CI runs the same examples every time.
MAX_EXAMPLES = 40
# A write may wait up to 10 s for its outcome; a command the ledger dead-letters (e.g. two
# examples racing with one Idempotency-Key) would hold every such example for the whole wait.
MAX_WAIT = 1.0

# schemathesis.checks resolves its registered checks by name.
CHECKS = [
    getattr(schemathesis.checks, name)
    for name in (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
]


@pytest.fixture(scope="module")
def fuzz_world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[tuple[Settings, str]]:
    """A ledger with the consumer running, one funded budget with a reservation, and a key of
    its tenant with every scope."""
    services = Services(kafka_bootstrap, pg_admin_dsn, template_database, app_login)
    keys: list[KeySpec] = [("fuzz", TENANT, ("read", "write", "operator"))]
    stream = [
        open_budget(TENANT, BUDGET, "fz-open"),
        fund(TENANT, BUDGET, "fz-fund", "1000.00"),
        reserve(TENANT, BUDGET, "fz-hold", "5.00", "fz-r1"),
    ]
    with api_world(services, keys) as w, fed_consumer(w.settings, stream, relay=False):
        yield w.settings, w.keys["fuzz"]


@pytest.fixture(scope="module")
def api_schema(fuzz_world: tuple[Settings, str]) -> BaseSchema:
    """The app's OpenAPI document, loaded from the app itself, with the key on every request."""
    settings, key = fuzz_world
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    schema.config.update(headers={"Authorization": f"Bearer {key}"})
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        database="none",
    )
    return schema


def _pick(value: Any, one_in: int) -> bool:
    """A deterministic choice of about one generated value in `one_in` (kept as generated)."""
    return zlib.crc32(repr(value).encode()) % one_in == 0


def _aim(case: Case) -> None:
    """Point most cases at the key's tenant and the funded budget: random ids alone would be
    answered 403/404 before any handler's own code runs."""
    path = case.path_parameters
    if path is not None:
        if "tid" in path and not _pick(path["tid"], 4):
            path["tid"] = TENANT
        if "bid" in path and not _pick(path["bid"], 2):
            path["bid"] = BUDGET
    query = case.query
    if query is not None and isinstance(query.get("wait"), int | float):
        query["wait"] = min(query["wait"], MAX_WAIT)


def _fuzz(operation: APIOperation, mode: GenerationMode) -> None:
    """Run the checks on `MAX_EXAMPLES` generated cases of one operation (hypothesis raises the
    first failure, with the request that caused it)."""

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time; the failure
        suppress_health_check=list(HealthCheck),  # names its request (a curl line) anyway
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        _aim(case)
        case.call_and_validate(checks=CHECKS)

    run()


# Valid writes, by path: random bodies are almost all refused by validation (422), so these make
# sure the answers of applied (200) and refused (422 with the event) commands are checked too.
# An operation missing here is still fuzzed.
_WRITES: dict[str, list[dict[str, Any]]] = {
    "/v1/tenants/{tid}/budgets": [{"budget_id": "fz-2", "currency": "USD", "period": "rolling"}],
    "/v1/tenants/{tid}/budgets/{bid}/topup": [{"amount": "10.00", "currency": "USD"}],
    "/v1/tenants/{tid}/budgets/{bid}/configure": [{"soft_cap": "900.00"}],
    "/v1/tenants/{tid}/budgets/{bid}/reserve": [
        {"amount": "2.00", "currency": "USD", "ref_id": "fz-r2"},
        {"amount": "99999.00", "currency": "USD", "ref_id": "fz-r3"},  # refused: 422
    ],
    "/v1/tenants/{tid}/budgets/{bid}/charge": [{"ref_id": "fz-r1", "amount": "1.00"}],
    "/v1/tenants/{tid}/budgets/{bid}/release": [{"ref_id": "fz-r2"}],
    "/v1/tenants/{tid}/budgets/{bid}/adjust": [{"amount": "-1.00", "reason": "fuzz"}],
}


def _valid_writes(operations: list[APIOperation], key: str) -> list[str]:
    """Send the valid writes (waiting for their outcome) and check their answers."""
    failures: list[str] = []
    for operation in operations:
        for body in _WRITES.get(operation.path, []) if operation.method == "post" else []:
            case = operation.Case(
                path_parameters={"tid": TENANT, "bid": BUDGET},
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
                query={"wait": 10},
                body=body,
            )
            try:
                response = case.call_and_validate(checks=CHECKS)
                assert response.status_code in (200, 422), response.text
            except Exception as exc:
                failures.append(f"{operation.label} {body}: {exc}")
    return failures


def test_every_operation_conforms_to_the_openapi_document(
    api_schema: BaseSchema, fuzz_world: tuple[Settings, str]
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13  # the document was read (13 operations when this was written)
    failures = _valid_writes(operations, fuzz_world[1])
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode)
            except Unsatisfiable:
                # Nothing to make invalid (GET /healthz has no parameter): no negative case.
                if mode is not GenerationMode.NEGATIVE:
                    failures.append(f"{operation.label} ({mode.value}): no case generated")
            except Exception as exc:  # every operation is fuzzed; all failures are reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


def test_healthz_answers_without_a_key(fuzz_world: tuple[Settings, str]) -> None:
    with TestClient(create_app(fuzz_world[0])) as client:
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
