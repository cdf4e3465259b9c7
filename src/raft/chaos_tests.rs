//! A small randomized cluster run over the core, replayable by seed: random
//! ticks, message loss, duplication and reordering, partitions, crashes with
//! restart from disk, compaction, proposals and reads. After every step it
//! checks election safety (one leader per term) and state machine safety
//! (every node applies the same entry at an index); at the end it heals the
//! network and checks that the cluster commits again (liveness).
//!
//! Half the seeds also change the membership: they start with voters 1-3 and
//! two empty joiners, 4 and 5, and now and then the leader adds a learner
//! (promoted by the leader once caught up), removes a member (itself
//! included) or hands leadership to another voter. Then it also checks that
//! only voters campaign, that every committed configuration is one change
//! from the one before, and that a leader's log never holds two uncommitted
//! changes once it has committed in its term.
//!
//! It is a smoke test for the core's own invariants; the whole-cluster
//! simulator with client histories lives in `tests/sim`.

use std::collections::BTreeMap;

use super::conf_change::{self, ConfChange};
use super::membership::Suffrage;
use super::message::{Entry, EntryKind, Message, NodeId};
use super::ready::{Role, TransferOutcome};
use super::rng::Rng;
use super::testnet::Net;

struct Chaos {
    net: Net,
    rng: Rng,
    n: u64,
    /// Messages in flight, delivered in random order.
    pool: Vec<Message>,
    /// Index -> (term, data) of every entry any node applied.
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Term -> the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    applied_seen: BTreeMap<NodeId, usize>,
    next_value: u64,
    /// The highest commit index any node has known.
    max_commit: u64,
    /// Read ctx -> `max_commit` when the read started: a linearizable read
    /// must be served at an index at least that high.
    reads: BTreeMap<u64, u64>,
    reads_seen: BTreeMap<NodeId, usize>,
    reads_confirmed: usize,
    /// Membership changes are made (nodes 4 and 5 start as joiners).
    membership: bool,
    /// Index -> (voters, learners) of every committed ConfChange entry.
    committed_confs: BTreeMap<u64, (Vec<NodeId>, Vec<NodeId>)>,
    transfers_finished: usize,
    /// RAFT_CHAOS_TRACE: print deliveries, faults and role changes.
    trace: bool,
    roles: BTreeMap<NodeId, (Role, u64, Vec<NodeId>)>,
}

const FOUNDERS: [NodeId; 3] = [1, 2, 3];

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let mut rng = Rng::new(seed);
        let membership = seed % 2 == 1;
        let n = if membership {
            3
        } else {
            [1, 3, 3, 5][rng.range(0, 4) as usize]
        };
        let pre_vote = rng.chance(1, 2);
        let check_quorum = rng.chance(1, 2);
        let window = rng.range(1, 5) as usize;
        let bytes = rng.range(1, 64);
        let net = Net::with(n, |c| {
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
            c.max_inflight_msgs = window;
            c.max_msg_bytes = bytes;
            c.election_ticks = 10;
            c.heartbeat_ticks = 2;
        });
        let mut chaos = Chaos {
            net,
            rng,
            n,
            pool: Vec::new(),
            applied: BTreeMap::new(),
            leaders: BTreeMap::new(),
            applied_seen: BTreeMap::new(),
            next_value: 0,
            max_commit: 0,
            reads: BTreeMap::new(),
            reads_seen: BTreeMap::new(),
            reads_confirmed: 0,
            membership,
            committed_confs: BTreeMap::new(),
            transfers_finished: 0,
            trace: std::env::var("RAFT_CHAOS_TRACE").is_ok(),
            roles: BTreeMap::new(),
        };
        if membership {
            chaos.net.add_joiner(4);
            chaos.net.add_joiner(5);
            chaos.n = 5;
        }
        chaos
    }

    fn random_node(&mut self) -> NodeId {
        self.rng.range(1, self.n + 1)
    }

    /// Mostly the leader, sometimes anyone (followers refuse).
    fn leader_mostly(&mut self) -> NodeId {
        match self.net.leader() {
            Some(leader) if self.rng.chance(9, 10) => leader,
            _ => self.random_node(),
        }
    }

    fn step(&mut self) {
        if self.membership && self.rng.chance(1, 40) {
            self.change_membership();
        }
        match self.rng.range(0, 1000) {
            0..=199 => {
                let id = self.random_node();
                self.net.node_mut(id).tick();
            }
            200..=599 => self.deliver_one(),
            600..=799 => {
                let id = self.random_node();
                self.net.handle_ready(id);
                self.pool.extend(self.net.take_queue());
            }
            800..=939 => self.propose(),
            940..=969 => {
                let id = self.leader_mostly();
                let ctx = self.rng.next_u64();
                if self.net.node_mut(id).read_index(ctx).is_ok() {
                    self.reads.insert(ctx, self.max_commit);
                }
            }
            970..=979 => self.partition(),
            980..=981 => {
                let id = self.random_node();
                if self.trace {
                    eprintln!("restart {id}");
                }
                self.net.restart(id);
            }
            982..=984 => {
                let id = self.random_node();
                let keep_hard = self.rng.chance(1, 2);
                let keep_entries = self.rng.range(0, 4) as usize;
                let keep_snapshot = self.rng.chance(1, 2);
                if self.trace {
                    eprintln!("crash {id} keep hard {keep_hard} entries {keep_entries} snapshot {keep_snapshot}");
                }
                self.net
                    .crash_during_ready(id, keep_hard, keep_entries, keep_snapshot);
                self.pool.extend(self.net.take_queue());
            }
            985..=994 => self.compact(),
            _ => {
                let (a, b) = (self.random_node(), self.random_node());
                self.net.node_mut(a).report_unreachable(b);
            }
        }
        self.check();
    }

    fn deliver_one(&mut self) {
        if self.pool.is_empty() {
            return;
        }
        let i = self.rng.range(0, self.pool.len() as u64) as usize;
        let m = if self.rng.chance(1, 10) {
            self.pool[i].clone() // duplicated: the copy stays in flight
        } else {
            self.pool.swap_remove(i)
        };
        let is_snapshot = matches!(m.body, super::MessageBody::InstallSnapshot { .. });
        let (from, to) = (m.from, m.to);
        let shown = m.to_string();
        let delivered = !self.rng.chance(1, 10) && self.net.deliver(m);
        if self.trace && delivered {
            eprintln!("deliver {shown}");
        }
        if is_snapshot {
            // The caller streams the snapshot beside the message and must report
            // how it went, or the follower stays paused.
            self.net.node_mut(from).report_snapshot(to, delivered);
        }
    }

    fn propose(&mut self) {
        let id = self.leader_mostly();
        self.next_value += 1;
        let data = self.next_value.to_be_bytes().to_vec();
        let _ = self.net.node_mut(id).propose(data);
    }

    fn partition(&mut self) {
        self.net.heal();
        if self.rng.chance(1, 2) {
            let id = self.random_node();
            self.net.isolate(id);
        }
    }

    /// The leader adds a learner, removes a member or starts a transfer;
    /// refusals (a change in progress, not the leader any more) are expected.
    fn change_membership(&mut self) {
        let Some(leader) = self.net.leader() else {
            return;
        };
        let status = self.net.node(leader).status();
        let id = self.random_node();
        let member = status.voters.contains(&id) || status.learners.contains(&id);
        let node = self.net.node_mut(leader);
        let what = match self.rng.range(0, 10) {
            0..=4 if !member => {
                let context = id.to_be_bytes().to_vec();
                format!(
                    "{:?}",
                    node.propose_conf_change(ConfChange::AddLearner { id, context })
                )
            }
            0..=8 if member => {
                format!("{:?}", node.propose_conf_change(ConfChange::Remove { id }))
            }
            9 => format!("transfer {:?}", node.transfer_leader(id)),
            _ => return,
        };
        if self.trace {
            eprintln!("leader {leader} change about {id}: {what}");
        }
    }

    fn compact(&mut self) {
        let id = self.random_node();
        let status = self.net.node(id).status();
        let index = status.applied_index;
        if index <= status.snapshot_index {
            return;
        }
        let Some(meta) = self.net.node(id).snapshot_meta(index) else {
            return;
        };
        let trailing = self.rng.range(0, 4);
        self.net.node_mut(id).compact(meta.clone(), trailing);
        self.net.disks.get_mut(&id).expect("disk").compact(meta);
    }

    fn check(&mut self) {
        for id in 1..=self.n {
            let node = self.net.node(id);
            assert_eq!(node.refused_messages(), 0, "node {id} refused a message");
            if node.role() == Role::Leader {
                let leader = *self.leaders.entry(node.term()).or_insert(id);
                assert_eq!(leader, id, "two leaders in term {}", node.term());
            }
            if self.membership {
                check_node_membership(node);
            }
            if self.trace {
                let status = node.status();
                let now = (status.role, status.term, status.voters.clone());
                if self.roles.get(&id) != Some(&now) {
                    eprintln!(
                        "node {id}: {:?} t{} voters {:?} learners {:?} conf {} commit {} last {}",
                        status.role,
                        status.term,
                        status.voters,
                        status.learners,
                        status.conf_index,
                        status.commit_index,
                        status.last_index
                    );
                    self.roles.insert(id, now);
                }
            }
            let entries: &[Entry] = self.net.applied(id);
            let seen = self.applied_seen.entry(id).or_insert(0);
            for e in &entries[*seen..] {
                if e.kind == EntryKind::ConfChange && !self.committed_confs.contains_key(&e.index) {
                    check_next_conf(&self.committed_confs, e);
                    let conf = conf_change::decode(&e.data).expect("a valid entry");
                    self.committed_confs
                        .insert(e.index, (conf.voters, conf.learners));
                }
                let first = self
                    .applied
                    .entry(e.index)
                    .or_insert((e.term, e.data.to_vec()));
                assert_eq!(
                    *first,
                    (e.term, e.data.to_vec()),
                    "node {id} applied a different entry at {}",
                    e.index
                );
            }
            *seen = entries.len();
            self.max_commit = self.max_commit.max(node.status().commit_index);
            let states = self.net.read_states.get(&id).map_or(&[][..], |v| &v[..]);
            let seen = self.reads_seen.entry(id).or_insert(0);
            for rs in &states[*seen..] {
                let floor = self.reads[&rs.ctx];
                assert!(
                    rs.index >= floor,
                    "read {} served at {} but {} was committed before it started",
                    rs.ctx,
                    rs.index,
                    floor
                );
                self.reads_confirmed += 1;
            }
            *seen = states.len();
        }
        for outcomes in self.net.transfer_outcomes.values_mut() {
            for outcome in outcomes.drain(..) {
                if let TransferOutcome::Finished { target } = outcome {
                    assert!(
                        self.leaders.values().any(|l| *l == target),
                        "transfer to {target} finished but it never led"
                    );
                    self.transfers_finished += 1;
                }
            }
        }
    }

    /// The members of the last committed configuration and of the leader's.
    fn members(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = match self.committed_confs.values().next_back() {
            Some((voters, learners)) => voters.iter().chain(learners).copied().collect(),
            None if self.membership => FOUNDERS.to_vec(),
            None => (1..=self.n).collect(),
        };
        if let Some(leader) = self.net.leader() {
            let status = self.net.node(leader).status();
            ids.extend(status.voters.iter().chain(&status.learners));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A removed node may not know it is out (its removal may never have
    /// reached it) and, without pre-vote and check-quorum, its elections
    /// would disturb the cluster forever; its operator stops it (here: cuts
    /// it off).
    fn cut_off_non_members(&mut self) {
        self.net.heal();
        let members = self.members();
        for id in 1..=self.n {
            if !members.contains(&id) {
                self.net.isolate(id);
            }
        }
    }

    /// Heals everything, delivers in order, and checks that a new proposal
    /// commits on every node. A proposal may be lost with a deposed leader, so
    /// it is retried at whoever leads.
    fn settle(&mut self) {
        self.net.heal();
        for m in std::mem::take(&mut self.pool) {
            let is_snapshot = matches!(m.body, super::MessageBody::InstallSnapshot { .. });
            let (from, to) = (m.from, m.to);
            let delivered = self.net.deliver(m);
            if is_snapshot {
                self.net.node_mut(from).report_snapshot(to, delivered);
            }
        }
        self.net.stabilize();
        for attempt in 0..10u8 {
            self.cut_off_non_members();
            for _ in 0..200 {
                if self.net.leader().is_some() {
                    break;
                }
                self.net.tick_all();
            }
            if self.net.leader().is_none() {
                panic!("no leader after healing:\n{}", self.describe());
            }
            let leader = self.net.leader().expect("a leader");
            let data = vec![0xff, attempt];
            // Refused during a leadership transfer: the next attempt retries.
            let _ = self.net.node_mut(leader).propose(data.clone());
            self.net.stabilize();
            for _ in 0..30 {
                self.net.tick_all();
                self.check();
                let members = self.members();
                let everywhere = members.iter().all(|&id| {
                    let upto = self.net.node(id).status().applied_index;
                    self.applied
                        .iter()
                        .any(|(i, (_, d))| *d == data && *i <= upto)
                });
                if everywhere {
                    return;
                }
            }
        }
        panic!(
            "no proposal reached every node after healing:\n{}",
            self.describe()
        );
    }

    fn describe(&self) -> String {
        let states: Vec<String> = (1..=self.n)
            .map(|id| {
                let status = self.net.node(id).status();
                format!(
                    "{} voters {:?} learners {:?} conf_index {}",
                    self.net.node(id).debug_progress(),
                    status.voters,
                    status.learners,
                    status.conf_index
                )
            })
            .collect();
        format!(
            "members {:?}, committed configurations {:?}\n{}",
            self.members(),
            self.committed_confs,
            states.join("\n")
        )
    }
}

/// Only voters campaign (and nodes whose removal is not known committed,
/// see `Suffrage::Removing`); a leader outside its configuration is one whose
/// removal is not committed yet; and once a leader has committed an entry of
/// its term, its log holds at most one uncommitted change.
fn check_node_membership(node: &super::Node) {
    let status = node.status();
    let voter = status.voters.contains(&status.id);
    match status.role {
        Role::PreCandidate | Role::Candidate => assert!(
            voter || node.suffrage() == Suffrage::Removing,
            "non-voter {} campaigns: {status:?}",
            status.id
        ),
        Role::Leader => {
            assert!(
                voter || status.conf_index > status.commit_index,
                "node {} leads outside its committed configuration: {status:?}",
                status.id
            );
            let log = &node.log;
            if log.term(log.committed) == Some(status.term) {
                let pending = log
                    .slice(log.committed + 1, log.last_index())
                    .iter()
                    .filter(|e| e.kind == EntryKind::ConfChange)
                    .count();
                assert!(
                    pending <= 1,
                    "leader {} has {pending} uncommitted changes",
                    status.id
                );
            }
        }
        Role::Follower => {}
    }
}

/// A newly committed configuration differs from the last committed one (or
/// from the founders) by one voter at most, and by exactly the change the
/// entry names.
fn check_next_conf(committed: &BTreeMap<u64, (Vec<NodeId>, Vec<NodeId>)>, e: &Entry) {
    let prev: Vec<NodeId> = committed
        .values()
        .next_back()
        .map_or_else(|| FOUNDERS.to_vec(), |(voters, _)| voters.clone());
    let conf = conf_change::decode(&e.data).expect("a valid entry");
    let mut expected = prev.clone();
    match conf.change {
        ConfChange::AddLearner { .. } => {}
        ConfChange::Promote { id } => expected.push(id),
        ConfChange::Remove { id } => expected.retain(|v| *v != id),
        ConfChange::ForceNewCluster { .. } => panic!("forced configuration {conf:?} replicated"),
    }
    expected.sort_unstable();
    assert_eq!(
        conf.voters, expected,
        "committed change {:?} at {} turns voters {prev:?} into {:?}",
        conf.change, e.index, conf.voters
    );
}

/// What a run did, summed over seeds to show the checks had work to check.
#[derive(Debug, Default)]
struct Activity {
    reads_confirmed: usize,
    terms_led: usize,
    applied: usize,
    committed_confs: usize,
    transfers_finished: usize,
}

fn run(seed: u64, steps: usize) -> Activity {
    let mut chaos = Chaos::new(seed);
    for _ in 0..steps {
        chaos.step();
    }
    chaos.settle();
    if std::env::var("RAFT_CHAOS_VERBOSE").is_ok() {
        eprintln!(
            "seed {seed}: n={} reads={} terms led={} applied={} confs={} transfers={} snapshots={:?}",
            chaos.n,
            chaos.reads_confirmed,
            chaos.leaders.len(),
            chaos.applied.len(),
            chaos.committed_confs.len(),
            chaos.transfers_finished,
            (1..=chaos.n)
                .map(|id| chaos.net.node(id).status().snapshot_index)
                .collect::<Vec<_>>()
        );
    }
    Activity {
        reads_confirmed: chaos.reads_confirmed,
        terms_led: chaos.leaders.len(),
        applied: chaos.applied.len(),
        committed_confs: chaos.committed_confs.len(),
        transfers_finished: chaos.transfers_finished,
    }
}

#[test]
fn random_clusters_keep_raft_safety_and_recover() {
    // Replay one seed with RAFT_CHAOS_SEED=<seed>; run more with RAFT_CHAOS_SEEDS=<n>.
    if let Some(seed) = std::env::var("RAFT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed, 3000);
        return;
    }
    let seeds = std::env::var("RAFT_CHAOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let steps = std::env::var("RAFT_CHAOS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut total = Activity::default();
    for seed in 0..seeds {
        match std::panic::catch_unwind(|| run(seed, steps)) {
            Ok(run) => {
                total.reads_confirmed += run.reads_confirmed;
                total.terms_led += run.terms_led;
                total.applied += run.applied;
                total.committed_confs += run.committed_confs;
                total.transfers_finished += run.transfers_finished;
            }
            Err(e) => {
                eprintln!("chaos seed {seed} failed: replay with RAFT_CHAOS_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    // Guard against runs that pass because nothing happens (the default 60
    // seeds of 3000 steps confirm about 30 reads, lead 4 terms and apply
    // about 120 entries a seed, and commit some changes and transfers).
    if seeds >= 50 && steps >= 3000 {
        let seeds = seeds as usize;
        assert!(
            total.reads_confirmed > seeds * 5
                && total.terms_led > seeds * 2
                && total.applied > seeds * 30
                && total.committed_confs > seeds / 10
                && total.transfers_finished > 0,
            "too little happened in {seeds} seeds: {total:?}"
        );
    }
}
