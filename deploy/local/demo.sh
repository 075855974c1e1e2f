#!/usr/bin/env bash
# The main job, locally: install, start Kafka and PostgreSQL, migrate, and run a narrated flow
# through the real consumer and relay.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/up.sh"
exec "$VENV/bin/budget-ledger" demo
