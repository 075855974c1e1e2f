# Sourced by the local scripts: the default endpoints of the embedded services.
export LEDGER_KAFKA_PORT="${LEDGER_KAFKA_PORT:-9092}"
export LEDGER_PG_PORT="${LEDGER_PG_PORT:-5432}"
export LEDGER_KAFKA_BOOTSTRAP="${LEDGER_KAFKA_BOOTSTRAP:-127.0.0.1:${LEDGER_KAFKA_PORT}}"
export LEDGER_DATABASE_URL="${LEDGER_DATABASE_URL:-postgresql://ledger_owner:ledger@127.0.0.1:${LEDGER_PG_PORT}/ledger}"
