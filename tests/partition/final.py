"""The harness's final phase: after the last heal, how soon writes succeed
through every node, convergence of the indexes, and linearizable reads of
every key through every member (final.jsonl, which check.py reads)."""
import json
import threading
import time

from resp import Resp, RespError, ConnLost, ConnRefused, info
from common import node_ip, CLIENT_PORT, mono


def probe_writes(c, t_heal, out):
    """After the final heal: per node, time until a SET through it succeeds."""
    def one(i):
        k = 0
        while True:
            k += 1
            t = mono()
            try:
                cn = Resp(node_ip(i), CLIENT_PORT, timeout=5, connect_timeout=0.5)
                r = cn.call("SET", "probe_%d" % i, "p%d" % k)
                cn.close()
                if r == "OK":
                    out[i] = {"secs": (mono() - t_heal) / 1e9, "attempts": k}
                    return
            except (ConnLost, ConnRefused):
                pass
            if mono() - t_heal > 60e9:
                out[i] = {"secs": None, "attempts": k}
                return
            time.sleep(max(0, 0.05 - (mono() - t) / 1e9))
    ths = [threading.Thread(target=one, args=(i,)) for i in c.ids]
    for t in ths:
        t.start()
    return ths


def wait_converged(c, timeout=90):
    t = mono()
    last = None
    while mono() - t < timeout * 1e9:
        infs = c.infos()
        if len(infs) == len(c.ids):
            ci = {i: (int(d["commit_index"]), int(d["applied_index"])) for i, d in infs.items()}
            vals = set(ci.values())
            if len(vals) == 1 and list(vals)[0][0] == list(vals)[0][1]:
                # stable for a moment?
                if last == vals:
                    return (mono() - t) / 1e9, ci
                last = vals
        time.sleep(0.3)
    return None, {i: (d.get("commit_index"), d.get("applied_index"), d.get("role"),
                      d.get("term"), d.get("leader_id")) for i, d in c.infos().items()}


def final_reads(c, rundir, epochs, nreg, ncnt, ukeys, more=()):
    """Linearizable GETs of every key (and of the keys in more) through every
    node, after all workers stopped."""
    res = []
    keys = ["%s%d_%d" % (pre, e, j) for e in range(epochs + 1)
            for pre, cnt in (("r", nreg), ("c", ncnt)) for j in range(cnt)] + list(more)
    for i in c.ids:
        cn = Resp(node_ip(i), CLIENT_PORT, timeout=10)
        for key in keys:
            for attempt in range(5):
                t0 = mono()
                r = cn.call("GET", key)
                t1 = mono()
                if isinstance(r, RespError):
                    time.sleep(0.5)
                    continue
                break
            rec = {"w": "final%d" % i, "node": i, "op": "get", "key": key, "t0": t0, "t1": t1}
            if isinstance(r, RespError):
                rec.update(res="tryagain" if str(r).startswith("TRYAGAIN") else "err",
                           detail=str(r))
            else:
                rec.update(res="ok", out=r.decode() if r is not None else None)
            res.append(rec)
        uk = sorted(ukeys)
        uvals = {}
        for s in range(0, len(uk), 500):
            batch = uk[s:s + 500]
            for attempt in range(5):
                r = cn.call("MGET", *batch)
                if isinstance(r, RespError):
                    time.sleep(0.5)
                    continue
                break
            if isinstance(r, RespError):
                uvals["__error__"] = str(r)
                continue
            for k, v in zip(batch, r):
                uvals[k] = v.decode() if v is not None else None
        dig = cn.call("DEBUG", "DIGEST")
        inf = info(node_ip(i), CLIENT_PORT)
        res.append({"w": "final%d" % i, "kind": "summary", "node": i, "uvals": uvals,
                    "digest": dig.decode() if isinstance(dig, bytes) else str(dig),
                    "applied_index": inf.get("applied_index"), "commit_index": inf.get("commit_index")})
        cn.close()
    with open("%s/final.jsonl" % rundir, "w") as f:
        for r in res:
            f.write(json.dumps(r) + "\n")


def keys_written(rundir, workers):
    """The write-once keys and the last register epoch in the workers' histories."""
    ukeys = set()
    epochs = 0
    for w in range(workers):
        with open("%s/hist/w%d.jsonl" % (rundir, w)) as f:
            for line in f:
                r = json.loads(line)
                if r["key"].startswith("u_"):
                    ukeys.add(r["key"])
                else:
                    epochs = max(epochs, int(r["key"][1:].split("_")[0]))
    return ukeys, epochs
