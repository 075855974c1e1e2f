#!/usr/bin/env bash
# The test command: installs the venv, starts the local Kafka broker and PostgreSQL if they are
# not running, then runs the whole suite (unit and integration) against them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/up.sh"
exec "$VENV/bin/python" -m pytest "$@"
