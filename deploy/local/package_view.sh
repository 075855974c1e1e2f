#!/usr/bin/env bash
# Makes DIR/budget_ledger a view of the package's real layout for the tools that name modules
# by their path (mypy in typecheck.sh, mypyc in compile.sh): the files of budget_ledger/ and one
# link per folder pyproject.toml's package-dir maps (budget_ledger.ledger -> ledger/, ...), read
# from pyproject.toml so a new top folder needs no change here. Links are remade in place, so a
# kept view (compile.sh's build cache) stays valid. Prints the mapping, `<subpackage>=<folder>`.
#
# Usage: package_view.sh DIR   (run from the repository's root; LEDGER_VENV picks the venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LEDGER_VENV:-$ROOT/.venv}"
cd "$ROOT"

mapfile -t folders < <("$VENV/bin/python" - <<'PY'
import tomllib

dirs = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]
for name, folder in dirs.items():
    if name.startswith("budget_ledger."):
        print(name.removeprefix("budget_ledger.") + "=" + folder)
PY
)

view="$1/budget_ledger"
mkdir -p "$view"
for file in budget_ledger/*.py budget_ledger/py.typed; do
    ln -sfn "../../$file" "$view/$(basename "$file")"
done
for entry in "${folders[@]}"; do
    ln -sfn "../../${entry#*=}" "$view/${entry%%=*}"
done
printf '%s\n' "${folders[@]}"
