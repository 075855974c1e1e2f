"""What follows a webhook attempt: delivered, retried later (exponential backoff with full
jitter, `Retry-After` honoured) or failed. Pure functions of the attempt's result."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal


def backoff_seconds(
    attempt: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before the attempt after failed attempt number `attempt` (1-based): exponential
    backoff with full jitter, uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return (rng or random).uniform(0.0, ceiling)


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """The delay a `Retry-After` header asks for (delta seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), cap)


def retryable(status: int | None) -> bool:
    """Whether an attempt that ended so is retried: no answer (timeout, connection error), 5xx,
    408 and 429; any other answer (2xx done, other 4xx, 3xx) is final."""
    return status is None or status >= 500 or status in (408, 429)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts, backoff base and cap (seconds) of the deliveries (from the settings)."""

    max_attempts: int
    base: float
    cap: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """A delivery's new status after an attempt, and when the next attempt is due."""

    status: Literal["pending", "delivered", "failed"]
    next_attempt_at: datetime | None


def outcome(
    policy: RetryPolicy,
    attempts: int,
    status: int | None,
    final: bool,
    retry_after: str | None,
    now: datetime,
    rng: random.Random | None = None,
) -> Outcome:
    """The outcome of attempt number `attempts` (1-based) that answered `status` (None: no
    answer); `final` marks an error never worth retrying (the SSRF guard refused the target)."""
    if status is not None and 200 <= status < 300:
        return Outcome("delivered", None)
    if final or not retryable(status) or attempts >= policy.max_attempts:
        return Outcome("failed", None)
    delay = backoff_seconds(attempts, policy.base, policy.cap, rng)
    asked = retry_after_seconds(retry_after, policy.cap)
    if asked is not None:
        delay = max(delay, asked)
    return Outcome("pending", now + timedelta(seconds=delay))
