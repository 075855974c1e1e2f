"""Smoke run of the end-to-end benchmark (`python -m bench`): a few thousand commands through all
its phases against the real services, asserting that its ledger verification passed.

No timed assertions: the figures depend on the machine; only correctness is checked here.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_bench_smoke_run_verifies_the_ledger(pg_admin_dsn: str, kafka_bootstrap: str) -> None:
    cmd = [
        sys.executable, "-m", "bench", "--json",
        "--commands", "3000", "--budgets", "60",
        "--baseline-commands", "300",
        "--latency-rate", "400", "--latency-seconds", "2",
        "--consumers", "2", "--partitions", "4", "--peer-clients", "2",
        "--settle-seconds", "0", "--latency-warmup-seconds", "0",
        "--database-url", pg_admin_dsn, "--kafka-bootstrap", kafka_bootstrap,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    doc = orjson.loads(result.stdout)
    assert doc["verified"] is True
    phases = {p["mode"]: p for p in doc["phases"]}
    assert set(phases) == {"throughput", "baseline", "latency", "latency-busy"}
    assert phases["throughput"]["commands"] == 3000
    assert phases["baseline"]["commands"] == 300
    assert phases["baseline"]["batch_max_messages"] == 1
    assert phases["latency"]["commands"] == 800
    # The same load again while another process spins on one core: it ran, and it is not
    # counted as the ledger's CPU.
    busy = phases["latency-busy"]
    assert busy["busy_core"] is True and phases["latency"]["busy_core"] is False
    assert busy["commands"] == 800
    assert busy["cpu"]["busy_core"] > 25
    assert "busy_core" not in busy["cpu_us_per_command"]
    # Paced phases report a p99 per second of produce time (2 s at 400/s), none above the max.
    for name in ("latency", "latency-busy"):
        seconds = phases[name]["p99_by_second"]
        assert 2 <= len(seconds) <= 6, seconds  # paced over 2 s; a slow CI machine may spill
        assert all(0 <= p99 <= phases[name]["max_ms"] for p99 in seconds), seconds
    assert phases["throughput"]["p99_by_second"] == []
    for phase in phases.values():
        assert phase["verified"] is True, phase["problems"]
        assert phase["problems"] == []
        assert phase["max_rss_mb"] > 0
        # Refusals are part of the mix, and every command became one event.
        assert sum(phase["outcomes"].values()) > phase["commands"]
    assert doc["ratio_to_baseline"] is not None
    # The machine's speed at the start and the end of the run (a fixed loop's milliseconds).
    assert doc["machine"]["cpu_probe_ms"] > 0 and doc["machine"]["cpu_probe_ms_end"] > 0
    # The peer (the old design, bench/peer.py) ran on the same commands and verified.
    assert doc["peer_best_clients"] == 2 and doc["ratio_to_peer"] > 0
