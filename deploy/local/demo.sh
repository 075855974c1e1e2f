#!/usr/bin/env bash
# The main job, locally: install, start Kafka and PostgreSQL, migrate, and run a narrated flow
# through the real consumer and relay; then start the HTTP API in the background (127.0.0.1:8080,
# or a free port) and print its URL, a read key, a curl line that was just checked and the web
# console's URL (sign in there with that key). Extra arguments pass to `budget-ledger demo`
# (--no-api, --api-port N).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/up.sh"
# The API logs in as its own login, ledger_api (a member of ledger_reader only, made by
# postgres.sh), as in production (docs/security.md); the demo's other steps use the owner's URL.
export LEDGER_API_DATABASE_URL="${LEDGER_API_DATABASE_URL:-postgresql://ledger_api:ledger@127.0.0.1:${LEDGER_PG_PORT}/ledger}"
exec "$VENV/bin/budget-ledger" demo "$@"
