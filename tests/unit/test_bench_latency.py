"""The benchmark's per-second p99 summary of a paced phase (`bench.phases._seconds_over`)."""

from __future__ import annotations

import pytest

from bench.phase import PhaseResult
from bench.phases import _seconds_over

pytestmark = pytest.mark.unit


def _paced(seconds: list[float]) -> PhaseResult:
    return PhaseResult("latency", 0, 0, 2, 0, 5000.0, p99_by_second=seconds)


def test_counts_the_seconds_over_the_limit_and_names_the_worst() -> None:
    assert _seconds_over(_paced([31.0, 64.0, 48.0, 120.0, 50.0])) == (
        " (2 of 5 seconds with p99 > 50 ms; worst: second 4, 120 ms)"
    )


def test_an_unpaced_phase_has_no_summary() -> None:
    assert _seconds_over(_paced([])) == ""
