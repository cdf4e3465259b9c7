#!/usr/bin/env python3
"""A pipeline that alternates writes and reads on one connection.

Sends N pairs `SET k <n>` / `GET k` in one write and times the replies, which
must read back each pair's own value (a read sees the writes sent before it
on its connection and none sent after it). Either starts a fresh 3-node
raftkv cluster on random loopback ports with the given binary and measures
its leader and a follower, or measures a server already running:

    python3 benches/mixed_pipeline.py target/release/raftkv [PAIRS]
    python3 benches/mixed_pipeline.py --addr 127.0.0.1:6379 [PAIRS]   # e.g. Redis
"""
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def connect(port, wait=10.0):
    deadline = time.time() + wait
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def ask(port, line):
    with connect(port) as s:
        s.sendall(line.encode() + b"\r\n")
        return s.recv(1 << 16)


def measure(port, pairs, label):
    request = b"".join(
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%d\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        % (len(str(n)), n)
        for n in range(pairs)
    )
    want = b"".join(b"+OK\r\n$%d\r\n%d\r\n" % (len(str(n)), n) for n in range(pairs))
    with connect(port) as s:
        start = time.time()
        s.sendall(request)
        got = bytearray()
        while len(got) < len(want) and time.time() - start < 300:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        elapsed = time.time() - start
    print(
        f"{label}: {pairs} SET/GET pairs in {elapsed:.3f} s "
        f"({pairs / elapsed:,.0f} pairs/s), replies {'as expected' if got == want else 'WRONG'}"
    )
    return got == want


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    if args[0] == "--addr":
        port = int(args[1].rsplit(":", 1)[1])
        pairs = int(args[2]) if len(args) > 2 else 10000
        sys.exit(0 if measure(port, pairs, args[1]) else 1)
    binary, pairs = args[0], int(args[1]) if len(args) > 1 else 10000
    base = random.randint(20000, 50000)
    cluster = ",".join(f"{i}=127.0.0.1:{base + i}" for i in (1, 2, 3))
    data = tempfile.mkdtemp(prefix="raftkv-mixed-")
    nodes = [
        subprocess.Popen(
            [binary, "--id", str(i), "--raft-addr", f"127.0.0.1:{base + i}",
             "--client-addr", f"127.0.0.1:{base + 10 + i}", "--cluster", cluster,
             "--data-dir", os.path.join(data, f"node{i}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in (1, 2, 3)
    ]
    ok = True
    try:
        deadline = time.time() + 20
        leader = None
        while leader is None:
            if time.time() > deadline:
                sys.exit("no leader within 20 s")
            for i, node in zip((1, 2, 3), nodes):
                if node.poll() is not None:
                    sys.exit(f"node {i} exited ({node.returncode}); a port in use? run again")
                if b"role:leader" in ask(base + 10 + i, "INFO"):
                    leader = i
            time.sleep(0.2)
        while not ask(base + 10 + leader, "SET warm 1").startswith(b"+OK"):
            time.sleep(0.2)
        follower = 1 if leader != 1 else 2
        ok &= measure(base + 10 + leader, pairs, "leader")
        ok &= measure(base + 10 + follower, pairs, "follower")
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=10)
        shutil.rmtree(data)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
