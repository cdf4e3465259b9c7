"""The disk-fault nemesis (`--disk-faults`): instead of cutting the network,
the disk under a node misbehaves, through the LD_PRELOAD shim of
tests/diskfault/shim.c (built into target/diskfault.so by this module).
Every node runs with the shim and a control file of its own (ctlN in the
run dir); each step writes rules into one or all of them, holds, clears.

Kinds (any of them, comma-separated; `none` runs the same schedule of kills
with no disk fault, the baseline the stalls are compared with):

* stall:    every fdatasync of a segment stalls `--disk-stall-ms` (a range
            A:B, drawn per call) on the leader, one follower, or all nodes;
            with kill -9 and restarts mixed in (`--disk-kill-prob`).
* allstall: the same for every fdatasync and fsync of every file: the stable
            file and the directories too, which the event loop syncs itself
            (a vote or a new term is durable before it is acted on).
* eio:      one fdatasync of a segment fails with EIO, on the leader or a
            follower: the node must exit with status 1 and a line naming
            the segment.
* pwrite:   one segment append (pwrite) fails with EIO or ENOSPC: the same.
* stable:   the stable file's write, fsync or rename fails on a follower,
            which the nemesis then asks to take the leadership over
            (CLUSTER TRANSFER), so its next term or vote hits it: the same,
            naming the stable file, and no vote or term acted on.
* snapshot: a snapshot file's write or fsync fails (EIO or ENOSPC) on one
            node: a warning naming it, the node goes on, and takes the next
            snapshot.

A node that exits is restarted 0.3-5 s later with its rules cleared. Each
injection goes to disk.jsonl (rule, node and its role, whether the shim
fired it, the exit status and last line) and, as a `disk` event, to
events.json; check_disk.py judges them.

`--slow-follower-ms MS` makes one follower's every segment fdatasync stall
MS ms for the whole run (on top of any nemesis), and samples every node's
resident size (INFO used_memory) into memory.jsonl.
"""
import json
import os
import subprocess
import threading
import time

from common import mono, node_ip, ROOT, CLIENT_PORT
from resp import Resp, RespError, ConnLost, ConnRefused

KINDS = ("stall", "allstall", "eio", "pwrite", "stable", "snapshot", "none")
# Kinds after which the node must stop (exit status 1).
FATAL = ("eio", "pwrite", "stable")
SHIM_SRC = os.path.join(ROOT, "tests", "diskfault", "shim.c")
SHIM = os.path.join(ROOT, "target", "diskfault.so")


def build_shim():
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", SHIM, SHIM_SRC, "-ldl", "-lpthread"],
                   check=True)


def ctl(c, i):
    return "%s/ctl%d" % (c.rundir, i)


def faults_log(c, i):
    return "%s/faults%d.log" % (c.rundir, i)


def setup(c):
    """Every node from now on starts with the shim and its control file."""
    build_shim()
    for i in c.ids:
        set_rules(c, i, [])
    c.node_env = lambda i: {"LD_PRELOAD": SHIM, "DISKFAULT_CTL": ctl(c, i),
                            "DISKFAULT_LOG": faults_log(c, i)}
    c.slow = {}


def set_rules(c, i, rules):
    """Replaces node i's rules (a slow follower's stall stays under them)."""
    lines = list(rules) + list(getattr(c, "slow", {}).get(i, []))
    tmp = ctl(c, i) + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(r + "\n" for r in lines))
    # Renamed into place: the shim never reads a half-written file. The
    # size or mtime changes, so it re-reads it.
    os.rename(tmp, ctl(c, i))


def fired(c, i, since_wall):
    """Faults the shim logged on node i since since_wall (unix seconds)."""
    try:
        with open(faults_log(c, i)) as f:
            rows = [line.split(" ", 4) for line in f]
    except FileNotFoundError:
        return []
    return [r for r in rows if len(r) == 5 and int(r[0]) / 1000 >= since_wall]


def last_line(c, i):
    with open("%s/n%d.log" % (c.rundir, i), "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        lines = f.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def transfer(c, to):
    try:
        cn = Resp(node_ip(to), CLIENT_PORT, timeout=5, connect_timeout=0.5)
        r = cn.call("CLUSTER", "TRANSFER", str(to))
        cn.close()
        return str(r)
    except (ConnLost, ConnRefused) as ex:
        return "conn: %s" % ex


def pick(c, rng, kinds):
    """The next step: (kind, target nodes, rules, label)."""
    kind = rng.choice(kinds)
    L = c.leader()
    alive = [i for i in c.ids if c.alive(i)]
    followers = [i for i in alive if i != L]
    if kind in ("stall", "allstall"):
        where = rng.choice(["leader", "follower", "all"])
        lo, hi = c.a.disk_stall_ms.split(":")
        rule = ("fdatasync stall %s:%s 0 .seg" if kind == "stall" else "sync stall %s:%s 0") % (lo, hi)
        kind = "stall"
        if where == "leader" and L is not None:
            return kind, [L], [rule], "stall leader %d (%s)" % (L, rule)
        if where == "follower" and followers:
            f = rng.choice(followers)
            return kind, [f], [rule], "stall follower %d (%s)" % (f, rule)
        return kind, alive, [rule], "stall all (%s)" % rule
    target = L if (L is not None and rng.random() < 0.5) else rng.choice(alive or c.ids)
    if kind == "eio":
        return kind, [target], ["fdatasync eio 0 1 .seg"], "fdatasync EIO on %d" % target
    if kind == "pwrite":
        err = rng.choice(["eio", "enospc"])
        return kind, [target], ["pwrite %s 0 1 .seg" % err], "pwrite %s on %d" % (err, target)
    if kind == "stable":
        if not followers:
            return "none", [], [], "none"
        f = rng.choice(followers)
        # "/stable", not "stable": a run dir's name may hold that word, and
        # then the node's own log file (its stderr) matched too.
        rule = rng.choice(["write enospc 0 1 /stable", "fsync eio 0 1 /stable",
                           "rename eio 0 1 /stable"])
        others = [i for i in followers if i != f]
        if others and rng.random() < 0.5:
            # It hears the other's RequestVote, of a new term, as a voter.
            to = rng.choice(others)
            return kind, [f, to], [rule], "%s on %d, then transfer to %d" % (rule, f, to)
        return kind, [f], [rule], "%s on %d, then transfer to it" % (rule, f)
    if kind == "snapshot":
        rule = rng.choice(["fsync eio 0 1 .snap", "pwrite enospc 0 1 .snap", "pwrite eio 0 1 .snap"])
        return kind, [target], [rule], "%s on %d" % (rule, target)
    return "none", [], [], "none"


def nemesis(c, rng, duration, restart_pending, service_restarts):
    kinds = [k for k in c.a.disk_faults.split(",") if k]
    out = open(c.rundir + "/disk.jsonl", "a")
    end = mono() + int(duration * 1e9)

    def wait(secs):
        until = mono() + int(secs * 1e9)
        while mono() < until:
            service_restarts(c, rng, restart_pending)
            time.sleep(0.05)

    while mono() < end:
        with c.lock:
            down = [i for i in c.ids if not c.alive(i) or i in restart_pending]
        if rng.random() < c.a.disk_kill_prob and not down:
            L = c.leader()
            alive = [i for i in c.ids if c.alive(i)]
            v = L if (L in alive and rng.random() < 0.5) else rng.choice(alive)
            c.kill9(v)
            restart_pending[v] = mono() + int(rng.uniform(0.3, 5) * 1e9)
            wait(rng.uniform(c.a.hold_min, c.a.hold_max))
            continue
        kind, nodes, rules, label = pick(c, rng, kinds)
        if kind in FATAL + ("snapshot",) and down:
            # One node down at a time, as the kills: a second would stop the cluster.
            wait(0.5)
            continue
        roles = {i: ("leader" if i == c.leader() else "follower") for i in nodes}
        since = time.time()
        transfer_to = None
        if kind == "stable":
            nodes, transfer_to = nodes[:1], nodes[-1]
        for i in nodes:
            set_rules(c, i, rules)
        c.ev("disk", fault=kind, label=label, nodes=nodes)
        if kind == "stable":
            # The shim re-reads its control file at most every 10 ms: the
            # term change must come after that.
            time.sleep(0.2)
            threading.Thread(target=transfer, args=(c, transfer_to), daemon=True).start()
        hold = rng.uniform(c.a.hold_min, c.a.hold_max)
        rec = {"t": mono(), "wall": since, "kind": kind, "label": label, "nodes": nodes, "roles": roles,
               "rules": rules, "hold": hold}
        if kind in FATAL:
            # Until the node stops, at most 10 s: the fault fires at the
            # node's next sync, append or term change.
            until = mono() + int(max(hold, 10) * 1e9)
            while mono() < until and c.alive(nodes[0]):
                service_restarts(c, rng, restart_pending)
                time.sleep(0.05)
            rec["fired"] = [r[2:4] for r in fired(c, nodes[0], since)]
            stopped = not c.alive(nodes[0])
            if rec["fired"] and not stopped:
                # Give it a moment more before calling it still running.
                wait(2)
                stopped = not c.alive(nodes[0])
            rec["exit"] = c.procs[nodes[0]].returncode if stopped else None
            rec["line"] = last_line(c, nodes[0]) if stopped else None
            set_rules(c, nodes[0], [])
            if stopped:
                restart_pending[nodes[0]] = mono() + int(rng.uniform(0.3, 5) * 1e9)
        else:
            wait(hold)
            for i in nodes:
                set_rules(c, i, [])
                rec.setdefault("fired", {})[i] = len(fired(c, i, since))
            rec["alive"] = {i: c.alive(i) for i in nodes}
            if kind == "snapshot":
                rec["line"] = last_line(c, nodes[0])
        rec["t_end"] = mono()
        rec["wall_end"] = time.time()
        out.write(json.dumps(rec) + "\n")
        out.flush()
        c.ev("disk_end", fault=kind, label=label, fired=rec.get("fired"), exit=rec.get("exit"))
        wait(rng.uniform(c.a.heal_min, c.a.heal_max))
    out.close()


def slow_follower(c, ms):
    """One follower's every segment fdatasync stalls ms ms from now on."""
    L = c.leader()
    f = next(i for i in c.ids if i != L)
    c.slow[f] = ["fdatasync stall %d 0 .seg" % ms]
    set_rules(c, f, [])
    c.ev("slow_follower", node=f, ms=ms, leader=L)
    return f


def sample_memory(c, stop):
    """Every node's resident size and indexes every 0.5 s, into memory.jsonl."""
    with open(c.rundir + "/memory.jsonl", "w") as out:
        while not stop.is_set():
            row = {"t": mono()}
            for i in list(c.ids):
                try:
                    cn = Resp(node_ip(i), CLIENT_PORT, timeout=0.5, connect_timeout=0.5)
                    r = cn.call("INFO")
                    cn.close()
                except (ConnLost, ConnRefused):
                    continue
                if isinstance(r, RespError):
                    continue
                d = dict(line.split(":", 1) for line in r.decode().split("\r\n") if ":" in line)
                row[i] = {k: d.get(k) for k in ("role", "used_memory", "commit_index",
                                                 "last_log_index", "term")}
            leader = next((i for i in c.ids if row.get(i, {}).get("role") == "leader"), None)
            if leader is not None:
                row["match"] = match_indexes(leader)
            out.write(json.dumps(row) + "\n")
            stop.wait(0.5)


def match_indexes(leader):
    """Each member's match_index as the leader sees it (CLUSTER MEMBERS):
    what it acknowledged, so synced, unlike its INFO's last_log_index."""
    try:
        cn = Resp(node_ip(leader), CLIENT_PORT, timeout=0.5, connect_timeout=0.5)
        r = cn.call("CLUSTER", "MEMBERS")
        cn.close()
    except (ConnLost, ConnRefused):
        return {}
    if isinstance(r, RespError):
        return {}
    out = {}
    for line in r.decode().split("\n"):
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "id" in fields and "match_index" in fields:
            out[fields["id"]] = int(fields["match_index"])
    return out


def start_sampler(c):
    stop = threading.Event()
    t = threading.Thread(target=sample_memory, args=(c, stop), daemon=True)
    t.start()
    return stop, t

