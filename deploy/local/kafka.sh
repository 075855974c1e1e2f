#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) without Docker.
#
# The broker comes from the official Maven Central artifacts (org.apache.kafka:kafka_2.13 and its
# runtime dependencies), resolved once with the machine's `mvn` into a cache folder outside the
# repository, and runs on the machine's Java (17+).
#
# Usage: deploy/local/kafka.sh start | stop | status | fetch | reset | logs
#        deploy/local/kafka.sh cluster start [N] | stop | status | kill N | reset | logs N | bootstrap
#        deploy/local/kafka.sh secure start | stop | status | reset | logs [N] | env
#        (LEDGER_KAFKA_SECURE=1 deploy/local/kafka.sh start|stop|status|reset|logs is the same)
#
# The plain commands manage the single node on LEDGER_KAFKA_PORT (9092), the default for the demo
# and the tests. `cluster ...` manages a separate three-node KRaft cluster (three combined
# broker+controller nodes, controller quorum of 3, replication factor 3, min.insync.replicas 2) on
# its own ports (19092/19094/19096, controllers on +1) and state directory, for the replication
# and chaos tests; `cluster kill N` SIGKILLs node N and `cluster start N` brings it back.
# `secure ...` manages a separate single node that only speaks SASL_SSL (SCRAM-SHA-512 users made
# at format time, a self-signed dev CA and broker certificate made with openssl, the
# StandardAuthorizer with allow.everyone.if.no.acl.found=false) on its own port (19192,
# controller 19193, mutual TLS) and state directory; the users' dev passwords are written to
# <state>/users.env, whose location (never its content) is printed.
#
# Environment:
#   LEDGER_KAFKA_PORT        client port (default 9092); the controller listens on port+1
#   LEDGER_KAFKA_VERSION     Kafka version to resolve (default: the pin below)
#   LEDGER_CACHE_DIR         jar cache root (default ~/.cache/budget-ledger)
#   LEDGER_STATE_DIR         config/data/log/pid root (default ~/.local/state/budget-ledger)
#   LEDGER_KAFKA_HEAP_OPTS   JVM heap flags (default "-Xms256m -Xmx1g")
#   LEDGER_KAFKA_START_TIMEOUT  seconds to wait for the broker to answer (default 90)
#   LEDGER_KAFKA_CLUSTER_PORT   first client port of the cluster (default 19092; node i: +2(i-1))
#   LEDGER_KAFKA_CLUSTER_HEAP_OPTS  heap of each cluster node (default "-Xms128m -Xmx384m")
#   LEDGER_KAFKA_SECURE      1: the plain commands manage the secure node instead
#   LEDGER_KAFKA_SECURE_PORT    client port of the secure node (default 19192; controller +1)
#   LEDGER_KAFKA_SECURE_HEAP_OPTS  heap of the secure node (default "-Xms128m -Xmx512m")
#   JAVA                     java binary (default: java on PATH)
#   MVN                      maven binary (default: mvn on PATH)
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
KAFKA_VERSION_PIN="4.1.1"
KAFKA_VERSION_FALLBACK="4.4.0"   # tried only if the pin cannot be resolved
SCALA_BINARY="2.13"
LOG4J2_VERSION="2.24.3"          # the log4j2 line Kafka 4.x builds against; SLF4J binding only
SLF4J_VERSION="2.0.16"           # kafka-clients pulls slf4j-api 1.7.x, which cannot see the 2.x binding
DEPENDENCY_PLUGIN_VERSION="3.8.1"

KAFKA_VERSION="${LEDGER_KAFKA_VERSION:-$KAFKA_VERSION_PIN}"
PORT="${LEDGER_KAFKA_PORT:-9092}"
CTRL_PORT=$((PORT + 1))
HOST="127.0.0.1"
BOOTSTRAP="${HOST}:${PORT}"
CACHE_ROOT="${LEDGER_CACHE_DIR:-$HOME/.cache/budget-ledger}"
STATE_ROOT="${LEDGER_STATE_DIR:-$HOME/.local/state/budget-ledger}"
STATE_DIR="${STATE_ROOT}/kafka-${PORT}"
HEAP_OPTS="${LEDGER_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
START_TIMEOUT="${LEDGER_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"

# Single node unless select_node (cluster mode) changes these.
NODE_ID=1
VOTERS="1@${HOST}:${CTRL_PORT}"
REPLICATION=1
MIN_ISR=1
CLUSTER_ID_FILE=""
CONFIG_TITLE="single-node"

# The three-node cluster: its own ports and state root, never shared with the single node.
CLUSTER_NODES=3
CLUSTER_BASE_PORT="${LEDGER_KAFKA_CLUSTER_PORT:-19092}"
CLUSTER_ROOT="${STATE_ROOT}/kafka-cluster-${CLUSTER_BASE_PORT}"
CLUSTER_HEAP_OPTS="${LEDGER_KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m}"

# The secure single node (select_secure): SASL_SSL only, its own port and state directory.
SECURE=0
SECURE_PORT="${LEDGER_KAFKA_SECURE_PORT:-19192}"
SECURE_HEAP_OPTS="${LEDGER_KAFKA_SECURE_HEAP_OPTS:--Xms128m -Xmx512m}"
SECURE_USERS=(admin ledger rules-engine reward-service alerts-reader ledger-api)
SECURE_BROKER_CN="kafka-broker"

set_paths() {
    PID_FILE="${STATE_DIR}/kafka.pid"
    PROPS="${STATE_DIR}/server.properties"
    LOG4J_CONF="${STATE_DIR}/log4j2.xml"
    TOOLS_LOG4J_CONF="${STATE_DIR}/tools-log4j2.xml"
    DATA_DIR="${STATE_DIR}/data"
    LOG_DIR="${STATE_DIR}/logs"
    SERVER_LOG="${LOG_DIR}/server.log"
    STDOUT_LOG="${LOG_DIR}/kafka.out"
}
set_paths

log() { printf '[kafka.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

libs_dir_for() { printf '%s/kafka-%s/libs' "$CACHE_ROOT" "$1"; }
marker_for() { printf '%s/kafka-%s/.resolved' "$CACHE_ROOT" "$1"; }

# ---- fetch ------------------------------------------------------------------------------------
resolve_version() {
    # resolve_version <version>: copy kafka_2.13:<version> + runtime deps + log4j2 SLF4J binding
    # into the cache. Returns non-zero if Maven cannot resolve it.
    local version="$1" root libs tmp pom start end rc
    root="${CACHE_ROOT}/kafka-${version}"
    libs="$(libs_dir_for "$version")"
    mkdir -p "$root"
    tmp="$(mktemp -d "${root}/.resolve.XXXXXX")"
    pom="${tmp}/pom.xml"
    cat >"$pom" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.budget-ledger</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_BINARY}</artifactId>
      <version>${version}</version>
    </dependency>
    <dependency>
      <!-- BrokerApiVersionsCommand / TopicCommand used for the readiness check -->
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>${version}</version>
    </dependency>
    <dependency>
      <!-- Kafka 4.x logs through SLF4J -> log4j2, but the binding is test-scoped in its POM -->
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>${LOG4J2_VERSION}</version>
    </dependency>
    <dependency>
      <!-- log4j-slf4j2-impl is an SLF4J 2 provider: slf4j-api must be 2.x, not Kafka's 1.7.x -->
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>${DEPENDENCY_PLUGIN_VERSION}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
EOF
    log "resolving org.apache.kafka:kafka_${SCALA_BINARY}:${version} with Maven (first time only) ..."
    start=$(date +%s)
    rc=0
    "$MVN" -q -B -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="${tmp}/libs" >"${tmp}/mvn.log" 2>&1 || rc=$?
    end=$(date +%s)
    if [[ $rc -ne 0 ]] || ! compgen -G "${tmp}/libs/kafka_${SCALA_BINARY}-${version}.jar" >/dev/null; then
        log "Maven could not resolve Kafka ${version} (exit ${rc}, $((end - start)) s); last lines:"
        tail -n 15 "${tmp}/mvn.log" >&2 || true
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$libs"
    mv "${tmp}/libs" "$libs"
    cp "$pom" "${root}/pom.xml"
    rm -rf "$tmp"
    printf 'version=%s\nresolved_at=%s\nseconds=%s\njars=%s\n' "$version" "$(date -Is)" \
        "$((end - start))" "$(ls "$libs" | wc -l)" >"$(marker_for "$version")"
    log "resolved Kafka ${version}: $(ls "$libs" | wc -l) jars in $((end - start)) s -> ${libs}"
}

# Sets KAFKA_LIBS to a resolved classpath dir (resolving if needed) and RESOLVED_VERSION.
ensure_libs() {
    local v
    # Already resolved: pinned version, or the fallback from an earlier run.
    for v in "$KAFKA_VERSION" "$KAFKA_VERSION_FALLBACK"; do
        if [[ -f "$(marker_for "$v")" ]]; then
            KAFKA_LIBS="$(libs_dir_for "$v")"; RESOLVED_VERSION="$v"
            [[ "$v" != "$KAFKA_VERSION" ]] && log "note: using fallback Kafka ${v} (${KAFKA_VERSION} was not resolvable)"
            return 0
        fi
    done
    command -v "$MVN" >/dev/null 2>&1 || die "Maven ('$MVN') is not on PATH; install it (apt-get install -y maven)"
    mkdir -p "$CACHE_ROOT"
    # Serialize concurrent fetches.
    exec 8>"${CACHE_ROOT}/.kafka-fetch.lock"
    flock 8
    if [[ -f "$(marker_for "$KAFKA_VERSION")" ]]; then
        KAFKA_LIBS="$(libs_dir_for "$KAFKA_VERSION")"; RESOLVED_VERSION="$KAFKA_VERSION"; return 0
    fi
    if resolve_version "$KAFKA_VERSION"; then
        KAFKA_LIBS="$(libs_dir_for "$KAFKA_VERSION")"; RESOLVED_VERSION="$KAFKA_VERSION"; return 0
    fi
    if [[ "$KAFKA_VERSION" != "$KAFKA_VERSION_FALLBACK" ]]; then
        log "WARNING: Kafka ${KAFKA_VERSION} could not be resolved; trying fallback ${KAFKA_VERSION_FALLBACK}"
        if resolve_version "$KAFKA_VERSION_FALLBACK"; then
            KAFKA_LIBS="$(libs_dir_for "$KAFKA_VERSION_FALLBACK")"; RESOLVED_VERSION="$KAFKA_VERSION_FALLBACK"
            log "WARNING: using fallback Kafka ${KAFKA_VERSION_FALLBACK}"
            return 0
        fi
    fi
    die "could not resolve Kafka from Maven (see output above)"
}

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found; install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)"
    local major
    major="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}' | awk -F. '{print ($1 == "1") ? $2 : $1}')"
    [[ -n "$major" && "$major" -ge 17 ]] || die "Kafka 4.x needs Java 17+, found '${major:-unknown}' ($JAVA)"
}

# ---- process helpers --------------------------------------------------------------------------
read_pid() { [[ -f "$PID_FILE" ]] && tr -dc '0-9' <"$PID_FILE" || true; }

# Our broker is running: pid file points at a live java running kafka.Kafka with our config.
our_pid_alive() {
    local pid; pid="$(read_pid)"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka ${PROPS}" || return 1
    printf '%s' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/${HOST}/$1") 2>/dev/null; }

# A real Kafka request (ApiVersions) against the client port, via the resolved tools classpath.
broker_answers() {
    local timeout_ms="${1:-5000}"
    port_open "$PORT" || return 1
    [[ -n "${KAFKA_LIBS:-}" ]] || return 1
    timeout 30 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -Xshare:auto \
        -Dlog4j2.configurationFile="${TOOLS_LOG4J_CONF}" \
        -cp "${KAFKA_LIBS}/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
        --bootstrap-server "$BOOTSTRAP" \
        --command-config <(printf 'request.timeout.ms=%s\ndefault.api.timeout.ms=%s\n' "$timeout_ms" "$timeout_ms"
                           ((SECURE == 0)) || cat "$CLIENT_PROPS") \
        >/dev/null 2>&1
}

# ---- config -----------------------------------------------------------------------------------
write_config() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    cat >"$PROPS" <<EOF
# Generated by deploy/local/kafka.sh — ${CONFIG_TITLE} KRaft (combined broker+controller), dev only.
process.roles=broker,controller
node.id=${NODE_ID}
controller.quorum.voters=${VOTERS}
$(listener_properties)
log.dirs=${DATA_DIR}
num.partitions=12
default.replication.factor=${REPLICATION}
min.insync.replicas=${MIN_ISR}
offsets.topic.replication.factor=${REPLICATION}
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=${REPLICATION}
transaction.state.log.min.isr=${MIN_ISR}
transaction.state.log.num.partitions=12
share.coordinator.state.topic.replication.factor=${REPLICATION}
share.coordinator.state.topic.min.isr=${MIN_ISR}
$(cluster_properties)
group.initial.rebalance.delay.ms=0
# Off, as on a production cluster: every topic is made by "budget-ledger topics create" (or the
# tests' and benchmarks' own create_topics), and a client still open after its topics were
# deleted cannot re-create them (left behind, they taxed the broker's CPU: docs/performance.md).
auto.create.topics.enable=false
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=104857600
log.retention.check.interval.ms=300000
EOF
    cat >"$LOG4J_CONF" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/local/kafka.sh -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="${SERVER_LOG}" filePattern="${SERVER_LOG}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel\$" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="kafka.server.metadata" level="WARN"/>
    <Logger name="kafka.coordinator" level="WARN"/>
    <Logger name="org.apache.kafka.coordinator" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals" level="WARN"/>
    <Logger name="org.apache.kafka.raft" level="WARN"/>
    <Logger name="org.apache.kafka.image" level="WARN"/>
    <Logger name="org.apache.kafka.metadata" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
    <Logger name="kafka.cluster.Partition" level="WARN"/>
    <Logger name="kafka.server.ReplicaFetcherManager" level="WARN"/>
    <Logger name="kafka.server.ReplicaAlterLogDirsManager" level="WARN"/>
  </Loggers>
</Configuration>
EOF
    cat >"$TOOLS_LOG4J_CONF" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/local/kafka.sh: logging for the CLI tools (storage format, readiness probe) -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers><Root level="ERROR"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
}

# Listeners: PLAINTEXT for the single node and the cluster; SASL_SSL (and a mutual-TLS
# controller listener) with the authorizer for the secure node.
listener_properties() {
    if ((SECURE == 0)); then
        cat <<EOF
listeners=PLAINTEXT://${HOST}:${PORT},CONTROLLER://${HOST}:${CTRL_PORT}
advertised.listeners=PLAINTEXT://${HOST}:${PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
        return 0
    fi
    cat <<EOF
listeners=SASL_SSL://${HOST}:${PORT},CONTROLLER://${HOST}:${CTRL_PORT}
advertised.listeners=SASL_SSL://${HOST}:${PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(user_password admin)";
ssl.keystore.type=PEM
ssl.keystore.location=${STATE_DIR}/tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=${STATE_DIR}/tls/ca.pem
# The controller listener takes only the broker's own certificate (mutual TLS); its CN is the
# principal User:${SECURE_BROKER_CN}, a super user like admin.
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([a-zA-Z0-9.-]+).*\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:${SECURE_BROKER_CN}
allow.everyone.if.no.acl.found=false
EOF
}

# Extra broker settings of the three-node cluster (nothing for the single node).
cluster_properties() {
    [[ "$NODE_ID" == 1 && "$REPLICATION" == 1 ]] && return 0
    cat <<EOF
# A SIGKILLed node is fenced (and its partitions get new leaders) after this session timeout;
# it bounds the stall a broker crash causes. Kafka's default is 9 s.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
unclean.leader.election.enable=false
EOF
}

FORMAT_ARGS=()
format_storage() {
    local cluster_id_file="${CLUSTER_ID_FILE:-${STATE_DIR}/cluster.id}" cid out rc
    [[ -f "${DATA_DIR}/meta.properties" ]] && return 0
    if [[ -s "$cluster_id_file" ]]; then
        cid="$(cat "$cluster_id_file")"
    else
        cid="$("$JAVA" -Xmx128m -cp "${KAFKA_LIBS}/*" -Dlog4j2.configurationFile="${TOOLS_LOG4J_CONF}" \
            kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 | tr -d '[:space:]')"
        [[ -n "$cid" ]] || die "StorageTool random-uuid produced no id"
        printf '%s\n' "$cid" >"$cluster_id_file"
    fi
    log "formatting storage (cluster id ${cid})"
    rc=0
    out="$("$JAVA" -Xmx256m -cp "${KAFKA_LIBS}/*" -Dlog4j2.configurationFile="${TOOLS_LOG4J_CONF}" \
        kafka.tools.StorageTool format -t "$cid" -c "$PROPS" --ignore-formatted \
        "${FORMAT_ARGS[@]}" 2>&1)" || rc=$?
    [[ $rc -eq 0 ]] || { printf '%s\n' "$out" >&2; die "storage format failed"; }
}

print_failure_logs() {
    if [[ -s "$SERVER_LOG" ]]; then
        log "last 40 lines of ${SERVER_LOG}:"; tail -n 40 "$SERVER_LOG" >&2
    fi
    if [[ -s "$STDOUT_LOG" ]]; then
        log "last 40 lines of ${STDOUT_LOG}:"; tail -n 40 "$STDOUT_LOG" >&2
    fi
}

# ---- commands ---------------------------------------------------------------------------------
cmd_fetch() {
    local t0 t1
    t0=$(date +%s)
    ensure_libs
    t1=$(date +%s)
    printf 'Kafka %s: %s (%s jars; this call took %s s; first resolution: %s s)\n' \
        "$RESOLVED_VERSION" "$KAFKA_LIBS" "$(ls "$KAFKA_LIBS" | wc -l)" "$((t1 - t0))" \
        "$(sed -n 's/^seconds=//p' "$(marker_for "$RESOLVED_VERSION")")"
}

cmd_start() {
    check_java
    mkdir -p "$STATE_DIR"
    exec 9>"${STATE_DIR}/.lock"
    flock 9   # serialize concurrent start/stop for this port
    ensure_libs
    launch_broker
    [[ $LAUNCHED -eq 1 ]] || return 0
    wait_broker
    echo "LEDGER_KAFKA_BOOTSTRAP=${BOOTSTRAP}"
}

# Starts the broker process of the selected node unless it runs. Sets LAUNCHED=1 when a process
# was launched (wait_broker must follow), 0 when one already ran or a foreign broker answers.
LAUNCHED=0
launch_broker() {
    local pid stale
    LAUNCHED=0
    if pid="$(our_pid_alive)"; then
        log "already running (pid ${pid}, Kafka ${RESOLVED_VERSION}) at ${BOOTSTRAP}"
        echo "LEDGER_KAFKA_BOOTSTRAP=${BOOTSTRAP}"
        return 0
    fi
    stale="$(read_pid)"
    if [[ -n "$stale" ]]; then
        log "removing stale pid file (pid ${stale} is gone)"
        rm -f "$PID_FILE"
    fi
    if port_open "$PORT"; then
        write_config   # for the tools' log config
        if broker_answers 5000; then
            log "a Kafka broker not started by this script already answers at ${BOOTSTRAP}; using it"
            echo "LEDGER_KAFKA_BOOTSTRAP=${BOOTSTRAP}"
            return 0
        fi
        die "port ${PORT} is in use by something that is not a Kafka broker; set LEDGER_KAFKA_PORT"
    fi
    if port_open "$CTRL_PORT"; then
        die "controller port ${CTRL_PORT} (client port + 1) is already in use; set LEDGER_KAFKA_PORT"
    fi

    write_config
    format_storage

    log "starting Kafka ${RESOLVED_VERSION} at ${BOOTSTRAP} (state: ${STATE_DIR})"
    [[ -f "$STDOUT_LOG" ]] && mv -f "$STDOUT_LOG" "${STDOUT_LOG}.prev"
    # shellcheck disable=SC2086
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="${LOG4J_CONF}" \
        -Dkafka.logs.dir="${LOG_DIR}" \
        -cp "${KAFKA_LIBS}/*" kafka.Kafka "$PROPS" \
        </dev/null >"$STDOUT_LOG" 2>&1 8>&- 9>&- &
    disown || true
    LAUNCHED=1
}

# Waits until the launched broker of the selected node answers ApiVersions (or fails loudly).
wait_broker() {
    local pid deadline elapsed
    deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        sleep 1
        if ! pid="$(our_pid_alive)"; then
            # Give the pid file a moment to appear right after launch.
            [[ -s "$PID_FILE" ]] || continue
            log "broker process exited during startup"
            print_failure_logs
            rm -f "$PID_FILE"
            exit 1
        fi
        port_open "$PORT" || continue
        if broker_answers 5000; then
            elapsed=$((START_TIMEOUT - (deadline - SECONDS)))
            log "up (pid ${pid}) after ~${elapsed} s; log: ${SERVER_LOG}"
            return 0
        fi
    done
    log "broker did not answer within ${START_TIMEOUT} s"
    print_failure_logs
    exit 1
}

cmd_stop() {
    local pid i
    mkdir -p "$STATE_DIR"
    exec 9>"${STATE_DIR}/.lock"
    flock 9
    if ! pid="$(our_pid_alive)"; then
        [[ -f "$PID_FILE" ]] && { log "removing stale pid file"; rm -f "$PID_FILE"; }
        log "not running (port ${PORT})"
        return 0
    fi
    log "stopping Kafka (pid ${pid}) ..."
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "still alive after ${STOP_TIMEOUT} s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(our_pid_alive)"; then
        if port_open "$PORT"; then
            echo "kafka: up (pid ${pid}) at ${BOOTSTRAP}"
            return 0
        fi
        echo "kafka: starting (pid ${pid}), port ${PORT} not open yet"
        return 1
    fi
    if port_open "$PORT"; then
        echo "kafka: port ${PORT} is open but not by a broker this script started (state ${STATE_DIR})"
        return 0
    fi
    echo "kafka: down (port ${PORT})"
    return 1
}

cmd_reset() {
    cmd_stop
    log "wiping ${STATE_DIR}"
    rm -rf "$STATE_DIR"
}

# ---- the three-node cluster ------------------------------------------------------------------
cluster_port() { printf '%s' $((CLUSTER_BASE_PORT + 2 * ($1 - 1))); }

cluster_bootstrap() {
    local i out=""
    for ((i = 1; i <= CLUSTER_NODES; i++)); do out+="${out:+,}${HOST}:$(cluster_port "$i")"; done
    printf '%s' "$out"
}

# Points every per-node global (ports, state dir, paths, quorum) at cluster node $1.
select_node() {
    local i
    [[ "$1" =~ ^[1-9]$ && "$1" -le $CLUSTER_NODES ]] || die "no cluster node '$1' (1..${CLUSTER_NODES})"
    NODE_ID="$1"
    CONFIG_TITLE="three-node cluster, node $1:"
    PORT="$(cluster_port "$1")"
    CTRL_PORT=$((PORT + 1))
    BOOTSTRAP="${HOST}:${PORT}"
    STATE_DIR="${CLUSTER_ROOT}/node-$1"
    CLUSTER_ID_FILE="${CLUSTER_ROOT}/cluster.id"
    HEAP_OPTS="$CLUSTER_HEAP_OPTS"
    REPLICATION=3
    MIN_ISR=2
    VOTERS=""
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        VOTERS+="${VOTERS:+,}${i}@${HOST}:$(($(cluster_port "$i") + 1))"
    done
    set_paths
}

# All nodes must be launched before any is waited for: a node answers only once a quorum
# (two of three controllers) has elected a leader.
cluster_start() {
    local nodes=("$@") launched=() i
    ((${#nodes[@]})) || nodes=($(seq 1 "$CLUSTER_NODES"))
    check_java
    ensure_libs
    mkdir -p "$CLUSTER_ROOT"
    for i in "${nodes[@]}"; do
        select_node "$i"
        mkdir -p "$STATE_DIR"
        exec 9>"${STATE_DIR}/.lock"
        flock 9
        launch_broker >/dev/null
        exec 9>&-
        [[ $LAUNCHED -eq 1 ]] && launched+=("$i")
    done
    for i in "${launched[@]}"; do
        select_node "$i"
        log "node ${i}: waiting for ${BOOTSTRAP}"
        wait_broker
    done
    echo "LEDGER_KAFKA_CLUSTER_BOOTSTRAP=$(cluster_bootstrap)"
}

cluster_stop() {
    local i pids=()
    # In parallel: a node stopping alone waits for the others' controlled-shutdown answers.
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        ( select_node "$i"; cmd_stop ) &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
}

cluster_status() {
    local i rc=0
    for ((i = 1; i <= CLUSTER_NODES; i++)); do
        select_node "$i"
        printf 'node %s: ' "$i"
        cmd_status || rc=1
    done
    return $rc
}

cluster_kill() {
    local pid
    [[ -n "${1:-}" ]] || die "usage: $0 cluster kill N"
    select_node "$1"
    if ! pid="$(our_pid_alive)"; then
        log "node $1 is not running"
        return 0
    fi
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$PID_FILE"
    log "node $1 (pid ${pid}, ${BOOTSTRAP}) killed with SIGKILL"
}

cmd_cluster() {
    local sub="${1:-}"
    shift || true
    case "$sub" in
        start) cluster_start "$@" ;;
        stop) cluster_stop ;;
        status) cluster_status ;;
        kill) cluster_kill "${1:-}" ;;
        reset) cluster_stop; log "wiping ${CLUSTER_ROOT}"; rm -rf "$CLUSTER_ROOT" ;;
        logs) select_node "${1:-1}"; tail -n "${2:-100}" "$SERVER_LOG" ;;
        bootstrap) cluster_bootstrap; echo ;;
        *)
            echo "usage: $0 cluster start [N] | stop | status | kill N | reset | logs N [lines] | bootstrap" >&2
            exit 2
            ;;
    esac
}

# ---- the secure single node ------------------------------------------------------------------
# Points the globals at the secure node: its own port, state directory, heap and TLS/users files.
select_secure() {
    SECURE=1
    CONFIG_TITLE="secure (SASL_SSL, SCRAM-SHA-512, ACLs) single-node"
    PORT="$SECURE_PORT"
    CTRL_PORT=$((PORT + 1))
    BOOTSTRAP="${HOST}:${PORT}"
    VOTERS="1@${HOST}:${CTRL_PORT}"
    STATE_DIR="${STATE_ROOT}/kafka-secure-${PORT}"
    HEAP_OPTS="$SECURE_HEAP_OPTS"
    set_paths
    TLS_DIR="${STATE_DIR}/tls"
    USERS_FILE="${STATE_DIR}/users.env"
    SCRAM_FILE="${STATE_DIR}/users.scram"
    CLIENT_PROPS="${STATE_DIR}/admin-client.properties"
}

# users.env holds one line per user: LEDGER_KAFKA_PASSWORD_<USER, upper, - as _>=<password>.
user_var() { local u="${1^^}"; printf 'LEDGER_KAFKA_PASSWORD_%s' "${u//-/_}"; }
user_password() { sed -n "s/^$(user_var "$1")=//p" "$USERS_FILE"; }

# Dev passwords, the CA and the broker certificate: made once, kept across restarts (the SCRAM
# users live in the formatted storage, so the passwords must not change while it exists).
secure_prepare() {
    local u tmp
    command -v openssl >/dev/null 2>&1 || die "openssl not found; install it (apt-get install -y openssl)"
    mkdir -p "$STATE_DIR" "$TLS_DIR"
    chmod 700 "$STATE_DIR" "$TLS_DIR"
    if [[ ! -s "$USERS_FILE" ]]; then
        [[ -f "${DATA_DIR}/meta.properties" ]] && die "storage exists but ${USERS_FILE} is gone; run: $0 secure reset"
        tmp="$(mktemp "${STATE_DIR}/.users.XXXXXX")"
        for u in "${SECURE_USERS[@]}"; do
            printf '%s=%s\n' "$(user_var "$u")" "$(openssl rand -hex 24)" >>"$tmp"
        done
        chmod 600 "$tmp"
        mv "$tmp" "$USERS_FILE"
        log "dev passwords of ${SECURE_USERS[*]} written to ${USERS_FILE}"
    fi
    if [[ ! -s "${TLS_DIR}/broker-keystore.pem" ]]; then
        log "making a dev CA and broker certificate (CN=${SECURE_BROKER_CN}, SAN 127.0.0.1, localhost)"
        (
            cd "$TLS_DIR"
            umask 077
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.pem \
                -subj "/CN=budget-ledger dev CA" \
                -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr \
                -subj "/CN=${SECURE_BROKER_CN}" 2>/dev/null
            printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
                "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" \
                "keyUsage=critical,digitalSignature,keyEncipherment" >broker.ext
            openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days 825 -sha256 -extfile broker.ext -out broker.pem 2>/dev/null
            # Kafka's PEM keystore: the (unencrypted PKCS#8) key, then the certificate chain.
            cat broker.key broker.pem ca.pem >broker-keystore.pem.tmp
            mv broker-keystore.pem.tmp broker-keystore.pem
            chmod 644 ca.pem
        ) || die "openssl could not make the certificates"
    fi
    umask 077
    cat >"$CLIENT_PROPS" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(user_password admin)";
ssl.truststore.type=PEM
ssl.truststore.location=${TLS_DIR}/ca.pem
EOF
    # A user added to SECURE_USERS after the storage was formatted (by an older checkout) gets
    # its password here and its SCRAM credential once the broker runs (secure_add_users);
    # users.scram lists the users the storage has.
    local known=()
    for u in "${SECURE_USERS[@]}"; do
        if [[ -n "$(user_password "$u")" ]]; then known+=("$u"); continue; fi
        printf '%s=%s\n' "$(user_var "$u")" "$(openssl rand -hex 24)" >>"$USERS_FILE"
        log "dev password of ${u} added to ${USERS_FILE}"
    done
    if [[ ! -f "${DATA_DIR}/meta.properties" ]]; then
        printf '%s\n' "${SECURE_USERS[@]}" >"$SCRAM_FILE"  # the format below adds them all
    elif [[ ! -s "$SCRAM_FILE" ]]; then
        printf '%s\n' "${known[@]}" >"$SCRAM_FILE"
    fi
    FORMAT_ARGS=()
    for u in "${SECURE_USERS[@]}"; do
        FORMAT_ARGS+=(--add-scram "SCRAM-SHA-512=[name=${u},password=$(user_password "$u")]")
    done
}

# The SCRAM credentials of users the running broker's storage does not have yet (as admin).
secure_add_users() {
    local u
    for u in "${SECURE_USERS[@]}"; do
        grep -qx -- "$u" "$SCRAM_FILE" 2>/dev/null && continue
        log "adding the SCRAM user ${u} to the secure node"
        timeout 60 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -Xshare:auto \
            -Dlog4j2.configurationFile="${TOOLS_LOG4J_CONF}" -cp "${KAFKA_LIBS}/*" \
            kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
            --command-config "$CLIENT_PROPS" --alter --entity-type users --entity-name "$u" \
            --add-config "SCRAM-SHA-512=[password=$(user_password "$u")]" >/dev/null \
            || die "could not add the SCRAM user ${u}"
        printf '%s\n' "$u" >>"$SCRAM_FILE"
    done
}

# What a client needs, never the passwords themselves: they stay in users.env.
secure_env() {
    echo "LEDGER_KAFKA_SECURE_BOOTSTRAP=${BOOTSTRAP}"
    echo "LEDGER_KAFKA_SECURE_CA=${TLS_DIR}/ca.pem"
    echo "LEDGER_KAFKA_SECURE_USERS_FILE=${USERS_FILE}"
}

cmd_secure() {
    local sub="${1:-}"
    shift || true
    select_secure
    case "$sub" in
        start)
            check_java
            mkdir -p "$STATE_DIR"
            exec 9>"${STATE_DIR}/.lock"
            flock 9
            ensure_libs
            secure_prepare
            launch_broker >/dev/null
            [[ $LAUNCHED -eq 1 ]] && wait_broker
            secure_add_users
            secure_env
            ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        logs) tail -n "${1:-100}" "$SERVER_LOG" ;;
        env) secure_env ;;
        *)
            echo "usage: $0 secure start | stop | status | reset | logs [N] | env" >&2
            exit 2
            ;;
    esac
}

if [[ "${LEDGER_KAFKA_SECURE:-0}" == 1 && "${1:-}" =~ ^(start|stop|status|reset|logs)$ ]]; then
    cmd_secure "$@"
    exit $?
fi

case "${1:-}" in
    cluster) shift; cmd_cluster "$@" ;;
    secure) shift; cmd_secure "$@" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    fetch) cmd_fetch ;;
    reset) cmd_reset ;;
    logs) tail -n "${2:-100}" "$SERVER_LOG" ;;
    *)
        echo "usage: $0 start | stop | status | fetch | reset | logs [N] | cluster ... | secure ..." >&2
        exit 2
        ;;
esac
