#!/usr/bin/env bash
# Usage: LAB=NAME [OUT=DIR] [TRIALS="A1 B1 B2 A2"] nice -n 10 bench/bench_pair_abba.sh
# (docs/conformance.md, "Pairs: two light entries at once"). Prints per trial the
# switches' and phases' seconds and `uptime`; results JSON per trial under OUT.
# ABBA: unpaired vxlan+udp phases (A: two whole-lab switches, two phases dealt 1/2 2/2)
# against the pair (B: one per-cluster switch, c1 vxlan and c2 udp each --deal 1/1), both
# from host-gw, with the command lines scripts/conformance.sh builds (lockstep branch).
set -uo pipefail
cd "$(dirname "$0")/.."
LAB=${LAB:?LAB=NAME of a deployed two-cluster lab} PODLAB=.venv/bin/podlab
LAB_DIR=$(.venv/bin/python -c "from harness.lab.state import find; print(find('$LAB').root)")
OUT=${OUT:-/tmp/bench-pair}; mkdir -p "$OUT"
lock=(--quiet-lock "$LAB_DIR/quiet.lock")
now() { date +%s.%N; }
el() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
rc=0
switch() {  # $1 mode arg
  $PODLAB deploy "$LAB" --switch --mode "$1" --encryption none --quiet > "$OUT/deploy.log" 2>&1 || { echo "switch $1 failed"; tail -5 "$OUT/deploy.log"; rc=1; }
}
phase() {  # $1 results dir; then per cluster: "c entry share..."
  local res=$1; shift; local pids=()
  for spec in "$@"; do
    read -r c e share <<<"$spec"
    $PODLAB test --lab "$LAB" --matrix default --results "$res" --entry "$e" --scope cluster --cluster "$c" $share \
      --ssh-keep "$c" "${lock[@]}" -q > "$res/$c-$e.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "a run failed (rc $?)"; rc=1; }; done
}
A() {
  local res=$OUT/$1; mkdir -p "$res"; local t0 t; t0=$(now)
  t=$(now); switch vxlan; echo "  A switch vxlan $(el $t)"
  t=$(now); phase "$res" "c1 vxlan --deal 1/2 --lab-decisions" "c2 vxlan --deal 2/2"; echo "  A phase vxlan $(el $t)"
  t=$(now); switch udp; echo "  A switch udp $(el $t)"
  t=$(now); phase "$res" "c1 udp --deal 1/2 --lab-decisions" "c2 udp --deal 2/2"; echo "  A phase udp $(el $t)"
  echo "A $1 total $(el $t0) s; $(uptime)"
}
B() {
  local res=$OUT/$1; mkdir -p "$res"; local t0 t; t0=$(now)
  t=$(now); switch c1=vxlan,c2=udp; echo "  B switch c1=vxlan,c2=udp $(el $t)"
  t=$(now); phase "$res" "c1 vxlan --deal 1/1 --lab-decisions" "c2 udp --deal 1/1 --lab-decisions"; echo "  B phase pair $(el $t)"
  echo "B $1 total $(el $t0) s; $(uptime)"
}
for trial in ${TRIALS:-A1 B1 B2 A2}; do
  switch host-gw  # the state both start from (the phase before them in the run), untimed
  echo "$trial start: $(uptime)"
  ${trial:0:1} "$trial"
done
.venv/bin/python -m harness.conformance.remote close-kept "$LAB_DIR"
exit $rc
