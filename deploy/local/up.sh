# Sourced by demo.sh and test.sh: pinned virtualenv in $VENV, local PostgreSQL and Kafka running.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/deploy/local/env.sh"
VENV="$(bash "$ROOT/deploy/local/venv.sh")"
bash "$ROOT/deploy/local/postgres.sh" start
bash "$ROOT/deploy/local/kafka.sh" start
cd "$ROOT"
