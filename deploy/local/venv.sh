#!/usr/bin/env bash
# Creates (or refreshes) the project's virtualenv in .venv with the pinned versions, on the
# interpreter python.sh picks; a venv built on another interpreter is built again. Then compiles
# the pure core with mypyc (compile.sh), when a source changed since the last build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="$(bash "$ROOT/deploy/local/python.sh")"
VENV="${LEDGER_VENV:-$ROOT/.venv}"
interpreter="$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])')"
if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.interpreter" 2>/dev/null)" != "$interpreter" ]]; then
    echo "venv.sh: $VENV was built on another interpreter; building it again on $interpreter" >&2
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
    echo "$interpreter" >"$VENV/.interpreter"
fi
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -c "$ROOT/constraints.txt" -e "$ROOT[test,dev]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
# The pure core compiled with mypyc (a no-op when the build is current): compile.sh.
LEDGER_VENV="$VENV" bash "$ROOT/deploy/local/compile.sh" >&2
echo "$VENV"
