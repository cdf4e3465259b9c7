#!/usr/bin/env python3
"""Jepsen-style partition test for raftkv.  MUST run inside a private network
namespace (run.sh does `unshare -n`).  This namespace acts as a router; every
node lives in its own network namespace (10.0.i.2), linked by a veth pair to
the router (10.0.i.1).  Partitions are iptables DROP rules in the router's
FORWARD chain on (src node, dst node) address pairs.  Clients run in the
router namespace and are never cut off from the node they talk to.
"""
import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resp import Resp, RespError, ConnLost, ConnRefused, info  # noqa: E402

from common import (pdeath, sh, mono, node_ip, HERE, ROOT, DEFAULT_BIN, RUNS,  # noqa: E402,F401
                    RAFT_PORT, CLIENT_PORT)
from ops import Ops, KINDS as OP_KINDS, final_membership  # noqa: E402
from pipeline import pipeliner  # noqa: E402
from final import probe_writes, wait_converged, final_reads, keys_written  # noqa: E402,F401
import diskfault  # noqa: E402


# ---------------------------------------------------------------- workers

def worker(wid, node, seed, t0, stop_at, outpath, epoch_ns, nreg, ncnt, think, slots=None, slot=None):
    """slots[slot], when given, names the node to talk to: the harness moves a
    removed node's clients to the node that joins in its place."""
    pdeath()
    rng = random.Random(seed * 1000 + wid)
    port = CLIENT_PORT
    out = open(outpath, "w")
    conn = None
    n = 0
    while mono() < stop_at:
        if slots is not None and slots[slot] != node:
            node = slots[slot]
            if conn is not None:
                conn.close()
                conn = None
        host = node_ip(node)
        e = (mono() - t0) // epoch_ns
        r = rng.random()
        if r < 0.28:
            op, key, args = "set", "r%d_%d" % (e, rng.randrange(nreg)), None
        elif r < 0.53:
            op, key = "get", "r%d_%d" % (e, rng.randrange(nreg))
        elif r < 0.58:
            op, key = "del", "r%d_%d" % (e, rng.randrange(nreg))
        elif r < 0.75:
            op, key = "incr", "c%d_%d" % (e, rng.randrange(ncnt))
        elif r < 0.83:
            op, key = "get", "c%d_%d" % (e, rng.randrange(ncnt))
        else:
            op, key = "set", "u_%d_%d" % (wid, n)
        n += 1
        val = None
        if op == "set":
            val = "w%d_%d" % (wid, n)
            cmd = ("SET", key, val)
        elif op == "get":
            cmd = ("GET", key)
        elif op == "del":
            cmd = ("DEL", key)
        else:
            cmd = ("INCR", key)
        rec = {"w": wid, "node": node, "op": op, "key": key, "val": val}
        if conn is None:
            try:
                conn = Resp(host, port, timeout=6.0, connect_timeout=0.5)
            except ConnRefused as ex:
                rec.update(t0=mono(), t1=mono(), wall=time.time(), res="fail", detail=str(ex))
                out.write(json.dumps(rec) + "\n")
                time.sleep(0.2)
                continue
        rec["t0"] = mono()
        rec["wall"] = time.time()
        try:
            rep = conn.call(*cmd)
            rec["t1"] = mono()
            if isinstance(rep, RespError):
                s = str(rep)
                if s.startswith("TRYAGAIN"):
                    rec["res"] = "tryagain"
                elif s.startswith("TIMEOUT"):
                    rec["res"] = "info"
                else:
                    rec["res"] = "err"
                rec["detail"] = s
            else:
                rec["res"] = "ok"
                if isinstance(rep, bytes):
                    rep = rep.decode()
                rec["out"] = rep
        except ConnLost as ex:
            rec["t1"] = mono()
            rec["res"] = "info"
            rec["detail"] = str(ex)
            conn.close()
            conn = None
        out.write(json.dumps(rec) + "\n")
        if think:
            time.sleep(rng.uniform(0, think))
    out.close()
    if conn:
        conn.close()


# ---------------------------------------------------------------- cluster

class Cluster:
    def __init__(self, a, rundir):
        self.a = a
        self.n = a.nodes
        # The members the nemesis and the final checks work on; a node the
        # membership ops remove leaves it, one they add joins it.
        self.ids = list(range(1, self.n + 1))
        self.removed = set()
        # Nodes an op is stopping or has stopped: the kill nemesis leaves them be.
        self.busy = set()
        self.lock = threading.RLock()
        # Work other threads hand to the main one: a child's PR_SET_PDEATHSIG
        # fires when the thread that started it ends, not the process.
        self.mainq = queue.Queue()
        self.rundir = rundir
        self.holders = {}
        self.procs = {}
        self.logs = {}
        self.events = []
        self.t0 = mono()
        # Extra environment per node (diskfault.py's shim).
        self.node_env = lambda i: {}

    def ev(self, kind, **kw):
        e = {"t": mono(), "wall": time.time(), "kind": kind}
        e.update(kw)
        self.events.append(e)
        print("[%7.2f] %s %s" % ((e["t"] - self.t0) / 1e9, kind,
                                 " ".join("%s=%s" % kv for kv in kw.items())), flush=True)

    def in_main(self, fn):
        """Runs fn on the main thread (run_mainq) and returns its result."""
        if threading.current_thread() is threading.main_thread():
            return fn()
        box = []
        done = threading.Event()
        self.mainq.put((fn, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def run_mainq(self):
        while True:
            try:
                fn, box, done = self.mainq.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(fn())
            except BaseException as ex:  # handed back to the thread that asked
                box.append(ex)
            done.set()

    def setup_net(self):
        sh("ip link set lo up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        for i in self.ids:
            self.add_ns(i)
        sh("iptables -N PART && iptables -A FORWARD -j PART")
        self.grudge = set()

    def add_ns(self, i):
        """Node i's namespace at node_ip(i), linked to this (router) namespace."""
        mine = os.readlink("/proc/self/ns/net")
        p = subprocess.Popen(["unshare", "-n", "sleep", "infinity"], preexec_fn=pdeath)
        for _ in range(200):
            try:
                if os.readlink("/proc/%d/ns/net" % p.pid) != mine:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        self.holders[i] = p
        sh("ip link add vr%d type veth peer name vn%d" % (i, i))
        sh("ip link set vn%d netns %d" % (i, p.pid))
        sh("ip addr add 10.0.%d.1/24 dev vr%d && ip link set vr%d up" % (i, i, i))
        ns = "nsenter -t %d -n" % p.pid
        sh("%s ip link set lo up && %s ip addr add %s/24 dev vn%d && %s ip link set vn%d up"
           " && %s ip route add default via 10.0.%d.1" % (ns, ns, node_ip(i), i, ns, i, ns, i))

    def set_grudge(self, pairs, label):
        """pairs: set of (src, dst) node ids whose packets src->dst are dropped."""
        lines = ["*filter", "-F PART"]
        for (s, d) in sorted(pairs):
            lines.append("-A PART -s %s -d %s -j DROP" % (node_ip(s), node_ip(d)))
        lines.append("COMMIT")
        subprocess.run(["iptables-restore", "--noflush"], input="\n".join(lines) + "\n",
                       text=True, check=True)
        self.grudge = set(pairs)
        self.ev("partition" if pairs else "heal", label=label, drops=sorted(pairs))

    def write_confs(self):
        cl = ",".join("%d=%s:%d" % (i, node_ip(i), RAFT_PORT) for i in self.ids)
        for i in self.ids:
            self.write_conf(i, "cluster = %s\n" % cl)

    def write_conf(self, i, extra):
        """nN.conf with extra (its cluster, or join), nN-nocluster.conf without."""
        a = self.a
        base = ("id = %d\nraft_addr = %s:%d\nclient_addr = %s:%d\ndata_dir = %s/data/n%d\n"
                "snapshot_entries = %d\nelection_timeout_ms = %d\nheartbeat_ms = %d\n"
                % (i, node_ip(i), RAFT_PORT, node_ip(i), CLIENT_PORT, self.rundir, i,
                   a.snapshot_entries, a.election_ms, a.heartbeat_ms))
        with open("%s/n%d.conf" % (self.rundir, i), "w") as f:
            f.write(base + extra)
        with open("%s/n%d-nocluster.conf" % (self.rundir, i), "w") as f:
            f.write(base)

    def start(self, i, conf=None):
        conf = conf or "%s/n%d.conf" % (self.rundir, i)
        log = open("%s/n%d.log" % (self.rundir, i), "ab")
        log.write(("==== harness: start node %d conf=%s at t=%.2f\n"
                   % (i, os.path.basename(conf), (mono() - self.t0) / 1e9)).encode())
        log.flush()
        with self.lock:
            p = subprocess.Popen(["nsenter", "-t", str(self.holders[i].pid), "-n", self.a.bin,
                                  "--config", conf], stdout=log, stderr=log, preexec_fn=pdeath,
                                 env=dict(os.environ, **self.node_env(i)))
            self.procs[i] = p
            self.logs[i] = log

    def kill9(self, i):
        with self.lock:
            p = self.procs.get(i)
            if p and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        self.ev("kill9", node=i)

    def alive(self, i):
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def infos(self):
        r = {}
        for i in list(self.ids):
            try:
                r[i] = info(node_ip(i), CLIENT_PORT, timeout=0.5)
            except Exception:
                pass
        return r

    def leader(self):
        best = None
        for i, d in self.infos().items():
            if d.get("role") == "leader":
                t = int(d.get("term", 0))
                if best is None or t > best[1]:
                    best = (i, t)
        return best[0] if best else None

    def stop_all(self):
        for i, p in list(self.procs.items()):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in list(self.procs.values()):
            try:
                p.wait(timeout=5)
            except Exception:
                pass
        for h in self.holders.values():
            h.kill()
            h.wait()


# ---------------------------------------------------------------- nemesis

def all_pairs(A, B):
    s = set()
    for x in A:
        for y in B:
            s.add((x, y))
            s.add((y, x))
    return s


def pick_fault(c, rng):
    ids = list(c.ids)
    n = len(ids)
    kinds = ["isolate_leader", "split", "bridge", "asym", "kill", "heal"]
    weights = [3, 3, 2, 3, 2, 1]
    if n == 5:
        kinds.append("ring")
        weights.append(1)
    k = rng.choices(kinds, weights)[0]
    if k == "isolate_leader":
        L = c.leader() or rng.choice(ids)
        return k, all_pairs([L], [x for x in ids if x != L]), "isolate %d" % L
    if k == "split":
        sh_ = ids[:]
        rng.shuffle(sh_)
        m = n // 2  # minority size
        A, B = sh_[:m], sh_[m:]
        return k, all_pairs(A, B), "split %s|%s" % (sorted(A), sorted(B))
    if k == "bridge":
        sh_ = ids[:]
        rng.shuffle(sh_)
        L = c.leader()
        if L is not None and rng.random() < 0.5:
            # keep the leader on one side (not as bridge): interesting case
            sh_.remove(L)
            sh_.insert(1, L)
        b = sh_[0]
        rest = sh_[1:]
        h = len(rest) // 2
        A, B = rest[:h], rest[h:]
        return k, all_pairs(A, B), "bridge %d sees %s and %s" % (b, sorted(A), sorted(B))
    if k == "ring":
        sh_ = ids[:]
        rng.shuffle(sh_)
        s = set()
        for idx, x in enumerate(sh_):
            for jdx, y in enumerate(sh_):
                d = min((idx - jdx) % n, (jdx - idx) % n)
                if d > 1:
                    s.add((x, y))
        return k, s, "ring %s" % sh_
    if k == "asym":
        L = c.leader() or rng.choice(ids)
        x = L if rng.random() < 0.6 else rng.choice(ids)
        others = [y for y in ids if y != x]
        mode = rng.choice(["out", "in", "one"])
        if mode == "out":
            s = {(x, y) for y in others}
        elif mode == "in":
            s = {(y, x) for y in others}
        else:
            y = rng.choice(others)
            s = {(x, y)} if rng.random() < 0.5 else {(y, x)}
        return k, s, "asym %s node %d (leader %s)" % (mode, x, L)
    if k == "kill":
        return k, None, None
    return "heal", set(), "heal"


def nemesis(c, rng, duration, restart_pending):
    end = mono() + int(duration * 1e9)
    while mono() < end:
        k, pairs, label = pick_fault(c, rng)
        if k == "kill":
            L = c.leader()
            with c.lock:
                alive = [i for i in c.ids if c.alive(i) and i not in restart_pending
                         and i not in c.busy]
                dead = len(c.ids) - len(alive)
                if alive and dead < (len(c.ids) - 1) // 2:
                    v = L if (L in alive and rng.random() < 0.5) else rng.choice(alive)
                    c.kill9(v)
                    restart_pending[v] = mono() + int(rng.uniform(0.3, 5) * 1e9)
        else:
            c.set_grudge(pairs, label)
        hold = rng.uniform(c.a.hold_min, c.a.hold_max)
        step_end = mono() + int(hold * 1e9)
        while mono() < step_end:
            service_restarts(c, rng, restart_pending)
            time.sleep(0.05)
        if k != "kill" and pairs and rng.random() < c.a.heal_prob:
            c.set_grudge(set(), "heal")
            step_end = mono() + int(rng.uniform(c.a.heal_min, c.a.heal_max) * 1e9)
            while mono() < step_end:
                service_restarts(c, rng, restart_pending)
                time.sleep(0.05)


def service_restarts(c, rng, pending, force=False):
    c.run_mainq()
    with c.lock:
        for i, due in list(pending.items()):
            if force or mono() >= due:
                conf = None
                if rng.random() < 0.5:
                    conf = "%s/n%d-nocluster.conf" % (c.rundir, i)
                c.start(i, conf)
                c.ev("restart", node=i, conf=os.path.basename(conf or "n%d.conf" % i))
                del pending[i]


# ---------------------------------------------------------------- main

def wait_for_first_write():
    """Waits (at most 20 s) until node 1 takes a write: a leader is up."""
    t = mono()
    while True:
        try:
            cn = Resp(node_ip(1), CLIENT_PORT, timeout=3)
            if cn.call("SET", "hello", "1") == "OK":
                cn.close()
                return
            cn.close()
        except (ConnLost, ConnRefused):
            pass
        if mono() - t > 20e9:
            raise SystemExit("cluster did not come up")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=90)
    ap.add_argument("--tail", type=float, default=10, help="workers keep running after final heal")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--rundir", default=None)
    ap.add_argument("--workers-per-node", type=int, default=3)
    ap.add_argument("--epoch", type=float, default=1.5, help="seconds per key generation")
    ap.add_argument("--nreg", type=int, default=6)
    ap.add_argument("--ncnt", type=int, default=2)
    ap.add_argument("--think", type=float, default=0.02)
    ap.add_argument("--snapshot-entries", type=int, default=2000)
    ap.add_argument("--election-ms", type=int, default=500)
    ap.add_argument("--heartbeat-ms", type=int, default=50)
    ap.add_argument("--hold-min", type=float, default=2)
    ap.add_argument("--hold-max", type=float, default=9)
    ap.add_argument("--heal-prob", type=float, default=0.6)
    ap.add_argument("--heal-min", type=float, default=1)
    ap.add_argument("--heal-max", type=float, default=5)
    ap.add_argument("--ops", default="", help="operator actions to mix in, comma-separated: "
                    + ",".join(OP_KINDS) + " (ops.py)")
    ap.add_argument("--op-min", type=float, default=3, help="seconds between operator actions")
    ap.add_argument("--op-max", type=float, default=10)
    ap.add_argument("--pipeliners", type=int, default=0,
                    help="clients per node that pipeline INCR/GET on a counter of their own (pipeline.py)")
    ap.add_argument("--pipeline-transfers", type=float, default=0,
                    help="chance that a pipelined batch holds a CLUSTER TRANSFER")
    ap.add_argument("--ops-in-partition", type=float, default=0.7,
                    help="chance that an op waits (up to 5 s) for a partition to be in force")
    ap.add_argument("--disk-faults", default="", help="disk faults instead of partitions, comma-separated: "
                    + ",".join(diskfault.KINDS) + " (diskfault.py)")
    ap.add_argument("--disk-stall-ms", default="50:3000", help="a stalled fdatasync's length, A:B ms")
    ap.add_argument("--disk-kill-prob", type=float, default=0.2,
                    help="with --disk-faults, chance that a step is a kill -9 instead")
    ap.add_argument("--slow-follower-ms", type=int, default=0,
                    help="one follower's every segment fdatasync stalls this long, all run (diskfault.py)")
    a = ap.parse_args()
    for k in a.disk_faults.split(","):
        if k and k not in diskfault.KINDS:
            ap.error("unknown disk fault %r (known: %s)" % (k, ",".join(diskfault.KINDS)))
    kinds = [k for k in a.ops.split(",") if k]
    for k in kinds:
        if k not in OP_KINDS:
            ap.error("unknown op %r (known: %s)" % (k, ",".join(OP_KINDS)))
    a.bin = os.path.abspath(a.bin)
    rundir = os.path.abspath(a.rundir or os.path.join(RUNS, "n%d-s%d" % (a.nodes, a.seed)))
    subprocess.run(["rm", "-rf", rundir])
    os.makedirs(rundir + "/data")
    os.makedirs(rundir + "/hist")
    with open(rundir + "/args.json", "w") as f:
        json.dump(vars(a), f)
    rng = random.Random(a.seed)
    c = Cluster(a, rundir)
    restart_pending = {}
    workers = []
    ops = None
    try:
        c.setup_net()
        if a.disk_faults or a.slow_follower_ms:
            diskfault.setup(c)
        c.write_confs()
        for i in c.ids:
            c.start(i)
        wait_for_first_write()
        c.ev("up", leader=c.leader())
        sampler = None
        if a.slow_follower_ms:
            diskfault.slow_follower(c, a.slow_follower_ms)
            sampler = diskfault.start_sampler(c)
        t0 = mono()
        c.t0 = t0
        stop_at = t0 + int((a.duration + a.tail) * 1e9)
        epoch_ns = int(a.epoch * 1e9)
        wid = 0
        slots = mp.Array("i", [i for i in c.ids for _ in range(a.workers_per_node)]
                         + [i for i in c.ids for _ in range(a.pipeliners)])
        for i in c.ids:
            for _ in range(a.workers_per_node):
                p = mp.Process(target=worker, args=(wid, i, a.seed, t0, stop_at,
                                                    "%s/hist/w%d.jsonl" % (rundir, wid),
                                                    epoch_ns, a.nreg, a.ncnt, a.think, slots, wid))
                p.start()
                workers.append(p)
                wid += 1
        pkeys = []
        for slot in range(wid, len(slots)):
            pid = slot - wid
            p = mp.Process(target=pipeliner, args=(pid, a.seed, stop_at, "%s/hist/p%d.jsonl" % (rundir, pid),
                                                   a.think, slots, slot, a.pipeline_transfers))
            p.start()
            workers.append(p)
            pkeys.append("pc_%d" % pid)
        time.sleep(2)
        if kinds:
            ops = Ops(c, kinds, restart_pending, slots)
            ops.start()
        if a.disk_faults:
            diskfault.nemesis(c, rng, a.duration, restart_pending, service_restarts)
        elif a.slow_follower_ms:
            time.sleep(a.duration)
        else:
            nemesis(c, rng, a.duration, restart_pending)
        if sampler:
            sampler[0].set()
        # final heal
        if ops:
            ops.stopping.set()
        service_restarts(c, rng, restart_pending, force=True)
        c.set_grudge(set(), "final heal")
        if ops:
            # It finishes its current op, adds a node in place of a removed
            # one, and stops the removed ones.
            while ops.is_alive():
                service_restarts(c, rng, restart_pending)
                ops.join(0.05)
            service_restarts(c, rng, restart_pending, force=True)
            c.ev("ops_done")
        t_heal = mono()
        probe = {}
        ths = probe_writes(c, t_heal, probe)
        for t in ths:
            t.join()
        c.ev("probe", result=probe)
        for p in workers:
            p.join()
        c.ev("workers_done")
        if ops:
            final_membership(c, ops)
        conv_secs, ci = wait_converged(c)
        c.ev("converged", secs=conv_secs, indexes=ci)
        ukeys, epochs = keys_written(rundir, wid)
        final_reads(c, rundir, epochs, a.nreg, a.ncnt, ukeys, pkeys)
        c.ev("final_reads_done")
        alive = {i: c.alive(i) for i in c.ids}
        c.ev("alive", alive=alive)
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
        c.stop_all()
        with open(rundir + "/events.json", "w") as f:
            json.dump({"t0": c.t0, "events": c.events}, f, indent=0)


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
