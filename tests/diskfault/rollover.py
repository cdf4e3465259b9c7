#!/usr/bin/env python3
"""A leader whose fdatasync is slow, at a segment rollover.

  rollover.py [--port-base 28010] [--stall-ms 1500] [--writes 150] [--dir DIR]

Starts three nodes on loopback (raft ports BASE+1..3, client ports
BASE+101..103) under the shim (tests/diskfault/shim.c, built into
target/diskfault.so), makes every segment fdatasync of the leader stall
--stall-ms, and writes 1 MiB values through it, 6 a second, so that its log
fills a 64 MiB segment about every 11 s. Prints the writes' replies, the
slowest one, and every election after the first. --stall-ms 0 is the
control run. Every node it started is killed at the end, also on failure.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(ROOT, "target", "release", "raftkv")
SHIM = os.path.join(ROOT, "target", "diskfault.so")


def call(port, *args, timeout=15):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        f = s.makefile("rb")
        line = f.readline()
        if line.startswith(b"$"):
            n = int(line[1:])
            return f.read(n + 2)[:-2].decode() if n >= 0 else None
        return line.decode().strip()
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-base", type=int, default=28010)
    ap.add_argument("--stall-ms", type=int, default=1500)
    ap.add_argument("--writes", type=int, default=150)
    ap.add_argument("--dir", default=os.path.join(ROOT, "target", "diskfault-rollover"))
    a = ap.parse_args()
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", SHIM, os.path.join(HERE, "shim.c"),
                    "-ldl", "-lpthread"], check=True)
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    raft = {i: a.port_base + i for i in (1, 2, 3)}
    client = {i: a.port_base + 100 + i for i in (1, 2, 3)}
    cluster = ",".join("%d=127.0.0.1:%d" % (i, p) for i, p in raft.items())
    procs = {}
    try:
        for i in raft:
            open("%s/ctl%d" % (a.dir, i), "w").close()
            env = dict(os.environ, LD_PRELOAD=SHIM, DISKFAULT_CTL="%s/ctl%d" % (a.dir, i),
                       DISKFAULT_LOG="%s/faults%d.log" % (a.dir, i))
            procs[i] = subprocess.Popen(
                [BIN, "--id", str(i), "--raft-addr", "127.0.0.1:%d" % raft[i],
                 "--client-addr", "127.0.0.1:%d" % client[i], "--cluster", cluster,
                 "--data-dir", "%s/n%d" % (a.dir, i)],
                env=env, stdout=open("%s/n%d.log" % (a.dir, i), "w"), stderr=subprocess.STDOUT)
        leader = None
        for _ in range(100):
            time.sleep(0.1)
            try:
                roles = {i: call(p, b"INFO") for i, p in client.items()}
            except OSError:
                continue
            leader = next((i for i, t in roles.items() if t and "role:leader" in t), None)
            if leader:
                break
        if not leader:
            sys.exit("no leader")
        print("leader: node %d; its segment fdatasyncs stall %d ms" % (leader, a.stall_ms))
        if a.stall_ms:
            with open("%s/ctl%d" % (a.dir, leader), "w") as f:
                f.write("fdatasync stall %d 0 .seg\n" % a.stall_ms)
        value = b"x" * (1 << 20)
        replies, worst = {}, 0.0
        for n in range(a.writes):
            t = time.time()
            try:
                r = call(client[leader], b"SET", b"big%d" % (n % 20), value)
            except OSError as ex:
                r = "error: %s" % ex
            worst = max(worst, time.time() - t)
            replies[r[:30]] = replies.get(r[:30], 0) + 1
            time.sleep(max(0.0, 1 / 6 - (time.time() - t)))
        print("replies %s, slowest %.2f s" % (replies, worst))
        segs = sorted(os.listdir("%s/n%d/log" % (a.dir, leader)))
        print("leader's segments: %s" % segs)
        elections = []
        for i in raft:
            with open("%s/n%d.log" % (a.dir, i)) as f:
                elections += [line.strip() for line in f if "became leader" in line]
        elections.sort()
        print("elections after the first: %d" % (len(elections) - 1))
        for line in elections[1:]:
            print("  " + line)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
            p.wait()


if __name__ == "__main__":
    main()
