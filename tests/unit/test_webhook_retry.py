"""The retry schedule of webhook deliveries: full-jitter exponential backoff, Retry-After,
which answers are retried, and when a delivery fails for good."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from budget_ledger.consumers.webhook_retry import (
    RetryPolicy,
    backoff_seconds,
    outcome,
    retry_after_seconds,
    retryable,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=8, base=30.0, cap=1800.0)


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(1, 10):
        ceiling = min(1800.0, 30.0 * 2 ** (attempt - 1))
        delays = [backoff_seconds(attempt, 30.0, 1800.0, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Spread over the whole range (full jitter), not clustered at the ceiling.
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_the_worst_case_schedule_is_about_an_hour() -> None:
    worst = sum(min(1800.0, 30.0 * 2 ** (n - 1)) for n in range(1, POLICY.max_attempts))
    assert 3_000 <= worst <= 4_000


@pytest.mark.parametrize(
    ("status", "expected"),
    [(None, True), (500, True), (503, True), (408, True), (429, True), (400, False),
     (401, False), (404, False), (410, False), (301, False)],
)  # fmt: skip
def test_which_answers_are_retried(status: int | None, expected: bool) -> None:
    assert retryable(status) is expected


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds("120", 1800.0) == 120.0
    assert retry_after_seconds("99999", 1800.0) == 1800.0  # capped
    later = datetime.now(UTC) + timedelta(seconds=300)
    got = retry_after_seconds(format_datetime(later, usegmt=True), 1800.0)
    assert got is not None and 290 <= got <= 301
    assert retry_after_seconds("soon", 1800.0) is None
    assert retry_after_seconds(None, 1800.0) is None


def test_outcomes() -> None:
    assert outcome(POLICY, 1, 204, False, None, NOW).status == "delivered"
    assert outcome(POLICY, 1, 404, False, None, NOW).status == "failed"
    assert outcome(POLICY, 1, None, True, None, NOW).status == "failed"  # SSRF refusal
    assert outcome(POLICY, 8, 503, False, None, NOW).status == "failed"  # the last attempt
    retry = outcome(POLICY, 2, 503, False, None, NOW, random.Random(1))
    assert retry.status == "pending" and retry.next_attempt_at is not None
    assert NOW <= retry.next_attempt_at <= NOW + timedelta(seconds=60)
    # Retry-After is honoured when it asks for longer than the backoff drew.
    slow = outcome(POLICY, 1, 429, False, "600", NOW)
    assert slow.status == "pending" and slow.next_attempt_at == NOW + timedelta(seconds=600)
