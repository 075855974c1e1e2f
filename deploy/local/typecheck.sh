#!/usr/bin/env bash
# mypy --strict on the one import package, budget_ledger, and on the benchmarks (bench/, run from
# the repository's root as `python -m bench...`). The package's subpackages are the top folders
# (ledger/, schemas/, ...) mapped by pyproject.toml's package-dir; Python finds them through
# setuptools' editable import hook, which mypy (like every static tool) cannot run. So mypy reads
# a view instead: .typecheck/budget_ledger/<pkg> -> ../../<pkg> (symlinks, remade on every run,
# ignored by git; new modules need nothing), and errors are printed with the repository's paths.
# Arguments go to mypy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LEDGER_VENV:-$ROOT/.venv}"
cd "$ROOT"

# The mapping itself is read from pyproject.toml, so a new top folder needs no change here.
mapfile -t folders < <("$VENV/bin/python" - <<'PY'
import tomllib

dirs = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]
for name, folder in dirs.items():
    if name.startswith("budget_ledger."):
        print(name.removeprefix("budget_ledger.") + "=" + folder)
PY
)

view=.typecheck/budget_ledger
rm -rf .typecheck
mkdir -p "$view"
shopt -s nullglob  # budget_ledger/ holds __init__.py and py.typed (a namespace layout: nothing)
for file in budget_ledger/*; do
    ln -s "../../$file" "$view/$(basename "$file")"
done
for entry in "${folders[@]}"; do
    ln -s "../../${entry#*=}" "$view/${entry%%=*}"
done

# mypy_path = ".typecheck" in pyproject.toml; `-p` checks the package and every module under it.
rc=0
"$VENV/bin/mypy" -p budget_ledger -p bench "$@" | sed -E "s#^\.typecheck/budget_ledger/([a-z_]+/)#\1#; s#^\.typecheck/##" || rc=$?
exit "$rc"
