#!/usr/bin/env bash
# Apache Kafka 4.x, one node in KRaft combined mode (broker + controller), without Docker.
#   infra/local/kafka.sh install|start|stop|status|restart
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1),
#   KAFKA_SASL_PORT (KAFKA_PORT+2; a SASL_PLAINTEXT listener with PLAIN and SCRAM-SHA-256/512),
#   KAFKA_SASL_USER / KAFKA_SASL_PASSWORD (local development credentials), KAFKA_HEAP (512m).
# One node of a cluster (infra/local/cluster.sh): KAFKA_NODE_ID (1), KAFKA_VOTERS (the static
#   controller quorum, "1@127.0.0.1:19192,2@..."; empty: a standalone node), KAFKA_CLUSTER_ID
#   (shared by the nodes), KAFKA_REPLICATION (1: replication factor of the internal and new
#   topics), KAFKA_MIN_ISR (1).
# Behind a fault injector (the nemesis): KAFKA_PROXIED_PORT, a second plaintext listener whose
#   advertised address is KAFKA_PROXIED_ADVERTISED_PORT (Toxiproxy's, forwarding to it), so the
#   clients that bootstrap there stay behind the proxy while the others talk to the broker directly.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$REPO_DIR/infra/local/kafka/pom.xml")"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-embedworker}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-embedworker-local-dev}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_NODE_ID="${KAFKA_NODE_ID:-1}"
KAFKA_VOTERS="${KAFKA_VOTERS:-}"
KAFKA_REPLICATION="${KAFKA_REPLICATION:-1}"
KAFKA_MIN_ISR="${KAFKA_MIN_ISR:-1}"
KAFKA_PROXIED_PORT="${KAFKA_PROXIED_PORT:-}"
KAFKA_PROXIED_ADVERTISED_PORT="${KAFKA_PROXIED_ADVERTISED_PORT:-$KAFKA_PROXIED_PORT}"
LIB_DIR="$CACHE_DIR/kafka-$KAFKA_VERSION/lib"
INST_DIR="$RUN_DIR/kafka-$KAFKA_PORT"
PROPS="$INST_DIR/server.properties"
PIDFILE="$INST_DIR/kafka.pid"
LOGFILE="$INST_DIR/kafka.log"
NAME="kafka $KAFKA_VERSION on :$KAFKA_PORT"
MARKER="EMBEDWORKER_SERVICE=kafka:$INST_DIR"

install() {
  if [ -f "$LIB_DIR/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies into $LIB_DIR"
  local t0=$SECONDS
  rm -rf "$LIB_DIR"; mkdir -p "$LIB_DIR"
  mvn -q -B -f "$REPO_DIR/infra/local/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" >&2 \
    || die "Maven could not resolve Kafka $KAFKA_VERSION (see the output above)"
  ls "$LIB_DIR"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing in $LIB_DIR"
  touch "$LIB_DIR/.complete"
  log "kafka $KAFKA_VERSION resolved in $((SECONDS - t0)) s"
}

write_props() {
  mkdir -p "$INST_DIR/data"
  local proxied="" proxied_adv="" proxied_map=""
  if [ -n "$KAFKA_PROXIED_PORT" ]; then
    proxied=",PROXIED://localhost:$KAFKA_PROXIED_PORT"
    proxied_adv=",PROXIED://localhost:$KAFKA_PROXIED_ADVERTISED_PORT"
    proxied_map=",PROXIED:PLAINTEXT"
  fi
  cat > "$PROPS" <<PROPS
# written by infra/local/kafka.sh
process.roles=broker,controller
node.id=$KAFKA_NODE_ID
$(if [ -n "$KAFKA_VOTERS" ]; then echo "controller.quorum.voters=$KAFKA_VOTERS"; else echo "controller.quorum.bootstrap.servers=localhost:$KAFKA_CONTROLLER_PORT"; fi)
listeners=PLAINTEXT://localhost:$KAFKA_PORT,CONTROLLER://localhost:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://localhost:$KAFKA_SASL_PORT$proxied
advertised.listeners=PLAINTEXT://localhost:$KAFKA_PORT,CONTROLLER://localhost:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://localhost:$KAFKA_SASL_PORT$proxied_adv
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT$proxied_map
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$INST_DIR/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=$KAFKA_REPLICATION
offsets.topic.num.partitions=3
default.replication.factor=$KAFKA_REPLICATION
min.insync.replicas=$KAFKA_MIN_ISR
transaction.state.log.replication.factor=$KAFKA_REPLICATION
transaction.state.log.min.isr=$KAFKA_MIN_ISR
share.coordinator.state.topic.replication.factor=$KAFKA_REPLICATION
share.coordinator.state.topic.min.isr=$KAFKA_MIN_ISR
group.initial.rebalance.delay.ms=0
message.max.bytes=4194304
log.retention.hours=168
PROPS
}

format_storage() {
  [ -f "$INST_DIR/data/meta.properties" ] && return 0
  local cid="${KAFKA_CLUSTER_ID:-}" mode=(--standalone)
  [ -n "$cid" ] || cid="$("$(java_bin)" -cp "$LIB_DIR/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  [ -z "$KAFKA_VOTERS" ] || mode=()  # a static quorum: the voters are in the properties
  "$(java_bin)" -cp "$LIB_DIR/*" kafka.tools.StorageTool format "${mode[@]}" -t "$cid" -c "$PROPS" \
      --add-scram "SCRAM-SHA-256=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]" \
      > "$INST_DIR/format.log" 2>&1 || { cat "$INST_DIR/format.log" >&2; die "kafka storage format failed"; }
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then log "$NAME: already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_open "$KAFKA_PORT"; then die "port $KAFKA_PORT is taken by a process these scripts did not start"; fi
  install
  write_props
  format_storage
  local t0=$SECONDS
  # setsid: the broker gets a session of its own, so a Ctrl-C in the caller's terminal does not reach it.
  env "$MARKER" setsid "$(java_bin)" -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dorg.slf4j.simpleLogger.showDateTime=true -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
      -Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn \
      -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" >> "$LOGFILE" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    started_alive "$PIDFILE" || { tail -n 30 "$LOGFILE" >&2 || true; die "$NAME exited during start (log: $LOGFILE)"; }
    if port_open "$KAFKA_PORT" && "$PYTHON" "$REPO_DIR/infra/local/check_services.py" kafka "localhost:$KAFKA_PORT" >/dev/null 2>&1; then
      log "$NAME: ready in $((SECONDS - t0)) s (pid $(cat "$PIDFILE"), log $LOGFILE)"
      return 0
    fi
    sleep 0.2
  done
  die "$NAME did not answer within 120 s (log: $LOGFILE)"
}

service_main "$@"
