#!/usr/bin/env python3
"""Checker for a harness run directory.

  check.py RUNDIR [--verbose]

* per-key linearizability (WGL search, register model with SET/GET/DEL/INCR;
  -TRYAGAIN and connect failures = not applied and dropped; -TIMEOUT and
  socket errors = indeterminate: may take effect any time after invocation
  or never)
* INCR: replies unique per key, <= number of INCRs that could have applied,
  final value between #acked and #acked+#indeterminate
* unique-key SETs: every acked one present with its value on every node at the
  end; every TRYAGAIN'd / unsent one absent
* convergence: digests and indexes equal, final GETs equal on every node
* node logs: panics, refused peer messages, errors/warnings
* liveness: per heal, time until writes succeed again through every node
* operator actions (--ops), in check_ops.py; with membership changes the
  final checks cover the final members: a removed node's data is no longer
  expected to converge, and a removed node is held to the liveness check
  only for heals more than 10 s before its removal
"""
import glob
import json
import os
import re
import sys
from collections import defaultdict, Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_ops  # noqa: E402
import check_disk  # noqa: E402
import pipeline  # noqa: E402

INF = float("inf")


# ------------------------------------------------------------------ WGL
class E:
    __slots__ = ("call", "id", "t", "match", "prev", "next")

    def __init__(self, call, id_, t):
        self.call, self.id, self.t = call, id_, t
        self.match = self.prev = self.next = None


def step(s, o):
    k = o["op"]
    unknown = o["res"] == "info"
    if k == "set":
        return True, o["val"]
    if k == "get":
        return o["out"] == s, s
    if k == "del":
        if unknown:
            return True, None
        return o["out"] == (0 if s is None else 1), None
    if k == "incr":
        try:
            cur = 0 if s is None else int(s)
        except ValueError:
            return unknown, s
        new = cur + 1
        if unknown:
            return True, str(new)
        return o["out"] == new, str(new)
    raise ValueError(k)


def wgl(ops):
    """ops: list of dicts with t0, t1 (INF if indeterminate). Returns (ok, detail)."""
    evs = []
    for i, o in enumerate(ops):
        evs.append((o["t0"], 0, i))
        evs.append((o["t1"], 1, i))
    evs.sort()
    head = E(False, -1, -1)
    calls = {}
    prev = head
    for (t, kind, i) in evs:
        e = E(kind == 0, i, t)
        if kind == 0:
            calls[i] = e
        else:
            calls[i].match = e
        prev.next = e
        e.prev = prev
        prev = e

    def lift(e):
        e.prev.next = e.next
        if e.next:
            e.next.prev = e.prev
        m = e.match
        m.prev.next = m.next
        if m.next:
            m.next.prev = m.prev

    def unlift(e):
        m = e.match
        m.prev.next = m
        if m.next:
            m.next.prev = m
        e.prev.next = e
        if e.next:
            e.next.prev = e

    state = None
    lin = 0
    cache = set()
    stack = []
    best = (0, [])
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > 20_000_000:
            return None, "search budget exceeded"
        if entry.call:
            ok, ns = step(state, ops[entry.id])
            if ok:
                nl = lin | (1 << entry.id)
                key = (nl, ns)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, lin = ns, nl
                    lift(entry)
                    if len(stack) > best[0]:
                        best = (len(stack), [x[0].id for x in stack])
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False, best
            e, s = stack.pop()
            state = s
            lin &= ~(1 << e.id)
            unlift(e)
            entry = e.next
    return True, None


# ------------------------------------------------------------------ load
def load(rundir):
    hist = []
    for fn in sorted(glob.glob(rundir + "/hist/*.jsonl")):
        with open(fn) as f:
            for line in f:
                hist.append(json.loads(line))
    final = []
    summaries = []
    if os.path.exists(rundir + "/final.jsonl"):
        with open(rundir + "/final.jsonl") as f:
            for line in f:
                r = json.loads(line)
                if r.get("kind") == "summary":
                    summaries.append(r)
                else:
                    final.append(r)
    with open(rundir + "/events.json") as f:
        ev = json.load(f)
    return hist, final, summaries, ev


def fmt_op(o, t0):
    t1 = "  inf" if o["t1"] == INF else "%7.3f" % ((o["t1"] - t0) / 1e9)
    s = "[%7.3f,%s] w=%s n%s %s" % ((o["t0"] - t0) / 1e9, t1, o["w"], o["node"], o["op"])
    if o.get("val") is not None:
        s += " %s" % o["val"]
    s += " -> %s" % o["res"]
    if o["res"] == "ok" and o["op"] != "set":
        s += " %r" % (o.get("out"),)
    if o.get("detail"):
        s += " (%s)" % o["detail"]
    return s


def main():
    rundir = sys.argv[1].rstrip("/")
    verbose = "--verbose" in sys.argv
    hist, final, summaries, evj = load(rundir)
    T0 = evj["t0"]
    events = evj["events"]
    problems = []
    notes = []

    res_count = Counter(h["res"] for h in hist)
    notes.append("ops: %d %s" % (len(hist), dict(res_count)))
    errs = Counter(h.get("detail") for h in hist if h["res"] == "err")
    if errs:
        problems.append("unexpected error replies: %s" % dict(errs))
    # A worker waits 6 s for a reply; every request has a deadline of
    # election_timeout_ms * 4 (2 s by default), and nothing here freezes a node.
    silent = [h for h in hist if h["res"] == "info" and "timed out" in (h.get("detail") or "")]
    if silent:
        problems.append("%d requests got no reply within the client's timeout, e.g. %s"
                        % (len(silent), [fmt_op(h, T0) for h in silent[:3]]))
    details = Counter((h["res"], (h.get("detail") or "")[:40]) for h in hist
                      if h["res"] in ("info", "tryagain"))
    notes.append("non-ok detail: %s" % dict(details))

    # --------------------------------------------------------- linearizability
    bykey = defaultdict(list)
    for h in hist + final:
        # pc_ keys: one writer each, checked in its connection's order below
        if h["key"].startswith(("u_", "pc_")):
            continue
        if h["res"] in ("fail", "tryagain"):
            continue
        if h["res"] == "err":
            continue
        if h["res"] == "info":
            if h["op"] == "get":
                continue
            h = dict(h, t1=INF)
        bykey[h["key"]].append(h)
    nonlin = []
    unknown = []
    maxops = 0
    for key in sorted(bykey):
        ops = bykey[key]
        maxops = max(maxops, len(ops))
        ok, det = wgl(ops)
        if ok is None:
            unknown.append(key)
        elif not ok:
            nonlin.append((key, ops, det))
    notes.append("linearizability: %d keys checked, max %d ops/key, %d non-linearizable, %d unknown"
                 % (len(bykey), maxops, len(nonlin), len(unknown)))
    for key, ops, det in nonlin:
        depth, linids = det
        problems.append("key %s NOT linearizable (%d ops; longest linearizable prefix %d ops)"
                        % (key, len(ops), depth))
        lin_set = set(linids)
        print("=== non-linearizable key %s; ops (sorted by invoke), '*' = in longest partial"
              " linearization, order of that linearization given after" % key)
        for o in sorted(ops, key=lambda o: o["t0"]):
            idx = ops.index(o)
            print(("  * " if idx in lin_set else "    ") + fmt_op(o, T0))
        print("  partial linearization:")
        for i in linids:
            print("    " + fmt_op(ops[i], T0))
    if unknown:
        problems.append("keys whose check exceeded the budget: %s" % unknown)

    p, n = pipeline.check(hist, final)
    problems += p
    notes += n

    # --------------------------------------------------------- INCR
    incr = defaultdict(list)
    for h in hist:
        if h["op"] == "incr":
            incr[h["key"]].append(h)
    finals_by_key = defaultdict(dict)
    for f in final:
        if f["res"] == "ok":
            finals_by_key[f["key"]][f["node"]] = f.get("out")
    for key, ops in incr.items():
        oks = [o["out"] for o in ops if o["res"] == "ok"]
        nind = sum(1 for o in ops if o["res"] == "info")
        dup = [v for v, c in Counter(oks).items() if c > 1]
        if dup:
            problems.append("INCR %s duplicate replies %s" % (key, dup))
        if oks and max(oks) > len(oks) + nind:
            problems.append("INCR %s reply %d > possible applied %d" % (key, max(oks), len(oks) + nind))
        fv = set(finals_by_key.get(key, {}).values())
        for v in fv:
            v = int(v) if v is not None else 0
            if not (len(oks) <= v <= len(oks) + nind):
                problems.append("INCR %s final %d outside [%d,%d]" % (key, v, len(oks), len(oks) + nind))

    # --------------------------------------------------------- unique keys
    uacked, unot, uind = {}, {}, {}
    for h in hist:
        if h["key"].startswith("u_"):
            if h["res"] == "ok":
                uacked[h["key"]] = h["val"]
            elif h["res"] in ("tryagain", "fail"):
                unot[h["key"]] = h
            else:
                uind[h["key"]] = h
    lost = 0
    ghost = 0
    for s in summaries:
        uv = s["uvals"]
        if "__error__" in uv:
            problems.append("node %d: MGET of unique keys failed: %s" % (s["node"], uv["__error__"]))
        for k, v in uacked.items():
            if uv.get(k) != v:
                lost += 1
                if lost <= 10:
                    problems.append("node %d: acked SET %s=%s reads %r" % (s["node"], k, v, uv.get(k)))
        for k, h in unot.items():
            if uv.get(k) is not None:
                ghost += 1
                if ghost <= 10:
                    problems.append("node %d: SET %s answered %s but present: %r  [%s]"
                                    % (s["node"], k, h["res"], uv.get(k), fmt_op(h, T0)))
    uind_applied = sum(1 for k in uind if summaries and summaries[0]["uvals"].get(k) is not None)
    notes.append("unique SETs: %d acked, %d not-applied (tryagain/unsent), %d indeterminate (%d of those applied);"
                 " lost %d, ghost %d" % (len(uacked), len(unot), len(uind), uind_applied, lost, ghost))
    if summaries:
        u0 = summaries[0]["uvals"]
        for s in summaries[1:]:
            if s["uvals"] != u0:
                diff = [k for k in set(u0) | set(s["uvals"]) if u0.get(k) != s["uvals"].get(k)]
                problems.append("unique keys differ between node %d and node %d: %s"
                                % (summaries[0]["node"], s["node"], diff[:10]))

    # --------------------------------------------------------- convergence
    if len(summaries) == 0:
        problems.append("no final summaries (final phase did not complete)")
    else:
        digs = {s["node"]: (s["digest"], s["applied_index"]) for s in summaries}
        if len(set(d for d, _ in digs.values())) != 1:
            problems.append("digests differ: %s" % digs)
        notes.append("final digests/applied: %s" % digs)
    for key, per in finals_by_key.items():
        if len(set(per.values())) > 1:
            problems.append("final GET %s differs across nodes: %s" % (key, per))
    badfinal = [f for f in final if f["res"] != "ok"]
    if badfinal:
        problems.append("final GETs that failed: %d e.g. %s" % (len(badfinal), badfinal[:3]))
    for e in events:
        if e["kind"] == "converged":
            notes.append("convergence after workers stopped: %s s %s" % (e["secs"], e["indexes"]))
            if e["secs"] is None:
                problems.append("cluster did not converge: %s" % e["indexes"])
        if e["kind"] == "probe":
            notes.append("final heal -> first OK SET per node (s): %s"
                         % {k: (None if v["secs"] is None else round(v["secs"], 3))
                            for k, v in e["result"].items()})
        if e["kind"] == "alive" and not all(e["alive"].values()):
            problems.append("node(s) not alive at end: %s" % e["alive"])

    # --------------------------------------------------------- logs
    for fn in sorted(glob.glob(rundir + "/n*.log")):
        with open(fn, errors="replace") as f:
            lines = f.readlines()
        pan = [l for l in lines if "panic" in l.lower()]
        ref = [l for l in lines if "refus" in l.lower()]
        lvl = Counter()
        for l in lines:
            m = re.match(r"\S+ (ERROR|WARN) ", l)
            if m:
                lvl[m.group(1)] += 1
        if pan:
            problems.append("%s: panic: %s" % (fn, pan[:3]))
        if ref:
            problems.append("%s: refused: %s" % (fn, ref[:3]))
        if lvl:
            w = [l.strip() for l in lines if re.match(r"\S+ (ERROR|WARN) ", l)]
            wk = Counter(re.sub(r"\d+", "N", x.split(" ", 3)[-1])[:90] for x in w)
            notes.append("%s: %s; kinds: %s" % (os.path.basename(fn), dict(lvl), dict(wk.most_common(6))))

    # --------------------------------------------------------- operator actions
    with open(rundir + "/args.json") as f:
        initial = list(range(1, json.load(f)["nodes"] + 1))
    p, n = check_ops.check(rundir, events, initial)
    problems += p
    notes += n
    p, n = check_disk.check(rundir, events, hist)
    problems += p
    notes += n
    removed = check_ops.removed_nodes(events)
    added = check_ops.added_nodes(events)

    # --------------------------------------------------------- liveness
    nodes = sorted({h["node"] for h in hist})
    okw = defaultdict(list)   # node -> completion times of OK writes
    for h in hist:
        if h["res"] == "ok" and h["op"] in ("set", "incr", "del"):
            okw[h["node"]].append(h["t1"])
    for n in okw:
        okw[n].sort()
    import bisect
    prev_part = False
    heal_lat = []
    for e in events:
        if e["kind"] in ("partition", "heal"):
            is_part = bool(e.get("drops"))
            if prev_part and not is_part:
                per = {}
                for n in nodes:
                    if n in removed and e["t"] > removed[n] - 10e9 or e["t"] < added.get(n, 0):
                        continue
                    i = bisect.bisect_right(okw[n], e["t"])
                    per[n] = round((okw[n][i] - e["t"]) / 1e9, 2) if i < len(okw[n]) else None
                heal_lat.append(((e["t"] - T0) / 1e9, per))
            prev_part = is_part
    lines = []
    worst = 0
    # The nemesis may heal after the workers stopped (its last hold can
    # outlast the tail); such a heal is judged by the final-heal probe.
    workers_end = (max(h["t1"] for h in hist if h["t1"] != INF) - T0) / 1e9
    for t, per in heal_lat:
        m = max((v for v in per.values() if v is not None), default=None)
        if None in per.values() and t < workers_end - 1:
            problems.append("LIVENESS: after heal at %.1f s some node had no successful write before the"
                            " workers stopped: %s (see final-heal probe)" % (t, per))
        if m is not None:
            worst = max(worst, m)
        lines.append("heal@%.1fs: %s" % (t, per))
    notes.append("heal -> first OK write completion per node (s); worst %.2f s:\n    " % worst +
                 "\n    ".join(lines))
    # longest gaps without OK writes per node
    tmin = min(h["t0"] for h in hist)
    tmax = max(h["t1"] for h in hist)
    gaps = {}
    for n in nodes:
        ts = [tmin] + okw[n] + [tmax]
        g = max(((b - a, a) for a, b in zip(ts, ts[1:])), default=(0, 0))
        gaps[n] = "%.2fs at %.1fs" % (g[0] / 1e9, (g[1] - T0) / 1e9)
    notes.append("longest stretch without an OK write per node: %s" % gaps)

    # --------------------------------------------------------- report
    print("RUN", rundir)
    for n in notes:
        print("  " + n)
    if verbose:
        for e in events:
            print("   ev %7.2f %s" % ((e["t"] - T0) / 1e9, {k: v for k, v in e.items() if k not in ("t", "wall")}))
    if problems:
        print("PROBLEMS (%d):" % len(problems))
        for p in problems:
            print("  !! " + p)
        sys.exit(1)
    print("OK: no anomaly")


if __name__ == "__main__":
    main()
