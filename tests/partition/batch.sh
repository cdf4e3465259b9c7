#!/bin/bash
# usage: batch.sh NODES SEED...   runs each seed, then the checker; one line per
# seed in target/partition-runs/summary.txt. EXTRA and DURATION pass options on;
# TAG prefixes the run dirs' names (so that runs of several modes can share seeds).
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNS="$HERE/../../target/partition-runs"
mkdir -p "$RUNS"
n=$1; shift
for s in "$@"; do
  name="${TAG:-}n$n-s$s"
  # shellcheck disable=SC2086
  "$HERE/run.sh" --seed "$s" --nodes "$n" --duration "${DURATION:-90}" --rundir "$RUNS/$name" ${EXTRA:-} >"$RUNS/log-$name.txt" 2>&1
  python3 "$HERE/check.py" "$RUNS/$name" >"$RUNS/check-$name.txt" 2>&1
  echo "$name check_rc=$? $(tail -1 "$RUNS/check-$name.txt")" >>"$RUNS/summary.txt"
done
