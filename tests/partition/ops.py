"""Operator actions the harness can mix into its nemesis (`--ops`), seeded
like the faults and run on a thread of their own, so that they also land
while a partition is in force:

* transfer:   CLUSTER TRANSFER to a random member, sent through a random
              member (so often forwarded by a follower);
* sigterm:    SIGTERM to the leader (mostly) or a follower, which hands its
              leadership over and exits; restarted 0.3-5 s later;
* membership: CLUSTER REMOVE of a follower (or, a quarter of the time, the
              leader), later CLUSTER ADD of a new id with an empty data dir
              (started with `join = yes`) in a namespace of its own, so the
              member count returns; the removed node is stopped a while
              after its removal.

Every attempt and its reply goes to ops.jsonl and, as an "op" event, to
events.json; check_ops.py judges them. A REMOVE or ADD is retried until its
outcome is known: `+OK`, or the answer that it was already made (`-ERR
unknown node N`, `-ERR node N already a member`), which is only allowed
after an attempt whose outcome was unknown (`-TIMEOUT`, a lost connection).
"""
import json
import random
import signal
import subprocess
import threading
import time

from common import mono, node_ip, CLIENT_PORT, RAFT_PORT
from resp import Resp, RespError, ConnLost, ConnRefused, info

KINDS = ("transfer", "sigterm", "membership")
WEIGHTS = {"transfer": 3, "sigterm": 2, "membership": 2}
# How long a REMOVE or ADD is retried before its outcome is left open.
RETRY_SECS = 30


def call(node, *cmd, timeout=15):
    """One attempt through node: a dict with the reply's class and text."""
    r = {"via": node, "t0": mono(), "wall0": time.time()}
    try:
        cn = Resp(node_ip(node), CLIENT_PORT, timeout=timeout, connect_timeout=0.5)
    except ConnRefused as ex:
        r.update(res="refused", text=str(ex))
    else:
        try:
            rep = cn.call(*cmd)
            if isinstance(rep, RespError):
                s = str(rep)
                cls = s.split(" ", 1)[0].lower()
                r.update(res=cls if cls in ("tryagain", "timeout") else "err", text=s)
            else:
                r.update(res="ok", text=rep.decode() if isinstance(rep, bytes) else str(rep))
        except ConnLost as ex:
            r.update(res="lost", text=str(ex))
        cn.close()
    r.update(t1=mono(), wall1=time.time())
    return r


def members_of(c, tries=60):
    """CLUSTER MEMBERS through any member, parsed: {id: suffrage}, or None."""
    for _ in range(tries):
        for i in list(c.ids):
            r = call(i, "CLUSTER", "MEMBERS", timeout=5)
            if r["res"] == "ok":
                out = {}
                for line in r["text"].splitlines():
                    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                    out[int(f["id"])] = f.get("suffrage")
                return out
        time.sleep(0.5)
    return None


class Ops(threading.Thread):
    def __init__(self, c, kinds, restart_pending, slots):
        super().__init__(daemon=True)
        a = c.a
        self.c = c
        self.kinds = kinds
        self.rng = random.Random(a.seed * 7919 + 17)
        self.pending = restart_pending
        self.slots = slots
        self.op_min, self.op_max = a.op_min, a.op_max
        self.in_partition = a.ops_in_partition
        self.stopping = threading.Event()
        self.next_id = max(c.ids) + 1
        self.orphans = []          # per removed node, the worker slots it had
        self.add_due = None        # when to add a node in a removed one's place
        self.joiner = None         # started with join, not yet added
        self.stop_due = {}         # removed node -> when to stop it
        self.frozen = False        # a change whose outcome stayed open: no more
        self.out = open("%s/ops.jsonl" % c.rundir, "a")
        self.out_lock = threading.Lock()
        # Ops overlap (a transfer during a removal, a SIGTERM during an
        # add), each on a thread of its own; one membership change at a time.
        self.threads = []
        self.mbusy = False

    def dispatch(self, fn, membership=False):
        if membership:
            self.mbusy = True

        def run():
            try:
                fn()
            finally:
                if membership:
                    self.mbusy = False
        th = threading.Thread(target=run, daemon=True)
        th.start()
        self.threads = [t for t in self.threads if t.is_alive()] + [th]

    def record(self, op):
        op["t"] = mono()
        with self.out_lock:
            self.out.write(json.dumps(op) + "\n")
            self.out.flush()
        short = {k: v for k, v in op.items() if k not in ("attempts", "t")}
        if "attempts" in op:
            short["replies"] = [(x["via"], x["text"][:50]) for x in op["attempts"]]
        self.c.ev("op", **short)

    # ------------------------------------------------------------ loop
    def run(self):
        nxt = mono() + int(self.rng.uniform(self.op_min, self.op_max) * 1e9)
        while not self.stopping.is_set():
            self.service()
            if mono() < nxt:
                time.sleep(0.05)
                continue
            # Most ops wait (5 s at most) for a partition: that is where they
            # meet cut links.
            if not self.c.grudge and self.rng.random() < self.in_partition:
                wait_end = mono() + int(5e9)
                while not self.c.grudge and mono() < wait_end and not self.stopping.is_set():
                    self.service()
                    time.sleep(0.05)
            kinds = [k for k in self.kinds
                     if k != "membership" or (not self.mbusy and self.add_due is None
                                              and self.joiner is None and not self.frozen
                                              and len(self.c.ids) >= 3)]
            if kinds:
                k = self.rng.choices(kinds, [WEIGHTS[x] for x in kinds])[0]
                self.dispatch(getattr(self, "op_" + k), membership=k == "membership")
            nxt = mono() + int(self.rng.uniform(self.op_min, self.op_max) * 1e9)
        for th in self.threads:
            th.join()
        # The run ends: the member count returns and removed nodes stop.
        if (self.add_due is not None or self.joiner is not None) and not self.frozen:
            self.op_add()
        for x in list(self.stop_due):
            self.stop_removed(x)
        self.out.close()

    def service(self):
        for x, due in list(self.stop_due.items()):
            if mono() >= due:
                self.stop_removed(x)
        if (self.add_due is not None and mono() >= self.add_due and not self.frozen
                and not self.mbusy):
            self.add_due = None
            self.dispatch(self.op_add, membership=True)

    # ------------------------------------------------------------ ops
    def op_transfer(self):
        c = self.c
        ids = list(c.ids)
        target, via = self.rng.choice(ids), self.rng.choice(ids)
        leader = c.leader()
        r = call(via, "CLUSTER", "TRANSFER", str(target))
        self.record({"op": "transfer", "target": target, "leader_before": leader,
                     "grudge": sorted(c.grudge), "attempts": [r]})

    def op_sigterm(self):
        c = self.c
        leader = c.leader()
        with c.lock:
            cands = [i for i in c.ids if c.alive(i) and i not in self.pending and i not in c.busy]
            if not cands or len(c.ids) - len(cands) >= (len(c.ids) - 1) // 2:
                return
            v = leader if leader in cands and self.rng.random() < 0.6 else self.rng.choice(cands)
            c.busy.add(v)
            p = c.procs[v]
        rc, secs = self.sigterm(p)
        self.record({"op": "sigterm", "node": v, "was_leader": v == leader,
                     "grudge": sorted(c.grudge), "rc": rc, "secs": secs})
        with c.lock:
            self.pending[v] = mono() + int(self.rng.uniform(0.3, 5) * 1e9)
            c.busy.discard(v)

    def sigterm(self, p):
        """SIGTERM, then the exit status and how long the exit took (15 s
        at most: then SIGKILL, and rc None)."""
        t = mono()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            rc = None
            p.kill()
            p.wait()
        return rc, (mono() - t) / 1e9

    def op_membership(self):
        c = self.c
        leader = c.leader()
        ids = list(c.ids)
        fol = [i for i in ids if i != leader]
        x = leader if leader is not None and self.rng.random() < 0.25 else self.rng.choice(fol)
        outcome, attempts = self.change(("CLUSTER", "REMOVE", str(x)), "ERR unknown node %d" % x)
        self.record({"op": "remove", "node": x, "leader_before": leader,
                     "grudge": sorted(c.grudge), "outcome": outcome, "attempts": attempts})
        if outcome == "applied":
            with c.lock:
                c.ids.remove(x)
                c.removed.add(x)
            self.orphans.append([j for j in range(len(self.slots)) if self.slots[j] == x])
            self.stop_due[x] = mono() + int(self.rng.uniform(0.5, 8) * 1e9)
            self.add_due = mono() + int(self.rng.uniform(2, 10) * 1e9)
        elif outcome != "not_applied":
            self.frozen = True

    def op_add(self):
        c = self.c
        self.add_due = None
        if self.joiner is None:
            k = self.joiner = self.next_id
            self.next_id += 1
            c.write_conf(k, "join = yes\n")
            c.in_main(lambda: (c.add_ns(k), c.start(k)))
            c.ev("start_joiner", node=k)
        k = self.joiner
        outcome, attempts = self.change(("CLUSTER", "ADD", str(k), "%s:%d" % (node_ip(k), RAFT_PORT)),
                                        "ERR node %d already a member" % k)
        self.record({"op": "add", "node": k, "grudge": sorted(c.grudge), "outcome": outcome,
                     "attempts": attempts})
        if outcome == "applied":
            with c.lock:
                c.ids.append(k)
            self.joiner = None
            if self.orphans:
                for j in self.orphans.pop(0):
                    self.slots[j] = k
        elif outcome == "not_applied":
            self.add_due = mono() + int(self.rng.uniform(2, 5) * 1e9)
        else:
            self.frozen = True

    def change(self, cmd, already):
        """Sends a membership change until its outcome is known: "applied",
        "not_applied" (every attempt refused, never sent, or -TRYAGAIN),
        "unknown" (retries ran out after an attempt of unknown outcome), or
        "error" (an answer outside the documented ones)."""
        attempts = []
        end = mono() + RETRY_SECS * 1e9
        open_outcome = False
        while mono() < end:
            r = call(self.rng.choice(list(self.c.ids)), *cmd)
            attempts.append(r)
            if r["res"] == "ok":
                return "applied", attempts
            if r["res"] == "err":
                if r["text"] == already:
                    return "applied", attempts
                return "error", attempts
            if r["res"] in ("timeout", "lost"):
                open_outcome = True
            time.sleep(self.rng.uniform(0.3, 1))
        return ("unknown" if open_outcome else "not_applied"), attempts

    def stop_removed(self, x):
        c = self.c
        del self.stop_due[x]
        try:
            membership = info(node_ip(x), CLIENT_PORT, timeout=0.5).get("membership")
        except Exception:
            membership = None
        with c.lock:
            self.pending.pop(x, None)
            p = c.procs.get(x)
            if p is None or p.poll() is not None:
                self.record({"op": "stop_removed", "node": x, "rc": None, "was_running": False})
                return
            c.busy.add(x)
        rc, secs = self.sigterm(p)
        self.record({"op": "stop_removed", "node": x, "was_running": True, "membership": membership,
                     "rc": rc, "secs": secs})


def final_membership(c, ops):
    """After the run: the members as the leader lists them, with a change
    whose outcome stayed open resolved by that list; waits (up to 30 s) for
    every member to be a voter (a learner is promoted once caught up)."""
    t = mono()
    while True:
        m = members_of(c)
        if m is None or all(s == "voter" for s in m.values()) or mono() - t > 30e9:
            break
        time.sleep(0.5)
    if m is not None and ops is not None and ops.frozen:
        with c.lock:
            for x in list(c.ids):
                if x not in m:
                    c.ids.remove(x)
                    c.removed.add(x)
            if ops.joiner in m and ops.joiner not in c.ids:
                c.ids.append(ops.joiner)
        c.ev("membership_resolved", ids=sorted(c.ids))
    c.ev("final_members", members=m, expected=sorted(c.ids),
         removed=sorted(c.removed))
    return m
