#!/usr/bin/env bash
# The local services at once: Kafka, Redis and the S3-compatible server of the lake on object storage.
#   infra/local/services.sh up|down|status
#   infra/local/services.sh run CMD...   start what is not running, run CMD, stop only what this call started
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$REPO_DIR/infra/local"

case "${1:-}" in
  up) "$HERE/kafka.sh" start; "$HERE/redis.sh" start; "$HERE/s3.sh" start ;;
  down) "$HERE/s3.sh" stop; "$HERE/redis.sh" stop; "$HERE/kafka.sh" stop ;;
  status) rc=0; for s in kafka redis s3; do "$HERE/$s.sh" status || rc=$?; done; exit $rc ;;
  run)
    shift
    started=()
    "$HERE/kafka.sh" status >/dev/null 2>&1 || started+=(kafka)
    "$HERE/redis.sh" status >/dev/null 2>&1 || started+=(redis)
    "$HERE/s3.sh" status >/dev/null 2>&1 || started+=(s3)
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
