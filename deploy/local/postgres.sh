#!/usr/bin/env bash
# Local PostgreSQL for development and tests, without Docker: Debian's `postgresql` package and a
# dedicated cluster ("ledger") listening on 127.0.0.1 only.
#
# Usage: deploy/local/postgres.sh start | stop | status | dsn
#
# Environment:
#   LEDGER_PG_PORT         TCP port (default 5432)
#   LEDGER_PG_CLUSTER      Debian cluster name (default "ledger", or "ledger_<port>" off 5432)
#   LEDGER_PG_START_TIMEOUT  seconds to wait for pg_isready (default 60)
#
# Needs root (or sudo) the first time: it installs the package if missing and manages the cluster
# through pg_createcluster/pg_ctlcluster, which run the server as the `postgres` user.
set -euo pipefail

PORT="${LEDGER_PG_PORT:-5432}"
if [[ "$PORT" == "5432" ]]; then
    CLUSTER="${LEDGER_PG_CLUSTER:-ledger}"
else
    CLUSTER="${LEDGER_PG_CLUSTER:-ledger_${PORT}}"
fi
HOST="127.0.0.1"
START_TIMEOUT="${LEDGER_PG_START_TIMEOUT:-60}"
DB_NAME="ledger"
OWNER_ROLE="ledger_owner"
APP_ROLE="ledger_app"
# The HTTP API's login: a member of ledger_reader only (tenant set with SET LOCAL per request).
API_ROLE="ledger_api"
PASSWORD="ledger"
DSN="postgresql://${OWNER_ROLE}:${PASSWORD}@${HOST}:${PORT}/${DB_NAME}"
APP_DSN="postgresql://${APP_ROLE}:${PASSWORD}@${HOST}:${PORT}/${DB_NAME}"
SOCKET_DIR="/var/run/postgresql"

log() { printf '[postgres.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a command as root (directly or via sudo).
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || die "needs root for: $* (run with sudo, or as root)"
    else
        die "needs root for: $* (no sudo available)"
    fi
}

# Run a command as the postgres OS user.
as_postgres() {
    if [[ "$(id -un)" == "postgres" ]]; then
        "$@"
    elif [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        sudo -n -u postgres "$@"
    fi
}

INSTALLED_NOW=0
server_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 && command -v pg_createcluster >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

ensure_installed() {
    server_installed && return 0
    log "PostgreSQL server not found; installing Debian's postgresql package ..."
    command -v apt-get >/dev/null 2>&1 || die "apt-get not available; install PostgreSQL (server + postgresql-common) yourself"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    server_installed || die "postgresql installed but pg_ctlcluster/server binaries are still missing"
    INSTALLED_NOW=1
}

newest_major() {
    ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | awk -F/ '{print $5}' | sort -n | tail -n 1
}

# pg_lsclusters -h columns: version cluster port status owner datadir logfile
cluster_line() { pg_lsclusters -h 2>/dev/null | awk -v c="$CLUSTER" '$2 == c' | head -n 1; }

detect_version() {
    local line
    line="$(cluster_line)"
    if [[ -n "$line" ]]; then
        VERSION="$(awk '{print $1}' <<<"$line")"
    else
        VERSION="$(newest_major)"
    fi
    [[ -n "$VERSION" ]] || die "no PostgreSQL server version found under /usr/lib/postgresql"
    CONF_DIR="/etc/postgresql/${VERSION}/${CLUSTER}"
    LOG_FILE="/var/log/postgresql/postgresql-${VERSION}-${CLUSTER}.log"
}

cluster_online() { [[ "$(cluster_line | awk '{print $4}')" == online* ]]; }

port_open() { (exec 3<>"/dev/tcp/${HOST}/$1") 2>/dev/null; }

# Another cluster of this machine that is online on our port?
other_cluster_on_port() {
    pg_lsclusters -h 2>/dev/null | awk -v c="$CLUSTER" -v p="$PORT" '$2 != c && $3 == p && $4 ~ /^online/ {print $1 " " $2}' | head -n 1
}

free_port_from_fresh_main() {
    local other v c
    other="$(other_cluster_on_port)"
    [[ -n "$other" ]] || return 0
    read -r v c <<<"$other"
    if [[ $INSTALLED_NOW -eq 1 && "$c" == "main" ]]; then
        # The package install just created and started the default cluster on 5432: park it.
        log "stopping the default cluster ${v}/main that the package install started on port ${PORT} (start.conf -> manual)"
        as_root pg_ctlcluster "$v" main stop -m fast || true
        as_root sh -c "echo manual > /etc/postgresql/${v}/main/start.conf"
        return 0
    fi
    die "port ${PORT} is used by the running cluster ${v}/${c}; stop it (pg_ctlcluster ${v} ${c} stop) or set LEDGER_PG_PORT"
}

create_cluster() {
    [[ -n "$(cluster_line)" ]] && return 0
    log "creating cluster ${VERSION}/${CLUSTER} on port ${PORT}"
    as_root pg_createcluster "$VERSION" "$CLUSTER" -p "$PORT" -e UTF8 --locale C.UTF-8 \
        --start-conf manual -- --auth-local peer --auth-host scram-sha-256 >/dev/null
}

# Who logs in as what (docs/security.md): ${OWNER_ROLE} for migrate, rebuild, readers create and
# ledger seal-legacy; ${APP_ROLE} for the consumer, relay, sweeper and reconcile
# (LEDGER_APP_DATABASE_URL); ${API_ROLE} for the HTTP API. None of them is a member of the owner.
# ${APP_ROLE} is not the owner of anything: the migrations (run as ${OWNER_ROLE}) grant it
# INSERT/SELECT on the ledger. It has BYPASSRLS (needs a superuser, hence here): it is the single
# trusted writer across tenants and COPY is refused on tables with row-level security otherwise.

# A quarter of MemTotal in MB, between 128 MB and 4 GB.
shared_buffers_mb() {
    awk '/^MemTotal:/ { mb = int($2 / 1024 / 4); if (mb > 4096) mb = 4096; if (mb < 128) mb = 128;
                        print mb }' /proc/meminfo
}

# Writes the managed settings + pg_hba; prints "changed" if anything differed.
configure_cluster() {
    local tmp changed=0 buffers
    tmp="$(mktemp)"
    buffers="$(shared_buffers_mb)"
    cat >"$tmp" <<EOF
# Managed by deploy/local/postgres.sh — rewritten on every start.
listen_addresses = '${HOST}'
# Loopback only: TLS would encrypt traffic that never leaves the host, at ~10 us of CPU a
# command on each side at 5,000 commands/s (docs/performance.md, "TLS on loopback"). Debian's
# default is on. A real deployment keeps TLS: sslmode=verify-full in the URLs (docs/security.md).
ssl = off
max_connections = 200
# A quarter of the machine's memory, at most 4 GB (${buffers} MB here): the balance rows, the
# checkpoints and the recent ledger stay in PostgreSQL's own cache; 512 MB re-read them from the
# OS cache (an incremental reconcile of 50,000 budgets: ~0.25 s of backend CPU a shard more).
shared_buffers = ${buffers}MB
# Durability kept on: the ledger's guarantees are tested against real fsync/commit behaviour.
fsync = on
synchronous_commit = on
full_page_writes = on
# lz4, not on (pglz): the same durability, and its full-page images cost a fraction of the
# CPU (50,000 checkpoint upserts right after a checkpoint: 3.6 s with pglz, 1.1 s with lz4).
wal_compression = lz4
max_wal_size = 4GB
min_wal_size = 256MB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
work_mem = 16MB
maintenance_work_mem = 256MB
effective_cache_size = 2GB
random_page_cost = 1.1
password_encryption = scram-sha-256
timezone = 'UTC'
log_timezone = 'UTC'
log_min_duration_statement = 1s
log_lock_waits = on
EOF
    if ! as_root cmp -s "$tmp" "${CONF_DIR}/conf.d/90-ledger.conf"; then
        as_root install -o postgres -g postgres -m 0644 "$tmp" "${CONF_DIR}/conf.d/90-ledger.conf"
        changed=1
    fi
    cat >"$tmp" <<EOF
# Managed by deploy/local/postgres.sh — rewritten on every start.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 peer
local   all       all                      scram-sha-256
host    all       all       127.0.0.1/32   scram-sha-256
host    all       all       ::1/128        scram-sha-256
EOF
    if ! as_root cmp -s "$tmp" "${CONF_DIR}/pg_hba.conf"; then
        as_root install -o postgres -g postgres -m 0640 "$tmp" "${CONF_DIR}/pg_hba.conf"
        changed=1
    fi
    # The port in postgresql.conf is what pg_lsclusters reports; keep it in step.
    if [[ "$(pg_conftool -s "$VERSION" "$CLUSTER" show port 2>/dev/null || true)" != "$PORT" ]]; then
        as_root pg_conftool "$VERSION" "$CLUSTER" set port "$PORT"
        changed=1
    fi
    rm -f "$tmp"
    [[ $changed -eq 1 ]] && echo changed || true
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if pg_isready -q -h "$HOST" -p "$PORT" -t 2; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# After a crash: wait (bounded) until the previous postmaster pid has really disappeared.
wait_old_postmaster_gone() {
    local datadir pidfile oldpid i
    datadir="$(cluster_line | awk '{print $6}')"
    pidfile="${datadir}/postmaster.pid"
    oldpid="$(as_root head -n 1 "$pidfile" 2>/dev/null | tr -dc '0-9' || true)"
    [[ -n "$oldpid" ]] || return 0
    for ((i = 0; i < 30; i++)); do
        [[ -e "/proc/${oldpid}" ]] || return 0
        sleep 0.5
    done
    log "previous postmaster pid ${oldpid} (from ${pidfile}) still exists"
}

print_failure_logs() {
    log "last 40 lines of ${LOG_FILE}:"
    as_root tail -n 40 "$LOG_FILE" >&2 || true
}

psql_admin() {
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres "$@"
}

ensure_roles_and_db() {
    psql_admin >/dev/null <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${OWNER_ROLE}') THEN
        CREATE ROLE ${OWNER_ROLE} LOGIN PASSWORD '${PASSWORD}' CREATEDB CREATEROLE;
    ELSE
        ALTER ROLE ${OWNER_ROLE} LOGIN PASSWORD '${PASSWORD}' CREATEDB CREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${APP_ROLE}') THEN
        CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${PASSWORD}' NOCREATEDB NOCREATEROLE BYPASSRLS;
    ELSE
        ALTER ROLE ${APP_ROLE} LOGIN PASSWORD '${PASSWORD}' NOCREATEDB NOCREATEROLE BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_reader') THEN
        CREATE ROLE ledger_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${API_ROLE}') THEN
        CREATE ROLE ${API_ROLE} LOGIN PASSWORD '${PASSWORD}' NOCREATEDB NOCREATEROLE;
    ELSE
        ALTER ROLE ${API_ROLE} LOGIN PASSWORD '${PASSWORD}' NOCREATEDB NOCREATEROLE;
    END IF;
END
\$\$;
-- The processes connect as the owner and SET ROLE ${APP_ROLE}; ADMIN OPTION lets the owner
-- re-grant it (PostgreSQL 16+ no longer lets CREATEROLE grant roles it does not administer).
GRANT ${APP_ROLE} TO ${OWNER_ROLE} WITH ADMIN OPTION;
GRANT ledger_reader TO ${API_ROLE};
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', '${DB_NAME}', '${OWNER_ROLE}', 'UTF8')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '${DB_NAME}')
\gexec
ALTER DATABASE ${DB_NAME} OWNER TO ${OWNER_ROLE};
SQL
}

cmd_start() {
    local changed
    ensure_installed
    detect_version
    free_port_from_fresh_main
    create_cluster
    changed="$(configure_cluster)"
    if cluster_online; then
        if [[ "$changed" == "changed" ]]; then
            log "configuration changed; restarting ${VERSION}/${CLUSTER}"
            as_root pg_ctlcluster "$VERSION" "$CLUSTER" restart -m fast
        else
            log "already running: ${VERSION}/${CLUSTER} on ${HOST}:${PORT}"
        fi
    else
        if port_open "$PORT"; then
            die "port ${PORT} is already in use by something else; set LEDGER_PG_PORT"
        fi
        wait_old_postmaster_gone
        log "starting ${VERSION}/${CLUSTER} on ${HOST}:${PORT}"
        # pg_ctlcluster/postgres remove a stale postmaster.pid left by a crash. Right after a
        # kill -9 the dead postmaster can linger as a zombie for a moment and still "own" the
        # socket lock file, so retry a few times before giving up.
        local attempt ok=0
        for attempt in 1 2 3 4 5; do
            if as_root pg_ctlcluster "$VERSION" "$CLUSTER" start 2>/dev/null; then
                ok=1; break
            fi
            cluster_online && { ok=1; break; }
            log "start attempt ${attempt} failed; retrying in 2 s"
            sleep 2
        done
        if [[ $ok -ne 1 ]]; then
            as_root pg_ctlcluster "$VERSION" "$CLUSTER" start || true
            print_failure_logs
            exit 1
        fi
    fi
    if ! wait_ready; then
        log "PostgreSQL did not become ready within ${START_TIMEOUT} s"
        print_failure_logs
        exit 1
    fi
    ensure_roles_and_db
    log "ready: ${VERSION}/${CLUSTER} (data: $(cluster_line | awk '{print $6}'), log: ${LOG_FILE})"
    log "app role DSN (LEDGER_APP_DATABASE_URL): ${APP_DSN}"
    echo "LEDGER_DATABASE_URL=${DSN}"
}

cmd_stop() {
    server_installed || { log "PostgreSQL is not installed"; return 0; }
    detect_version
    if [[ -z "$(cluster_line)" ]]; then
        log "cluster ${CLUSTER} does not exist"
        return 0
    fi
    if ! cluster_online; then
        log "not running: ${VERSION}/${CLUSTER}"
        return 0
    fi
    log "stopping ${VERSION}/${CLUSTER}"
    as_root pg_ctlcluster "$VERSION" "$CLUSTER" stop -m fast
    log "stopped"
}

cmd_status() {
    if ! server_installed; then
        echo "postgres: down (not installed)"
        return 1
    fi
    detect_version
    if [[ -n "$(cluster_line)" ]] && cluster_online && pg_isready -q -h "$HOST" -p "$PORT" -t 2; then
        echo "postgres: up (${VERSION}/${CLUSTER}) at ${HOST}:${PORT} — ${DSN}"
        return 0
    fi
    if pg_isready -q -h "$HOST" -p "$PORT" -t 2; then
        echo "postgres: port ${PORT} answers, but not cluster ${CLUSTER}"
        return 0
    fi
    echo "postgres: down (${CLUSTER}, port ${PORT})"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    dsn) echo "$DSN" ;;
    *)
        echo "usage: $0 start | stop | status | dsn" >&2
        exit 2
        ;;
esac
