#!/usr/bin/env bash
# A scale-out rehearsal on one machine, without Docker (`make cluster-up` / `make cluster-down`):
#   - Kafka: 3 KRaft nodes (broker + controller each), brokers on CLUSTER_KAFKA_PORT.. +2
#     (19092-19094), controllers on +300, SASL on +400; replication factor 3, min.insync.replicas 2;
#   - Redis Cluster: 6 redis-server 8 nodes on CLUSTER_REDIS_PORT.. +5 (17000-17005), 3 masters
#     and 3 replicas (CLUSTER ADDSLOTSRANGE / MEET / REPLICATE, infra/local/redis_cluster.py);
#   - Ray: a head (CLUSTER_RAY_PORT, 16380) and one more node, each declaring one GPU, so two
#     replicas with num_gpus 1 land one per node (compute stays on CPU: model.device cpu);
#   - S3: s3proxy on CLUSTER_S3_PORT (19300), bucket embedworker: the lake on object storage.
#   infra/local/cluster.sh up|down|status
#   infra/local/cluster.sh kafka-kill N | kafka-start N | redis-kill PORT | redis-start PORT |
#     redis-pause PORT | redis-resume PORT | ray-node-stop | ray-node-start | ray-tmp
# Kafka and Redis bind to 127.0.0.1 (Ray 2.60's GCS and raylets listen on every interface whatever
# --node-ip-address says: its token is required). All lives under RUN_DIR/cluster; stopped by pid.
# configs/cluster.yaml points at all of it.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$REPO_DIR/infra/local"

KAFKA_BASE="${CLUSTER_KAFKA_PORT:-19092}"
REDIS_BASE="${CLUSTER_REDIS_PORT:-17000}"
RAY_PORT="${CLUSTER_RAY_PORT:-16380}"
S3_CLUSTER_PORT="${CLUSTER_S3_PORT:-19300}"
CLUSTER_DIR="$RUN_DIR/cluster"
export EMBEDWORKER_RUN_DIR="$CLUSTER_DIR"
# Ray's session folder holds Unix sockets, whose paths may not exceed 107 bytes: it lives under the
# system temp in a short folder of this checkout's own (named by a hash of CLUSTER_DIR), not under
# the checkout, so a clone at any depth works.
RAY_TMP="${CLUSTER_RAY_TMP:-${TMPDIR:-/tmp}/ew-ray-$(printf '%s' "$CLUSTER_DIR" | sha1sum | cut -c1-10)}"
RAY="$(dirname "$PYTHON")/ray"
VOTERS="1@127.0.0.1:$((KAFKA_BASE + 300)),2@127.0.0.1:$((KAFKA_BASE + 301)),3@127.0.0.1:$((KAFKA_BASE + 302))"

kafka_node() {  # kafka_node N start|stop|status
  local n="$1"; shift
  KAFKA_PORT=$((KAFKA_BASE + n - 1)) KAFKA_CONTROLLER_PORT=$((KAFKA_BASE + 299 + n)) \
    KAFKA_SASL_PORT=$((KAFKA_BASE + 399 + n)) KAFKA_NODE_ID="$n" KAFKA_VOTERS="$VOTERS" \
    KAFKA_CLUSTER_ID="$(cluster_id)" KAFKA_REPLICATION=3 KAFKA_MIN_ISR=2 KAFKA_HEAP="${CLUSTER_KAFKA_HEAP:-384m}" \
    "$HERE/kafka.sh" "$@"
}

cluster_id() {  # one id for the three nodes, made once
  local f="$CLUSTER_DIR/kafka-cluster-id"
  if [ ! -s "$f" ]; then
    mkdir -p "$CLUSTER_DIR"
    "$PYTHON" -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' > "$f"
  fi
  cat "$f"
}

redis_node() {  # redis_node PORT start|stop|status
  local port="$1"; shift
  REDIS_PORT="$port" REDIS_CLUSTER=1 REDIS_PERSIST=0 "$HERE/redis.sh" "$@"  # durability comes from the replicas
}

redis_ports() { for i in 0 1 2 3 4 5; do echo $((REDIS_BASE + i)); done; }

ray_node() {  # ray_node head|node start|stop|status: `ray start --block` in a session of its own
  local which="$1" action="$2" dir="$CLUSTER_DIR/ray-$1"
  local pidfile="$dir/ray.pid" marker="EMBEDWORKER_SERVICE=ray:$dir" name="ray $1"
  case "$action" in
    start)
      if pid_alive "$pidfile" "$marker"; then log "$name: already running (pid $(cat "$pidfile"))"; return 0; fi
      mkdir -p "$dir"
      # worker ports above the Kafka and Redis ports of this script (Ray's default range covers them)
      local args=(--node-ip-address 127.0.0.1 --num-gpus 1 --num-cpus "${CLUSTER_RAY_CPUS:-2}" --block
                  --disable-usage-stats --min-worker-port 20000 --max-worker-port 20999
                  --object-store-memory "${CLUSTER_RAY_OBJECT_STORE:-500000000}")
      if [ "$which" = head ]; then
        args+=(--head --port "$RAY_PORT" --include-dashboard false --temp-dir "$RAY_TMP")
      else
        args+=(--address "127.0.0.1:$RAY_PORT")
      fi
      env "$marker" RAY_AUTH_MODE=token setsid "$RAY" start "${args[@]}" \
          >> "$dir/ray.log" 2>&1 < /dev/null &
      echo $! > "$pidfile"
      local deadline=$((SECONDS + 90))
      until grep -q "Ray runtime started" "$dir/ray.log" 2>/dev/null; do
        started_alive "$pidfile" || { tail -n 30 "$dir/ray.log" >&2 || true; die "$name exited during start"; }
        [ $SECONDS -lt $deadline ] || die "$name did not start within 90 s (log: $dir/ray.log)"
        sleep 0.5
      done
      log "$name: started (pid $(cat "$pidfile"), log $dir/ray.log)"
      ;;
    stop)  # the whole session of `ray start --block`: raylet, workers, GCS of the head
      if pid_alive "$pidfile" "$marker"; then
        local pid; pid="$(cat "$pidfile")"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do pid_alive "$pidfile" "$marker" || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        log "$name: stopped (session $pid)"
      else
        log "$name: not running"
      fi
      rm -f "$pidfile"
      ;;
    status)
      if pid_alive "$pidfile" "$marker"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; return 3; fi
      ;;
  esac
}

up() {
  require_python
  "$HERE/kafka.sh" install
  cluster_id > /dev/null  # made once, before the three nodes start side by side
  local pids=() n
  for n in 1 2 3; do kafka_node "$n" start & pids+=($!); done  # a quorum needs two voters up at once
  for p in $(redis_ports); do redis_node "$p" start & pids+=($!); done
  S3_PORT="$S3_CLUSTER_PORT" "$HERE/s3.sh" start & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || die "a cluster service did not start (see above)"; done
  "$PYTHON" "$HERE/redis_cluster.py" $(redis_ports)
  # token auth needs a token before the head starts (a fresh machine has none): made once, kept in
  # ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH), where the nodes and the drivers find it; never printed
  RAY_AUTH_MODE=token "$RAY" get-auth-token --generate > /dev/null
  ray_node head start
  ray_node node start
  log "cluster up: Kafka 127.0.0.1:$KAFKA_BASE-$((KAFKA_BASE + 2)), Redis Cluster 127.0.0.1:$REDIS_BASE-$((REDIS_BASE + 5)), Ray 127.0.0.1:$RAY_PORT (2 nodes), S3 http://127.0.0.1:$S3_CLUSTER_PORT (the lake)"
}

down() {
  ray_node node stop; ray_node head stop
  rm -rf "$RAY_TMP"  # the sessions of the stopped head (logs of interest are in RUN_DIR/cluster/ray-*/ray.log)
  local p n
  for p in $(redis_ports); do redis_node "$p" stop; done
  # The brokers together: one by one, the last one's controlled shutdown waits for a quorum of
  # controllers that is gone (30 s, then SIGKILL); together, each shuts down while the others do.
  for n in 3 2 1; do kafka_node "$n" stop & done
  wait
  S3_PORT="$S3_CLUSTER_PORT" "$HERE/s3.sh" stop
}

status() {
  local rc=0 p n
  for n in 1 2 3; do kafka_node "$n" status || rc=$?; done
  for p in $(redis_ports); do redis_node "$p" status || rc=$?; done
  ray_node head status || rc=$?; ray_node node status || rc=$?
  S3_PORT="$S3_CLUSTER_PORT" "$HERE/s3.sh" status || rc=$?
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kafka-kill)  # kill -9 one broker (tests of a broker loss)
    pidfile="$CLUSTER_DIR/kafka-$((KAFKA_BASE + $2 - 1))/kafka.pid"; kill -KILL "$(cat "$pidfile")"; rm -f "$pidfile" ;;
  kafka-start) require_python; kafka_node "$2" start ;;
  redis-kill)
    pidfile="$CLUSTER_DIR/redis-$2/redis.pid"; kill -KILL "$(cat "$pidfile")"; rm -f "$pidfile" ;;
  redis-pause|redis-resume)  # SIGSTOP / SIGCONT one node: a replica that falls behind (the loss test)
    pidfile="$CLUSTER_DIR/redis-$2/redis.pid"; kill "-$([ "$1" = redis-pause ] && echo STOP || echo CONT)" "$(cat "$pidfile")" ;;
  redis-start)  # a node killed before comes back empty and replicates the master that lacks a replica
    require_python; redis_node "$2" start; "$PYTHON" "$HERE/redis_cluster.py" --rejoin "$2" $(redis_ports) ;;
  ray-tmp) echo "$RAY_TMP" ;;  # where Ray's session folder (and its sockets) goes
  ray-node-stop) ray_node node stop ;;
  ray-node-start) ray_node node start ;;
  *) echo "usage: $0 up|down|status|kafka-kill N|kafka-start N|redis-kill PORT|redis-start PORT|redis-pause PORT|redis-resume PORT|ray-node-stop|ray-node-start|ray-tmp" >&2; exit 2 ;;
esac
