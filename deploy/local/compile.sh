#!/usr/bin/env bash
# Compiles the ledger's pure core with mypyc (docs/performance.md, "The compiled core"): the
# modules pyproject.toml lists under [tool.budget_ledger] compiled each get a C extension beside
# their .py, which Python then imports instead. The source stays the one definition; the
# extensions are build output (ignored by git), rebuilt here when a source changed (venv.sh runs
# this, so every script that uses the venv does). Without a C compiler or Python's headers the
# ledger runs interpreted, the same code, slower: a message says so. --clean removes every
# compiled file (the core then runs interpreted until the next build).
#
# Usage: compile.sh [--clean]   (LEDGER_VENV picks the venv, as in venv.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LEDGER_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
cd "$ROOT"

# mypyc names a module after its path, so it builds in a view of the package's real layout,
# .native/budget_ledger (package_view.sh, as typecheck.sh's): the extensions it writes there land
# in the repository's folders; the shared runtime and the record are copied. The view is kept
# between runs: an extension newer than its C source is not built again.
mapfile -t folders < <(bash deploy/local/package_view.sh .native)
mapfile -t modules < <("$PY" deploy/local/native.py --list)

clean() {  # every extension in the package's folders, the shared runtime and the build record
    local entry
    for entry in "${folders[@]}"; do
        find "${entry#*=}" -name '*.cpython-*.so' -delete
    done
    rm -f budget_ledger/_native__mypyc.*.so budget_ledger/_native.json
}

if [[ "${1:-}" == --clean ]]; then
    clean
    rm -rf .native
    echo "compile.sh: compiled files removed; the core runs interpreted" >&2
    exit 0
fi

if ! missing="$(bash deploy/local/can_compile.sh "$PY")"; then
    clean
    echo "compile.sh: missing $(echo $missing): the core runs interpreted" >&2
    exit 0
fi

if "$PY" budget_ledger/native.py "${modules[@]}"; then
    exit 0  # built from exactly these sources already
fi

# A module no longer listed must not keep its old extension.
for entry in "${folders[@]}"; do
    while IFS= read -r so; do
        name="${so%%.cpython-*}"
        module="budget_ledger.${entry%%=*}.$(basename "$name")"
        printf '%s\n' "${modules[@]}" | grep -qx "$module" || rm -f "$so"
    done < <(find "${entry#*=}" -name '*.cpython-*.so')
done

log=.native/build.log
if ! "$PY" deploy/local/native.py .native >"$log" 2>&1; then
    grep -v '^x86_64\|^creating\|^copying' "$log" | tail -40 >&2
    echo "compile.sh: the build failed (full log: $log)" >&2
    exit 1
fi
cp -p .native/budget_ledger/_native__mypyc.*.so .native/budget_ledger/_native.json budget_ledger/
echo "compile.sh: ${#modules[@]} modules compiled with mypyc" >&2
