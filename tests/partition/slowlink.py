#!/usr/bin/env python3
"""Slow, lossy and jittery links instead of cut ones.  MUST run inside a
private network namespace (slowlink.sh does `unshare -n`); the network is
harness.py's: a router namespace and one namespace per node.

This machine's kernel has no netem (nor prio), so each impairment is made
from what there is, and only on raft-port traffic (clients, which run in the
router namespace, stay fast, so what is measured is the cluster):
  delay/jitter  delayproxy.py, a transparent proxy in the router namespace
                (iptables REDIRECT of port 7000), used only when asked for;
  loss          iptables `statistic` DROP (real packet loss, TCP recovers);
  rate          htb on the veth into each node (its default queue, 1000
                packets, is the link's buffer);
  stall         iptables DROP of all the slow node's raft packets.
With --slow-node 0 every node-to-node path is impaired once (so the RTT is
twice --delay-ms); with --slow-node K (or --slow-follower/--slow-leader)
only K's own paths, both ways.

Phases: the cluster comes up unimpaired, the impairment goes on, the
harness's register/counter workers (and optionally writers of large values
through the leader) run for --duration, the impairment comes off (--tail
seconds before the end), then convergence, linearizable final reads and
DEBUG DIGEST as in harness.py, so check.py judges the run.  Every 0.5 s every
node's INFO is sampled (term, role, leader, commit index, RSS) into
info.jsonl; summary.json has term changes, leaders seen, seconds without a
leader, write rate and latency, and peak RSS.
"""
import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Cluster, mono, node_ip, wait_for_first_write, CLIENT_PORT, RAFT_PORT, RUNS, DEFAULT_BIN  # noqa: E402
from resp import Resp, RespError, ConnLost, ConnRefused  # noqa: E402


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


PROXY_PORT = 9000


def setup_proxy(c, use_proxy):
    """Every node-to-node connection through delayproxy.py (delay, jitter),
    if asked: its buffers would add to a rate-limited link's queue."""
    sh("iptables -N SLOW && iptables -I INPUT -j SLOW && iptables -I OUTPUT -j SLOW"
       " && iptables -I FORWARD -j SLOW")
    c.proxy_conf = c.rundir + "/proxy.json"
    if not use_proxy:
        return
    with open(c.proxy_conf, "w") as f:
        json.dump({"delay_ms": 0, "jitter_ms": 0, "node": 0}, f)
    c.proxy = subprocess.Popen([sys.executable, os.path.join(harness.HERE, "delayproxy.py"),
                                str(PROXY_PORT), c.proxy_conf], preexec_fn=harness.pdeath)
    sh("iptables -t nat -A PREROUTING -p tcp --dport %d -j REDIRECT --to-ports %d" % (RAFT_PORT, PROXY_PORT))
    time.sleep(0.3)


def htb(dev, ns_pid, rate):
    """Raft-port data leaving `dev` at most at `rate` (clients unshaped)."""
    pre = "nsenter -t %d -n " % ns_pid if ns_pid else ""
    subprocess.run(pre + "tc qdisc del dev %s root 2>/dev/null" % dev, shell=True)
    if not rate:
        return
    sh(pre + "tc qdisc add dev %s root handle 1: htb default 10 r2q 1000" % dev)
    sh(pre + "tc class add dev %s parent 1: classid 1:10 htb rate 10gbit" % dev)
    sh(pre + "tc class add dev %s parent 1: classid 1:20 htb rate %s ceil %s" % (dev, rate, rate))
    sh(pre + "tc filter add dev %s parent 1: protocol ip prio 1 u32 match ip dport %d 0xffff flowid 1:20"
       % (dev, RAFT_PORT))


def apply_shaping(c, spec, slow_node):
    """spec: {delay, jitter, loss (percent), rate (tc units)}; None = off.
    Loss is real packet loss (iptables statistic) on the proxy-to-node leg
    of every path, or on both legs of the slow node's; rate is htb on the
    veth into each node (and out of the slow node)."""
    spec = spec or {}
    with open(c.proxy_conf + ".tmp", "w") as f:
        json.dump({"delay_ms": spec.get("delay", 0), "jitter_ms": spec.get("jitter", 0),
                   "node": slow_node}, f)
    os.rename(c.proxy_conf + ".tmp", c.proxy_conf)
    rules = ["*filter", "-F SLOW"]
    loss = spec.get("loss", 0)
    if loss:
        m = "-j DROP" if loss >= 100 else "-m statistic --mode random --probability %g -j DROP" % (loss / 100.0)
        if slow_node:
            ip = node_ip(slow_node)
            ports = "-p tcp -m multiport --ports %d,%d" % (RAFT_PORT, PROXY_PORT)
            rules += ["-A SLOW -d %s %s %s" % (ip, ports, m), "-A SLOW -s %s %s %s" % (ip, ports, m)]
        else:
            rules += ["-A SLOW -p tcp --dport %d %s" % (RAFT_PORT, m),
                      "-A SLOW -p tcp --sport %d %s" % (RAFT_PORT, m)]
    rules.append("COMMIT")
    subprocess.run(["iptables-restore", "--noflush"], input="\n".join(rules) + "\n", text=True, check=True)
    rate = spec.get("rate")
    if slow_node:
        htb("vr%d" % slow_node, None, rate)
        htb("vn%d" % slow_node, c.holders[slow_node].pid, rate)
    else:
        for i in c.ids:
            htb("vr%d" % i, None, rate)
    c.ev("shaping", spec=spec or "off", node=slow_node or "all")


def big_writer(wid, node, stop_at, outpath, value_bytes, nkeys):
    """SETs of large values to a few keys, each value recorded by its hash."""
    harness.pdeath()
    out = open(outpath, "w")
    conn = None
    n = 0
    rng = random.Random(wid)
    while mono() < stop_at:
        n += 1
        key = "big%d_%d" % (wid, rng.randrange(nkeys))
        val = ("%d:%d:" % (wid, n)).encode().ljust(value_bytes, b"x")
        rec = {"w": "big%d" % wid, "node": node, "op": "set", "key": key, "val": "%d:%d" % (wid, n)}
        try:
            if conn is None:
                conn = Resp(node_ip(node), CLIENT_PORT, timeout=30.0, connect_timeout=0.5)
            rec["t0"] = mono()
            r = conn.call("SET", key, val)
            rec["t1"] = mono()
            rec["res"] = "ok" if r == "OK" else ("tryagain" if str(r).startswith("TRYAGAIN") else "err")
            if rec["res"] != "ok":
                rec["detail"] = str(r)
        except (ConnLost, ConnRefused) as ex:
            rec.setdefault("t0", mono())
            rec["t1"] = mono()
            rec["res"] = "info"
            rec["detail"] = str(ex)
            if conn:
                conn.close()
            conn = None
            time.sleep(0.1)
        out.write(json.dumps(rec) + "\n")
        out.flush()
    out.close()


def infos(c):
    r = {}
    for i in c.ids:
        try:
            cn = Resp(node_ip(i), CLIENT_PORT, timeout=0.5, connect_timeout=0.5)
            try:
                rep = cn.call("INFO", "raft", "memory")
            finally:
                cn.close()
            r[i] = dict(l.split(":", 1) for l in rep.decode().split("\r\n") if ":" in l)
        except Exception:
            pass
    return r


def sampler(c, stop, path):
    with open(path, "w") as f:
        while not stop.is_set():
            now = mono()
            for i, d in infos(c).items():
                f.write(json.dumps({"t": now, "node": i, "role": d.get("role"), "term": d.get("term"),
                                    "leader": d.get("leader_id"), "commit": d.get("commit_index"),
                                    "applied": d.get("applied_index"),
                                    "snapshot_index": d.get("snapshot_index"),
                                    "rss": d.get("used_memory"),
                                    "peers": d.get("connected_peers")}) + "\n")
            f.flush()
            stop.wait(0.5)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def summarize(rundir, t_shaped, t_unshaped):
    samples = [json.loads(l) for l in open(rundir + "/info.jsonl")]
    terms = {}
    leaders = set()
    rss = {}
    leaderless = 0.0
    last_t = None
    for s in samples:
        if s["term"] is not None:
            terms.setdefault(s["node"], []).append(int(s["term"]))
        if s["role"] == "leader":
            leaders.add((s["node"], s["term"]))
        if s["rss"] is not None:
            rss[s["node"]] = max(rss.get(s["node"], 0), int(s["rss"]))
    term_changes = {n: len(set(ts)) - 1 for n, ts in terms.items()}
    by_t = {}
    for s in samples:
        by_t.setdefault(s["t"], []).append(s)
    ts = sorted(by_t)
    for a, b in zip(ts, ts[1:]):
        if t_shaped <= a <= t_unshaped and not any(s["role"] == "leader" for s in by_t[a]):
            leaderless += (b - a) / 1e9
    hist = []
    for fn in os.listdir(rundir + "/hist"):
        for l in open(os.path.join(rundir, "hist", fn)):
            hist.append(json.loads(l))
    w = [h for h in hist if h["op"] in ("set", "incr", "del") and h["res"] == "ok"
         and t_shaped <= h["t0"] <= t_unshaped and not str(h["w"]).startswith("big")]
    lat = [(h["t1"] - h["t0"]) / 1e6 for h in w]
    big = [h for h in hist if str(h["w"]).startswith("big")]
    bigok = [h for h in big if h["res"] == "ok" and t_shaped <= h["t0"] <= t_unshaped]
    blat = [(h["t1"] - h["t0"]) / 1e6 for h in bigok]
    span = (t_unshaped - t_shaped) / 1e9
    res = {"shaped_secs": round(span, 1),
           "term_changes_per_node": term_changes,
           "leaders_seen": sorted(leaders),
           "leaderless_secs_while_shaped": round(leaderless, 1),
           "small_writes_ok_per_s": round(len(w) / span, 1) if span else None,
           "small_write_ms_p50_p99_max": [pct(lat, .5), pct(lat, .99), max(lat) if lat else None],
           "small_nonok": dict(__import__("collections").Counter(
               h["res"] for h in hist if not str(h["w"]).startswith("big") and h["res"] != "ok"
               and t_shaped <= h["t0"] <= t_unshaped)),
           "big_writes_ok": len(bigok),
           "big_write_ms_p50_p99_max": [pct(blat, .5), pct(blat, .99), max(blat) if blat else None],
           "big_nonok": dict(__import__("collections").Counter(h["res"] for h in big if h["res"] != "ok")),
           "peak_rss_mb": {n: round(v / 2 ** 20) for n, v in rss.items()}}
    for k in ("small_write_ms_p50_p99_max", "big_write_ms_p50_p99_max"):
        res[k] = [None if x is None else round(x, 1) for x in res[k]]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--delay-ms", type=int, default=0, help="one-way delay added to every node-to-node path")
    ap.add_argument("--jitter-ms", type=int, default=0, help="+- uniform jitter on that delay")
    ap.add_argument("--loss", type=float, default=0, help="packet loss, percent")
    ap.add_argument("--rate", default="", help="bandwidth into each node (or the slow node), e.g. 1mbit")
    ap.add_argument("--slow-node", type=int, default=0, help="0: every link; K: only node K's")
    ap.add_argument("--slow-leader", action="store_true", help="--slow-node is the leader's id once up")
    ap.add_argument("--slow-follower", action="store_true", help="--slow-node is a follower once up")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=40)
    ap.add_argument("--tail", type=float, default=5, help="unshaped seconds at the end of the load")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--workers-per-node", type=int, default=2)
    ap.add_argument("--epoch", type=float, default=1.5)
    ap.add_argument("--nreg", type=int, default=6)
    ap.add_argument("--ncnt", type=int, default=2)
    ap.add_argument("--think", type=float, default=0.02)
    ap.add_argument("--snapshot-entries", type=int, default=100000)
    ap.add_argument("--election-ms", type=int, default=500)
    ap.add_argument("--heartbeat-ms", type=int, default=50)
    ap.add_argument("--big-writers", type=int, default=0, help="writers of large values (through the leader)")
    ap.add_argument("--value-bytes", type=int, default=1 << 20)
    ap.add_argument("--big-keys", type=int, default=4)
    ap.add_argument("--big-stop", type=float, default=0, help="large-value writers stop at this many s (0: at the end)")
    ap.add_argument("--restart-follower", default="", help="KILL,RESTART: kill -9 the slow node at KILL s"
                    " into the load and restart it at RESTART s (catch-up by snapshot)")
    ap.add_argument("--sigstop", default="", help="STOP,CONT: SIGSTOP the slow node at STOP s, SIGCONT at CONT s")
    ap.add_argument("--kill-leader", default="", help="KILL,RESTART: kill -9 the leader at KILL s, restart"
                    " it at RESTART s (an election over the slow links)")
    ap.add_argument("--netem-stall", default="", help="FROM,TO: loss 100%% on the slow node's links meanwhile")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    a.seed = 1
    rundir = os.path.join(RUNS, "slow-" + a.name)
    subprocess.run(["rm", "-rf", rundir])
    os.makedirs(rundir + "/data")
    os.makedirs(rundir + "/hist")
    with open(rundir + "/args.json", "w") as f:
        json.dump(vars(a), f)
    c = Cluster(a, rundir)
    procs = []
    stop = threading.Event()
    samp = None
    try:
        c.setup_net()
        setup_proxy(c, bool(a.delay_ms or a.jitter_ms))
        c.write_confs()
        for i in c.ids:
            c.start(i)
        wait_for_first_write()
        leader = c.leader()
        c.ev("up", leader=leader)
        if a.slow_leader:
            a.slow_node = leader
        elif a.slow_follower:
            a.slow_node = [i for i in c.ids if i != leader][0]
        samp = threading.Thread(target=sampler, args=(c, stop, rundir + "/info.jsonl"))
        samp.start()
        spec = {"delay": a.delay_ms, "jitter": a.jitter_ms, "loss": a.loss, "rate": a.rate}
        apply_shaping(c, spec, a.slow_node)
        t0 = mono()
        c.t0 = t0
        t_shaped = t0
        stop_at = t0 + int((a.duration + a.tail) * 1e9)
        wid = 0
        for i in c.ids:
            for _ in range(a.workers_per_node):
                p = mp.Process(target=harness.worker, args=(wid, i, a.seed, t0, stop_at,
                                                            "%s/hist/w%d.jsonl" % (rundir, wid),
                                                            int(a.epoch * 1e9), a.nreg, a.ncnt, a.think))
                p.start()
                procs.append(p)
                wid += 1
        nsmall = wid
        for b in range(a.big_writers):
            big_stop = t0 + int(a.big_stop * 1e9) if a.big_stop else stop_at
            p = mp.Process(target=big_writer, args=(b, leader, big_stop, "%s/hist/big%d.jsonl" % (rundir, b),
                                                    a.value_bytes, a.big_keys))
            p.start()
            procs.append(p)
        actions = []
        if a.restart_follower:
            k, r = map(float, a.restart_follower.split(","))
            actions += [(k, "kill"), (r, "restart")]
        if a.sigstop:
            s, r = map(float, a.sigstop.split(","))
            actions += [(s, "stop"), (r, "cont")]
        if a.netem_stall:
            s, r = map(float, a.netem_stall.split(","))
            actions += [(s, "stall"), (r, "unstall")]
        if a.kill_leader:
            s, r = map(float, a.kill_leader.split(","))
            actions += [(s, "killleader"), (r, "restartleader")]
        actions += [(a.duration, "unshape")]
        actions.sort()
        t_unshaped = None
        for at, what in actions:
            while mono() < t0 + at * 1e9:
                time.sleep(0.05)
            k = a.slow_node
            if what == "kill":
                c.kill9(k)
            elif what == "restart":
                c.start(k)
                c.ev("restart", node=k)
            elif what == "stop":
                c.procs[k].send_signal(signal.SIGSTOP)
                c.ev("sigstop", node=k)
            elif what == "cont":
                c.procs[k].send_signal(signal.SIGCONT)
                c.ev("sigcont", node=k)
            elif what == "stall":
                apply_shaping(c, dict(spec, loss=100), k)
            elif what == "unstall":
                apply_shaping(c, spec, k)
            elif what == "killleader":
                victim = c.leader()
                if victim:
                    c.kill9(victim)
            elif what == "restartleader":
                if victim:
                    c.start(victim)
                    c.ev("restart", node=victim)
            elif what == "unshape":
                apply_shaping(c, None, a.slow_node)
                t_unshaped = mono()
        for p in procs:
            p.join()
        c.ev("workers_done")
        conv_secs, ci = harness.wait_converged(c, timeout=180)
        c.ev("converged", secs=conv_secs, indexes=ci)
        ukeys, epochs = harness.keys_written(rundir, nsmall)
        # The large values' histories are not checked by check.py (their
        # values are too big to read back per op); DEBUG DIGEST covers them.
        for b in range(a.big_writers):
            os.rename("%s/hist/big%d.jsonl" % (rundir, b), "%s/big%d.jsonl" % (rundir, b))
        harness.final_reads(c, rundir, epochs, a.nreg, a.ncnt, ukeys)
        c.ev("final_reads_done")
        c.ev("alive", alive={i: c.alive(i) for i in c.ids})
        stop.set()
        samp.join()
        for b in range(a.big_writers):
            os.rename("%s/big%d.jsonl" % (rundir, b), "%s/hist/big%d.jsonl" % (rundir, b))
        summ = summarize(rundir, t_shaped, t_unshaped)
        summ["convergence_secs"] = conv_secs
        for b in range(a.big_writers):
            os.rename("%s/hist/big%d.jsonl" % (rundir, b), "%s/big%d.jsonl" % (rundir, b))
        with open(rundir + "/summary.json", "w") as f:
            json.dump(summ, f, indent=1)
        print("SUMMARY", a.name, json.dumps(summ), flush=True)
    finally:
        stop.set()
        if samp:
            samp.join()
        for p in procs:
            if p.is_alive():
                p.kill()
        for i in c.ids:
            p = c.procs.get(i)
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT)
        c.stop_all()
        if getattr(c, "proxy", None):
            c.proxy.kill()
            c.proxy.wait()
        with open(rundir + "/events.json", "w") as f:
            json.dump({"t0": c.t0, "events": c.events}, f, indent=0)


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
