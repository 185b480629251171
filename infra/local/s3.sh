#!/usr/bin/env bash
# An S3-compatible server for the lake on object storage, without Docker: s3proxy (Apache-2.0,
# org.gaul:s3proxy from Maven Central, one jar on the machine's Java 17) with its filesystem
# backend, so objects are plain files under RUN_DIR. It implements the conditional writes delta-rs
# commits with (a second `PUT If-None-Match: *` of a key answers 412), checked at every start.
#   infra/local/s3.sh install|start|stop|status|restart
# Settings (environment): S3_PORT (9300), S3_BUCKET (embedworker: made at start), S3_ACCESS_KEY /
#   S3_SECRET_KEY (local development credentials), S3_HEAP (128m).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

S3PROXY_VERSION="4.1.0"
S3_PORT="${S3_PORT:-9300}"
S3_BUCKET="${S3_BUCKET:-embedworker}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-embedworker}"
S3_SECRET_KEY="${S3_SECRET_KEY:-embedworker-local-dev}"
S3_HEAP="${S3_HEAP:-128m}"
JAR_DIR="$CACHE_DIR/s3proxy-$S3PROXY_VERSION"
JAR="$JAR_DIR/s3proxy-$S3PROXY_VERSION-jar-with-dependencies.jar"
INST_DIR="$RUN_DIR/s3-$S3_PORT"
PIDFILE="$INST_DIR/s3proxy.pid"
LOGFILE="$INST_DIR/s3proxy.log"
NAME="s3proxy $S3PROXY_VERSION on :$S3_PORT"
MARKER="EMBEDWORKER_SERVICE=s3:$INST_DIR"

install() {
  if [ -f "$JAR" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch org.gaul:s3proxy:$S3PROXY_VERSION"
  log "fetching org.gaul:s3proxy:$S3PROXY_VERSION into $JAR_DIR"
  mkdir -p "$JAR_DIR"
  mvn -q -B dependency:copy -Dartifact="org.gaul:s3proxy:$S3PROXY_VERSION:jar:jar-with-dependencies" \
      -DoutputDirectory="$JAR_DIR" >&2 || die "Maven could not fetch s3proxy $S3PROXY_VERSION (see above)"
  [ -f "$JAR" ] || die "s3proxy jar missing in $JAR_DIR"
}

start() {
  if pid_alive "$PIDFILE" "$MARKER"; then log "$NAME: already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if port_open "$S3_PORT"; then die "port $S3_PORT is taken by a process these scripts did not start"; fi
  install
  mkdir -p "$INST_DIR/data/$S3_BUCKET"  # the filesystem backend: a bucket is a folder
  cat > "$INST_DIR/s3proxy.conf" <<CONF
s3proxy.endpoint=http://127.0.0.1:$S3_PORT
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$S3_ACCESS_KEY
s3proxy.credential=$S3_SECRET_KEY
jclouds.provider=filesystem-nio2
jclouds.filesystem.basedir=$INST_DIR/data
CONF
  chmod 600 "$INST_DIR/s3proxy.conf"
  local t0=$SECONDS
  env "$MARKER" setsid "$(java_bin)" -Xmx"$S3_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -jar "$JAR" --properties "$INST_DIR/s3proxy.conf" >> "$LOGFILE" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    started_alive "$PIDFILE" || { tail -n 30 "$LOGFILE" >&2 || true; die "$NAME exited during start (log: $LOGFILE)"; }
    if port_open "$S3_PORT" && S3_ACCESS_KEY="$S3_ACCESS_KEY" S3_SECRET_KEY="$S3_SECRET_KEY" \
        "$PYTHON" "$REPO_DIR/infra/local/check_services.py" s3 "http://127.0.0.1:$S3_PORT" "$S3_BUCKET" >/dev/null 2>&1; then
      log "$NAME: ready in $((SECONDS - t0)) s, bucket $S3_BUCKET, conditional writes work (pid $(cat "$PIDFILE"), data $INST_DIR/data)"
      return 0
    fi
    sleep 0.3
  done
  "$PYTHON" "$REPO_DIR/infra/local/check_services.py" s3 "http://127.0.0.1:$S3_PORT" "$S3_BUCKET" >&2 || true
  die "$NAME did not answer, or refused conditional writes, within 60 s (log: $LOGFILE)"
}

service_main "$@"
