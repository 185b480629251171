# Shared settings for the local service scripts (sourced, not run).
# Everything these scripts create lives under RUN_DIR (git-ignored) and CACHE_DIR (outside git).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${EMBEDWORKER_RUN_DIR:-$REPO_DIR/.run}"
CACHE_DIR="${EMBEDWORKER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/embedworker}"
PYTHON="${EMBEDWORKER_PYTHON:-$REPO_DIR/.venv/bin/python}"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# pid_alive PIDFILE MARKER: true when the pid in PIDFILE is a live process whose command line or
# environment holds MARKER (a path of ours), so a recycled pid that now belongs to another program is
# never mistaken for ours.
pid_alive() {
  local pidfile="$1" marker="$2" pid state
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)"
  [ "$state" != "Z" ] || return 1
  { tr '\0' '\n' < "/proc/$pid/cmdline"; tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -F -- "$marker" >/dev/null \
    && return 0
  # redis-server rewrites its title over argv and environ, cutting a deep checkout's config path
  # (the marker) short: there the marker is the config file and the server's cwd is its folder.
  [ "${marker#/}" != "$marker" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(dirname "$marker")" ]
}

# stop_pid PIDFILE MARKER NAME: SIGTERM, wait up to 30 s, then SIGKILL; only the pid we started.
stop_pid() {
  local pidfile="$1" marker="$2" name="$3" pid i
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"; log "$name: not running"; return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    pid_alive "$pidfile" "$marker" || break
    sleep 0.1
  done
  if pid_alive "$pidfile" "$marker"; then
    log "$name: still running after 30 s, sending SIGKILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
  log "$name: stopped (pid $pid)"
}

# started_alive PIDFILE: during a start, whether the child just forked is still there (its command
# line holds the marker only once it has exec'd the service, so pid_alive can miss it that early).
started_alive() { kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

require_python() {
  [ -x "$PYTHON" ] || die "$PYTHON not found: run 'make install' first (or set EMBEDWORKER_PYTHON)"
}

java_bin() { if [ -n "${JAVA_HOME:-}" ]; then echo "$JAVA_HOME/bin/java"; else echo java; fi; }

# service_main VERB: the verbs of a service script (kafka.sh, s3.sh) that defines install() and
# start() and sets PIDFILE, MARKER and NAME.
service_main() {
  case "${1:-}" in
    install) install ;;
    start) require_python; start ;;
    stop) stop_pid "$PIDFILE" "$MARKER" "$NAME" ;;
    restart) stop_pid "$PIDFILE" "$MARKER" "$NAME"; require_python; start ;;
    status)
      if pid_alive "$PIDFILE" "$MARKER"; then echo "$NAME: running (pid $(cat "$PIDFILE"))"; else echo "$NAME: stopped"; return 3; fi ;;
    *) echo "usage: $0 install|start|stop|restart|status" >&2; exit 2 ;;
  esac
}
