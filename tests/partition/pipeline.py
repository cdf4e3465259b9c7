"""Pipelining clients (`--pipeliners`): each sends batches of 2-6 INCRs and
GETs of a counter of its own (`pc_N`, no other client writes it) in one
write, over one connection, through the node of its slot (moved, as the
workers are, from a removed node to the one added in its place). With
`--pipeline-transfers P`, a batch holds a `CLUSTER TRANSFER` to a random
node (a removed one included) with chance P: the requests pipelined after
it wait for its answer (README, Changing membership), and must still take
effect in order.

A connection's requests take effect in the order it sent them, also while
the leader changes (README, Client protocol), and a read sees every write
sent before it on its connection. With one writer per key that can be
checked exactly, without a linearizability search: walking a client's
replies in the order it sent the requests, the counter is known to be at
least `base`, plus at most `open` increments of unknown outcome (-TIMEOUT,
a lost connection), which may take effect at any later time or never:

* INCR answered v: base < v <= base + 1 + open; the increments of unknown
  outcome it counts are spent (open -= v - base - 1), and base = v;
* GET answered v: base <= v <= base + open, likewise;
* -TRYAGAIN: nothing (it was not and will not be applied);
* at the end, every node's GET: base <= v <= base + open.
"""
import json
import random
import time

from common import mono, node_ip, pdeath, CLIENT_PORT
from resp import Resp, RespError, ConnRefused, pipeline


# The answers a transfer may get besides +OK, -TRYAGAIN and -TIMEOUT.
TRANSFER_ERRORS = ("ERR transfer to %d abandoned", "ERR node %d is a learner", "ERR unknown node %d")


def pipeliner(pid, seed, stop_at, outpath, think, slots, slot, transfers=0.0):
    pdeath()
    rng = random.Random(seed * 31 + 7 + pid)
    key = "pc_%d" % pid
    out = open(outpath, "w")
    node = None
    conn = None
    batch = 0
    while mono() < stop_at:
        if slots[slot] != node:
            node = slots[slot]
            if conn is not None:
                conn.close()
                conn = None
        cmds = [("INCR", key) if rng.random() < 0.7 else ("GET", key)
                for _ in range(rng.randint(2, 6))]
        if rng.random() < transfers:
            cmds.insert(rng.randrange(len(cmds)), ("CLUSTER", "TRANSFER", str(rng.choice(slots[:]))))
        batch += 1
        base = {"w": "p%d" % pid, "node": node, "key": key, "batch": batch}
        if conn is None:
            try:
                conn = Resp(node_ip(node), CLIENT_PORT, timeout=6.0, connect_timeout=0.5)
            except ConnRefused as ex:
                for c in cmds:
                    out.write(json.dumps(dict(base, op=c[0].lower(), val=None, t0=mono(), t1=mono(),
                                              wall=time.time(), res="fail", detail=str(ex))) + "\n")
                time.sleep(0.2)
                continue
        t0, wall = mono(), time.time()
        replies, err = pipeline(conn, cmds)
        for i, c in enumerate(cmds):
            rec = dict(base, op=c[0].lower(), val=None, t0=t0, wall=wall, idx=i)
            if c[0] == "CLUSTER":
                rec.update(op="transfer", val=int(c[2]))
            if i < len(replies):
                rep, rec["t1"] = replies[i]
                if isinstance(rep, RespError):
                    s = str(rep)
                    rec["res"] = ("tryagain" if s.startswith("TRYAGAIN")
                                  else "info" if s.startswith("TIMEOUT") else "err")
                    if rec["op"] == "transfer" and s in [e % rec["val"] for e in TRANSFER_ERRORS]:
                        rec["res"] = "transfer_refused"
                    rec["detail"] = s
                else:
                    rec["res"] = "ok"
                    rec["out"] = rep.decode() if isinstance(rep, bytes) else rep
            else:
                rec.update(t1=mono(), res="info", detail=err)
            out.write(json.dumps(rec) + "\n")
        if err is not None:
            conn.close()
            conn = None
        if think:
            time.sleep(rng.uniform(0, think))
    out.close()
    if conn:
        conn.close()


def check(hist, final):
    """Returns (problems, notes) for the pipelined counters' histories."""
    problems, notes = [], []
    by = {}
    for h in hist:
        if h["key"].startswith("pc_"):
            by.setdefault(h["w"], []).append(h)
    nops = 0
    for w, ops in sorted(by.items()):
        key = ops[0]["key"]
        base, opn = 0, 0
        bad = 0
        for h in ops:  # in the order the client sent them
            nops += 1
            if h["op"] == "transfer":
                continue
            if h["res"] in ("tryagain", "fail"):
                continue
            if h["res"] == "info" or (h["res"] == "err"):
                if h["op"] == "incr":
                    opn += 1
                continue
            v = int(h["out"]) if h.get("out") is not None else 0
            lo, hi = (base + 1, base + 1 + opn) if h["op"] == "incr" else (base, base + opn)
            if not lo <= v <= hi:
                bad += 1
                if bad <= 3:
                    problems.append("pipelined %s %s (batch %d, #%d, node %s) answered %d, outside"
                                    " [%d, %d] given the connection's earlier replies"
                                    % (h["op"].upper(), key, h["batch"], h.get("idx", -1), h["node"],
                                       v, lo, hi))
                base, opn = v, 0
                continue
            opn -= v - lo
            base = v
        for f in final:
            if f["key"] == key and f["res"] == "ok":
                v = int(f["out"]) if f.get("out") is not None else 0
                if not base <= v <= base + opn:
                    problems.append("final GET %s on node %d is %d, outside [%d, %d]"
                                    % (key, f["node"], v, base, base + opn))
    if by:
        notes.append("pipelined counters: %d clients, %d requests checked in connection order"
                     % (len(by), nops))
    return problems, notes
