#!/usr/bin/env bash
# Interleaved A/B of two raftkv builds under the same load: each round starts a
# fresh `--local-cluster 3` from build A, loads its leader, stops it, then does
# the same for build B, so drift on a shared machine lands on both alike. This
# is how the "measured changes" in the README were compared.
#
#   PEERS=/tmp/peers benches/ab_cluster.sh OLD_BINARY NEW_BINARY [loadgen args...]
#   PEERS=/tmp/peers ROUNDS=4 SECS=8 benches/ab_cluster.sh /tmp/raftkv.old target/release/raftkv --clients 64 --pipeline 16
#
# PEERS is a writable copy of the peer benchmark kit (it provides the load
# generator; see compare_peers.sh). Default load: 64 clients, SET, 16-byte
# keys, 100-byte values, 100,000 keys, on the leader (AT=follower: on a
# follower, which forwards). Prints one line per run.
set -euo pipefail

PEERS="${PEERS:?set PEERS to a writable copy of the peer benchmark kit}"
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [loadgen args...]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; shift 2
LOAD=("$@"); [ ${#LOAD[@]} -gt 0 ] || LOAD=(--clients 64)
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-6}"
AT="${AT:-leader}"
case "$AT" in leader|follower) ;; *) echo "AT must be leader or follower" >&2; exit 2;; esac
LG="$PEERS/loadgen/target/release/loadgen"
cargo build --release --manifest-path "$PEERS/loadgen/Cargo.toml" -q
WORK="$(mktemp -d /tmp/raftkv-ab.XXXXXX)"
CLUSTER_PID=""
# shellcheck source=benches/local_cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/local_cluster.sh"
trap 'stop_local_cluster; rm -rf "$WORK"' EXIT

run() {  # label binary
  local label=$1 binary=$2 res
  start_local_cluster "$binary" "$WORK"
  local port=$LEADER_PORT
  [ "$AT" = follower ] && port=$FOLLOWER_PORT
  res=$("$LG" --target resp --addr "127.0.0.1:$port" --keys 100000 --key-size 16 \
    --value-size 100 --seconds "$SECS" --requests 100000000 --json --server-pids "$CLUSTER_PIDS" \
    "${LOAD[@]}" 2>/dev/null | tail -n 1) || res=null
  stop_local_cluster
  print_run "$label" "${res:-null}"
}

for _ in $(seq 1 "$ROUNDS"); do
  run A "$A"
  run B "$B"
done
