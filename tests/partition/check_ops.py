"""check.py's judgement of the operator actions (ops.py): replies outside
SPEC §3 and README "Changing membership", a change answered as already
made although every earlier attempt was refused (-TRYAGAIN promises it was
not applied), a transfer answered +OK whose target never led meanwhile, a
SIGTERM stop that failed or took too long, and a final membership other
than the one the acknowledged changes make (or a member left a learner)."""
import datetime
import re
from collections import Counter

# A leader's SIGTERM stop: at most 2 s of handoff and 1 s for its clients to
# read their replies; the rest is slack for a loaded machine.
STOP_SECS = 6
# Log timestamps are to the millisecond; the harness's to the microsecond.
SLACK = 0.05

ROLE = re.compile(r"^(\S+) +\S+ +n\d+ node (\d+) (became leader|is \w[\w-]*) in term (\d+)")
LEADER_IS = re.compile(r"^(\S+) +\S+ +n\d+ (leader is node \d+|no leader) in term (\d+)")
STOPPING = re.compile(r"^(\S+) +\S+ +n\d+ node \d+ shutting down")


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def leader_spans(logfile):
    """[(from, to)] wall-clock spans in which the node's log says it led."""
    spans = []
    start = None
    try:
        lines = open(logfile, errors="replace").readlines()
    except OSError:
        return spans
    for line in lines:
        if line.startswith("===="):
            # a restart: the process before it (killed, maybe) no longer leads
            if start is not None:
                spans.append((start, None))
                start = None
            continue
        m = ROLE.match(line) or LEADER_IS.match(line) or STOPPING.match(line)
        if not m:
            continue
        t = ts(m.group(1))
        if m.re is ROLE and m.group(3) == "became leader":
            if start is None:
                start = t
        elif start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, None))
    # a span cut by a restart ends at the next line we know of; be generous
    return [(a, b if b is not None else float("inf")) for a, b in spans]


def allowed(op, r):
    """Whether an attempt's reply is one the documentation allows."""
    if r["res"] in ("ok", "tryagain", "timeout", "lost", "refused"):
        return True
    t = r["text"]
    if op["op"] == "transfer":
        return t in ("ERR transfer to %d abandoned" % op["target"],
                     "ERR node %d is a learner" % op["target"])
    if op["op"] == "remove":
        return t == "ERR unknown node %d" % op["node"]
    if op["op"] == "add":
        return t == "ERR node %d already a member" % op["node"]
    return False


def check(rundir, events, nodes):
    """Returns (problems, notes)."""
    problems, notes = [], []
    ops = [e for e in events if e["kind"] == "op"]
    if not ops and not any(e["kind"] == "final_members" for e in events):
        return problems, notes
    import json
    full = [json.loads(line) for line in open(rundir + "/ops.jsonl")]
    kinds = Counter(o["op"] for o in full)
    replies = Counter((o["op"], a["res"], a["text"][:40] if a["res"] != "ok" else "")
                      for o in full for a in o.get("attempts", []))
    notes.append("ops: %s; replies: %s" % (dict(kinds), dict(replies)))
    transfer_ok = transfer_ok_under_partition = 0
    stopped = [(e["t"], e["node"]) for e in events if e["kind"] in ("kill9", "restart")]
    stopped += [(o["t"], o["node"]) for o in full if o["op"] in ("sigterm", "stop_removed")]
    # Ops overlap: a transfer may pick a node whose removal is under way
    # (in force once appended), and get `-ERR unknown node N`.
    removing = {}
    for o in full:
        if o["op"] == "remove" and o["outcome"] != "not_applied":
            removing[o["node"]] = min(removing.get(o["node"], float("inf")), o["attempts"][0]["t0"])
    for o in full:
        for a in o.get("attempts", []):
            if (o["op"] == "transfer" and a["text"] == "ERR unknown node %d" % o["target"]
                    and removing.get(o["target"], float("inf")) <= a["t1"]):
                continue
            if not allowed(o, a):
                problems.append("op %s %s: unexpected reply %r via node %s"
                                % (o["op"], o.get("node", o.get("target")), a["text"], a["via"]))
            # Every request has a deadline (election_timeout_ms * 4); no
            # reply within the 15 s the harness waits is a missing one,
            # unless the node it went to was stopped meanwhile.
            if a["res"] == "lost" and "timed out" in a["text"] and not any(
                    n == a["via"] and a["t0"] <= t <= a["t1"] + 1e9 for t, n in stopped):
                problems.append("op %s %s: no reply from node %s in %.1f s"
                                % (o["op"], o.get("node", o.get("target")), a["via"],
                                   (a["t1"] - a["t0"]) / 1e9))
        if o["op"] in ("remove", "add"):
            at = o["attempts"]
            for idx, a in enumerate(at):
                if a["res"] == "err" and allowed(o, a):
                    if not any(b["res"] in ("timeout", "lost") for b in at[:idx]):
                        problems.append("op %s %d answered %r after attempts that promise it was not"
                                        " applied: %s" % (o["op"], o["node"], a["text"],
                                                          [(b["via"], b["text"]) for b in at[:idx]]))
            if o["outcome"] not in ("applied", "not_applied"):
                notes.append("op %s %d left open (%s)" % (o["op"], o["node"], o["outcome"]))
        if o["op"] == "transfer" and o["attempts"][0]["res"] == "ok":
            a = o["attempts"][0]
            transfer_ok += 1
            transfer_ok_under_partition += bool(o["grudge"])
            spans = leader_spans("%s/n%d.log" % (rundir, o["target"]))
            if not any(s <= a["wall1"] + SLACK and e >= a["wall0"] - SLACK for s, e in spans):
                problems.append("TRANSFER %d answered +OK via node %d at %.3f but its log shows it"
                                " did not lead in [%.3f, %.3f]" % (o["target"], a["via"], a["wall1"],
                                                                   a["wall0"], a["wall1"]))
        if o["op"] in ("sigterm", "stop_removed") and o.get("was_running", True):
            if o["rc"] != 0:
                problems.append("SIGTERM of node %d: exit status %s after %.2f s"
                                % (o["node"], o["rc"], o["secs"]))
            elif o["secs"] > STOP_SECS:
                problems.append("SIGTERM of node %d (leader: %s) took %.2f s to exit"
                                % (o["node"], o.get("was_leader"), o["secs"]))
    notes.append("transfers answered +OK: %d (%d under a partition)"
                 % (transfer_ok, transfer_ok_under_partition))
    stops = [o["secs"] for o in full if o["op"] == "sigterm" and o.get("rc") == 0]
    if stops:
        notes.append("SIGTERM stops: %d, longest %.2f s" % (len(stops), max(stops)))

    # The members the acknowledged changes make.
    expect = set(nodes)
    open_ids = set()
    for o in full:
        if o["op"] in ("remove", "add"):
            if o["outcome"] == "applied":
                (expect.discard if o["op"] == "remove" else expect.add)(o["node"])
            elif o["outcome"] != "not_applied":
                open_ids.add(o["node"])
    fm = [e for e in events if e["kind"] == "final_members"]
    if not fm or fm[-1]["members"] is None:
        problems.append("no final CLUSTER MEMBERS")
    else:
        got = {int(k): v for k, v in fm[-1]["members"].items()}
        if set(got) - open_ids != expect - open_ids:
            problems.append("final members %s, but the acknowledged changes make %s"
                            % (sorted(got), sorted(expect)))
        learners = [k for k, v in got.items() if v != "voter"]
        if learners:
            problems.append("member(s) %s still learners 30 s after the run (never caught up?)"
                            % learners)
        notes.append("final members %s (expected %s)" % (got, sorted(expect)))
    return problems, notes


def removed_nodes(events):
    """{node: time of its removal} for the nodes the run removed."""
    out = {}
    for e in events:
        if e["kind"] == "op" and e.get("op") == "remove" and e.get("outcome") == "applied":
            out[e["node"]] = e["t"]
    for e in events:
        if e["kind"] == "final_members":
            for x in e.get("removed", []):
                out.setdefault(x, e["t"])
    return out


def added_nodes(events):
    """{node: time it was added} for the nodes the run added."""
    return {e["node"]: e["t"] for e in events
            if e["kind"] == "op" and e.get("op") == "add" and e.get("outcome") == "applied"}
