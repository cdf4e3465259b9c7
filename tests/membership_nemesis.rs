//! Membership changes under failures, with real processes: 3 founders and 2
//! joiners (started with `--join`). For about 40 s a nemesis picks, at
//! random, one of:
//!
//! - `CLUSTER ADD` of a node that is not a member (a joiner, or a removed
//!   node still running on its data dir);
//! - `CLUSTER REMOVE` of a learner or a voter (a founder or the leader too),
//!   keeping at least 3 voters;
//! - `CLUSTER TRANSFER` to a random voter;
//! - `kill -9` of a random node (half the time the leader), restarted on its
//!   data dir after 0.2–1.5 s; half the time a change is made while it is
//!   down (its own removal when allowed: it must learn of it on return);
//! - a change (ADD/REMOVE) sent through one node and, 0–80 ms later,
//!   `kill -9` of the leader or of the node the change is about;
//! - SIGSTOP of the leader for 0.3–1.5 s, sometimes with a change or a
//!   transfer sent through another node meanwhile.
//!
//! Meanwhile writers SET increasing values and INCR counters, and readers
//! GET/MGET, through random nodes (members or not); the replies are checked
//! as in tests/nemesis (its history checker is reused): acknowledged values
//! never go back or get lost, refused writes never appear, INCR replies are
//! unique and within bounds.
//!
//! Every CLUSTER reply must be one SPEC allows, and must come within 5 s from
//! a node that is neither stopped nor killed. A model of the membership
//! (member / not / unknown after `-TIMEOUT`) follows the definite replies:
//! `+OK` of ADD and REMOVE must show in CLUSTER MEMBERS at once, and the
//! final configuration must agree with it.
//!
//! At the end, with the writers still running, one more member is removed:
//! half the time while it is down, restarted only after the leader has
//! snapshotted and compacted past the removal. Then everything is healed
//! (resumed, restarted) and, within bounded time: all members agree on the
//! configuration (no learner left: every added node caught up and was
//! promoted), on the applied index and DEBUG DIGEST; every acknowledged
//! write is readable through every member; every node outside the
//! configuration (all still running) answers `-TRYAGAIN not a member` (or
//! `not a member yet` if it never was one, as far as it knows); no term
//! grows for 3 s (a removed node does not disrupt); no node log says
//! "panicked" or "refused a message no honest peer sends".
//!
//! `MEMBERSHIP_NEMESIS_SEED=n` replays the nemesis choices (timing varies). A
//! failure prints the seed, the timeline and the violations, and copies the
//! node logs to /tmp/membership-nemesis-logs/<seed>/.

#[path = "nemesis/clients.rs"]
mod clients;
mod common;
#[allow(dead_code)]
#[path = "nemesis/history.rs"]
mod history;
#[path = "nemesis/toolkit.rs"]
mod toolkit;

use clients::{Role, Workload};
use toolkit::{connect, Rng, StopOnDrop, Stopped};

use common::Cluster;
use history::{show, History};
use raftkv::kv::Reply;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READERS: usize = 2;
const WORKLOAD: Workload = Workload {
    prefix: "mn",
    probe_key: "mn:probe",
    writers: 3,
    keys_per_writer: 4,
    counters: 2,
    max_ops_per_connection: 250,
    leave_node_on_failure: true,
    op_timeout: Duration::from_secs(2),
    hard_limit: Duration::from_secs(100),
};
const PROBE_KEY: &str = WORKLOAD.probe_key;

const FOUNDERS: usize = 3;
const JOINERS: usize = 2;
const NODES: usize = FOUNDERS + JOINERS;
/// Fewer voters than this are never asked for.
const MIN_VOTERS: usize = 3;
/// How long the nemesis disturbs the cluster.
const NEMESIS_TIME: Duration = Duration::from_secs(40);
/// A node that is neither stopped nor killed answers a CLUSTER command within
/// its request deadline (election_timeout_ms * 4 = 800 ms here); this is
/// generous for a loaded 2-core machine.
const CLUSTER_REPLY_LIMIT: Duration = Duration::from_secs(5);
/// After healing, no node's term may grow during this window.
const QUIET_WINDOW: Duration = Duration::from_secs(3);

fn err_text(reply: &Reply) -> Option<&str> {
    match reply {
        Reply::Error(e) => Some(e.as_str()),
        _ => None,
    }
}

fn is_tryagain(reply: &Reply) -> bool {
    err_text(reply).is_some_and(|e| e.starts_with("TRYAGAIN"))
}

fn is_timeout(reply: &Reply) -> bool {
    err_text(reply).is_some_and(|e| e.starts_with("TIMEOUT"))
}

/// What a CLUSTER request got.
#[derive(Debug, PartialEq)]
enum Asked {
    /// No connection: the request never left.
    NotSent,
    /// Sent, no reply within the limit (or the connection closed).
    NoReply,
    Reply(Reply),
}

/// Sends one CLUSTER request through `addr`, waiting up to `limit` for the reply.
fn cluster_request(addr: &str, args: &[String], limit: Duration) -> Asked {
    let Some(mut client) = connect(addr, limit) else {
        return Asked::NotSent;
    };
    let mut argv: Vec<&[u8]> = vec![b"CLUSTER"];
    argv.extend(args.iter().map(|a| a.as_bytes()));
    if !client.try_send(&argv) {
        return Asked::NoReply;
    }
    match client.try_read() {
        Some(reply) => Asked::Reply(reply),
        None => Asked::NoReply,
    }
}

/// A membership change the nemesis asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Change {
    Add(u64),
    Remove(u64),
}

impl Change {
    fn id(self) -> u64 {
        match self {
            Change::Add(id) | Change::Remove(id) => id,
        }
    }

    /// The change that undoes this one.
    fn opposite(self) -> Change {
        match self {
            Change::Add(id) => Change::Remove(id),
            Change::Remove(id) => Change::Add(id),
        }
    }

    fn args(self, cluster: &Cluster) -> Vec<String> {
        match self {
            Change::Add(id) => vec![
                "ADD".into(),
                id.to_string(),
                cluster.nodes[(id - 1) as usize].raft_addr(),
            ],
            Change::Remove(id) => vec!["REMOVE".into(), id.to_string()],
        }
    }
}

/// What the test knows about one node's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Member,
    Out,
    /// A change about it had an unknown outcome.
    Unknown,
}

/// CLUSTER MEMBERS as the leader answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    voters: Vec<u64>,
    learners: Vec<u64>,
    leader: Option<u64>,
}

impl View {
    fn members(&self) -> BTreeSet<u64> {
        self.voters.iter().chain(&self.learners).copied().collect()
    }
}

fn parse_members(text: &str) -> Option<View> {
    let mut view = View {
        voters: Vec::new(),
        learners: Vec::new(),
        leader: None,
    };
    for line in text.split('\n') {
        let fields: HashMap<&str, &str> = line
            .split(' ')
            .map(|kv| kv.split_once('='))
            .collect::<Option<_>>()?;
        let id: u64 = fields.get("id")?.parse().ok()?;
        match *fields.get("suffrage")? {
            "voter" => view.voters.push(id),
            "learner" => view.learners.push(id),
            _ => return None,
        }
        if *fields.get("leader")? == "yes" {
            view.leader = Some(id);
        }
    }
    Some(view)
}

#[derive(Default)]
struct Stats {
    actions: BTreeMap<&'static str, u64>,
    replies: BTreeMap<String, u64>,
}

struct Nemesis<'a> {
    hist: &'a History,
    seed: u64,
    rng: Rng,
    known: BTreeMap<u64, Known>,
    /// Changes answered `-TIMEOUT` (or not at all): they may take effect at
    /// any later time, so a definite outcome they contradict is excused.
    unknown: HashSet<Change>,
    stopped: Stopped,
    stats: Stats,
}

impl Nemesis<'_> {
    /// Fails the test with everything needed to reproduce and explain it.
    fn fail(&mut self, cluster: &Cluster, why: &str) -> ! {
        self.stopped.resume();
        let saved = PathBuf::from("/tmp/membership-nemesis-logs").join(self.seed.to_string());
        let _ = std::fs::create_dir_all(&saved);
        for (i, node) in cluster.nodes.iter().enumerate() {
            let _ = std::fs::copy(&node.log_path, saved.join(format!("node{}.log", i + 1)));
        }
        let mut report = String::new();
        let _ = writeln!(report, "{}", why);
        let _ = writeln!(
            report,
            "seed {} (replay the nemesis choices with MEMBERSHIP_NEMESIS_SEED={}); node logs copied to {}",
            self.seed,
            self.seed,
            saved.display()
        );
        let _ = writeln!(report, "{}", self.summary());
        let _ = writeln!(report, "nemesis timeline:");
        for line in self.hist.events.lock().unwrap().iter() {
            let _ = writeln!(report, "  {}", line);
        }
        let violations = self.hist.violations.lock().unwrap();
        let _ = writeln!(report, "{} violations (first 30):", violations.len());
        for line in violations.iter().take(30) {
            let _ = writeln!(report, "  {}", line);
        }
        drop(violations);
        let _ = std::fs::write(saved.join("report.txt"), &report);
        panic!("{}", report);
    }

    fn summary(&self) -> String {
        let h = self.hist;
        let incrs: i64 = h.counters.values().map(|c| c.lock().unwrap().acked).sum();
        format!(
            "actions {:?}; CLUSTER replies {:?}; acknowledged SETs {}, acknowledged INCRs {}, reads checked {}, data errors {:?}",
            self.stats.actions,
            self.stats.replies,
            h.acked_sets.load(Ordering::Relaxed),
            incrs,
            h.checked_reads.load(Ordering::Relaxed),
            h.errors.lock().unwrap()
        )
    }

    fn event(&self, text: String) {
        self.hist.event(text);
    }

    fn count_action(&mut self, name: &'static str) {
        *self.stats.actions.entry(name).or_default() += 1;
    }

    fn count_reply(&mut self, what: &str, sent: &Asked) {
        let kind = match sent {
            Asked::NotSent => "not sent".to_string(),
            Asked::NoReply => "no reply".to_string(),
            Asked::Reply(Reply::Ok) => "OK".to_string(),
            Asked::Reply(Reply::Bulk(_)) => "bulk".to_string(),
            Asked::Reply(Reply::Error(e)) => e.split_whitespace().next().unwrap_or("").to_string(),
            Asked::Reply(other) => format!("{:?}", other),
        };
        *self
            .stats
            .replies
            .entry(format!("{} {}", what, kind))
            .or_default() += 1;
    }

    /// The nodes to send requests to: running and not stopped.
    fn usable(&self, cluster: &Cluster) -> Vec<usize> {
        (0..NODES)
            .filter(|&i| cluster.is_running(i) && cluster.pid(i) != self.stopped.0)
            .collect()
    }

    /// CLUSTER MEMBERS through any usable node, retrying for up to `limit`.
    fn view(&mut self, cluster: &Cluster, limit: Duration) -> Option<View> {
        let start = Instant::now();
        loop {
            let mut order = self.usable(cluster);
            // Ask the nodes in a random order.
            for k in (1..order.len()).rev() {
                order.swap(k, self.rng.below(k as u64 + 1) as usize);
            }
            for i in order {
                let sent = cluster_request(
                    &cluster.nodes[i].client_addr(),
                    &["MEMBERS".to_string()],
                    CLUSTER_REPLY_LIMIT,
                );
                match sent {
                    Asked::Reply(Reply::Bulk(text)) => {
                        let text = String::from_utf8_lossy(&text).into_owned();
                        match parse_members(&text) {
                            Some(view) if view.leader.is_some() => return Some(view),
                            Some(_) => {}
                            None => self.hist.violation(format!(
                                "node {}: CLUSTER MEMBERS answered {:?}, not one line per member as SPEC says",
                                i + 1,
                                text
                            )),
                        }
                    }
                    Asked::Reply(reply) if is_tryagain(&reply) || is_timeout(&reply) => {}
                    Asked::NotSent => {}
                    Asked::NoReply => self.hist.violation(format!(
                        "node {} (running, not stopped) gave no reply to CLUSTER MEMBERS within {:?}",
                        i + 1,
                        CLUSTER_REPLY_LIMIT
                    )),
                    Asked::Reply(other) => self.hist.violation(format!(
                        "node {}: CLUSTER MEMBERS answered {}",
                        i + 1,
                        show(&other)
                    )),
                }
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The view, or the test fails: with every node running and none
    /// stopped, a leader must be found within 10 s.
    fn must_view(&mut self, cluster: &Cluster, what: &str) -> View {
        match self.view(cluster, Duration::from_secs(10)) {
            Some(view) => view,
            None => self.fail(
                cluster,
                &format!(
                    "no node answered CLUSTER MEMBERS with a leader within 10 s ({})",
                    what
                ),
            ),
        }
    }

    fn restart(&mut self, cluster: &mut Cluster, i: usize) {
        let spawned = catch_unwind(AssertUnwindSafe(|| cluster.spawn(i)));
        if spawned.is_err() {
            self.fail(
                cluster,
                &format!(
                    "node {} did not open its client port after a restart",
                    i + 1
                ),
            );
        }
    }

    /// Checks a reply to a change against SPEC and updates the model.
    /// `via_alive`: the node asked was neither stopped nor killed meanwhile.
    fn record_change(&mut self, change: Change, via: usize, sent: &Asked, via_alive: bool) {
        let what = match change {
            Change::Add(_) => "ADD",
            Change::Remove(_) => "REMOVE",
        };
        self.count_reply(what, sent);
        let id = change.id();
        self.event(format!(
            "CLUSTER {} {} through node {}: {}",
            what,
            id,
            via + 1,
            match sent {
                Asked::Reply(r) => show(r),
                other => format!("{:?}", other),
            }
        ));
        let known = self.known[&id];
        let next = match sent {
            Asked::NotSent => known,
            Asked::NoReply => {
                if via_alive {
                    self.hist.violation(format!(
                        "node {} (running, not stopped) gave no reply to CLUSTER {} {} within {:?}",
                        via + 1,
                        what,
                        id,
                        CLUSTER_REPLY_LIMIT
                    ));
                }
                Known::Unknown
            }
            Asked::Reply(reply) => match (change, reply) {
                (Change::Add(_), Reply::Ok) => Known::Member,
                (Change::Remove(_), Reply::Ok) => Known::Out,
                (_, r) if is_tryagain(r) => known,
                (_, r) if is_timeout(r) => Known::Unknown,
                (Change::Add(_), Reply::Error(e))
                    if *e == format!("ERR node {} already a member", id) =>
                {
                    if known == Known::Out && !self.unknown.contains(&change) {
                        self.hist.violation(format!(
                            "CLUSTER ADD {} answered -{}, but the last definite outcome removed it",
                            id, e
                        ));
                    }
                    Known::Member
                }
                (Change::Remove(_), Reply::Error(e))
                    if *e == format!("ERR unknown node {}", id) =>
                {
                    if known == Known::Member && !self.unknown.contains(&change) {
                        self.hist.violation(format!(
                            "CLUSTER REMOVE {} answered -{}, but the last definite outcome added it",
                            id, e
                        ));
                    }
                    Known::Out
                }
                (Change::Remove(_), Reply::Error(e))
                    if *e == format!("ERR node {} is the last voter", id) =>
                {
                    known
                }
                (_, other) => {
                    self.hist.violation(format!(
                        "CLUSTER {} {} answered {}, which SPEC does not allow",
                        what,
                        id,
                        show(other)
                    ));
                    Known::Unknown
                }
            },
        };
        if next == Known::Unknown {
            self.unknown.insert(change);
        }
        self.known.insert(id, next);
    }

    /// After a definite `+OK`, CLUSTER MEMBERS must show the change at once
    /// (nothing else changes the membership but promotions).
    fn check_ok_shows(&mut self, cluster: &Cluster, change: Change, sent: &Asked) {
        if !matches!(sent, Asked::Reply(Reply::Ok)) {
            return;
        }
        let Some(view) = self.view(cluster, Duration::from_secs(5)) else {
            return;
        };
        let present = view.members().contains(&change.id());
        let expected = matches!(change, Change::Add(_));
        if present != expected && !self.unknown.contains(&change.opposite()) {
            self.hist.violation(format!(
                "{:?} was answered +OK, but CLUSTER MEMBERS then shows {:?}",
                change, view
            ));
        }
    }

    /// A change the current view allows: ADD of a non-member, or REMOVE of a
    /// learner or (with more than MIN_VOTERS voters) of a voter.
    fn pick_change(&mut self, view: &View, want_remove: bool) -> Option<Change> {
        let members = view.members();
        let addable: Vec<u64> = (1..=NODES as u64)
            .filter(|id| !members.contains(id))
            .collect();
        let mut removable: Vec<u64> = view.learners.clone();
        if view.voters.len() > MIN_VOTERS {
            removable.extend(&view.voters);
        }
        let add = self.rng.pick(&addable).map(Change::Add);
        let remove = self.rng.pick(&removable).map(Change::Remove);
        if want_remove {
            remove.or(add)
        } else {
            add.or(remove)
        }
    }

    /// ADD or REMOVE through a random node, as an operator would: retried on
    /// `-TRYAGAIN` for up to 3 s.
    fn change(&mut self, cluster: &Cluster) {
        let view = self.must_view(cluster, "before a change");
        let want_remove = self.rng.below(2) == 0;
        let Some(change) = self.pick_change(&view, want_remove) else {
            return;
        };
        self.count_action("change");
        // Mostly through a member; sometimes through any node (a joiner or a
        // removed node must answer -TRYAGAIN).
        let members = view.members();
        let candidates: Vec<usize> = self
            .usable(cluster)
            .into_iter()
            .filter(|&i| self.rng.below(5) == 0 || members.contains(&(i as u64 + 1)))
            .collect();
        let Some(via) = self.rng.pick(&candidates) else {
            return;
        };
        let start = Instant::now();
        loop {
            let sent = cluster_request(
                &cluster.nodes[via].client_addr(),
                &change.args(cluster),
                CLUSTER_REPLY_LIMIT,
            );
            self.record_change(change, via, &sent, true);
            self.check_ok_shows(cluster, change, &sent);
            let retry = matches!(&sent, Asked::Reply(r) if is_tryagain(r))
                && members.contains(&(via as u64 + 1))
                && start.elapsed() < Duration::from_secs(3);
            if !retry {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// TRANSFER to a random voter; `+OK` means that node leads (its term grew).
    fn transfer(&mut self, cluster: &Cluster) {
        let view = self.must_view(cluster, "before a transfer");
        let Some(target) = self.rng.pick(&view.voters) else {
            return;
        };
        let t = (target - 1) as usize;
        let Some(via) = self.rng.pick(&self.usable(cluster)) else {
            return;
        };
        if !cluster.is_running(t) {
            return;
        }
        self.count_action("transfer");
        let term_before = term_of(cluster, t);
        let sent = cluster_request(
            &cluster.nodes[via].client_addr(),
            &["TRANSFER".to_string(), target.to_string()],
            CLUSTER_REPLY_LIMIT,
        );
        self.count_reply("TRANSFER", &sent);
        self.event(format!(
            "CLUSTER TRANSFER {} through node {} (leader was {:?}): {}",
            target,
            via + 1,
            view.leader,
            match &sent {
                Asked::Reply(r) => show(r),
                other => format!("{:?}", other),
            }
        ));
        match &sent {
            Asked::NotSent => {}
            Asked::NoReply => self.hist.violation(format!(
                "node {} (running, not stopped) gave no reply to CLUSTER TRANSFER {} within {:?}",
                via + 1,
                target,
                CLUSTER_REPLY_LIMIT
            )),
            Asked::Reply(Reply::Ok) => {
                let term_after = term_of(cluster, t);
                let was_leader = view.leader == Some(target);
                if !was_leader && (term_before.is_none() || term_after <= term_before) {
                    self.hist.violation(format!(
                        "CLUSTER TRANSFER {} answered +OK, but node {}'s term went from {:?} to {:?}: it was not elected",
                        target, target, term_before, term_after
                    ));
                }
            }
            Asked::Reply(r) if is_tryagain(r) || is_timeout(r) => {}
            Asked::Reply(Reply::Error(e))
                if *e == format!("ERR transfer to {} abandoned", target)
                    || *e == format!("ERR unknown node {}", target)
                    || *e == format!("ERR node {} is a learner", target) => {}
            Asked::Reply(other) => self.hist.violation(format!(
                "CLUSTER TRANSFER {} answered {}, which SPEC does not allow",
                target,
                show(other)
            )),
        }
    }

    /// `kill -9` a random node (half the time the leader), restart it later.
    fn kill_and_restart(&mut self, cluster: &mut Cluster) {
        let view = self.must_view(cluster, "before a kill");
        let leader = view.leader.map(|id| (id - 1) as usize);
        let target = match leader {
            Some(l) if self.rng.below(2) == 0 => l,
            _ => match self.rng.pick(&self.usable(cluster)) {
                Some(i) => i,
                None => return,
            },
        };
        self.count_action("kill");
        cluster.kill(target);
        self.event(format!(
            "kill -9 node {}{} (members {:?})",
            target + 1,
            if Some(target) == leader {
                " (the leader)"
            } else {
                ""
            },
            view
        ));
        let down = self.rng.millis(200, 1500);
        let started = Instant::now();
        if self.rng.below(2) == 0 {
            self.change_while_down(cluster, target);
        }
        thread::sleep(down.saturating_sub(started.elapsed()));
        self.restart(cluster, target);
        self.event(format!(
            "restarted node {} after {} ms",
            target + 1,
            started.elapsed().as_millis()
        ));
    }

    /// While node `down` is killed: remove it (it learns that when it
    /// returns), add it back, or else make any change, through a member.
    fn change_while_down(&mut self, cluster: &Cluster, down: usize) {
        let Some(view) = self.view(cluster, Duration::from_secs(5)) else {
            return;
        };
        let id = down as u64 + 1;
        let members = view.members();
        let change = if view.learners.contains(&id)
            || (view.voters.contains(&id) && view.voters.len() > MIN_VOTERS)
        {
            Some(Change::Remove(id))
        } else if !members.contains(&id) {
            Some(Change::Add(id))
        } else {
            let want_remove = self.rng.below(2) == 0;
            self.pick_change(&view, want_remove)
        };
        let vias: Vec<usize> = self
            .usable(cluster)
            .into_iter()
            .filter(|i| members.contains(&(*i as u64 + 1)))
            .collect();
        let (Some(change), Some(via)) = (change, self.rng.pick(&vias)) else {
            return;
        };
        self.count_action("change while a node is down");
        let sent = cluster_request(
            &cluster.nodes[via].client_addr(),
            &change.args(cluster),
            CLUSTER_REPLY_LIMIT,
        );
        self.record_change(change, via, &sent, true);
        self.check_ok_shows(cluster, change, &sent);
    }

    /// A change through one node and, 0–80 ms later, `kill -9` of the leader
    /// or of the node the change is about; the reply must still come.
    fn kill_mid_change(&mut self, cluster: &mut Cluster) {
        let view = self.must_view(cluster, "before a change with a kill");
        let want_remove = self.rng.below(2) == 0;
        let Some(change) = self.pick_change(&view, want_remove) else {
            return;
        };
        let leader = view.leader.map(|id| (id - 1) as usize);
        let subject = (change.id() - 1) as usize;
        let victim = match leader {
            Some(l) if self.rng.below(3) != 0 => l,
            _ => subject,
        };
        let members = view.members();
        let vias: Vec<usize> = self
            .usable(cluster)
            .into_iter()
            .filter(|&i| i != victim && members.contains(&(i as u64 + 1)))
            .collect();
        let Some(via) = self.rng.pick(&vias) else {
            return;
        };
        if !cluster.is_running(victim) {
            return;
        }
        self.count_action("kill mid-change");
        let addr = cluster.nodes[via].client_addr();
        let args = change.args(cluster);
        let request = thread::spawn(move || cluster_request(&addr, &args, CLUSTER_REPLY_LIMIT));
        thread::sleep(self.rng.millis(0, 80));
        cluster.kill(victim);
        self.event(format!(
            "{:?} sent through node {}; kill -9 node {}{}",
            change,
            via + 1,
            victim + 1,
            if Some(victim) == leader {
                " (the leader)"
            } else {
                " (the node changed)"
            }
        ));
        let down = self.rng.millis(200, 1500);
        thread::sleep(down);
        self.restart(cluster, victim);
        self.event(format!("restarted node {}", victim + 1));
        let sent = request.join().unwrap_or(Asked::NoReply);
        self.record_change(change, via, &sent, true);
        self.check_ok_shows(cluster, change, &sent);
    }

    /// SIGSTOP the leader for 0.3–1.5 s; half the time a change or a
    /// transfer goes through another node meanwhile.
    fn stop_leader(&mut self, cluster: &Cluster) {
        let view = self.must_view(cluster, "before a stop");
        let Some(leader) = view.leader.map(|id| (id - 1) as usize) else {
            return;
        };
        let Some(pid) = cluster.pid(leader) else {
            return;
        };
        self.count_action("stop leader");
        let hold = self.rng.millis(300, 1500);
        let started = Instant::now();
        self.stopped.stop(pid);
        self.event(format!(
            "SIGSTOP node {} (the leader) for {} ms",
            leader + 1,
            hold.as_millis()
        ));
        match self.rng.below(4) {
            0 => {
                thread::sleep(self.rng.millis(0, 400));
                let members = view.members();
                let vias: Vec<usize> = self
                    .usable(cluster)
                    .into_iter()
                    .filter(|i| members.contains(&(*i as u64 + 1)))
                    .collect();
                let want_remove = self.rng.below(2) == 0;
                let change = self.pick_change(&view, want_remove);
                if let (Some(via), Some(change)) = (self.rng.pick(&vias), change) {
                    // The stopped leader may be the subject: fine either way.
                    let sent = cluster_request(
                        &cluster.nodes[via].client_addr(),
                        &change.args(cluster),
                        CLUSTER_REPLY_LIMIT,
                    );
                    self.record_change(change, via, &sent, true);
                }
            }
            1 => {
                thread::sleep(self.rng.millis(0, 400));
                self.transfer(cluster);
            }
            _ => {}
        }
        thread::sleep(hold.saturating_sub(started.elapsed()));
        self.stopped.resume();
        self.event(format!(
            "SIGCONT node {} after {} ms",
            leader + 1,
            started.elapsed().as_millis()
        ));
    }
}

fn term_of(cluster: &Cluster, i: usize) -> Option<u64> {
    let mut client = connect(&cluster.nodes[i].client_addr(), Duration::from_secs(2))?;
    client.try_info()?.get("term")?.parse().ok()
}

fn info_of(cluster: &Cluster, i: usize) -> Option<HashMap<String, String>> {
    connect(&cluster.nodes[i].client_addr(), Duration::from_secs(2))?.try_info()
}

/// GET through `addr`, retrying `-TRYAGAIN` (and lost connections) for up to 10 s.
fn final_get(addr: &str, key: &str) -> Option<Reply> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(mut client) = connect(addr, Duration::from_secs(5)) {
            if client.try_send(&[b"GET", key.as_bytes()]) {
                match client.try_read() {
                    Some(reply) if !is_tryagain(&reply) => return Some(reply),
                    _ => {}
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The state every member must agree on at the end.
#[derive(Debug, PartialEq, Eq)]
struct NodeState {
    applied: u64,
    members: String,
    learners: String,
    digest: Reply,
}

fn node_state(cluster: &Cluster, i: usize) -> Option<(NodeState, u64)> {
    let mut client = connect(&cluster.nodes[i].client_addr(), Duration::from_secs(2))?;
    let info = client.try_info()?;
    client.try_send(&[b"DEBUG", b"DIGEST"]).then_some(())?;
    let digest = client.try_read()?;
    let commit = info.get("commit_index")?.parse().ok()?;
    Some((
        NodeState {
            applied: info.get("applied_index")?.parse().ok()?,
            members: info.get("members")?.clone(),
            learners: info.get("learners")?.clone(),
            digest,
        },
        commit,
    ))
}

impl Nemesis<'_> {
    /// CLUSTER ADD or REMOVE through the leader, retrying `-TRYAGAIN` for up to 5 s.
    fn change_via_leader(&mut self, cluster: &Cluster, change: Change) -> Asked {
        let start = Instant::now();
        loop {
            let view = self.must_view(cluster, "before a final change");
            let via = (view.leader.expect("a view has a leader") - 1) as usize;
            let sent = cluster_request(
                &cluster.nodes[via].client_addr(),
                &change.args(cluster),
                CLUSTER_REPLY_LIMIT,
            );
            self.record_change(change, via, &sent, true);
            let retry = matches!(&sent, Asked::Reply(r) if is_tryagain(r))
                && start.elapsed() < Duration::from_secs(5);
            if !retry {
                return sent;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// With the clients still writing: leaves one removed node for the final
    /// checks, half the time removed while it is down and restarted only once
    /// the leader has compacted its log past the removal. Returns its index.
    fn final_removal(&mut self, cluster: &mut Cluster) -> Option<usize> {
        self.stopped.resume();
        for i in 0..NODES {
            if !cluster.is_running(i) {
                self.restart(cluster, i);
            }
        }
        let mut view = self.must_view(cluster, "before the final removal");
        if view.voters.len() <= MIN_VOTERS {
            let id = self.rng.pick(
                &(1..=NODES as u64)
                    .filter(|id| !view.members().contains(id))
                    .collect::<Vec<_>>(),
            )?;
            if self.change_via_leader(cluster, Change::Add(id)) != Asked::Reply(Reply::Ok) {
                return None;
            }
            let start = Instant::now();
            loop {
                view = self.must_view(cluster, "waiting for a promotion");
                if view.voters.contains(&id) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    self.fail(
                        cluster,
                        &format!("node {} added but not promoted within 10 s: {:?}", id, view),
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let candidates: Vec<u64> = view
            .voters
            .iter()
            .copied()
            .filter(|id| Some(*id) != view.leader)
            .collect();
        let id = self.rng.pick(&candidates)?;
        let i = (id - 1) as usize;
        let while_down = self.rng.below(2) == 0;
        if while_down {
            self.count_action("final removal while down");
            cluster.kill(i);
            self.event(format!("kill -9 node {} to remove it while down", id));
        } else {
            self.count_action("final removal");
        }
        let sent = self.change_via_leader(cluster, Change::Remove(id));
        if while_down {
            // At thousands of writes a second, the leader snapshots and
            // drops the log past the removal (snapshot_entries = 1000).
            let snapshot_index = |nemesis: &mut Nemesis, cluster: &Cluster| -> Option<u64> {
                let view = nemesis.view(cluster, Duration::from_secs(5))?;
                info_of(cluster, (view.leader? - 1) as usize)?
                    .get("snapshot_index")?
                    .parse()
                    .ok()
            };
            let before = snapshot_index(self, cluster).unwrap_or(0);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(4) {
                thread::sleep(Duration::from_millis(250));
                if snapshot_index(self, cluster).unwrap_or(0) > before + 3000 {
                    break;
                }
            }
            let now = snapshot_index(self, cluster).unwrap_or(0);
            self.restart(cluster, i);
            self.event(format!(
                "restarted node {} after {} ms down (leader snapshot index {} when removed, {} now)",
                id,
                start.elapsed().as_millis(),
                before,
                now
            ));
        }
        (sent == Asked::Reply(Reply::Ok)).then_some(i)
    }

    /// Heal, then check convergence, every acknowledged write, removed
    /// nodes, term stability and the logs.
    fn final_checks(&mut self, cluster: &mut Cluster, removed: Option<usize>) {
        self.stopped.resume();
        for i in 0..NODES {
            if !cluster.is_running(i) {
                self.restart(cluster, i);
            }
        }
        // Every member converges: the same configuration (no learner left),
        // applied index (at least its commit index) and digest.
        let start = Instant::now();
        let mut last_seen = String::new();
        let (view, applied) = loop {
            let attempt = (|| {
                let view = self.view(cluster, Duration::from_secs(2))?;
                if !view.learners.is_empty() {
                    last_seen = format!("learners left: {:?}", view);
                    return None;
                }
                let mut states = Vec::new();
                for &id in &view.voters {
                    states.push((id, node_state(cluster, (id - 1) as usize)?));
                }
                last_seen = format!("{:?}: {:?}", view, states);
                let (first, _) = &states[0].1;
                let expected_members = view
                    .voters
                    .iter()
                    .map(|id| format!("{}={}", id, cluster.nodes[(id - 1) as usize].raft_addr()))
                    .collect::<Vec<_>>()
                    .join(",");
                let agreed = first.members == expected_members
                    && states
                        .iter()
                        .all(|(_, (s, commit))| s == first && s.applied >= *commit);
                agreed.then_some((view.clone(), first.applied))
            })();
            if let Some(done) = attempt {
                break done;
            }
            if start.elapsed() > Duration::from_secs(25) {
                self.fail(
                    cluster,
                    &format!(
                        "the members did not converge (one configuration, no learners, same applied index and digest) within 25 s; last seen {}",
                        last_seen
                    ),
                );
            }
            thread::sleep(Duration::from_millis(100));
        };
        self.event(format!(
            "converged at applied index {} with voters {:?} after {} ms",
            applied,
            view.voters,
            start.elapsed().as_millis()
        ));

        // The model of definite outcomes agrees with the final configuration.
        let final_members = view.members();
        for (&id, &known) in &self.known {
            let present = final_members.contains(&id);
            let bad = match known {
                Known::Member => !present && !self.unknown.contains(&Change::Remove(id)),
                Known::Out => present && !self.unknown.contains(&Change::Add(id)),
                Known::Unknown => false,
            };
            if bad {
                self.hist.violation(format!(
                    "node {}: the last definite CLUSTER outcome says {:?}, but the final configuration is {:?}",
                    id, known, view
                ));
            }
        }

        // Every acknowledged write is readable through every member.
        let hist = self.hist;
        for &id in &view.voters {
            let i = (id - 1) as usize;
            let via = format!("final read through node {}", id);
            for key in WORKLOAD.all_keys() {
                let Some(reply) = final_get(&cluster.nodes[i].client_addr(), &key) else {
                    hist.violation(format!("{}: no answer for GET {} within 10 s", via, key));
                    continue;
                };
                hist.check_final_read(&via, &key, &reply);
            }
        }
        hist.check_no_refused_value_was_read();

        // Nodes outside the configuration (all still running) refuse data
        // commands: a removed node with -TRYAGAIN not a member (SPEC §3), a
        // node never added (or added and removed before it heard of it) with
        // -TRYAGAIN not a member yet. The node removed at the end was a
        // member, so it must say the former. 8 s for all of them together.
        let outside: Vec<usize> = (0..NODES)
            .filter(|i| !final_members.contains(&(*i as u64 + 1)))
            .collect();
        let settled = |i: usize, said: &Option<Reply>| match said {
            Some(Reply::Error(e)) => {
                e == "TRYAGAIN not a member"
                    || (e == "TRYAGAIN not a member yet" && removed != Some(i))
            }
            _ => false,
        };
        let mut said: Vec<Option<Reply>> = vec![None; outside.len()];
        let start = Instant::now();
        loop {
            for (k, &i) in outside.iter().enumerate() {
                if settled(i, &said[k]) {
                    continue;
                }
                let addr = cluster.nodes[i].client_addr();
                if let Some(mut client) = connect(&addr, Duration::from_secs(3)) {
                    if client.try_send(&[b"GET", PROBE_KEY.as_bytes()]) {
                        said[k] = client.try_read();
                    }
                }
            }
            let done = outside.iter().zip(&said).all(|(&i, s)| settled(i, s));
            if done || start.elapsed() > Duration::from_secs(8) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut outside_says = Vec::new();
        for (&i, said) in outside.iter().zip(&said) {
            let text = said.as_ref().map(show);
            if !settled(i, said) {
                hist.violation(format!(
                    "node {} is outside the configuration{} but still answers GET with {:?} after 8 s, not -TRYAGAIN not a member: it never learned its removal (its log ever said it was removed: {})",
                    i + 1,
                    if removed == Some(i) { " (the final removal)" } else { "" },
                    text,
                    cluster.log_text(i).contains("was removed from the cluster")
                ));
            }
            outside_says.push(format!("node {}: {:?}", i + 1, text));
        }
        self.event(format!(
            "nodes outside the configuration say {:?}",
            outside_says
        ));

        // Healed: no term grows, the leader stays (a removed node, still
        // running, does not disrupt).
        let terms = |cluster: &Cluster| -> Vec<(usize, Option<u64>, Option<String>)> {
            (0..NODES)
                .map(|i| {
                    let info = info_of(cluster, i);
                    let term = info.as_ref().and_then(|m| m.get("term")?.parse().ok());
                    let leader = info.and_then(|m| m.get("leader_id").cloned());
                    (i + 1, term, leader)
                })
                .collect()
        };
        let before = terms(cluster);
        thread::sleep(QUIET_WINDOW);
        let after = terms(cluster);
        self.event(format!(
            "terms (node, term, leader_id) before {:?} and {:?} after a quiet {:?}",
            before, after, QUIET_WINDOW
        ));
        for (b, a) in before.iter().zip(&after) {
            if b.1.is_none() || a.1.is_none() || a.1 > b.1 {
                hist.violation(format!(
                    "healed, node {}'s term went from {:?} to {:?} within {:?} (leader_id {:?} -> {:?})",
                    b.0, b.1, a.1, QUIET_WINDOW, b.2, a.2
                ));
            }
        }

        for i in 0..NODES {
            let text = cluster.log_text(i);
            if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
                hist.violation(format!("node {} panicked: {}", i + 1, line));
            }
            let refused = "refused a message no honest peer sends";
            if let Some(line) = text.lines().find(|l| l.contains(refused)) {
                hist.violation(format!("node {}: {}", i + 1, line));
            }
        }
    }
}

#[test]
fn membership_changes_stay_safe_under_kills_and_stops() {
    let seed: u64 = match std::env::var("MEMBERSHIP_NEMESIS_SEED") {
        Ok(s) => s.parse().expect("MEMBERSHIP_NEMESIS_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
    };
    eprintln!(
        "membership nemesis seed {} (replay with MEMBERSHIP_NEMESIS_SEED={})",
        seed, seed
    );
    let test_start = Instant::now();
    let mut rng = Rng(seed);
    let mut cluster = Cluster::with_joiners(FOUNDERS, JOINERS);
    for node in cluster.nodes.iter_mut() {
        // Snapshots (and snapshot installs to new and returning nodes) happen
        // several times a run.
        node.extra_args = vec!["--snapshot-entries".into(), "1000".into()];
    }
    for i in 0..FOUNDERS {
        cluster.spawn(i);
    }
    cluster.wait_for_leader(Duration::from_secs(15));
    for i in FOUNDERS..NODES {
        cluster.spawn(i);
    }
    let hist = Arc::new(History::new(&WORKLOAD));
    let client_seeds: Vec<u64> = (0..WORKLOAD.writers + READERS)
        .map(|_| rng.next())
        .collect();
    // Declared after the cluster, so dropped before it (also when the test
    // fails): the clients stop and a stopped node is resumed before the
    // cluster kills every node.
    let mut nemesis = Nemesis {
        hist: &hist,
        seed,
        rng,
        known: (1..=NODES as u64)
            .map(|id| {
                let known = if id as usize <= FOUNDERS {
                    Known::Member
                } else {
                    Known::Out
                };
                (id, known)
            })
            .collect(),
        unknown: HashSet::new(),
        stopped: Stopped(None),
        stats: Stats::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let clients: Vec<_> = (0..WORKLOAD.writers)
        .map(Role::Writer)
        .chain((0..READERS).map(|_| Role::Reader))
        .zip(client_seeds)
        .map(|(role, client_seed)| {
            let (addrs, hist, stop) = (addrs.clone(), Arc::clone(&hist), Arc::clone(&stop));
            thread::spawn(move || WORKLOAD.run_client(role, client_seed, addrs, hist, stop))
        })
        .collect();

    thread::sleep(Duration::from_millis(300));
    let nemesis_start = Instant::now();
    // Grow to five first, so that every kind of step has something to do.
    for id in [4u64, 5] {
        let via = nemesis.rng.below(FOUNDERS as u64) as usize;
        let sent = cluster_request(
            &cluster.nodes[via].client_addr(),
            &Change::Add(id).args(&cluster),
            CLUSTER_REPLY_LIMIT,
        );
        nemesis.record_change(Change::Add(id), via, &sent, true);
        thread::sleep(Duration::from_millis(300));
    }
    while nemesis_start.elapsed() < NEMESIS_TIME && !hist.has_violations() {
        match nemesis.rng.below(100) {
            0..=29 => nemesis.change(&cluster),
            30..=44 => nemesis.transfer(&cluster),
            45..=62 => nemesis.kill_and_restart(&mut cluster),
            63..=81 => nemesis.kill_mid_change(&mut cluster),
            _ => nemesis.stop_leader(&cluster),
        }
        let pause = nemesis.rng.millis(100, 500);
        thread::sleep(pause);
    }
    nemesis.event("nemesis done; clients go on during the final removal".to_string());
    let removed = if hist.has_violations() {
        None
    } else {
        nemesis.final_removal(&mut cluster)
    };
    drop(stop_on_drop);
    for client in clients {
        if client.join().is_err() {
            hist.violation("a client thread panicked".to_string());
        }
    }
    // Requests still queued in a node expire after election_timeout_ms * 4.
    thread::sleep(Duration::from_millis(900));
    nemesis.final_checks(&mut cluster, removed);
    eprintln!(
        "membership nemesis: {} in {:.1} s",
        nemesis.summary(),
        test_start.elapsed().as_secs_f64()
    );
    if hist.has_violations() {
        nemesis.fail(&cluster, "invariants violated");
    }
    // The run must have exercised what it claims to.
    let replies = &nemesis.stats.replies;
    let count = |what: &str| replies.get(what).copied().unwrap_or(0);
    let actions = &nemesis.stats.actions;
    let acted = |what: &str| actions.get(what).copied().unwrap_or(0);
    let sets = hist.acked_sets.load(Ordering::Relaxed);
    let reads = hist.checked_reads.load(Ordering::Relaxed);
    let incrs: i64 = hist
        .counters
        .values()
        .map(|c| c.lock().unwrap().acked)
        .sum();
    if count("ADD OK") < 3
        || count("REMOVE OK") < 2
        || count("TRANSFER OK") < 1
        || acted("kill") < 2
        || acted("kill mid-change") < 2
        || acted("stop leader") < 1
        || sets < 300
        || reads < 300
        || incrs < 50
    {
        let why = format!(
            "the run did too little to be meaningful: {} SETs, {} reads, {} INCRs",
            sets, reads, incrs
        );
        nemesis.fail(&cluster, &why);
    }
}
