#!/usr/bin/env bash
# Run a real single-node Apache Kafka 4.x (KRaft, broker+controller in one JVM)
# for Ferry's integration tests.
#
#   scripts/kafka.sh start    # prints "127.0.0.1:<port>" on stdout once ready
#   scripts/kafka.sh stop     # SIGTERM (clean shutdown); keeps the data
#   scripts/kafka.sh kill     # SIGKILL (a crash); keeps the data
#   scripts/kafka.sh restart  # stop, then start again on the same data
#   scripts/kafka.sh status   # exit 0 iff the broker is running
#
# All commands are idempotent: start prints the address of a broker that is
# already running, stop and kill do nothing when none is. The broker listens
# on 127.0.0.1 only.
#
# Why this shape:
#   * No Docker and no tarball downloads are available; Maven Central is. The
#     broker is just a set of jars, so we let `mvn` resolve them from the tiny
#     pom in scripts/kafka/pom.xml (cached in ~/.m2) and run kafka.Kafka with
#     plain `java -cp`.
#   * By default every start formats a brand-new log dir: tests want an empty
#     cluster, and it avoids cluster-id mismatches after a crash. Fault tests
#     instead stop or kill the broker and start the same one again with its
#     topics, records and committed offsets: `restart`, or `start` with
#     FERRY_KAFKA_KEEP=1, reuses the formatted log dir (and formats one only
#     if there is none). The config is regenerated from the same environment,
#     so the broker comes back on the same ports.
#   * Only the address goes to stdout, so callers can do
#     `addr=$(scripts/kafka.sh start)`; all diagnostics go to stderr.
#   * FERRY_KAFKA_SECURE=1 adds a SASL_SSL listener on FERRY_KAFKA_SECURE_PORT
#     beside the PLAINTEXT one (which tests and inter-broker traffic keep
#     using), for tests of Ferry's TLS and SASL against a real broker. It
#     offers PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, each for the user
#     "ferry" with password "ferry-secret" (the SCRAM credentials are written
#     when the log dir is formatted, so restarts keep them). Its certificate
#     comes from a throwaway CA that openssl makes in the state dir on the
#     first secure start and every start reuses. stdout stays the PLAINTEXT
#     address; start writes the secure listener's files instead:
#       $FERRY_KAFKA_DIR/secure.addr  "127.0.0.1:<secure port>" (removed by a
#                                     start without FERRY_KAFKA_SECURE=1)
#       $FERRY_KAFKA_DIR/ca.pem       the CA that signed the broker's
#                                     certificate (for 127.0.0.1)
#     It also adds an SSL listener on FERRY_KAFKA_MTLS_PORT that requires a
#     client certificate signed by the same CA (mTLS, no SASL), and writes:
#       $FERRY_KAFKA_DIR/mtls.addr        "127.0.0.1:<mtls port>"
#       $FERRY_KAFKA_DIR/client.pem       a client certificate the CA signed
#       $FERRY_KAFKA_DIR/client-key.pem   its key (unencrypted PKCS#8)
#     The CA and the certificates are kept across starts and restarts.
#
# Environment (all optional):
#   FERRY_KAFKA_DIR              state dir (jars, config, data, logs, pid)   [/tmp/ferry-kafka]
#   FERRY_KAFKA_PORT             broker (PLAINTEXT) port on 127.0.0.1        [19092]
#   FERRY_KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1          [19093]
#   FERRY_KAFKA_START_TIMEOUT    seconds to wait for readiness               [90]
#   FERRY_KAFKA_JAVA             java binary (Kafka 4.x brokers need >= 17)  [java]
#   FERRY_KAFKA_HEAP             -Xmx for the broker JVM                     [1g]
#   FERRY_KAFKA_KEEP             1: start reuses the existing log dir        [0]
#   FERRY_KAFKA_SECURE           1: also a SASL_SSL listener (see above)     [0]
#   FERRY_KAFKA_SECURE_PORT      its port on 127.0.0.1                       [19094]
#   FERRY_KAFKA_MTLS_PORT        the mTLS (SSL) listener's port              [19095]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"

STATE_DIR="${FERRY_KAFKA_DIR:-/tmp/ferry-kafka}"
PORT="${FERRY_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${FERRY_KAFKA_CONTROLLER_PORT:-19093}"
START_TIMEOUT="${FERRY_KAFKA_START_TIMEOUT:-90}"
JAVA="${FERRY_KAFKA_JAVA:-java}"
HEAP="${FERRY_KAFKA_HEAP:-1g}"
KEEP="${FERRY_KAFKA_KEEP:-0}"
SECURE="${FERRY_KAFKA_SECURE:-0}"
SECURE_PORT="${FERRY_KAFKA_SECURE_PORT:-19094}"
MTLS_PORT="${FERRY_KAFKA_MTLS_PORT:-19095}"
HOST=127.0.0.1

LIB_DIR="$STATE_DIR/libs"
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"
CONFIG="$STATE_DIR/server.properties"
LOG4J_CONFIG="$STATE_DIR/log4j2.properties"
PID_FILE="$STATE_DIR/kafka.pid"
# The JVM's own stdout/stderr (crashes, JVM errors, anything not via log4j).
OUT_FILE="$LOG_DIR/kafka.out"
# Where log4j writes the broker's log (what we grep for readiness).
SERVER_LOG="$LOG_DIR/server.log"
# The secure listener's files (FERRY_KAFKA_SECURE=1, see header).
SECURE_ADDR_FILE="$STATE_DIR/secure.addr"
CA_FILE="$STATE_DIR/ca.pem"
CA_KEY="$STATE_DIR/ca-key.pem"
MTLS_ADDR_FILE="$STATE_DIR/mtls.addr"
CLIENT_CERT="$STATE_DIR/client.pem"
CLIENT_KEY="$STATE_DIR/client-key.pem"
# The broker's encrypted private key followed by its certificate and the CA:
# what Kafka's PEM key store wants. Kafka requires a key password for it.
SERVER_PEM="$STATE_DIR/server.pem"
SERVER_KEY_PASSWORD=ferry-key-pass
SASL_USER=ferry
SASL_PASSWORD=ferry-secret

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- process helpers ----------------------------------------------------------

# True if process $1 exists and is not a zombie. A broker killed with SIGKILL
# stays a zombie until its parent reaps it, and an init that never reaps
# (some containers) would make `kill -0` report it alive for ever.
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

# Prints the broker pid if the pid file names a live kafka.Kafka process.
# Checking the command line (not just `kill -0`) guards against a stale pid
# file whose pid was reused by an unrelated process after a reboot/crash.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  fi
  echo "$pid"
}

# True if something accepts TCP connections on $HOST:$1. Uses bash's /dev/tcp
# so no extra tools (nc, kcat) are needed on CI machines. The subshell keeps
# the fd from leaking into this shell.
port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Sends a real Kafka request (ApiVersions v0) to the broker port and checks the
# answer carries our correlation id and error_code 0. An open port alone is
# not enough: the socket may be bound before request processing is enabled.
#   request  = int32 size=15 | int16 api_key=18 | int16 api_version=0
#              | int32 correlation_id=0x46455259 ("FERY") | int16 len=5 "ferry"
#   response = int32 size | int32 correlation_id | int16 error_code | ...
api_versions_ok() {
  local hex
  hex="$(
    exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
    printf '\x00\x00\x00\x0f\x00\x12\x00\x00\x46\x45\x52\x59\x00\x05ferry' >&3
    # `timeout` bounds the read in case the broker accepts but never answers.
    timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n'
  )" 2>/dev/null || return 1
  # bytes 4..7 = correlation id, bytes 8..9 = error code.
  [[ "${hex:8:8}" == "46455259" && "${hex:16:4}" == "0000" ]]
}

# SIGTERM (Kafka shuts down cleanly on it), wait up to 30 s, then SIGKILL.
stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "broker (pid $pid) did not exit within 30s after SIGTERM; sending SIGKILL"
  kill_pid "$pid"
}

# SIGKILL, and wait until the process is gone so its ports are free.
kill_pid() {
  local pid="$1" i
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  die "broker (pid $pid) survived SIGKILL"
}

# --- setup --------------------------------------------------------------------

# Copies the broker's runtime classpath into $LIB_DIR. A stamp holding the
# pom's checksum lets warm starts skip Maven entirely (~10 s of JVM + resolve),
# while editing the pom (e.g. bumping the Kafka version) forces a fresh copy.
fetch_jars() {
  local stamp="$LIB_DIR/.pom.sha256" want
  want="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$LIB_DIR/kafka_2.13-*.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found on PATH (needed to fetch the Kafka jars)"
  log "fetching Kafka jars with mvn into $LIB_DIR (first run only)"
  rm -rf "$LIB_DIR"
  mkdir -p "$LIB_DIR"
  # -B: batch mode (no colours/progress, never prompts) for CI without stdin.
  # Maven's output goes to stderr so stdout stays reserved for the address.
  # (Debian's Maven 3.8.7 still writes a few stray "ESC[0m" resets to the
  # terminal even with -B -q; they are harmless and only reach stderr.)
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" </dev/null >&2; then
    rm -rf "$LIB_DIR"
    die "mvn failed to fetch the Kafka jars"
  fi
  echo "$want" >"$stamp"
}

write_config() {
  mkdir -p "$LOG_DIR"
  # Static quorum (controller.quorum.voters) rather than the dynamic
  # controller.quorum.bootstrap.servers + `format --standalone`: for one fixed
  # node it is the simplest setup and needs no extra format flags.
  cat >"$CONFIG" <<EOF
# Generated by scripts/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR
# Single node: every internal topic must fit on one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests must not wait 3 s for the first consumer-group rebalance.
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=true
EOF
  if [[ "$SECURE" == 1 ]]; then
    # The listener name sasl_ssl is lower case in listener.name.* keys.
    # Each mechanism needs a server JAAS entry; PLAIN's lists its users.
    # Later keys override the earlier ones above.
    cat >>"$CONFIG" <<EOF
# FERRY_KAFKA_SECURE=1: a SASL_SSL listener for Ferry's TLS and SASL tests.
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SASL_SSL://$HOST:$SECURE_PORT,MTLS://$HOST:$MTLS_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SECURE_PORT,MTLS://$HOST:$MTLS_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$SERVER_PEM
listener.name.sasl_ssl.ssl.key.password=$SERVER_KEY_PASSWORD
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
# The mTLS listener: TLS only, and a client certificate the CA signed.
listener.name.mtls.ssl.keystore.type=PEM
listener.name.mtls.ssl.keystore.location=$SERVER_PEM
listener.name.mtls.ssl.key.password=$SERVER_KEY_PASSWORD
listener.name.mtls.ssl.truststore.type=PEM
listener.name.mtls.ssl.truststore.location=$CA_FILE
listener.name.mtls.ssl.client.auth=required
EOF
  fi

  # log4j2 (Kafka 4.x dropped log4j 1). Everything goes to a file in the state
  # dir, never the console. Root at WARN keeps the file small; the
  # KafkaRaftServer logger stays at INFO because its
  # "[KafkaRaftServer nodeId=1] Kafka Server started" line is our readiness
  # signal.
  # shutdownHook=disable: log4j's own hook otherwise races Kafka's shutdown
  # hook, prints "Unable to register Log4j shutdown hook" and drops the
  # broker's shutdown messages; the File appender flushes every line anyway.
  cat >"$LOG4J_CONFIG" <<EOF
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $SERVER_LOG
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
logger.kafka.name = kafka.Kafka
logger.kafka.level = INFO
EOF
}

# JVM flags shared by the storage tool and the broker. -cp 'dir/*' is expanded
# by the JVM itself, not the shell.
JAVA_ARGS=(
  "-Xmx$HEAP" -Xms256m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$LOG4J_CONFIG" "-Dkafka.logs.dir=$LOG_DIR"
  -cp "$LIB_DIR/*"
)

java_cmd() { "$JAVA" "${JAVA_ARGS[@]}" "$@"; }

# Formats a fresh, empty log dir, or with keep=1 reuses the one a previous
# start formatted (see header).
format_storage() {
  local keep="$1"
  if [[ "$keep" == 1 && -f "$DATA_DIR/meta.properties" ]]; then
    log "reusing the formatted log dir $DATA_DIR"
    return 0
  fi
  [[ "$keep" == 1 ]] && log "no formatted log dir in $DATA_DIR; formatting a new one"
  rm -rf "$DATA_DIR"
  # Cluster id: what `StorageTool random-uuid` prints (16 random bytes as
  # unpadded URL-safe base64), generated here to save a ~1 s JVM start. Kafka
  # rejects ids that start with '-', so draw again in that case.
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  # The SCRAM users live in the cluster metadata, so they are written here,
  # once, and a restart on the same log dir keeps them.
  local scram=()
  if [[ "$SECURE" == 1 ]]; then
    scram=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
      --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
  fi
  if ! java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" "${scram[@]}" \
      </dev/null >>"$OUT_FILE" 2>&1; then
    tail -n 50 "$OUT_FILE" >&2 || true
    die "StorageTool format failed"
  fi
}

# Makes the throwaway CA and the broker's certificate for 127.0.0.1 unless a
# previous secure start made them: restarts keep the CA clients trust.
make_certs() {
  command -v openssl >/dev/null || die "openssl not found (needed by FERRY_KAFKA_SECURE=1)"
  if [[ ! -f "$CA_FILE" || ! -f "$SERVER_PEM" || ! -f "$CA_KEY" ]]; then make_server_certs; fi
  if [[ ! -f "$CLIENT_CERT" || ! -f "$CLIENT_KEY" ]]; then make_client_cert; fi
}

# Makes the CA and the broker's certificate.
make_server_certs() {
  log "making a throwaway CA and broker certificate in $STATE_DIR"
  local tmp
  tmp="$(mktemp -d "$STATE_DIR/certs.XXXXXX")"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Ferry test CA" \
    -keyout "$tmp/ca-key.pem" -out "$tmp/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" \
    -keyout "$tmp/key.pem" -out "$tmp/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$HOST" >"$tmp/ext"
  openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca-key.pem" \
    -CAcreateserial -days 3650 -extfile "$tmp/ext" -out "$tmp/server-cert.pem" 2>/dev/null
  # Encrypted PKCS#8 with a PKCS#12 PBE scheme: Kafka's PEM key store asks
  # the JDK for a SecretKeyFactory by the scheme's name, and there is none
  # named PBES2 (what `-v2` would write).
  openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in "$tmp/key.pem" \
    -passout "pass:$SERVER_KEY_PASSWORD" -out "$tmp/key-enc.pem"
  cat "$tmp/key-enc.pem" "$tmp/server-cert.pem" "$tmp/ca.pem" >"$SERVER_PEM"
  mv -f "$tmp/ca-key.pem" "$CA_KEY"
  mv -f "$tmp/ca.pem" "$CA_FILE"
  rm -f "$CLIENT_CERT" "$CLIENT_KEY" # signed by the CA just replaced
  rm -rf "$tmp"
}

# Makes the client certificate of the mTLS listener, signed by the CA.
make_client_cert() {
  log "making a client certificate in $STATE_DIR"
  local tmp
  tmp="$(mktemp -d "$STATE_DIR/certs.XXXXXX")"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=ferry-test-client" \
    -keyout "$tmp/key.pem" -out "$tmp/client.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$tmp/ext"
  openssl x509 -req -in "$tmp/client.csr" -CA "$CA_FILE" -CAkey "$CA_KEY" \
    -CAcreateserial -days 3650 -extfile "$tmp/ext" -out "$tmp/client.pem" 2>/dev/null
  mv -f "$tmp/key.pem" "$CLIENT_KEY"
  mv -f "$tmp/client.pem" "$CLIENT_CERT"
  rm -rf "$tmp"
}

print_failure_logs() {
  log "broker did not become ready; last 50 lines of $SERVER_LOG:"
  tail -n 50 "$SERVER_LOG" >&2 2>/dev/null || true
  log "last 50 lines of $OUT_FILE:"
  tail -n 50 "$OUT_FILE" >&2 2>/dev/null || true
}

# --- commands -----------------------------------------------------------------

cmd_start() {
  local keep="${1:-$KEEP}" pid
  [[ "$keep" == 0 || "$keep" == 1 ]] || die "FERRY_KAFKA_KEEP must be 0 or 1, not \"$keep\""
  if pid="$(running_pid)"; then
    echo "$HOST:$PORT"
    return 0
  fi
  rm -f "$PID_FILE"

  # Refuse to start if something else (another broker, another state dir)
  # holds our ports: we would otherwise "succeed" against the wrong server.
  if port_open "$PORT" || port_open "$CONTROLLER_PORT"; then
    die "port $PORT or $CONTROLLER_PORT on $HOST is already in use by another process"
  fi
  [[ "$SECURE" == 0 || "$SECURE" == 1 ]] || die "FERRY_KAFKA_SECURE must be 0 or 1, not \"$SECURE\""
  if [[ "$SECURE" == 1 ]] && { port_open "$SECURE_PORT" || port_open "$MTLS_PORT"; }; then
    die "port $SECURE_PORT or $MTLS_PORT on $HOST is already in use by another process"
  fi

  command -v "$JAVA" >/dev/null || die "java not found (set FERRY_KAFKA_JAVA)"
  mkdir -p "$STATE_DIR"
  fetch_jars
  rm -f "$SECURE_ADDR_FILE" "$MTLS_ADDR_FILE"
  if [[ "$SECURE" == 1 ]]; then make_certs; fi
  write_config
  # The previous run's logs are kept one generation back (a crash before a
  # restart is worth reading); readiness is judged on the new log only.
  local f
  for f in "$SERVER_LOG" "$OUT_FILE"; do
    if [[ -f "$f" ]]; then mv -f "$f" "$f.1"; fi
  done
  format_storage "$keep"

  # nohup + all three std fds redirected: the broker must not hold the
  # caller's stdout/stderr pipes open, or `addr=$(kafka.sh start)` and Go's
  # exec.Cmd.Output() would block until the broker exits. setsid puts it in
  # its own session so a Ctrl-C / SIGINT aimed at the caller's process group
  # does not take it down mid-test (use `stop` for that). The lock fd (9) is
  # closed so the broker does not keep holding the start/stop lock.
  local start_ts=$SECONDS
  # (setsid without -f execs in place here because a non-interactive shell's
  # background child is not a process-group leader, so $! is the JVM's pid.)
  nohup setsid "$JAVA" "${JAVA_ARGS[@]}" kafka.Kafka "$CONFIG" \
    </dev/null >>"$OUT_FILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pid"; then
      print_failure_logs
      rm -f "$PID_FILE"
      die "broker process exited during startup"
    fi
    if grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null \
        && port_open "$PORT" && api_versions_ok \
        && { [[ "$SECURE" == 0 ]] || { port_open "$SECURE_PORT" && port_open "$MTLS_PORT"; }; }; then
      log "broker ready on $HOST:$PORT (pid $pid) after $((SECONDS - start_ts))s"
      if [[ "$SECURE" == 1 ]]; then
        echo "$HOST:$SECURE_PORT" >"$SECURE_ADDR_FILE"
        echo "$HOST:$MTLS_PORT" >"$MTLS_ADDR_FILE"
        log "SASL_SSL listener on $HOST:$SECURE_PORT, mTLS listener on $HOST:$MTLS_PORT (CA $CA_FILE, client certificate $CLIENT_CERT)"
      fi
      echo "$HOST:$PORT"
      return 0
    fi
    sleep 0.2
  done

  print_failure_logs
  stop_pid "$pid" || true
  rm -f "$PID_FILE"
  die "broker not ready within ${START_TIMEOUT}s"
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    stop_pid "$pid"
    log "broker (pid $pid) stopped"
  fi
  rm -f "$PID_FILE"
}

cmd_kill() {
  local pid
  if pid="$(running_pid)"; then
    kill_pid "$pid"
    log "broker (pid $pid) killed"
  fi
  rm -f "$PID_FILE"
}

cmd_restart() {
  cmd_stop
  cmd_start 1
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    log "running (pid $pid) on $HOST:$PORT"
    return 0
  fi
  log "not running"
  return 1
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    start | stop | kill | restart | status) ;;
    *)
      echo "usage: $0 start|stop|kill|restart|status" >&2
      exit 2
      ;;
  esac

  mkdir -p "$STATE_DIR"
  # Serialize start/stop across concurrent callers (e.g. several `go test`
  # packages each ensuring a broker) so two JVMs never race for the ports.
  if command -v flock >/dev/null; then
    exec 9>"$STATE_DIR/.lock"
    flock -w 180 9 || die "timed out waiting for $STATE_DIR/.lock"
  fi

  "cmd_$cmd"
}

main "$@"
