#!/usr/bin/env bash
# Side-by-side throughput and latency: raftkv (3 nodes, loopback, fsync = always)
# against etcd (3 members) and Redis (appendfsync always, and in memory), all
# driven by the same closed-loop load generator in the same run.
#
# The load generator and the scripts that start etcd and Redis are the peer
# benchmark kit, which lives outside this repository; point PEERS at a writable
# copy of it (it builds its tools and keeps PIDs beside itself):
#
#   PEERS=/tmp/peers benches/compare_peers.sh            # ~15 min on 2 cores
#   PEERS=/tmp/peers SECS=3 REPS=1 benches/compare_peers.sh   # quick look
#
# Needs: etcd, redis-server, redis-benchmark, protoc (the kit installs them with
# apt if missing). Writes one line per run to stdout and a JSON line per run to
# $OUT (default target/compare_peers.jsonl). Each load point runs every system
# back to back, REPS times in alternating order, so drift on a shared machine
# does not land on one system only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${PEERS:?set PEERS to a writable copy of the peer benchmark kit}"
SECS="${SECS:-8}"
REQS="${REQS:-400000}"
REPS="${REPS:-2}"
OUT="${OUT:-$ROOT/target/compare_peers.jsonl}"
LG="$PEERS/loadgen/target/release/loadgen"
RAFTKV="$ROOT/target/release/raftkv"
COMMON=(--keys 100000 --key-size 16 --value-size 100 --seconds "$SECS" --requests "$REQS" --json)

cargo build --release --manifest-path "$ROOT/Cargo.toml" -q
cargo build --release --manifest-path "$PEERS/loadgen/Cargo.toml" -q
: >"$OUT"
WORK="$(mktemp -d /tmp/raftkv-compare.XXXXXX)"
CLUSTER_PID=""
# shellcheck source=benches/local_cluster.sh
source "$ROOT/benches/local_cluster.sh"

cleanup() {
  stop_local_cluster
  "$PEERS/redis.sh" stop durable >/dev/null 2>&1 || true
  "$PEERS/redis.sh" stop memory >/dev/null 2>&1 || true
  "$PEERS/etcd-cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

run() {  # system label loadgen-args...
  local system=$1 label=$2; shift 2
  local res
  res=$("$LG" "$@" "${COMMON[@]}" 2>/dev/null | tail -n 1) || res=null
  printf '{"system":"%s","label":"%s","result":%s}\n' "$system" "$label" "${res:-null}" >>"$OUT"
  python3 - "$system" "$label" "${res:-null}" <<'PY'
import json, sys
system, label, raw = sys.argv[1:]
r = json.loads(raw) if raw != "null" else None
if r is None:
    print(f"{system:<14} {label:<22} FAILED")
else:
    print(f"{system:<14} {label:<22} {r['ops_per_sec']:>9.0f} ops/s  p50 {r['p50_us']:>7.0f} us  "
          f"p99 {r['p99_us']:>7.0f} us  loadgen cpu {r['client_cpu_pct']:.0f}%  servers cpu {r['server_cpu_pct']}%  "
          f"machine {r['machine_busy_pct']:.0f}%  errors {r['errors']}")
PY
}

echo "fdatasync and loopback on this machine:"
"$PEERS/fsync-probe/target/release/fsync-probe" all --seconds 3 --dir "$ROOT/target" 2>/dev/null \
  | grep -E 'append\+fdatasync|pin=none' || true

start_local_cluster "$RAFTKV" "$WORK"
# Preload the key space so GETs find values.
"$LG" --target resp --addr "127.0.0.1:$LEADER_PORT" --clients 64 --pipeline 16 --key-pattern sequential \
  --keys 100000 --key-size 16 --value-size 100 --requests 100000 --seconds 60 >/dev/null 2>&1 || true
info=$("$PEERS/etcd-cluster.sh" start); ETCD_PIDS=$("$PEERS/etcd-cluster.sh" pids); EPS=$("$PEERS/etcd-cluster.sh" endpoints)
info=$("$PEERS/redis.sh" start durable); RD_PID=${info%% *}; RD_PORT=$(cat "$PEERS/run/redis-durable.port")
info=$("$PEERS/redis.sh" start memory); RM_PID=${info%% *}; RM_PORT=$(cat "$PEERS/run/redis-memory.port")

point() {  # label args-for-resp (and the same clients/pipeline for etcd)
  local label=$1 clients=$2 pipeline=$3 rep
  for rep in $(seq 1 "$REPS"); do
    local order=(raftkv etcd redis-durable redis-memory)
    [ $((rep % 2)) = 0 ] && order=(redis-memory redis-durable etcd raftkv)
    for system in "${order[@]}"; do
      case $system in
        raftkv) run raftkv "$label" --target resp --addr "127.0.0.1:$LEADER_PORT" --clients "$clients" \
                  --pipeline "$pipeline" --server-pids "$CLUSTER_PIDS" ;;
        etcd) [ "$pipeline" = 1 ] && run etcd "$label" --target etcd --endpoints "$EPS" --clients "$clients" \
                  --server-pids "$ETCD_PIDS" ;;
        redis-durable) run redis-durable "$label" --target resp --addr "127.0.0.1:$RD_PORT" \
                  --clients "$clients" --pipeline "$pipeline" --server-pids "$RD_PID" ;;
        redis-memory) run redis-memory "$label" --target resp --addr "127.0.0.1:$RM_PORT" \
                  --clients "$clients" --pipeline "$pipeline" --server-pids "$RM_PID" ;;
      esac
    done
  done
}

point "set c=1" 1 1
point "set c=16" 16 1
point "set c=64" 64 1
point "set c=256" 256 1
point "set c=64 P=16" 64 16
for rep in $(seq 1 "$REPS"); do
  run raftkv "set c=64 via follower" --target resp --addr "127.0.0.1:$FOLLOWER_PORT" --clients 64 --server-pids "$CLUSTER_PIDS"
  run raftkv "set c=64" --target resp --addr "127.0.0.1:$LEADER_PORT" --clients 64 --server-pids "$CLUSTER_PIDS"
  run raftkv "get c=64" --target resp --addr "127.0.0.1:$LEADER_PORT" --clients 64 --op get --server-pids "$CLUSTER_PIDS"
  run redis-durable "get c=64" --target resp --addr "127.0.0.1:$RD_PORT" --clients 64 --op get --server-pids "$RD_PID"
done
echo "redis-benchmark (-t set,get -d 100 -r 100000 -n 200000 -c 50):"
for port in "$LEADER_PORT" "$RD_PORT"; do
  echo "  port $port:"; redis-benchmark -p "$port" -t set,get -d 100 -r 100000 -n 200000 -c 50 -q 2>/dev/null | tr '\r' '\n' | grep -E 'requests per second' | sed 's/^/    /'
done
echo "raw results: $OUT"
