#!/usr/bin/env python3
"""Transparent TCP proxy that delays the bytes between raftkv nodes, for
slowlink.py (this machine's kernel has no netem).  Runs in the router
namespace, where `iptables -t nat ... REDIRECT` sends every forwarded
connection to the raft port here; SO_ORIGINAL_DST names the node it was for.

Each direction of a connection is a reader that timestamps what it reads
with a delivery time (now + delay + uniform jitter, never before the previous
chunk's: TCP delivers in order, so reordering shows as head-of-line stalls)
and a writer that sends each chunk at its time.  At most BUF bytes wait per
direction, after which the reader stops reading and TCP's flow control
pushes back on the sender, as a link's queue would.

Settings come from a JSON file reread every 0.2 s:
  {"delay_ms": 50, "jitter_ms": 0, "node": 0}
`node` 0 shapes every connection; K only those from or to node K.
Loss and bandwidth are left to the kernel (iptables statistic, htb).
"""
import json
import random
import socket
import struct
import sys
import threading
import time

SO_ORIGINAL_DST = 80
BUF = 4 << 20
CHUNK = 64 << 10

conf = {"delay_ms": 0, "jitter_ms": 0, "node": 0}


def reload(path):
    global conf
    while True:
        try:
            with open(path) as f:
                conf = json.load(f)
        except (OSError, ValueError):
            pass
        time.sleep(0.2)


def node_of(ip):
    parts = ip.split(".")
    return int(parts[2]) if len(parts) == 4 and parts[0] == "10" else -1


def pump(src, dst, shaped, rng):
    q = []
    cv = threading.Condition()
    state = {"bytes": 0, "eof": False, "last": 0.0}

    def reader():
        while True:
            try:
                data = src.recv(CHUNK)
            except OSError:
                data = b""
            with cv:
                if not data:
                    state["eof"] = True
                    cv.notify_all()
                    return
                c = conf
                d = 0.0
                if shaped(c):
                    d = (c.get("delay_ms", 0) + rng.uniform(-1, 1) * c.get("jitter_ms", 0)) / 1000.0
                at = max(time.monotonic() + max(d, 0.0), state["last"])
                state["last"] = at
                q.append((at, data))
                state["bytes"] += len(data)
                cv.notify_all()
                while state["bytes"] > BUF:
                    cv.wait()

    def writer():
        while True:
            with cv:
                while not q and not state["eof"]:
                    cv.wait()
                if not q:
                    break
                at, data = q.pop(0)
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                break
            with cv:
                state["bytes"] -= len(data)
                cv.notify_all()
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    threading.Thread(target=reader, daemon=True).start()
    threading.Thread(target=writer, daemon=True).start()


def handle(cli, addr):
    try:
        raw = cli.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack("!2xH4s8x", raw)
        dst_ip = socket.inet_ntoa(packed)
        up = socket.create_connection((dst_ip, port), timeout=5)
        up.settimeout(None)
    except OSError:
        cli.close()
        return
    for s in (cli, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a, b = node_of(addr[0]), node_of(dst_ip)

    def shaped(c):
        n = c.get("node", 0)
        return n == 0 or n in (a, b)

    rng = random.Random(hash((addr, dst_ip)))
    pump(cli, up, shaped, rng)
    pump(up, cli, shaped, rng)


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    threading.Thread(target=reload, args=(path,), daemon=True).start()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(128)
    while True:
        cli, addr = ls.accept()
        threading.Thread(target=handle, args=(cli, addr), daemon=True).start()


if __name__ == "__main__":
    main()
