#!/usr/bin/env bash
# Where a replicated write's time goes, against Redis `appendfsync always`:
# the same load on one durable Redis, on a one-node raftkv (the same work as
# Redis: parse, log, fdatasync, apply, reply, one process), on three raftkv
# nodes with `fsync = always` (what the targets measure), and on three with
# `fsync = never` (replication without the disk). Rounds alternate the order,
# so drift on a shared machine lands on all alike.
#
#   PEERS=/tmp/peers benches/decompose.sh                      # 64 clients
#   PEERS=/tmp/peers ROUNDS=4 SECS=8 benches/decompose.sh --clients 64 --pipeline 16
#
# PEERS is a writable copy of the peer benchmark kit (see compare_peers.sh).
# Prints one line per run and, at the end, each system's mean.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${PEERS:?set PEERS to a writable copy of the peer benchmark kit}"
LOAD=("$@"); [ ${#LOAD[@]} -gt 0 ] || LOAD=(--clients 64)
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-8}"
LG="$PEERS/loadgen/target/release/loadgen"
RAFTKV="$ROOT/target/release/raftkv"
COMMON=(--keys 100000 --key-size 16 --value-size 100 --seconds "$SECS" --requests 100000000 --json)

cargo build --release --manifest-path "$ROOT/Cargo.toml" -q
cargo build --release --manifest-path "$PEERS/loadgen/Cargo.toml" -q
cargo build --release --manifest-path "$PEERS/fsync-probe/Cargo.toml" -q || true
WORK="$(mktemp -d /tmp/raftkv-decompose.XXXXXX)"
RESULTS="$WORK/results"
CLUSTER_PID=""
# shellcheck source=benches/local_cluster.sh
source "$ROOT/benches/local_cluster.sh"
cleanup() {
  stop_local_cluster
  "$PEERS/redis.sh" stop durable >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

record() {  # label json
  local label=$1 raw=$2
  printf '%s\t%s\n' "$label" "$raw" >>"$RESULTS"
  WIDTH=26 print_run "$label" "$raw"
}

raftkv() {  # label nodes flags...
  local label=$1 nodes=$2 res; shift 2
  start_local_cluster "$RAFTKV" "$WORK" "$nodes" "$@"
  res=$("$LG" --target resp --addr "127.0.0.1:$LEADER_PORT" --server-pids "$CLUSTER_PIDS" \
    "${COMMON[@]}" "${LOAD[@]}" 2>/dev/null | tail -n 1) || res=null
  stop_local_cluster
  record "$label" "${res:-null}"
}

redis_durable() {
  local info pid port res
  info=$("$PEERS/redis.sh" start durable); pid=${info%% *}
  port=$(cat "$PEERS/run/redis-durable.port")
  res=$("$LG" --target resp --addr "127.0.0.1:$port" --server-pids "$pid" \
    "${COMMON[@]}" "${LOAD[@]}" 2>/dev/null | tail -n 1) || res=null
  "$PEERS/redis.sh" stop durable >/dev/null 2>&1 || true
  record "redis durable" "${res:-null}"
}

echo "fdatasync and loopback on this machine:"
"$PEERS/fsync-probe/target/release/fsync-probe" all --seconds 3 --dir "$ROOT/target" 2>/dev/null \
  | grep -E 'append\+fdatasync|pin=none' || true
for round in $(seq 1 "$ROUNDS"); do
  steps=(redis 1 3 never)
  [ $((round % 2)) = 0 ] && steps=(never 3 1 redis)
  for step in "${steps[@]}"; do
    case $step in
      redis) redis_durable ;;
      1) raftkv "raftkv 1 node" 1 ;;
      3) raftkv "raftkv 3 nodes" 3 ;;
      never) raftkv "raftkv 3 nodes fsync=never" 3 --fsync never ;;
    esac
  done
done
echo "means:"
python3 - "$RESULTS" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    label, raw = line.rstrip("\n").split("\t", 1)
    if raw != "null":
        runs.setdefault(label, []).append(json.loads(raw))
base = runs.get("redis durable")
base_ops = sum(r["ops_per_sec"] for r in base) / len(base) if base else None
for label, rs in runs.items():
    ops = sum(r["ops_per_sec"] for r in rs) / len(rs)
    p50 = sum(r["p50_us"] for r in rs) / len(rs)
    cpus = [float(r["server_cpu_pct"]) for r in rs if r.get("server_cpu_pct") is not None]
    cpu = f"{sum(cpus) / len(cpus):.0f}%" if cpus else "n/a"
    ratio = f"  {ops / base_ops:.2f}x Redis durable" if base_ops else ""
    print(f"  {label:<26} {ops:>9.0f} ops/s  p50 {p50:>6.0f} us  servers cpu {cpu}{ratio}")
PY
