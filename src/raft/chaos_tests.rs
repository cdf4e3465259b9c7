//! A small randomized cluster run over the core, replayable by seed: random
//! ticks, message loss, duplication and reordering, partitions, crashes with
//! restart from disk, compaction, proposals and reads. After every step it
//! checks election safety (one leader per term) and state machine safety
//! (every node applies the same entry at an index); at the end it heals the
//! network and checks that the cluster commits again (liveness).
//!
//! It is a smoke test for the core's own invariants; the whole-cluster
//! simulator with client histories lives in `tests/sim`.

use std::collections::BTreeMap;

use super::message::{Entry, Message, NodeId, SnapshotMeta};
use super::ready::Role;
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
}

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let mut rng = Rng::new(seed);
        let n = [1, 3, 3, 5][rng.range(0, 4) as usize];
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
        Chaos {
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
        }
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
                self.net.restart(id);
            }
            982..=984 => {
                let id = self.random_node();
                let keep_hard = self.rng.chance(1, 2);
                let keep_entries = self.rng.range(0, 4) as usize;
                let keep_snapshot = self.rng.chance(1, 2);
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
        let delivered = !self.rng.chance(1, 10) && self.net.deliver(m);
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

    fn compact(&mut self) {
        let id = self.random_node();
        let status = self.net.node(id).status();
        let index = status.applied_index;
        if index <= status.snapshot_index {
            return;
        }
        let term = self.applied[&index].0;
        let meta = SnapshotMeta {
            index,
            term,
            voters: status.voters.clone(),
            learners: status.learners.clone(),
        };
        let trailing = self.rng.range(0, 4);
        self.net.node_mut(id).compact(meta.clone(), trailing);
        self.net.disks.get_mut(&id).expect("disk").compact(meta);
    }

    fn check(&mut self) {
        for id in 1..=self.n {
            let node = self.net.node(id);
            if node.role() == Role::Leader {
                let leader = *self.leaders.entry(node.term()).or_insert(id);
                assert_eq!(leader, id, "two leaders in term {}", node.term());
            }
            let entries: &[Entry] = self.net.applied(id);
            let seen = self.applied_seen.entry(id).or_insert(0);
            for e in &entries[*seen..] {
                let first = self
                    .applied
                    .entry(e.index)
                    .or_insert((e.term, e.data.clone()));
                assert_eq!(
                    *first,
                    (e.term, e.data.clone()),
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
            self.net.tick_all_until(|net| net.leader().is_some(), 200);
            let leader = self.net.leader().expect("a leader");
            let data = vec![0xff, attempt];
            self.net.propose(leader, &data);
            for _ in 0..30 {
                self.net.tick_all();
                self.check();
                let everywhere = (1..=self.n).all(|id| {
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
        let states: Vec<String> = (1..=self.n)
            .map(|id| self.net.node(id).debug_progress())
            .collect();
        panic!(
            "no proposal reached every node after healing:\n{}",
            states.join("\n")
        );
    }
}

fn run(seed: u64, steps: usize) {
    let mut chaos = Chaos::new(seed);
    for _ in 0..steps {
        chaos.step();
    }
    chaos.settle();
    if std::env::var("RAFT_CHAOS_VERBOSE").is_ok() {
        eprintln!(
            "seed {seed}: n={} reads={} terms led={} applied={} snapshots={:?}",
            chaos.n,
            chaos.reads_confirmed,
            chaos.leaders.len(),
            chaos.applied.len(),
            (1..=chaos.n)
                .map(|id| chaos.net.node(id).status().snapshot_index)
                .collect::<Vec<_>>()
        );
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
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| run(seed, steps));
        if let Err(e) = result {
            eprintln!("chaos seed {seed} failed: replay with RAFT_CHAOS_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
