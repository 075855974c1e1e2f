#!/usr/bin/env bash
# The test command: installs the venv, starts the local Kafka broker and PostgreSQL if they are
# not running, then runs the whole suite (unit and integration) against them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/deploy/local/env.sh"
VENV="$(bash "$ROOT/deploy/local/venv.sh")"
bash "$ROOT/deploy/local/postgres.sh" start
bash "$ROOT/deploy/local/kafka.sh" start
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
