#!/usr/bin/env bash
# make conformance: bring up a lab, deploy it, run the conformance suites over a
# mode matrix, tear the lab down (unless KEEP=1) and check nothing was left
# behind, then write the report — whatever happens in between.
#
#   scripts/conformance.sh [TOPO] [MODES] [KEEP] [BACKEND]
#
# BACKEND=vm boots every node as a qemu guest (podlab up --backend vm): the
# default topology is then topologies/vm-lab.clab.yml (two guests, proxy ipvs)
# and the default modes are what only a real kernel can show: kernel IPIP,
# kernel WireGuard over host-gw and over BGP, with the ipvs proxy throughout.
# Under emulation (no usable KVM) the results and the report say so.
#
# MODES is a space-separated list (MODE or MODE+wireguard); empty means every
# mode this podlab's agent implements, plus host-gw+wireguard and vxlan+wireguard.
# The lab is deployed with the first mode and re-deployed by `podlab test` for
# each next one (that switch is itself measured: scenario 23). The heavy checks
# (50-pod SLO, node leave/join, faults, mode switch, 4-stream throughput) run for
# the first mode only; THOROUGH=1 (`--thorough`) runs them for every mode.
set -uo pipefail
cd "$(dirname "$0")/.."
BACKEND=${4:-netns}
if [ "$BACKEND" = vm ]; then
  TOPO=${1:-topologies/vm-lab.clab.yml}
  MODES=${2:-"ipip host-gw+wireguard bgp+wireguard"}
else
  TOPO=${1:-topologies/single-cluster.clab.yml}
  MODES=${2:-}
fi
KEEP=${3:-0}
PODLAB=.venv/bin/podlab
PYTHON=.venv/bin/python
LAB=$(sed -n 's/^name: *//p' "$TOPO" | head -n1)
RUN="$(date -u +%Y%m%dT%H%M%SZ)-$LAB"
RESULTS=reports/results/$RUN
REPORT=reports/$RUN.html
mkdir -p "$RESULTS"
T0=$SECONDS

step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }

if [ -z "$MODES" ]; then
  # The agent's own table of datapaths: what this podlab can test on any kernel
  # (modes needing a missing kernel module use their userspace fallback).
  MODES=$($PYTHON -c 'from harness.agent.datapath.registry import DATAPATHS; print(*DATAPATHS)' \
    2>/dev/null || echo vxlan)
  # WireGuard layered on one Flannel-style and one routed mode (wireguard-go where
  # the kernel has no module): the leak and strict-mode checks need it on.
  MODES="$MODES host-gw+wireguard vxlan+wireguard"
fi
read -r -a modes <<<"$MODES"
LAST_MODE=${modes[$((${#modes[@]} - 1))]}
mode_args=()
for m in "${modes[@]}"; do mode_args+=(--mode "$m"); done
first=${modes[0]%%+*}
enc=none; [[ ${modes[0]} == *+* ]] && enc=${modes[0]#*+}

LAB_DIR=""
teardown() {
  if [ "$KEEP" = "1" ]; then
    echo "conformance: KEEP=1, lab $LAB left up (podlab down $LAB removes it)"
    return
  fi
  step "tearing down $LAB"
  $PODLAB down "$LAB" || true
  if [ -n "$LAB_DIR" ]; then
    $PYTHON -m harness.conformance.hygiene "$LAB" "$LAB_DIR" "$RESULTS" "$LAST_MODE" || rc=1
  fi
}

rc=0
step "bringing up $LAB from $TOPO ($BACKEND backend)"
if ! $PODLAB up "$TOPO" --backend "$BACKEND"; then
  # a failed up rolls back what it built; a refused one (the lab is someone
  # else's, or up from another file) must not be taken down by us
  exit 1
fi
LAB_DIR=$($PYTHON -c "from harness.lab.state import find; print(find('$LAB').root)")
step "deploying $LAB (mode ${modes[0]})"
if ! $PODLAB deploy "$LAB" --mode "$first" --encryption "$enc"; then
  teardown
  exit 1
fi
step "running the conformance suites on $LAB (modes: ${modes[*]})"
extra=()
[ "${THOROUGH:-0}" = "1" ] && extra+=(--thorough)
# the interleaved mode / hand-built / underlay throughput rounds (docs/throughput.md)
[ -n "${TPUT_ROUNDS:-}" ] && extra+=(--tput-rounds "$TPUT_ROUNDS")
[ -n "${TPUT_SECONDS:-}" ] && extra+=(--tput-seconds "$TPUT_SECONDS")
$PODLAB test --lab "$LAB" "${mode_args[@]}" "${extra[@]}" --results "$RESULTS" || rc=$?
teardown
step "writing the report"
$PODLAB report "$RESULTS"/*.json -o "$REPORT" || rc=1
step "done in $((SECONDS - T0)) s: report $REPORT, results and JUnit XML in $RESULTS (exit $rc)"
exit $rc
