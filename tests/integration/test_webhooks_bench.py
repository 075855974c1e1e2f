"""Smoke runs of bench/webhook_latency.py: one second at 20 alerts/s, every alert received,
from the alerts topic and end to end (alerts raised by the consumer, published by the relay)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.support import cli_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", [[], ["--end-to-end", "--budgets", "10"]], ids=["topic", "e2e"])
def test_the_latency_bench_runs(settings, mode: list[str]) -> None:  # type: ignore[no-untyped-def]
    # The bench makes its own database and topics next to the test's services.
    result = subprocess.run(
        [sys.executable, "-m", "bench.webhook_latency", "--rate", "20", "--duration", "1",
         "--endpoints", "2", *mode],
        env=cli_env(settings), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "received 20" in result.stdout and "-> received): p50" in result.stdout
