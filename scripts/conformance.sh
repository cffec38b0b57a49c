#!/usr/bin/env bash
# make conformance: bring up a lab, deploy it, run the conformance suites over a
# mode matrix, tear the lab down (unless KEEP=1) and check nothing was left
# behind, then write the report — whatever happens in between.
#
#   scripts/conformance.sh [TOPO] [MODES] [KEEP] [MATRIX] [PARALLEL] [BACKEND]
#
# BACKEND=vm boots every node as a qemu guest (podlab up --backend vm): the
# default topology is then topologies/vm-lab.clab.yml (two guests, proxy ipvs)
# and the default modes are what only a real kernel can show: kernel IPIP,
# kernel WireGuard over host-gw and over BGP, with the ipvs proxy throughout.
# Under emulation (no usable KVM) the results and the report say so.
#
# MATRIX: "default" (every mode the agent implements plus WireGuard once per pod
# interface family; light checks in every entry, heavy ones once per mode family)
# or "full" (every mode with and without WireGuard, every check in every entry).
# MODES (space-separated, MODE or MODE+wireguard) replaces the matrix's entries,
# keeping its selection policy. The plan — entries, their families, where the
# heavy checks run — is printed before anything starts (docs/conformance.md).
#
# PARALLEL: "auto" (default), in a lab of several clusters. Clusters in one mesh
# run in LOCKSTEP: every matrix entry is a phase (in the cheapest switch order);
# per phase one whole-lab switch, then at once one `podlab test` per cluster on
# its share of the entry's in-cluster checks (dealt by measured seconds) and one
# for the entry's mesh checks, then a barrier; in a lab of two clusters two light
# entries may share a phase, one per cluster (a pair: one per-cluster switch, then
# each cluster runs all of its own entry's checks)
# (docs/adr/0018-mesh-in-the-default-run.md). Clusters in no common mesh: one
# `podlab test` per cluster at once, each on its share of the matrix
# (docs/adr/0010-per-cluster-conformance-runs.md). Either way runs take turns on
# a lock for the quiet checks. "0" runs the whole matrix in one run.
set -uo pipefail
cd "$(dirname "$0")/.."
BACKEND=${6:-netns}
if [ "$BACKEND" = vm ]; then
  TOPO=${1:-topologies/vm-lab.clab.yml}
  MODES=${2:-"ipip host-gw+wireguard bgp+wireguard"}
else
  TOPO=${1:-topologies/two-clusters.clab.yml}
  MODES=${2:-}
fi
KEEP=${3:-0}
MATRIX=${4:-default}
PARALLEL=${5:-auto}
PODLAB=.venv/bin/podlab
# Bytecode: with PYTHONDONTWRITEBYTECODE set (as in the shells of this machine's runs),
# every Python process of the run (a lockstep two-clusters run: 27 pytest runs, 9
# deploys, a few helpers) compiled podlab's modules again and pytest re-did its
# assertion rewriting: about 4 s of CPU per pytest run. The run keeps its bytecode
# under .podlab/pycache instead (never in the tree; Python checks it against each
# source's mtime). docs/conformance.md, "Where the time goes".
if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then
  unset PYTHONDONTWRITEBYTECODE
  export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$PWD/.podlab/pycache}
fi
PYTHON=.venv/bin/python
LAB=$(sed -n 's/^name: *//p' "$TOPO" | head -n1)
RUN="$(date -u +%Y%m%dT%H%M%SZ)-$LAB"
RESULTS=reports/results/$RUN
REPORT=reports/$RUN.html
mkdir -p "$RESULTS"
T0=$SECONDS

step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }
now() { date +%s.%N; }
since() { $PYTHON -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

mode_args=()
for m in $MODES; do mode_args+=(--mode "$m"); done
# The plan first: a bad MATRIX or MODES stops here, before anything is built.
if ! $PYTHON -m harness.conformance.matrix --matrix "$MATRIX" "${mode_args[@]}" --topology "$TOPO"; then
  exit 2
fi
read -r -a entries <<<"$($PYTHON -m harness.conformance.matrix --matrix "$MATRIX" "${mode_args[@]}" --entries)"
LAST_MODE=${entries[$((${#entries[@]} - 1))]}
first=${entries[0]%%+*}
enc=none; [[ ${entries[0]} == *+* ]] && enc=${entries[0]#*+}
read -r -a clusters <<<"$($PYTHON -c '
import sys
from harness.plan.build import load_plan
print(*load_plan(sys.argv[1]).clusters)' "$TOPO" 2>/dev/null)"
LOCKSTEP=$($PYTHON -c '
import sys
from harness.conformance.catalogue import LabShape
from harness.conformance.matrix import lockstep
from harness.plan.build import load_plan
print(int(lockstep(LabShape.of(load_plan(sys.argv[1])))))' "$TOPO" 2>/dev/null || echo 0)
if [ "$PARALLEL" != "0" ] && [ "$LOCKSTEP" = "1" ]; then
  # a phase: ENTRY (the whole lab in it), or a pair CLUSTER=ENTRY,CLUSTER=ENTRY (two light
  # entries, one per cluster, each running all of its entry's checks: matrix.Phase)
  read -r -a phases <<<"$($PYTHON -m harness.conformance.matrix --matrix "$MATRIX" "${mode_args[@]}" --entries --phases --topology "$TOPO")"
  # per phase 1 if a whole-lab (mesh) scenario runs in it, else 0: no mesh run is started
  read -r -a meshes <<<"$($PYTHON -m harness.conformance.matrix --matrix "$MATRIX" "${mode_args[@]}" --entries --phases --mesh --topology "$TOPO")"
  LAST_MODE=${phases[$((${#phases[@]} - 1))]}
  # the phases after whose whole-lab switch scenario 23 is measured (under flows)
  read -r -a flows_after <<<"$($PYTHON -m harness.conformance.matrix --matrix "$MATRIX" "${mode_args[@]}" --topology "$TOPO" --switch-flows)"
fi

LAB_DIR=""
timings=()
# Ctrl-C, SIGTERM or SIGHUP: stop the running `podlab test`s (SIGTERM unwinds them
# like Ctrl-C: fixtures torn down, results written), run no further phase, then tear
# down, check hygiene and write the report as after a failure; exit 128+N.
# Every podlab runs in the background with `run_bg` so a trap is never held up
# behind a foreground child (bash runs traps only between commands).
interrupted=0
pids=()
on_signal() {
  [ "$interrupted" = 0 ] || return
  interrupted=$1
  echo "conformance: interrupted by SIG$(kill -l "$1"): stopping the runs, then tearing down" >&2
  [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
}
for s in INT TERM HUP; do trap "on_signal $(kill -l "$s")" "$s"; done
# wait for one background pid, past the traps that interrupt `wait`; its status
wait_pid() {
  local r
  while :; do
    wait "$1"; r=$?
    if [ "$r" -gt 128 ] && kill -0 "$1" 2>/dev/null; then continue; fi
    return "$r"
  done
}
# run a command in the background, register it for on_signal, wait for it
run_bg() {
  "$@" &
  pids=($!)
  [ "$interrupted" = 0 ] || kill -TERM "$!" 2>/dev/null
  wait_pid "$!"
}
# Lockstep: each role (a cluster's share, the mesh) keeps its ssh masters from phase
# to phase (podlab test --ssh-keep ROLE); they are stopped here, before the lab goes
# down or is kept, whatever ended the run (remote.close_kept).
close_kept() {
  if [ -n "$LAB_DIR" ] && [ "${KEPT:-0}" = 1 ]; then
    $PYTHON -m harness.conformance.remote close-kept "$LAB_DIR" || rc=1
  fi
}
teardown() {
  close_kept
  if [ "$KEEP" = "1" ]; then
    echo "conformance: KEEP=1, lab $LAB left up (podlab down $LAB removes it)"
    return
  fi
  step "tearing down $LAB"
  local t; t=$(now)
  pids=()  # a signal now must not stop the teardown itself
  $PODLAB down "$LAB" &
  wait_pid "$!" || true
  timings+=("tear down=$(since "$t")")
  if [ -n "$LAB_DIR" ]; then
    $PYTHON -m harness.conformance.hygiene "$LAB" "$LAB_DIR" "$RESULTS" "$LAST_MODE" \
      "${timings[@]}" || rc=1
  fi
}

rc=0
step "bringing up $LAB from $TOPO ($BACKEND backend)"
t=$(now)
if ! run_bg $PODLAB up "$TOPO" --backend "$BACKEND" || [ "$interrupted" != 0 ]; then
  # a failed or interrupted up rolls back what it built; a refused one (the lab
  # is someone else's, or up from another file) must not be taken down by us
  [ "$interrupted" = 0 ] || exit $((128 + interrupted))
  exit 1
fi
timings+=("lab up=$(since "$t")")
LAB_DIR=$($PYTHON -c "from harness.lab.state import find; print(find('$LAB').root)")
step "deploying $LAB (mode ${entries[0]})"
t=$(now)
if ! run_bg $PODLAB deploy "$LAB" --mode "$first" --encryption "$enc" || [ "$interrupted" != 0 ]; then
  teardown
  [ "$interrupted" = 0 ] || exit $((128 + interrupted))
  exit 1
fi
timings+=("first deploy=$(since "$t")")
common=(--lab "$LAB" --matrix "$MATRIX" "${mode_args[@]}" --results "$RESULTS")
[ "${THOROUGH:-0}" = "1" ] && common+=(--thorough)
# the interleaved mode / hand-built / underlay throughput rounds (docs/throughput.md)
[ -n "${TPUT_ROUNDS:-}" ] && common+=(--tput-rounds "$TPUT_ROUNDS")
[ -n "${TPUT_SECONDS:-}" ] && common+=(--tput-seconds "$TPUT_SECONDS")
if [ "$PARALLEL" != "0" ] && [ "$LOCKSTEP" = "1" ]; then
  n=${#clusters[@]}
  lock=(--quiet-lock "$LAB_DIR/quiet.lock")
  flows_pid=""
  for i in "${!phases[@]}"; do
    e=${phases[$i]}
    [ "$interrupted" = 0 ] || { rc=1; break; }
    if [ "$i" -gt 0 ]; then
      step "phase $((i + 1))/${#phases[@]}: switching the whole lab $LAB to $e"
      t=$(now)
      enc=none; [[ $e == *+* ]] && enc=${e#*+}; enc=${enc%%,*}
      # the deploy's --mode: MODE, or a pair's CLUSTER=MODE,… (its entries, without +ENC)
      mode=$(sed 's/+[a-z]*//g' <<<"$e")
      prev=${phases[$((i - 1))]}
      if [[ " ${flows_after[*]:-} " == *" $prev "* ]]; then
        # scenario 23 at this switch: flows in every cluster across it
        # (harness/conformance/switchflows.py). Once the switch is made and the agents
        # are ready it creates $ready and, holding the quiet lock shared (no quiet check
        # beside), lets its flows settle and judges them while this phase starts; the
        # phase's barrier waits for it too (1: a check failed). Gone without $ready:
        # the switch failed (3) or was interrupted, and no phase is left to run.
        ready="$LAB_DIR/switchflows.ready"
        rm -f "$ready"
        $PYTHON -m harness.conformance.switchflows --lab "$LAB" --results "$RESULTS" \
          --from "$prev" --to "$e" --ready-file "$ready" "${lock[@]}" &
        flows_pid=$!
        pids=("$flows_pid")
        [ "$interrupted" = 0 ] || kill -TERM "$flows_pid" 2>/dev/null
        while [ ! -e "$ready" ] && kill -0 "$flows_pid" 2>/dev/null; do sleep 0.1; done
        if [ ! -e "$ready" ] || [ "$interrupted" != 0 ]; then
          wait_pid "$flows_pid"
          echo "conformance: the deploy of $e failed; the phases left are not run" >&2
          rc=1
          break
        fi
      # a node that runs other sources than the tree (edited since the first deploy)
      # refuses a switch: then the full deploy, as the plugin does (labctl.deploy)
      elif ! run_bg $PODLAB deploy "$LAB" --switch --mode "$mode" --encryption "$enc" --quiet &&
        { [ "$interrupted" != 0 ] ||
          ! run_bg $PODLAB deploy "$LAB" --mode "$mode" --encryption "$enc" --quiet; }; then
        echo "conformance: the deploy of $e failed; the phases left are not run" >&2
        rc=1
        break
      fi
      timings+=("switch $e=$(since "$t")")
    fi
    if [[ $e == *=* ]]; then
      step "phase $((i + 1))/${#phases[@]}: $e — a pair: each cluster all of its own entry's checks"
    else
      step "phase $((i + 1))/${#phases[@]}: $e — in-cluster checks dealt between ${clusters[*]}, mesh checks beside them"
    fi
    t=$(now)
    pids=()
    KEPT=1
    # a phase whose mesh run would only record its scenarios as not selected / not
    # applicable starts none: the first cluster's run records them (--lab-decisions)
    idle=(); [ "${meshes[$i]:-1}" = 0 ] && idle=(--lab-decisions)
    # scenario 23's flows, still settling beside this phase: its barrier waits for them
    [ -z "$flows_pid" ] || pids+=("$flows_pid")
    flows_pid=""
    for k in $(seq 1 "$n"); do
      c=${clusters[$((k - 1))]}
      if [[ $e == *=* ]]; then
        # a pair: this cluster's own entry, all of its checks, and its entry's whole-lab
        # decisions (a pair's entries start no mesh run)
        ce=$(tr ',' '\n' <<<"$e" | sed -n "s/^$c=//p")
        share=(--deal 1/1 --lab-decisions)
      else
        ce=$e
        share=(--deal "$k/$n")
        [ "$k" = 1 ] && share+=("${idle[@]}")
      fi
      # each line prefixed with its cluster; $! is podlab's own pid (its status counts)
      $PODLAB test "${common[@]}" --entry "$ce" --scope cluster --cluster "$c" "${share[@]}" \
        --ssh-keep "$c" "${lock[@]}" -q > >(sed -u "s/^/[$c $ce] /") 2>&1 &
      pids+=($!)
    done
    if [ "${meshes[$i]:-1}" != 0 ]; then
      $PODLAB test "${common[@]}" --entry "$e" --scope lab --ssh-keep mesh "${lock[@]}" -q \
        > >(sed -u "s/^/[mesh $e] /") 2>&1 &
      pids+=($!)
    fi
    # a signal between the phase's check and its starts: stop what it missed
    [ "$interrupted" = 0 ] || kill -TERM "${pids[@]}" 2>/dev/null
    # the barrier: the next switch waits for every run of this phase (5: nothing ran)
    for p in "${pids[@]}"; do wait_pid "$p" || { r=$?; [ "$r" -eq 5 ] || rc=1; }; done
    timings+=("phase $e=$(since "$t")")
  done
elif [ "$PARALLEL" != "0" ] && [ "${#clusters[@]}" -ge 2 ]; then
  n=${#clusters[@]}
  # The whole-lab phase (the mesh scenarios) first: the first deploy left every
  # cluster in its first entry, so it costs no deploy, and it leaves them all in its
  # last entry, which the part holding that entry starts with (a run begins with the
  # mode its clusters already run). docs/adr/0018-mesh-in-the-default-run.md
  step "running the scenarios that need the whole lab (the mesh) on $LAB"
  t=$(now)
  run_bg $PODLAB test "${common[@]}" --scope lab || { r=$?; [ "$r" -eq 5 ] || rc=$r; }
  timings+=("mesh phase=$(since "$t")")
  step "running the conformance suites on $LAB: one run per cluster (${clusters[*]}), at once"
  t=$(now)
  pids=()
  for k in $(seq 1 "$n"); do
    [ "$interrupted" = 0 ] || break
    c=${clusters[$((k - 1))]}
    # each line prefixed with its cluster; $! is podlab's own pid (its status counts)
    $PODLAB test "${common[@]}" --scope cluster --cluster "$c" --part "$k/$n" \
      --quiet-lock "$LAB_DIR/quiet.lock" -q > >(sed -u "s/^/[$c] /") 2>&1 &
    pids+=($!)
  done
  [ "$interrupted" = 0 ] || kill -TERM "${pids[@]}" 2>/dev/null
  for p in "${pids[@]}"; do wait_pid "$p" || rc=1; done
  timings+=("cluster phase=$(since "$t")")
else
  step "running the conformance suites on $LAB (matrix $MATRIX: ${entries[*]})"
  run_bg $PODLAB test "${common[@]}" || rc=$?
fi
teardown
step "writing the report"
$PODLAB report "$RESULTS"/*.json -o "$REPORT" || rc=1
[ "$interrupted" = 0 ] || rc=$((128 + interrupted))
step "done in $((SECONDS - T0)) s: report $REPORT, results and JUnit XML in $RESULTS (exit $rc)"
exit $rc
