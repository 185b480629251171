#!/usr/bin/env bash
# Toxiproxy, the TCP proxy that injects faults on the wire (latency, blackholes, resets, refusals)
# between the worker and a service, for the nemesis runs (tests/reliability/test_nemesis.py,
# bench/nemesis.py); normal runs talk to the services directly. Its Go server is built once with
# `go install` from the Go module proxy into the project's cache.
#   infra/local/toxiproxy.sh install|start|stop|status|restart
# Settings (environment): TOXIPROXY_PORT (8474: its HTTP API; the proxies it serves are made
#   through that API by the caller).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TOXIPROXY_VERSION="v2.5.0"
TOXIPROXY_PORT="${TOXIPROXY_PORT:-8474}"
BIN_DIR="$CACHE_DIR/toxiproxy-$TOXIPROXY_VERSION/bin"
BIN="$BIN_DIR/server"
INST_DIR="$RUN_DIR/toxiproxy-$TOXIPROXY_PORT"
PIDFILE="$INST_DIR/toxiproxy.pid"
LOGFILE="$INST_DIR/toxiproxy.log"
NAME="toxiproxy $TOXIPROXY_VERSION on :$TOXIPROXY_PORT"
MARKER="EMBEDWORKER_SERVICE=toxiproxy:$INST_DIR"

install() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v go >/dev/null || die "no go command here: Toxiproxy is built from its Go module (install Go to run the nemesis)"
  log "building github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION into $BIN_DIR"
  mkdir -p "$BIN_DIR"
  local build; build="$(mktemp -d)"
  (cd "$build" && GOMODCACHE="$CACHE_DIR/go-mod" GOFLAGS=-modcacherw GOBIN="$BIN_DIR" GO111MODULE=on \
      go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2) \
    || { rm -rf "$build"; die "go install of Toxiproxy $TOXIPROXY_VERSION failed (see above)"; }
  rm -rf "$build"
  [ -x "$BIN" ] || die "Toxiproxy's server missing in $BIN_DIR after go install"
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then log "$NAME: already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_open "$TOXIPROXY_PORT"; then die "port $TOXIPROXY_PORT is taken by a process these scripts did not start"; fi
  install
  mkdir -p "$INST_DIR"
  local t0=$SECONDS
  env "$MARKER" setsid "$BIN" -host 127.0.0.1 -port "$TOXIPROXY_PORT" >> "$LOGFILE" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 15))
  while [ $SECONDS -lt $deadline ]; do
    started_alive "$PIDFILE" || { tail -n 20 "$LOGFILE" >&2 || true; die "$NAME exited during start (log: $LOGFILE)"; }
    if port_open "$TOXIPROXY_PORT" && "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$TOXIPROXY_PORT/version', timeout=2)" 2>/dev/null; then
      log "$NAME: ready in $((SECONDS - t0)) s (pid $(cat "$PIDFILE"), log $LOGFILE)"
      return 0
    fi
    sleep 0.1
  done
  die "$NAME did not answer within 15 s (log: $LOGFILE)"
}

service_main "$@"
