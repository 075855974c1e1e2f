"""The command line: help everywhere, one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SUBCOMMANDS = [
    ["migrate"], ["topics", "create"], ["send"], ["schemas", "export"], ["consume"], ["relay"],
    ["sweep"], ["demo"], ["reconcile"], ["rebuild"], ["adjust"], ["readers", "create"],
    ["ledger", "seal-legacy"], ["ledger", "partitions", "ensure"], ["ledger", "partitions", "list"],
    ["acls", "apply"],
]  # fmt: skip


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "budget_ledger.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda a: " ".join(a))
def test_every_subcommand_has_help(args: list[str]) -> None:
    result = _cli(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: budget-ledger " + " ".join(args))


def test_unreachable_database_is_one_line_and_exit_2() -> None:
    result = _cli("migrate", LEDGER_DATABASE_URL="postgresql://nobody:x@127.0.0.1:1/none")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("budget-ledger: error: cannot reach the database")


def test_invalid_setting_names_the_variable() -> None:
    result = _cli("migrate", LEDGER_DATABASE_URL="mysql://db/ledger")
    assert result.returncode == 2
    assert "LEDGER_DATABASE_URL" in result.stderr and result.stderr.count("\n") == 1


def test_invalid_command_is_refused_before_kafka() -> None:
    result = _cli("send", '{"command_id": "c1", "type": "fund", "tenant_id": "t", '
                  '"budget_id": "b", "amount": 12.5, "currency": "USD"}')  # fmt: skip
    assert result.returncode == 2
    assert "invalid command (schema)" in result.stderr
