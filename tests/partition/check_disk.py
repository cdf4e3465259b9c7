"""check.py's part for a run with disk faults (diskfault.py): what each
injected fault did to its node, and how often the leadership changed.

Problems: a node whose segment sync, append or stable file failed (the shim
says it fired) that did not stop, stopped with a status other than 1, or
whose last line does not name the file; a node that stopped though its
fault never fired, or during a stall; a node whose snapshot failed that
stopped, or logged no warning naming the file. Notes: faults that never
fired, and elections (`became leader`) in all, during stalls of the
leader's disk, of a follower's, and outside any fault.
"""
import calendar
import glob
import json
import os
import re
import time

FATAL = ("eio", "pwrite", "stable")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z ")


def wall_of(line):
    m = STAMP.match(line)
    if not m:
        return None
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + float("0." + m.group(2))


def elections(rundir):
    """(wall time, node, term) of every `became leader` line."""
    out = []
    for fn in glob.glob(rundir + "/n*.log"):
        node = int(re.search(r"n(\d+)\.log$", fn).group(1))
        with open(fn, errors="replace") as f:
            for line in f:
                m = re.search(r"became leader in term (\d+)", line)
                if m:
                    out.append((wall_of(line), node, int(m.group(1))))
    return sorted(out)


def fired_paths(rundir, node, since, until):
    try:
        with open("%s/faults%d.log" % (rundir, node)) as f:
            rows = [line.rstrip("\n").split(" ", 4) for line in f]
    except FileNotFoundError:
        return []
    return [r[4] for r in rows if len(r) == 5 and since <= int(r[0]) / 1000 <= until + 1]


def warned(rundir, node, path, since):
    with open("%s/n%d.log" % (rundir, node), errors="replace") as f:
        return any(" WARN " in line and path in line and (wall_of(line) or 0) >= since - 1
                   for line in f)


def zeros_ahead(rundir, node, path, since):
    with open("%s/n%d.log" % (rundir, node), errors="replace") as f:
        return any("writing zeros ahead" in line and path in line
                   and (wall_of(line) or 0) >= since - 1 for line in f)


def write_rates(recs, hist):
    """OK writes per second, and the longest wait for one, inside the stall
    windows of each kind and outside any fault (monotonic times)."""
    oks = sorted(h["t1"] for h in hist if h["res"] == "ok" and h["op"] in ("set", "incr", "del"))
    if not oks:
        return {}
    import bisect
    spans = {}
    for r in recs:
        where = r["label"].split()[1] if r["kind"] == "stall" else r["kind"]
        spans.setdefault(where, []).append((r["t"], r["t_end"]))
    covered = sorted(t for v in spans.values() for t in v)
    free, at = [], oks[0]
    for a, b in covered:
        if a > at:
            free.append((at, a))
        at = max(at, b)
    free.append((at, oks[-1]))
    spans["no fault"] = free
    out = {}
    for where, ws in spans.items():
        n, secs, gap = 0, 0.0, 0.0
        for a, b in ws:
            i, j = bisect.bisect_left(oks, a), bisect.bisect_right(oks, b)
            n += j - i
            secs += (b - a) / 1e9
            ts = [a] + oks[i:j] + [b]
            gap = max([gap] + [(y - x) / 1e9 for x, y in zip(ts, ts[1:])])
        out[where] = "%.0f/s over %.1f s, longest wait %.2f s" % (n / secs if secs else 0, secs, gap)
    return out


def memory(rundir):
    """Peak resident size per node, and how far each node's log fell behind
    the leader's, from memory.jsonl (--slow-follower-ms)."""
    peak, lag, last, acked = {}, {}, {}, {}
    with open(rundir + "/memory.jsonl") as f:
        for line in f:
            row = json.loads(line)
            nodes = {k: v for k, v in row.items() if k not in ("t", "match")}
            match = row.get("match") or {}
            if match:
                top = max(match.values())
                for k, v in match.items():
                    acked[k] = max(acked.get(k, 0), top - v)
            lead = [v for v in nodes.values() if v.get("role") == "leader"]
            for k, v in nodes.items():
                peak[k] = max(peak.get(k, 0), int(v.get("used_memory") or 0))
                last[k] = int(v.get("used_memory") or 0)
                if lead:
                    behind = int(lead[0]["last_log_index"]) - int(v["last_log_index"])
                    lag[k] = max(lag.get(k, 0), behind)
    mb = lambda d: {k: "%.0f MB" % (v / 1e6) for k, v in sorted(d.items())}  # noqa: E731
    return ("peak resident %s, at the end %s; most entries appended behind the leader %s,"
            " acknowledged behind the most advanced (match_index) %s" % (
                mb(peak), mb(last), dict(sorted(lag.items())), dict(sorted(acked.items()))))


def check(rundir, events, hist=()):
    problems, notes = [], []
    if os.path.exists(rundir + "/memory.jsonl"):
        slow = [e for e in events if e["kind"] == "slow_follower"]
        notes.append("slow follower %s: %s" % (slow[0]["node"] if slow else "?", memory(rundir)))
    path = rundir + "/disk.jsonl"
    if not os.path.exists(path):
        return problems, notes
    with open(path) as f:
        recs = [json.loads(line) for line in f]
    kills = [e for e in events if e["kind"] == "kill9"]
    t_up = next((e["wall"] for e in events if e["kind"] == "up"), 0)
    els = [e for e in elections(rundir) if e[0] and e[0] > t_up]
    by_kind = {}
    windows = {"leader": [0, 0.0], "follower": [0, 0.0], "all": [0, 0.0]}
    for r in recs:
        by_kind.setdefault(r["kind"], [0, 0])
        by_kind[r["kind"]][0] += 1
        node = r["nodes"][0] if r["nodes"] else None
        if r["kind"] in FATAL:
            if not r["fired"]:
                if r["exit"] is not None:
                    problems.append("%s: node %d stopped (status %s) though the fault never fired: %s"
                                    % (r["label"], node, r["exit"], r["line"]))
                continue
            by_kind[r["kind"]][1] += 1
            paths = fired_paths(rundir, node, r["wall"], r["wall_end"])
            if r["exit"] is None and r["kind"] == "pwrite" and any(
                    zeros_ahead(rundir, node, p, r["wall"]) for p in paths):
                # The zeros written ahead of the records are only an
                # optimization: their failure is logged and the node goes on.
                by_kind["pwrite"][1] -= 1
                by_kind.setdefault("pwrite of zeros ahead (not fatal)", [0, 0])[1] += 1
            elif r["exit"] is None:
                problems.append("%s: node %d kept running after the fault fired (%s)"
                                % (r["label"], node, paths))
            elif r["exit"] != 1:
                problems.append("%s: node %d exited with status %s, not 1: %s"
                                % (r["label"], node, r["exit"], r["line"]))
            elif not r["line"].startswith("raftkv: ") or not any(
                    p in r["line"] or p.endswith(".tmp") and p[:-4] + ":" in r["line"] for p in paths):
                # (a failed rename names the file it replaces)
                problems.append("%s: node %d's last line does not name %s: %s"
                                % (r["label"], node, paths, r["line"]))
        elif r["kind"] == "snapshot":
            if not r["fired"].get(str(node), r["fired"].get(node)):
                continue
            by_kind["snapshot"][1] += 1
            paths = fired_paths(rundir, node, r["wall"], r["wall_end"])
            killed = any(r["t"] <= k["t"] <= r["t_end"] and k["node"] == node for k in kills)
            if not r["alive"].get(str(node), r["alive"].get(node)) and not killed:
                problems.append("%s: node %d stopped after a failed snapshot" % (r["label"], node))
            elif not any(warned(rundir, node, p, r["wall"]) for p in paths):
                problems.append("%s: node %d logged no warning naming %s" % (r["label"], node, paths))
        elif r["kind"] == "stall":
            fired = sum(r["fired"].values())
            for i, up in r["alive"].items():
                killed = any(r["t"] <= k["t"] <= r["t_end"] and k["node"] == int(i) for k in kills)
                if not up and not killed:
                    problems.append("%s: node %s stopped during a stall" % (r["label"], i))
            by_kind["stall"][1] += 1 if fired else 0
            where = r["label"].split()[1]
            w = windows[where]
            w[1] += r["wall_end"] - r["wall"]
            w[0] += sum(1 for e in els if r["wall"] <= e[0] <= r["wall_end"])
            if where == "leader":
                killed = any(r["t"] <= k["t"] <= r["t_end"] and k["node"] == node for k in kills)
                lost = [e for e in els if r["wall"] <= e[0] <= r["wall_end"] and e[1] != node]
                if lost and not killed:
                    notes.append("%s: leadership moved during the stall (%d stalled syncs): %s"
                                 % (r["label"], fired, lost))
    notes.append("disk faults (injected, fired): %s" % by_kind)
    notes.append("OK writes (all nodes) by fault window: %s" % write_rates(recs, hist))
    notes.append("elections after start: %d; during stalls (count, seconds of stall): %s"
                 % (len(els), windows))
    return problems, notes
