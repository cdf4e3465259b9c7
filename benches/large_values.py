#!/usr/bin/env python3
"""Large values against a fresh 3-node cluster: how long its loops stall.

Starts three nodes of BINARY on loopback (raft ports BASE+1..3, client ports
BASE+11..13, data in a temporary directory), waits for a leader, then has
CLIENTS connections each pipeline PER_CLIENT SETs of SIZE-byte values to it,
reading the replies as they come. Prints how many were acknowledged and the
other replies, the wall time, and each node's longest loop iteration
(INFO `max_iteration_us`) and term: a term above 1 means the load cost the
leader its leadership.

    benches/large_values.py target/release/raftkv --clients 64 --per-client 3 --size 3000000
    benches/large_values.py OLD NEW --rounds 2 ...   # interleaved, as ab_cluster.sh

The README's figures for large values come from this script.
"""

import argparse
import collections
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time


def info(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"INFO\r\n")
            data = b""
            s.settimeout(2)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"$"):
                    header, _, rest = data.partition(b"\r\n")
                    if len(rest) >= int(header[1:]) + 2:
                        break
        lines = data.decode(errors="replace").split("\r\n")
        return dict(line.split(":", 1) for line in lines if ":" in line)
    except (OSError, ValueError):
        return {}


def read_replies(sock, count):
    """The first line of each of `count` replies (all are simple strings or errors)."""
    replies, buf = [], b""
    while len(replies) < count:
        chunk = sock.recv(65536)
        if not chunk:
            replies.append("(connection closed)")
            break
        buf += chunk
        while b"\r\n" in buf and len(replies) < count:
            line, _, buf = buf.partition(b"\r\n")
            replies.append(line.decode(errors="replace"))
    return replies


def client(port, index, per_client, value, out):
    sock = socket.create_connection(("127.0.0.1", port))
    request = b"".join(
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
        % (len(key), key, len(value), value)
        for key in (b"big-%d-%d" % (index, i) for i in range(per_client))
    )
    writer = threading.Thread(target=sock.sendall, args=(request,), daemon=True)
    writer.start()
    out.extend(read_replies(sock, per_client))
    sock.close()


def run(binary, args):
    base = args.base_port
    data = tempfile.mkdtemp(prefix="raftkv-large-")
    cluster = ",".join(f"{i}=127.0.0.1:{base + i}" for i in (1, 2, 3))
    nodes = []
    try:
        for i in (1, 2, 3):
            log = open(os.path.join(data, f"node{i}.log"), "w")
            nodes.append(subprocess.Popen(
                [binary, "--id", str(i), "--raft-addr", f"127.0.0.1:{base + i}",
                 "--client-addr", f"127.0.0.1:{base + 10 + i}", "--cluster", cluster,
                 "--data-dir", os.path.join(data, f"n{i}"),
                 "--max-request-bytes", str(max(args.size + 1024, 8 << 20))],
                stdout=log, stderr=log))
        leader, deadline = None, time.time() + 20
        while leader is None:
            if time.time() > deadline:
                raise SystemExit("no leader within 20 s")
            for i in (1, 2, 3):
                if info(base + 10 + i).get("role") == "leader":
                    leader = i
            time.sleep(0.1)
        value = b"x" * args.size
        replies, threads = [], []
        began = time.time()
        for c in range(args.clients):
            t = threading.Thread(target=client, args=(base + 10 + leader, c, args.per_client, value, replies))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        took = time.time() - began
        counts = collections.Counter(replies)
        nodes_seen = []
        for i in (1, 2, 3):
            fields = info(base + 10 + i)
            role = "L" if i == leader else "F"
            nodes_seen.append(f"{role}{i} {int(fields.get('max_iteration_us', 0)) / 1000:.0f} ms term {fields.get('term', '?')}")
        others = ", ".join(f"{n} x {r}" for r, n in counts.items() if r != "+OK")
        print(f"{os.path.basename(binary)}: {counts.get('+OK', 0)} of {len(replies)} acknowledged"
              f"{' (' + others + ')' if others else ''} in {took:.2f} s; longest iteration: "
              + "; ".join(nodes_seen), flush=True)
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
        shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=3)
    parser.add_argument("--size", type=int, default=3_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--base-port", type=int, default=23000)
    args = parser.parse_args()
    for _ in range(args.rounds):
        for binary in args.binaries:
            run(os.path.abspath(binary), args)


if __name__ == "__main__":
    main()
