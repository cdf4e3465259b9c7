//! A whole cluster in one thread: replicas over in-memory storage that tells
//! "written" from "synced", the seeded network, clients, and the faults.

use crate::checker::{check_promise, fingerprint, Checker, History, Violation};
use crate::disk::MemDurable;
use crate::network::{Network, NetworkOptions};
use raftkv::kv::Command;
use raftkv::raft::rng::Rng;
use raftkv::raft::{Message, MessageBody, Node, NodeId, RaftConfig, Role, SnapshotMeta};
use raftkv::replica::{Completion, Replica, Transport};
use std::collections::BTreeMap;
use std::sync::Arc;

mod clients;

#[derive(Default)]
struct Outbox(Vec<Message>);

impl Transport for Outbox {
    fn send(&mut self, message: Message) {
        self.0.push(message);
    }
    fn flush(&mut self) {}
}

pub type OpId = u64;

pub struct SimNode {
    pub id: NodeId,
    /// The configuration it is started with: the founders, or none for a
    /// node that joins a running cluster.
    pub bootstrap_voters: Vec<NodeId>,
    pub replica: Option<Replica<OpId>>,
    pub durable: MemDurable,
    /// Percent of steps on which this node's clock ticks (nodes drift apart).
    tick_percent: u64,
    /// Its wall clock (unix ms) as its replica is told it: 10 ms a tick,
    /// from a start up to 2 s apart from the others', so leaders stamp
    /// writes with clocks that disagree.
    wall_ms: u64,
    /// Applied entries already shown to the checker.
    applied_seen: u64,
    restarts: u64,
    /// A snapshot being "written": it becomes durable at step `due`, unless
    /// the node crashes first; `fail` makes the write fail instead.
    snapshot_job: Option<SnapshotJob>,
}

struct SnapshotJob {
    due: u64,
    fail: bool,
    meta: SnapshotMeta,
    bytes: Arc<Vec<u8>>,
}

/// How often nodes snapshot in one run, and how much log they keep below.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotOptions {
    /// 0: never.
    pub every: u64,
    pub trailing: u64,
}

/// Counts of snapshot activity, to show the runs exercise it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotStats {
    pub taken: u64,
    pub failed: u64,
    pub sent: u64,
    pub installed: u64,
    pub restarts_from_snapshot: u64,
}

#[derive(Clone, Debug)]
enum OpKind {
    Write {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Read {
        key: Vec<u8>,
    },
    /// A write with timeouts on keys of their own (`t0`..), whose replies
    /// are not checked: what it tests is that every node holds the same keys
    /// and timeouts at each applied index (the digest covers both).
    Timed {
        command: Command,
    },
}

struct Op {
    kind: OpKind,
    client: usize,
    invoked: u64,
    /// The highest index known committed when the op was invoked.
    committed_before: u64,
    /// The node it was submitted to, once it was.
    node: Option<NodeId>,
    /// A read's place in the apply order: that node's last log index when
    /// it took the read (see `replica_reads.rs`), the state it is answered
    /// from.
    place: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: usize,
    pub steps: u64,
    pub seed: u64,
    pub trace: bool,
}

pub struct Sim {
    pub opts: SimOptions,
    pub rng: Rng,
    pub now: u64,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    pub checker: Checker,
    pub history: History,
    raft: RaftConfig,
    ops: BTreeMap<OpId, Op>,
    /// Each client's op in progress and the node it believes leads.
    clients: Vec<(Option<OpId>, NodeId)>,
    next_op: OpId,
    /// Clients only read until this step: an idle leader that is cut off has
    /// nothing uncommitted, so reads it wrongly answers are not held back
    /// behind writes that never commit.
    reads_only_until: u64,
    pub acks: u64,
    /// The highest commit index any node has had (read after each Ready).
    pub max_commit: u64,
    pub snapshot_options: SnapshotOptions,
    /// The state machine stream of every snapshot taken, by (index, term):
    /// what "travels beside" an InstallSnapshot message.
    snapshot_bytes: BTreeMap<(u64, u64), Arc<Vec<u8>>>,
    pub snapshot_stats: SnapshotStats,
    /// Whether `step` injects its own faults (a crash before a received
    /// snapshot is installed). The liveness phase turns them off: a node
    /// it crashed there is never restarted.
    pub faults: bool,
}

const KEYS: u64 = 5;
const CLIENTS: usize = 4;
const OP_TIMEOUT_STEPS: u64 = 150;

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
        // The test command builds in release, where the core skips them.
        raftkv::raft::check_invariants_in_release();
        let mut rng = Rng::new(opts.seed);
        let ids: Vec<NodeId> = (1..=opts.nodes as u64).collect();
        let raft = RaftConfig {
            id: 0,
            voters: ids.clone(),
            learners: Vec::new(),
            election_ticks: 10,
            heartbeat_ticks: rng.range(1, 3) as u32,
            pre_vote: rng.chance(3, 4),
            check_quorum: rng.chance(3, 4),
            max_inflight_msgs: rng.range(1, 8) as usize,
            // One entry per AppendEntries in some runs: a new leader's Noop then
            // trails the older entries it re-replicates, which is what lets an
            // old-term entry reach a majority alone (Raft Figure 8).
            max_msg_bytes: if rng.chance(1, 4) {
                1
            } else {
                rng.range(64, 4096)
            },
            // The disk here keeps what it synced, so a leader that takes a
            // rejection at an acknowledged index for a lost tail is only ever
            // misled by a stale message: it must stay safe regardless.
            acks_are_durable: rng.chance(3, 4),
            // Applied a few entries per step in some runs, the rest left for
            // later steps while more commit.
            // A window of a few messages' bytes in some runs.
            max_inflight_bytes: if rng.chance(1, 3) {
                rng.range(1, 8192)
            } else {
                u64::MAX
            },
            max_apply_bytes: if rng.chance(1, 3) {
                rng.range(1, 512)
            } else {
                u64::MAX
            },
        };
        let net = Network::new(NetworkOptions::random(&mut rng));
        // Small intervals, so runs of a few thousand entries take many
        // snapshots and lagging nodes need InstallSnapshot; some runs never
        // snapshot, to keep covering the plain log.
        let snapshot_options = if rng.chance(1, 5) {
            SnapshotOptions {
                every: 0,
                trailing: 0,
            }
        } else {
            let every = rng.range(3, 60);
            SnapshotOptions {
                every,
                trailing: rng.range(0, every + 1),
            }
        };
        // Most runs sync in the background as the server does, finishing
        // syncs some steps later (so acknowledgements and the leader's own
        // count wait); the rest sync before `start_sync` returns.
        let background_syncs = rng.chance(3, 4);
        let nodes = ids
            .iter()
            .map(|&id| SimNode {
                id,
                bootstrap_voters: ids.clone(),
                replica: None,
                durable: MemDurable::new(background_syncs),
                tick_percent: rng.range(70, 101),
                wall_ms: 1_700_000_000_000 + rng.range(0, 2_000),
                applied_seen: 0,
                restarts: 0,
                snapshot_job: None,
            })
            .collect();
        let mut sim = Sim {
            opts,
            rng,
            now: 0,
            nodes,
            net,
            checker: Checker::default(),
            history: History::default(),
            raft,
            ops: BTreeMap::new(),
            clients: vec![(None, 1); CLIENTS],
            next_op: 1,
            reads_only_until: 0,
            acks: 0,
            max_commit: 0,
            snapshot_options,
            snapshot_bytes: BTreeMap::new(),
            snapshot_stats: SnapshotStats::default(),
            faults: true,
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    pub fn describe(&self) -> String {
        format!(
            "raft={{heartbeat_ticks={}, pre_vote={}, check_quorum={}, inflight={}, inflight_bytes={}, msg_bytes={}, apply_bytes={}}} background_syncs={} snapshots={:?} net={:?}",
            self.raft.heartbeat_ticks,
            self.raft.pre_vote,
            self.raft.check_quorum,
            self.raft.max_inflight_msgs,
            self.raft.max_inflight_bytes,
            self.raft.max_msg_bytes,
            self.raft.max_apply_bytes,
            self.nodes.first().is_some_and(|n| n.durable.background_syncs),
            self.snapshot_options,
            self.net.options
        )
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.opts.trace {
            println!("[{:5}] {}", self.now, what());
        }
    }

    /// (Re)starts node `i` from what it synced: its newest snapshot and the log after it.
    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let config = RaftConfig {
            id: node.id,
            voters: node.bootstrap_voters.clone(),
            ..self.raft.clone()
        };
        let (restored, kv) = node.durable.restore();
        if restored.snapshot.index > 0 {
            self.snapshot_stats.restarts_from_snapshot += 1;
        }
        let seed = self.opts.seed ^ (node.id << 32) ^ node.restarts;
        let mut replica = Replica::new(Node::new(config, restored, seed), kv);
        let policy = self.snapshot_options;
        replica.set_snapshot_policy(policy.every, policy.trailing);
        node.applied_seen = replica.applied_index();
        node.replica = Some(replica);
        node.snapshot_job = None;
        node.restarts += 1;
    }

    pub fn crash(&mut self, i: usize) {
        self.trace(|| format!("crash node {}", i + 1));
        let node = &mut self.nodes[i];
        node.replica = None;
        node.snapshot_job = None;
        node.durable.crash();
        let id = node.id;
        // What clients had in flight there is now of unknown outcome.
        let lost: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.node == Some(id))
            .map(|(id, _)| *id)
            .collect();
        for op in lost {
            self.abandon(op);
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.trace(|| format!("restart node {}", i + 1));
        self.start(i);
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].replica.is_some())
            .collect()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// One step of simulated time: deliver, tick, submit, handle every Ready, check.
    pub fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        for message in self.net.due(self.now) {
            let to = message.to as usize - 1;
            let node = &mut self.nodes[to];
            if let Some(replica) = node.replica.as_mut() {
                if self.opts.trace {
                    println!("[{:5}] deliver {}", self.now, message);
                }
                if let MessageBody::InstallSnapshot { meta } = &message.body {
                    // As the server does: the streamed file is received
                    // whole (under a temporary name) before the core sees a
                    // message that will install it.
                    if replica.node().would_install_snapshot(message.term, meta) {
                        let bytes = self.snapshot_bytes[&(meta.index, meta.term)].clone();
                        node.durable.received = Some((meta.clone(), bytes));
                        // A crash before the core installs it leaves the
                        // old snapshots and log as they were.
                        if self.faults && self.rng.chance(1, 20) {
                            self.crash(to);
                            continue;
                        }
                    }
                }
                replica.step(message);
            }
        }
        for i in 0..self.nodes.len() {
            if self.rng.chance(self.nodes[i].tick_percent, 100) {
                let node = &mut self.nodes[i];
                node.wall_ms += 10;
                if let Some(replica) = node.replica.as_mut() {
                    replica.set_wall_clock(node.wall_ms);
                    replica.tick();
                    // Now and then a leader purges expired keys (nobody waits).
                    if replica.is_leader() && self.rng.chance(1, 10) {
                        let limits = raftkv::replica::PurgeLimits {
                            shards: 64,
                            keys: 4,
                            bytes: 64,
                        };
                        let _ = replica.propose_purge(limits, OpId::MAX);
                    }
                }
            }
        }
        self.run_clients();
        for i in 0..self.nodes.len() {
            self.handle_ready(i)?;
            self.run_snapshot(i)?;
        }
        self.observe()
    }

    /// Finishes node `i`'s snapshot write when it is due, or starts one when
    /// the replica says one is due. The view is serialized at once (it is a
    /// point-in-time copy, so this is what a helper thread would write); it
    /// becomes durable, and the log compacted, only some steps later.
    fn run_snapshot(&mut self, i: usize) -> Result<(), Violation> {
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        if node.snapshot_job.as_ref().is_some_and(|job| job.due <= now) {
            let Some(job) = node.snapshot_job.take() else {
                return Ok(());
            };
            if job.fail {
                self.snapshot_stats.failed += 1;
                replica.snapshot_failed();
            } else {
                node.durable.publish_snapshot(&job.meta, job.bytes);
                let compacted = replica.snapshot_written(&job.meta);
                node.durable.drop_before(compacted.keep_from);
            }
        }
        if node.snapshot_job.is_some() {
            return Ok(());
        }
        let Some((meta, view)) = replica.take_snapshot() else {
            return Ok(());
        };
        // Snapshots at one index hold the same state on every node: checked
        // by digest (the byte streams differ with the map's shard count).
        let digest = view.digest();
        let mut bytes = Vec::new();
        view.write_to(&mut bytes)
            .map_err(|e| format!("snapshot {} does not serialize: {}", meta.index, e))?;
        let bytes = Arc::new(bytes);
        self.checker.observe_digest(node.id, meta.index, digest)?;
        self.snapshot_bytes
            .entry((meta.index, meta.term))
            .or_insert_with(|| bytes.clone());
        self.snapshot_stats.taken += 1;
        node.snapshot_job = Some(SnapshotJob {
            due: now + self.rng.range(0, 12),
            fail: self.rng.chance(1, 25),
            meta,
            bytes,
        });
        Ok(())
    }

    fn handle_ready(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        let mut outbox = Outbox::default();
        let mut done: Vec<Completion<OpId>> = Vec::new();
        // Background syncs finish after a random number of steps, in order.
        while node.durable.syncs_running() && self.rng.chance(1, 2) {
            if let Some(ticket) = node.durable.finish_sync() {
                replica.synced(ticket, &mut outbox);
            }
        }
        let result = replica.handle_ready(&mut node.durable, &mut outbox, &mut done);
        self.max_commit = self.max_commit.max(replica.node().commit_index());
        for &(index, term, prev_term, data) in &node.durable.appended {
            self.checker
                .observe_append(node.id, index, term, prev_term, data)?;
        }
        node.durable.appended.clear();
        for message in &outbox.0 {
            check_promise(node.id, message, node.durable.hard_state, |index| {
                node.durable.held_at(index)
            })?;
        }
        let mut reports = Vec::new();
        for message in outbox.0 {
            if let MessageBody::InstallSnapshot { meta } = &message.body {
                let held = node
                    .durable
                    .snapshots
                    .iter()
                    .any(|(m, _)| (m.index, m.term) == (meta.index, meta.term));
                if !held {
                    return Err(format!(
                        "node {} sent snapshot {}/{} it does not hold durably",
                        node.id, meta.index, meta.term
                    ));
                }
                // Streaming fails now and then (connection lost mid-way).
                let ok = !self.rng.chance(1, 10);
                reports.push((message.to, ok));
                self.snapshot_stats.sent += 1;
                if !ok {
                    continue;
                }
            }
            self.net.send(self.now, message, &mut self.rng);
        }
        if let Some(meta) = &result
            .as_ref()
            .ok()
            .and_then(|o| o.snapshot_installed.clone())
        {
            self.trace(|| {
                format!(
                    "node {} installed snapshot {}/{}",
                    i + 1,
                    meta.index,
                    meta.term
                )
            });
            self.snapshot_stats.installed += 1;
        }
        self.observe_applied(i)?;
        if result.is_err() {
            // Power went out during the sync: what was sent before it is out there.
            self.crash(i);
            return Ok(());
        }
        if let Some(replica) = self.nodes[i].replica.as_mut() {
            for (to, ok) in reports {
                replica.report_snapshot(to, ok);
            }
        }
        let node = &self.nodes[i];
        let applied = node.replica.as_ref().map_or(0, |r| r.applied_index());
        let id = node.id;
        for completion in done {
            self.complete(id, applied, completion)?;
        }
        Ok(())
    }

    /// Shows the checker the entries node `i` applied since last time.
    fn observe_applied(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_ref() else {
            return Ok(());
        };
        let applied = replica.applied_index();
        // A state taken from a snapshot skips the entries it covers; its
        // digest is compared with what the nodes that applied them had.
        for (index, digest) in std::mem::take(&mut node.durable.restored_states) {
            self.checker.observe_digest(node.id, index, digest)?;
            node.applied_seen = node.applied_seen.max(index);
        }
        for index in node.applied_seen + 1..=applied {
            let entry = node.durable.entry(index);
            self.checker
                .observe_applied(node.id, index, entry.term, fingerprint(&entry.data))?;
            if entry.kind == raftkv::raft::EntryKind::Normal {
                if let Ok(Command::Set(key, value)) = Command::decode(&entry.data) {
                    self.history.observe_applied_write(&key, &value, index)?;
                }
            }
        }
        node.applied_seen = applied;
        self.checker
            .observe_digest(node.id, applied, replica.kv().digest())
    }

    fn observe(&mut self) -> Result<(), Violation> {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let Some(replica) = node.replica.as_ref() else {
                continue;
            };
            if replica.node().refused_messages() > 0 {
                return Err(format!(
                    "node {} refused a message no honest peer sends (see the log)",
                    node.id
                ));
            }
            if replica.node().role() == Role::Leader {
                let term = replica.node().term();
                if self.checker.observe_leader(term, node.id)? {
                    self.trace(|| format!("node {} leads term {}", node.id, term));
                    self.checker
                        .check_new_leader(node.id, term, node.durable.offset, |index| {
                            node.durable.term_at(index)
                        })?;
                }
            }
        }
        Ok(())
    }

    /// A leader that has every live node's agreement on its leadership.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let live = self.live();
        let leader = live.iter().find(|&&i| {
            self.nodes[i]
                .replica
                .as_ref()
                .is_some_and(|r| r.node().role() == Role::Leader)
        })?;
        let id = self.nodes[*leader].id;
        live.iter()
            .all(|&i| {
                self.nodes[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.node().leader_id() == id)
            })
            .then_some(id)
    }
}
