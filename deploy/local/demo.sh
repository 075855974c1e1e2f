#!/usr/bin/env bash
# The main job, locally: install, start Kafka and PostgreSQL, migrate, and run a narrated flow
# through the real consumer and relay.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/deploy/local/env.sh"
VENV="$(bash "$ROOT/deploy/local/venv.sh")"
bash "$ROOT/deploy/local/postgres.sh" start
bash "$ROOT/deploy/local/kafka.sh" start
cd "$ROOT"
exec "$VENV/bin/budget-ledger" demo
