#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv with the pinned versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${LEDGER_VENV:-$ROOT/.venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" -e "$ROOT[test,dev]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
echo "$VENV"
