"""Per-endpoint delivery threads: a slow or hanging endpoint only ever occupies its own thread.

The deliverer's main loop hands each due delivery to the worker of its endpoint (one thread and
one queue per endpoint with work, at most a few deliveries queued each); the worker resolves and
checks the target (consumers.ssrf), posts the signed alert (consumers.webhook_http) and puts the
result on a shared queue, which only the main loop writes to Postgres.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from budget_ledger.consumers import ssrf, webhook_http, webhook_signing

log = structlog.get_logger("webhooks")


@dataclass(frozen=True, slots=True)
class Job:
    """One due delivery: the row's id, attempt count and generation, its endpoint's URL and
    secret."""

    delivery_id: int
    endpoint_id: str
    tenant_id: str
    alert_id: str
    body: bytes
    attempts: int
    generation: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Result:
    """One finished attempt of `job`; `final`: an error never worth retrying."""

    job: Job
    attempted_at: datetime
    status: int | None
    latency_ms: int
    error: str | None
    retry_after: str | None
    final: bool


def attempt(job: Job, timeout: float, allow_private: bool) -> Result:
    """Check the target, sign and POST the alert once; every failure becomes a Result."""
    at = datetime.now(UTC)
    started = time.monotonic()
    try:
        target = ssrf.resolve(job.url, allow_private)
    except ssrf.RefusedTarget as exc:
        ms = int((time.monotonic() - started) * 1000)
        return Result(job, at, None, ms, f"refused: {exc}", None, final=True)
    except (socket.gaierror, UnicodeError) as exc:
        ms = int((time.monotonic() - started) * 1000)
        return Result(job, at, None, ms, f"name resolution failed: {exc}", None, final=False)
    headers = webhook_signing.headers(job.secret, job.alert_id, int(time.time()), job.body)
    r = webhook_http.post(target, job.body, headers, timeout)
    return Result(job, at, r.status, r.latency_ms, r.error, r.retry_after, final=False)


class EndpointWorker:
    """One thread delivering one endpoint's jobs in order. Only the main loop submits and
    retires workers, so a job is never put on a queue that no thread reads."""

    def __init__(
        self, endpoint_id: str, results: queue.Queue[Result], timeout: float, allow_private: bool
    ) -> None:
        self.endpoint_id = endpoint_id
        self.pending = 0  # submitted and not yet reported (main loop's count)
        self.idle_since = time.monotonic()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._results = results
        self._timeout = timeout
        self._allow_private = allow_private
        self._thread = threading.Thread(
            target=self._run, name=f"webhook-{endpoint_id}", daemon=True
        )
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job` (main loop only)."""
        self.pending += 1
        self._jobs.put(job)

    def retire(self) -> None:
        """Let the thread end once its queue is empty (main loop only, when `pending` is 0)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                result = attempt(job, self._timeout, self._allow_private)
            except Exception as exc:  # a bug must not kill the endpoint's thread silently
                log.exception("webhook_attempt_crashed", endpoint_id=job.endpoint_id)
                result = Result(job, datetime.now(UTC), None, 0, f"internal: {exc}", None, False)
            self._results.put(result)
