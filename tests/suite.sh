#!/usr/bin/env bash
# The whole suite as `make test` runs it (inside infra/local/services.sh run), in two pytest
# processes side by side, of about equal length:
#   - tests/reliability but elasticity: faults, the nemesis, the query service, security, the
#     lake on S3;
#   - tests/cluster (the scale-out cluster of infra/local/cluster.sh, its own ports), then
#     tests/integration, the elasticity tests of tests/reliability, tests/simulation and tests/unit.
# Most of the time of either is spent waiting on services (restarts, rebalances, failovers), so
# together they take about the time of the longer. The first part's output comes first, then
# the second's; the exit status is the first failure's. With arguments (a selection: paths, -k,
# -m) one pytest process runs them. pytest's exit 5 (nothing collected) counts as success.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"

ok() { local rc="$1"; [ "$rc" -eq 5 ] && rc=0; echo "$rc"; }

if [ "$#" -gt 0 ]; then
  "$PY" -m pytest "$@"
  exit "$(ok $?)"
fi

log="$(mktemp "${TMPDIR:-/tmp}/embedworker-tests.XXXXXX")"
"$PY" -m pytest -p no:cacheprovider tests/cluster tests/integration tests/reliability/test_elastic.py tests/simulation \
    tests/unit >"$log" 2>&1 &
second=$!
"$PY" -m pytest -p no:cacheprovider tests/reliability --ignore=tests/reliability/test_elastic.py
first_rc="$(ok $?)"
wait "$second"
second_rc="$(ok $?)"
echo
echo "========== tests/cluster, integration, reliability/test_elastic.py, simulation, unit (run beside the above) =========="
cat "$log"
rm -f "$log"
[ "$first_rc" -ne 0 ] && exit "$first_rc"
exit "$second_rc"
