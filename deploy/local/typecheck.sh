#!/usr/bin/env bash
# mypy --strict on the one import package, budget_ledger, and on the benchmarks (bench/, run from
# the repository's root as `python -m bench...`). The package's subpackages are the top folders
# (ledger/, schemas/, ...) mapped by pyproject.toml's package-dir; Python finds them through
# setuptools' editable import hook, which mypy (like every static tool) cannot run. So mypy reads
# a view instead (package_view.sh): .typecheck/budget_ledger/<pkg> -> ../../<pkg> (symlinks,
# remade on every run, ignored by git; new modules need nothing), and errors are printed with
# the repository's paths.
# Arguments go to mypy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${LEDGER_VENV:-$ROOT/.venv}"
cd "$ROOT"

rm -rf .typecheck
bash deploy/local/package_view.sh .typecheck >/dev/null

# mypy_path = ".typecheck" in pyproject.toml; `-p` checks the package and every module under it.
rc=0
"$VENV/bin/mypy" -p budget_ledger -p bench "$@" | sed -E "s#^\.typecheck/budget_ledger/([a-z_]+/)#\1#; s#^\.typecheck/##" || rc=$?
exit "$rc"
