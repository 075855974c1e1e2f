# Sourced by the local scripts: the default endpoints of the embedded services.
export LEDGER_KAFKA_PORT="${LEDGER_KAFKA_PORT:-9092}"
export LEDGER_PG_PORT="${LEDGER_PG_PORT:-5432}"
export LEDGER_KAFKA_BOOTSTRAP="${LEDGER_KAFKA_BOOTSTRAP:-127.0.0.1:${LEDGER_KAFKA_PORT}}"
export LEDGER_DATABASE_URL="${LEDGER_DATABASE_URL:-postgresql://ledger_owner:ledger@127.0.0.1:${LEDGER_PG_PORT}/ledger}"
# The owner's URL above is for migrate, rebuild, readers create and ledger seal-legacy. The
# processes (consume, relay, sweep, reconcile) log in as ledger_app with LEDGER_APP_DATABASE_URL
# (docs/security.md); it is not exported here because the tests point LEDGER_DATABASE_URL at
# throw-away databases and the app URL must name the same database. For local runs:
#   export LEDGER_APP_DATABASE_URL="postgresql://ledger_app:ledger@127.0.0.1:${LEDGER_PG_PORT}/ledger"
# The keyed chain (LEDGER_CHAIN_KEYS, LEDGER_CHAIN_KEY_ID) is not set here either: rows the
# benchmarks write directly carry no MAC. Set both to try it locally, then `ledger seal-legacy`.
# A DEVELOPMENT signing key for privileged commands (fund, open_budget, adjust, ...; see
# docs/security.md): public in this repository, so for local runs only, never a real ledger.
if [ -z "${LEDGER_SIGNING_KEYS:-}" ]; then
  export LEDGER_SIGNING_KEYS='{"dev-local": "development-only-signing-key-not-a-secret"}'
  export LEDGER_SIGNING_KEY_ID="${LEDGER_SIGNING_KEY_ID:-dev-local}"
fi
