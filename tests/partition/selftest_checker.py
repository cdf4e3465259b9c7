#!/usr/bin/env python3
"""Plant anomalies into a copy of a run dir and make sure check.py flags them."""
import json, shutil, subprocess, sys, glob, os
HERE = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1]
def mutate(name, fn):
    dst = os.path.join(os.path.dirname(os.path.abspath(src)), "_selftest_" + name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("data"))
    hist = []
    for f in sorted(glob.glob(dst + "/hist/*.jsonl")):
        hist += [json.loads(l) for l in open(f)]
    fin = [json.loads(l) for l in open(dst + "/final.jsonl")]
    if fn.__code__.co_argcount == 3:  # plants in the operator actions (--ops runs)
        ops = [json.loads(l) for l in open(dst + "/ops.jsonl")]
        evj = json.load(open(dst + "/events.json"))
        fn(hist, fin, (ops, evj))
        with open(dst + "/ops.jsonl", "w") as f:
            for o in ops: f.write(json.dumps(o) + "\n")
        json.dump(evj, open(dst + "/events.json", "w"))
    else:
        fn(hist, fin)
    for f in glob.glob(dst + "/hist/*.jsonl"):
        open(f, "w").close()
    with open(dst + "/hist/w0.jsonl", "w") as f:
        for h in hist: f.write(json.dumps(h) + "\n")
    with open(dst + "/final.jsonl", "w") as f:
        for h in fin: f.write(json.dumps(h) + "\n")
    r = subprocess.run(["python3", os.path.join(HERE, "check.py"), dst], capture_output=True, text=True)
    flagged = r.returncode != 0
    print("%-14s %s" % (name, "DETECTED" if flagged else "MISSED"))
    print("   " + "\n   ".join(l for l in r.stdout.splitlines() if "!!" in l or "NOT lin" in l)[:600])

def stale(hist, fin):
    # a GET that returns a value overwritten (by a completed SET) before the GET was invoked
    sets = {}
    for h in sorted(hist, key=lambda h: h["t0"]):
        if h["key"].startswith("r") and h["op"] == "set" and h["res"] == "ok":
            sets.setdefault(h["key"], []).append(h)
    for h in sorted(hist, key=lambda h: h["t0"]):
        if h["op"] == "get" and h["res"] == "ok" and h["key"] in sets:
            done = [s for s in sets[h["key"]] if s["t1"] < h["t0"]]
            if len(done) >= 2 and done[-2]["t1"] < done[-1]["t0"]:
                h["out"] = done[-2]["val"]; return
def dupincr(hist, fin):
    inc = [h for h in hist if h["op"] == "incr" and h["res"] == "ok"]
    inc[5]["out"] = inc[4]["out"] if inc[4]["key"] == inc[5]["key"] else inc[5]["out"] - 1
def lost(hist, fin):
    k = next(h for h in hist if h["key"].startswith("u_") and h["res"] == "ok")["key"]
    for f in fin:
        if f.get("kind") == "summary": f["uvals"][k] = None; return
def ghost(hist, fin):
    h = next(h for h in hist if h["key"].startswith("u_") and h["res"] == "ok")
    h["res"] = "tryagain"
def tryagain_applied(hist, fin):
    # a SET answered TRYAGAIN whose value is later read
    for h in sorted(hist, key=lambda h: h["t0"]):
        if h["key"].startswith("r") and h["op"] == "set" and h["res"] == "ok":
            nxt = [g for g in hist if g["key"] == h["key"] and g["op"] == "get" and g.get("out") == h["val"]]
            if nxt:
                h["res"] = "tryagain"; return
mutate("stale_read", stale)
mutate("dup_incr", dupincr)
mutate("lost_write", lost)
mutate("ghost_unique", ghost)
mutate("tryagain_read", tryagain_applied)

# With a run of --ops: a +OK transfer to a node that did not lead then, a
# membership change answered "already made" after only -TRYAGAINs, a slow
# SIGTERM stop, a final member list the acknowledged changes do not make.
def transfer_not_led(hist, fin, ox):
    ops, _ = ox
    ops.append({"op": "transfer", "target": 1, "grudge": [], "attempts": [
        {"via": 2, "res": "ok", "text": "OK", "wall0": 1.0, "wall1": 1.0, "t0": 0, "t1": 0}]})
def tryagain_then_made(hist, fin, ox):
    ops, _ = ox
    o = next(o for o in ops if o["op"] == "remove" and o["outcome"] == "applied")
    o["attempts"] = [dict(o["attempts"][-1], res="tryagain", text="TRYAGAIN no leader"),
                     dict(o["attempts"][-1], res="err", text="ERR unknown node %d" % o["node"])]
def slow_stop(hist, fin, ox):
    ops, _ = ox
    next(o for o in ops if o["op"] == "sigterm")["secs"] = 30.0
def wrong_members(hist, fin, ox):
    _, evj = ox
    e = next(e for e in evj["events"] if e["kind"] == "final_members")
    e["members"].popitem()
if os.path.exists(os.path.join(src, "ops.jsonl")):
    mutate("transfer_not_led", transfer_not_led)
    mutate("tryagain_made", tryagain_then_made)
    mutate("slow_sigterm", slow_stop)
    mutate("wrong_members", wrong_members)
# With --pipeliners: two pipelined INCRs of one batch that took effect out of order.
def pipelined_out_of_order(hist, fin):
    ok = [h for h in hist if h["key"].startswith("pc_") and h["op"] == "incr" and h["res"] == "ok"]
    for a, b in zip(ok, ok[1:]):
        if a["w"] == b["w"] and a["batch"] == b["batch"]:
            a["out"], b["out"] = b["out"], a["out"]
            return
if any(os.path.basename(f).startswith("p") for f in glob.glob(os.path.join(src, "hist", "*.jsonl"))):
    mutate("pipe_order", pipelined_out_of_order)
