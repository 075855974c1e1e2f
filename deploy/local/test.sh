#!/usr/bin/env bash
# The test command (CI runs exactly this): installs the venv; without arguments, runs the static
# checks first (ruff check, ruff format --check, mypy --strict) and stops on the first failure;
# starts the local Kafka broker and PostgreSQL if they are not running; runs the suite (unit and
# integration) against them. Arguments go to pytest and skip the static checks.
#
# The cluster, chaos and Kafka security tests start what they need on demand (the three-node Kafka
# cluster, the SASL_SSL broker on 19192 and a second PostgreSQL on port 5433); what they started
# is stopped again at the end unless LEDGER_KEEP_SERVICES=1. The single broker and the PostgreSQL
# on 5432 stay up, as before.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(bash "$HERE/venv.sh")"

if (($# == 0)) && [[ "${LEDGER_SKIP_STATIC:-0}" != 1 ]]; then
    cd "$HERE/../.."
    echo "== ruff check" >&2
    "$VENV/bin/ruff" check .
    # Python files only, like the pre-commit hooks: ruff also formats the Python blocks inside
    # Markdown, where the docs align comments on purpose.
    echo "== ruff format --check (Python files)" >&2
    "$VENV/bin/ruff" format --check --exclude '*.md' .
    echo "== mypy --strict -p budget_ledger -p bench" >&2
    bash "$HERE/typecheck.sh"
fi

source "$HERE/up.sh"
# The console's browser tests: Debian's Chromium and npm (installed when missing, as root).
bash "$HERE/chromium.sh"

cluster_was_up=0
bash "$HERE/kafka.sh" cluster status >/dev/null 2>&1 && cluster_was_up=1
secure_was_up=0
bash "$HERE/kafka.sh" secure status >/dev/null 2>&1 && secure_was_up=1
CHAOS_PG_PORT="${LEDGER_CHAOS_PG_PORT:-5433}"
chaos_pg_was_up=0
LEDGER_PG_PORT="$CHAOS_PG_PORT" bash "$HERE/postgres.sh" status >/dev/null 2>&1 && chaos_pg_was_up=1

rc=0
"$VENV/bin/python" -m pytest "$@" || rc=$?

if [[ "${LEDGER_KEEP_SERVICES:-0}" != 1 ]]; then
    ((cluster_was_up)) || bash "$HERE/kafka.sh" cluster stop 2>/dev/null || true
    ((secure_was_up)) || bash "$HERE/kafka.sh" secure stop 2>/dev/null || true
    ((chaos_pg_was_up)) || LEDGER_PG_PORT="$CHAOS_PG_PORT" bash "$HERE/postgres.sh" stop 2>/dev/null || true
fi
exit $rc
