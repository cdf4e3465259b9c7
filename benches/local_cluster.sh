# Sourced by the benchmark scripts: starting a local cluster for a benchmark,
# stopping it, and printing a run's result.
#
# start_local_cluster BINARY WORKDIR [NODES [FLAGS...]]: starts
# `BINARY --local-cluster NODES FLAGS...` (3 nodes by default) in WORKDIR
# (ports 6381 and up, a fresh data dir, its log in WORKDIR/raftkv.log), waits
# up to 10 s for a leader, and sets CLUSTER_PID, LEADER_PORT, FOLLOWER_PORT (the
# leader's own with one node) and CLUSTER_PIDS (the nodes, comma-separated).
# Exits the script, showing the log, if no leader is elected.
start_local_cluster() {
  local binary=$1 work=$2 nodes=${3:-3} leader=0
  local flags=("${@:4}")
  (cd "$work" && rm -rf data && exec "$binary" --local-cluster "$nodes" "${flags[@]}" >/dev/null 2>"$work/raftkv.log") &
  CLUSTER_PID=$!
  for _ in $(seq 1 100); do
    # A node not yet listening fails this pipeline; under set -e that must not end the script.
    leader=$(redis-cli -p 6381 INFO 2>/dev/null | tr -d '\r' | awk -F: '/^leader_id/{print $2}') || leader=0
    [ -n "$leader" ] && [ "$leader" != 0 ] && break
    sleep 0.1
  done
  if [ -z "$leader" ] || [ "$leader" = 0 ]; then
    echo "$binary --local-cluster $nodes elected no leader within 10 s; its log:" >&2
    tail -n 20 "$work/raftkv.log" >&2
    exit 1
  fi
  LEADER_PORT=$((6380 + leader))
  FOLLOWER_PORT=$((6380 + leader % nodes + 1))
  CLUSTER_PIDS=$(pgrep -P "$CLUSTER_PID" | paste -sd,) || CLUSTER_PIDS=""
}

# stop_local_cluster: SIGTERM to the cluster started last, and wait for it.
stop_local_cluster() {
  if [ -n "${CLUSTER_PID:-}" ]; then
    kill -TERM "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
    CLUSTER_PID=""
  fi
}

# print_run LABEL JSON: one line of a load generator result (or FAILED for
# null), the label padded to WIDTH (default 4) characters.
print_run() {
  python3 - "$1" "$2" "${WIDTH:-4}" <<'PY'
import json, sys
label, raw, width = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.loads(raw) if raw != "null" else None
if r is None:
    print(f"{label:<{width}} FAILED")
else:
    print(f"{label:<{width}} {r['ops_per_sec']:>9.0f} ops/s  p50 {r['p50_us']:>6.0f} us  p99 {r['p99_us']:>6.0f} us  "
          f"loadgen cpu {r['client_cpu_pct']:.0f}%  servers cpu {r['server_cpu_pct']}%")
PY
}
