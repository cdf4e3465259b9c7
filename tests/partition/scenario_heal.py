#!/usr/bin/env python3
"""Targeted liveness scenario (run inside `unshare -n`, see scenario_heal.sh):
isolate the leader (iptables DROP, both directions) for D seconds, heal, and
measure per node how long until a SET through that node succeeds again, and
what the old leader's INFO says meanwhile.  Also dumps `ss -tin` of the peer
connections in the old leader's namespace at heal time (TCP backoff/RTO).

  scenario_heal.py --nodes 3 --iso 5,20,60 [--kind isolate|minority]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from resp import Resp, RespError, ConnLost, ConnRefused, info  # noqa: E402


def probe_until_ok(i, t_heal, limit):
    k = 0
    while H.mono() - t_heal < limit * 1e9:
        k += 1
        try:
            c = Resp(H.node_ip(i), H.CLIENT_PORT, timeout=5, connect_timeout=0.5)
            r = c.call("SET", "probe_%d" % i, str(k))
            c.close()
            if r == "OK":
                return (H.mono() - t_heal) / 1e9, k
        except (ConnLost, ConnRefused):
            pass
        time.sleep(0.05)
    return None, k


def ss(c, i):
    pid = c.holders[i].pid
    return subprocess.run("nsenter -t %d -n ss -tino state established '( sport = :%d or dport = :%d )'"
                          % (pid, H.RAFT_PORT, H.RAFT_PORT), shell=True,
                          capture_output=True, text=True).stdout


def follower_then_kill_leader(c, L, others, d, results):
    """Isolate follower F for d s, heal, wait 2 s (all links up again), then
    kill -9 the leader: the survivors (F and another node) are a connected
    majority; measure how long until a write through either succeeds."""
    F = others[0]
    rest = [x for x in c.ids if x != F]
    c.set_grudge(H.all_pairs([F], rest), "isolate follower %d for %.0fs" % (F, d))
    time.sleep(d)
    c.set_grudge(set(), "heal")
    time.sleep(2)
    c.kill9(L)
    t_k = H.mono()
    out = {}
    ths = []
    for i in others:
        def run(i=i):
            out[i] = probe_until_ok(i, t_k, 180)
        th = threading.Thread(target=run)
        th.start()
        ths.append(th)
    for th in ths:
        th.join()
    before = ss(c, F)
    r = {"scenario": "isolate follower %d %.0fs, heal, +2s kill -9 leader %d" % (F, d, L),
         "first_ok_set_after_kill": {i: out[i][0] for i in others},
         "ss_F_after": before}
    results.append(r)
    print(json.dumps(r, indent=1), flush=True)
    c.start(L)
    c.ev("restart", node=L)
    time.sleep(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--iso", default="5,20,60")
    ap.add_argument("--kind", default="isolate")
    ap.add_argument("--bin", default=H.DEFAULT_BIN)
    ap.add_argument("--rundir", default=os.path.join(H.RUNS, "scenario"))
    ap.add_argument("--snapshot-entries", type=int, default=100000)
    ap.add_argument("--election-ms", type=int, default=500)
    ap.add_argument("--heartbeat-ms", type=int, default=50)
    a = ap.parse_args()
    subprocess.run(["rm", "-rf", a.rundir])
    os.makedirs(a.rundir + "/data")
    c = H.Cluster(a, a.rundir)
    results = []
    stop = threading.Event()

    def bg_writer():  # a trickle of writes through every node, to keep traffic flowing
        n = 0
        while not stop.is_set():
            for i in c.ids:
                try:
                    cn = Resp(H.node_ip(i), H.CLIENT_PORT, timeout=0.3, connect_timeout=0.3)
                    cn.call("SET", "bg", str(n))
                    cn.close()
                except Exception:
                    pass
                n += 1
            time.sleep(0.1)
    try:
        c.setup_net()
        c.write_confs()
        for i in c.ids:
            c.start(i)
        t = H.mono()
        while probe_until_ok(1, H.mono(), 3)[0] is None and H.mono() - t < 20e9:
            pass
        threading.Thread(target=bg_writer, daemon=True).start()
        for d in [float(x) for x in a.iso.split(",")]:
            time.sleep(3)
            L = c.leader()
            others = [x for x in c.ids if x != L]
            if a.kind == "follower_then_kill_leader":
                follower_then_kill_leader(c, L, others, d, results)
                continue
            if a.kind == "isolate":
                cut = [L]
            else:  # minority containing the leader
                cut = [L] + others[: (len(c.ids) - 1) // 2 - 1]
            rest = [x for x in c.ids if x not in cut]
            c.set_grudge(H.all_pairs(cut, rest), "%s %s for %.0fs" % (a.kind, cut, d))
            time.sleep(d)
            before = ss(c, L)
            c.set_grudge(set(), "heal")
            t_heal = H.mono()
            out = {}
            ths = []
            for i in c.ids:
                def run(i=i):
                    out[i] = probe_until_ok(i, t_heal, 180)
                th = threading.Thread(target=run)
                th.start()
                ths.append(th)
            # watch old leader's view
            view = []
            while any(th.is_alive() for th in ths):
                try:
                    d_ = info(H.node_ip(L), H.CLIENT_PORT, timeout=0.5)
                    view.append(((H.mono() - t_heal) / 1e9, d_.get("role"), d_.get("term"),
                                 d_.get("leader_id"), d_.get("connected_peers"), d_.get("commit_index")))
                except Exception as e:
                    view.append(((H.mono() - t_heal) / 1e9, "info-failed", str(e)))
                time.sleep(0.5)
            for th in ths:
                th.join()
            # compress view: print changes only
            comp = []
            for v in view:
                if not comp or comp[-1][1:5] != v[1:5]:
                    comp.append(v)
            r = {"partition": "%s %s" % (a.kind, cut), "secs": d, "old_leader": L,
                 "first_ok_set_after_heal": {i: out[i][0] for i in c.ids},
                 "old_leader_info_changes": comp, "ss_old_leader_at_heal": before}
            results.append(r)
            print(json.dumps(r, indent=1), flush=True)
    finally:
        stop.set()
        c.stop_all()
        with open(a.rundir + "/results.json", "w") as f:
            json.dump(results, f, indent=1)
        with open(a.rundir + "/events.json", "w") as f:
            json.dump({"t0": c.t0, "events": c.events}, f, indent=0)


if __name__ == "__main__":
    main()
