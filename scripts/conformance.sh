#!/usr/bin/env bash
# make conformance: bring up a lab, deploy it, run the conformance suites, write
# the report, and tear the lab down (unless KEEP=1), whatever happens in between.
set -uo pipefail
cd "$(dirname "$0")/.."
TOPO=${1:-topologies/single-cluster.clab.yml}
MODES=${2:-}
KEEP=${3:-0}
PODLAB=.venv/bin/podlab
LAB=$(sed -n 's/^name: *//p' "$TOPO" | head -n1)
RUN="$(date -u +%Y%m%dT%H%M%SZ)-$LAB"
RESULTS=reports/results/$RUN
mkdir -p "$RESULTS"

step() { printf '\n==> %s\n' "$*"; }
teardown() {
  if [ "$KEEP" = "1" ]; then
    echo "conformance: KEEP=1, lab $LAB left up (podlab down $LAB removes it)"
  else
    step "tearing down $LAB"
    $PODLAB down "$LAB" || true
  fi
}
trap teardown EXIT

step "bringing up $LAB from $TOPO"
$PODLAB up "$TOPO" || exit 1
step "deploying $LAB"
$PODLAB deploy "$LAB" || exit 1
mode_args=()
for m in $MODES; do mode_args+=(--mode "$m"); done
step "running the conformance suites on $LAB ${MODES:+(modes: $MODES)}"
$PODLAB test --lab "$LAB" "${mode_args[@]}" --results "$RESULTS"
rc=$?
step "writing the report"
$PODLAB report "$RESULTS"/*.json -o "reports/$RUN.html" || rc=1
echo "conformance: report at reports/$RUN.html, results in $RESULTS (suites exit $rc)"
exit $rc
