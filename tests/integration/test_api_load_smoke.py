"""Smoke run of the API load benchmark (`python -m bench.api_load`): a small database, a few
seconds of load against `serve --workers 2`; every request answered 200. No timed assertions."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_api_load_bench_smoke_run_answers_every_request(
    pg_admin_dsn: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    database = f"bench_api_load_{uuid.uuid4().hex[:8]}"
    timeline = tmp_path / "timeline.csv"
    cmd = [sys.executable, "-m", "bench.api_load", "--json", "--budgets", "60", "--rate", "50",
           "--duration", "2", "--warmup", "0.5", "--database", database,
           "--timeline", str(timeline)]  # fmt: skip
    env = {**os.environ, "LEDGER_DATABASE_URL": pg_admin_dsn,
           "LEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap}  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    figures = orjson.loads(result.stdout.splitlines()[-1])
    assert figures["requests"] == 100 and figures["ok"] == 100 and figures["errors"] == {}
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["client_max_gc_pause_ms"] >= 0
    # One row per answer, due times on the wall clock 1/50 s apart, the same latencies.
    rows = [line.split(",") for line in timeline.read_text().splitlines()[1:]]
    assert len(rows) == 100
    dues = sorted(float(r[0]) for r in rows)
    assert abs(time.time() - dues[-1]) < 120 and abs((dues[-1] - dues[0]) - 99 / 50) < 0.01
    assert max(float(r[1]) for r in rows) == pytest.approx(figures["max_ms"], abs=0.01)


def test_stall_watch_writes_a_line_every_quarter_second(pg_admin_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "watch.txt"
    cmd = [sys.executable, "-m", "bench.stall_watch", "--seconds", "1.2", "--out", str(out)]
    env = {**os.environ, "LEDGER_DATABASE_URL": pg_admin_dsn}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    lines = out.read_text().splitlines()
    assert 3 <= len(lines) <= 5
    stamps = [float(line.split()[0]) for line in lines]
    assert all(0.2 < b - a < 0.5 for a, b in itertools.pairwise(stamps))
    assert all(line.split()[1].startswith("canary=") and " | [" in line for line in lines)
