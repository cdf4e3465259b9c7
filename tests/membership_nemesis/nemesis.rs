//! The nemesis's state: the model of the membership, the counts of what it
//! did and got, how it fails the test; finding the leader's view, and
//! checking replies to changes against SPEC and the model.

use super::cluster_command::{cluster_request, is_timeout, is_tryagain, parse_members};
use super::cluster_command::{Asked, Change, View};
use super::common::Cluster;
use super::history::{show, History};
use super::toolkit::{fail_with_report, Rng, Stopped};
use super::{CLUSTER_REPLY_LIMIT, MIN_VOTERS, NODES};
use raftkv::kv::Reply;
use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// What the test knows about one node's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    Member,
    Out,
    /// A change about it had an unknown outcome.
    Unknown,
}

#[derive(Default)]
pub struct Stats {
    pub actions: BTreeMap<&'static str, u64>,
    pub replies: BTreeMap<String, u64>,
}

/// The nemesis's kinds of step.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    Change,
    Transfer,
    Kill,
    KillMidChange,
    StopLeader,
}

impl Step {
    pub fn random(rng: &mut Rng) -> Step {
        match rng.below(100) {
            0..=29 => Step::Change,
            30..=44 => Step::Transfer,
            45..=62 => Step::Kill,
            63..=81 => Step::KillMidChange,
            _ => Step::StopLeader,
        }
    }
}

pub struct Nemesis<'a> {
    pub hist: &'a History,
    pub seed: u64,
    pub rng: Rng,
    pub known: BTreeMap<u64, Known>,
    /// Changes answered `-TIMEOUT` (or not at all): they may take effect at
    /// any later time, so a definite outcome they contradict is excused.
    pub unknown: HashSet<Change>,
    pub stopped: Stopped,
    pub stats: Stats,
}

impl Nemesis<'_> {
    pub fn fail(&mut self, cluster: &Cluster, why: &str) -> ! {
        self.stopped.resume();
        let stats = self.summary();
        fail_with_report(
            cluster,
            self.hist,
            "membership-nemesis",
            self.seed,
            &stats,
            why,
        )
    }

    /// The first thing this run has not yet done enough of to be
    /// meaningful, and the step that does it (none for the clients' work,
    /// which grows with time).
    pub fn shortfall(&self) -> Option<(&'static str, Option<Step>)> {
        let replies = |what: &str| self.stats.replies.get(what).copied().unwrap_or(0);
        let acted = |what: &str| self.stats.actions.get(what).copied().unwrap_or(0);
        let h = self.hist;
        let incrs: i64 = h.counters.values().map(|c| c.lock().unwrap().acked).sum();
        let needs = [
            ("ADD OK", replies("ADD OK") >= 3, Some(Step::Change)),
            ("REMOVE OK", replies("REMOVE OK") >= 2, Some(Step::Change)),
            (
                "TRANSFER OK",
                replies("TRANSFER OK") >= 1,
                Some(Step::Transfer),
            ),
            ("kill", acted("kill") >= 2, Some(Step::Kill)),
            (
                "kill mid-change",
                acted("kill mid-change") >= 2,
                Some(Step::KillMidChange),
            ),
            (
                "stop leader",
                acted("stop leader") >= 1,
                Some(Step::StopLeader),
            ),
            ("SETs", h.acked_sets.load(Ordering::Relaxed) >= 300, None),
            (
                "reads",
                h.checked_reads.load(Ordering::Relaxed) >= 300,
                None,
            ),
            ("INCRs", incrs >= 50, None),
        ];
        needs
            .into_iter()
            .find(|(_, done, _)| !done)
            .map(|(what, _, step)| (what, step))
    }

    pub fn summary(&self) -> String {
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

    pub fn event(&self, text: String) {
        self.hist.event(text);
    }

    pub fn count_action(&mut self, name: &'static str) {
        *self.stats.actions.entry(name).or_default() += 1;
    }

    pub fn count_reply(&mut self, what: &str, sent: &Asked) {
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
    pub fn usable(&self, cluster: &Cluster) -> Vec<usize> {
        (0..NODES)
            .filter(|&i| cluster.is_running(i) && cluster.pid(i) != self.stopped.0)
            .collect()
    }

    /// CLUSTER MEMBERS through any usable node, retrying for up to `limit`.
    pub fn view(&mut self, cluster: &Cluster, limit: Duration) -> Option<View> {
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
    pub fn must_view(&mut self, cluster: &Cluster, what: &str) -> View {
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

    pub fn restart(&mut self, cluster: &mut Cluster, i: usize) {
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
    pub fn record_change(&mut self, change: Change, via: usize, sent: &Asked, via_alive: bool) {
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
    pub fn check_ok_shows(&mut self, cluster: &Cluster, change: Change, sent: &Asked) {
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
    pub fn pick_change(&mut self, view: &View, want_remove: bool) -> Option<Change> {
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
}
