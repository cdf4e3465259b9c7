#!/bin/bash
# usage: batch.sh NODES SEED...   runs each seed, then the checker; one line per
# seed in target/partition-runs/summary.txt. EXTRA and DURATION pass options on.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNS="$HERE/../../target/partition-runs"
mkdir -p "$RUNS"
n=$1; shift
for s in "$@"; do
  # shellcheck disable=SC2086
  "$HERE/run.sh" --seed "$s" --nodes "$n" --duration "${DURATION:-90}" ${EXTRA:-} >"$RUNS/log-n$n-s$s.txt" 2>&1
  python3 "$HERE/check.py" "$RUNS/n$n-s$s" >"$RUNS/check-n$n-s$s.txt" 2>&1
  echo "n=$n seed=$s check_rc=$? $(tail -1 "$RUNS/check-n$n-s$s.txt")" >>"$RUNS/summary.txt"
done
