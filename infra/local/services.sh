#!/usr/bin/env bash
# Both local services at once.
#   infra/local/services.sh up|down|status
#   infra/local/services.sh run CMD...   start what is not running, run CMD, stop only what this call started
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$REPO_DIR/infra/local"

case "${1:-}" in
  up) "$HERE/kafka.sh" start; "$HERE/redis.sh" start ;;
  down) "$HERE/redis.sh" stop; "$HERE/kafka.sh" stop ;;
  status) rc=0; "$HERE/kafka.sh" status || rc=$?; "$HERE/redis.sh" status || rc=$?; exit $rc ;;
  run)
    shift
    started=()
    "$HERE/kafka.sh" status >/dev/null 2>&1 || started+=(kafka)
    "$HERE/redis.sh" status >/dev/null 2>&1 || started+=(redis)
    cleanup() { for s in "${started[@]}"; do "$HERE/$s.sh" stop || true; done; }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    for s in "${started[@]}"; do "$HERE/$s.sh" start; done
    set +e
    "$@"
    rc=$?
    set -e
    exit $rc
    ;;
  *) echo "usage: $0 up|down|status|run CMD..." >&2; exit 2 ;;
esac
