//! A whole cluster in one thread: replicas over in-memory storage that tells
//! "written" from "synced", the seeded network, clients, and the faults.

use crate::checker::{
    check_promise, check_read_index, fingerprint, Checker, History, Outcome, Violation,
};
use crate::network::{Network, NetworkOptions};
use raftkv::kv::{Command, KvStore, Reply};
use raftkv::raft::rng::Rng;
use raftkv::raft::{Entry, HardState, Message, Node, NodeId, RaftConfig, Restored, Role};
use raftkv::replica::{Completion, Durable, Replica, Transport};
use raftkv::storage::StorageError;
use std::collections::BTreeMap;

/// Storage that loses everything not synced when its node crashes.
#[derive(Default)]
pub struct MemDurable {
    pub hard_state: HardState,
    pub written: Vec<Entry>,
    synced: Vec<Entry>,
    /// Lowest index appended or truncated since the last sync.
    dirty_from: Option<u64>,
    /// The next sync fails as if power went out during it.
    pub fail_next_sync: bool,
    /// (index, term, previous term, data fingerprint) of each append, for the checker.
    pub appended: Vec<(u64, u64, u64, u64)>,
}

impl MemDurable {
    pub fn synced_entries(&self) -> u64 {
        self.synced.len() as u64
    }

    pub fn term_at(&self, index: u64) -> Option<u64> {
        let i = usize::try_from(index.checked_sub(1)?).ok()?;
        self.written.get(i).map(|e| e.term)
    }

    fn crash(&mut self) {
        self.written = self.synced.clone();
        self.dirty_from = None;
        self.fail_next_sync = false;
    }
}

impl Durable for MemDurable {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        assert!(
            first >= 1 && first <= self.written.len() as u64 + 1,
            "append at {} leaves a gap after {}",
            first,
            self.written.len()
        );
        self.written.truncate(first as usize - 1);
        self.dirty_from = Some(self.dirty_from.map_or(first, |d| d.min(first)));
        for entry in entries {
            assert_eq!(
                entry.index,
                self.written.len() as u64 + 1,
                "entries not contiguous"
            );
            let prev_term = self.written.last().map_or(0, |e| e.term);
            self.appended
                .push((entry.index, entry.term, prev_term, fingerprint(&entry.data)));
            self.written.push(entry.clone());
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard_state = hard_state;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.fail_next_sync {
            return Err(StorageError::io(
                "sim",
                std::io::Error::other("power lost during sync"),
            ));
        }
        if let Some(from) = self.dirty_from.take() {
            let keep = (from as usize - 1).min(self.synced.len());
            self.synced.truncate(keep);
            self.synced.extend_from_slice(&self.written[keep..]);
        }
        Ok(())
    }
}

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
    pub replica: Option<Replica<OpId>>,
    pub durable: MemDurable,
    /// Percent of steps on which this node's clock ticks (nodes drift apart).
    tick_percent: u64,
    /// Applied entries already shown to the checker.
    applied_seen: u64,
    restarts: u64,
}

#[derive(Clone, Debug)]
enum OpKind {
    Write { key: Vec<u8>, value: Vec<u8> },
    Read { key: Vec<u8> },
}

struct Op {
    kind: OpKind,
    client: usize,
    invoked: u64,
    /// The highest index known committed when the op was invoked.
    committed_before: u64,
    /// The node it was submitted to, once it was.
    node: Option<NodeId>,
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
}

const KEYS: u64 = 5;
const CLIENTS: usize = 4;
const OP_TIMEOUT_STEPS: u64 = 150;

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
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
        };
        let net = Network::new(NetworkOptions::random(&mut rng));
        let nodes = ids
            .iter()
            .map(|&id| SimNode {
                id,
                replica: None,
                durable: MemDurable::default(),
                tick_percent: rng.range(70, 101),
                applied_seen: 0,
                restarts: 0,
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
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
        }
        sim
    }

    pub fn describe(&self) -> String {
        format!(
            "raft={{heartbeat_ticks={}, pre_vote={}, check_quorum={}, inflight={}, msg_bytes={}}} net={:?}",
            self.raft.heartbeat_ticks,
            self.raft.pre_vote,
            self.raft.check_quorum,
            self.raft.max_inflight_msgs,
            self.raft.max_msg_bytes,
            self.net.options
        )
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.opts.trace {
            println!("[{:5}] {}", self.now, what());
        }
    }

    /// (Re)starts node `i` from what it synced.
    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let config = RaftConfig {
            id: node.id,
            ..self.raft.clone()
        };
        let restored = Restored {
            hard_state: node.durable.hard_state,
            snapshot: Default::default(),
            entries: node.durable.written.clone(),
        };
        let seed = self.opts.seed ^ (node.id << 32) ^ node.restarts;
        node.replica = Some(Replica::new(
            Node::new(config, restored, seed),
            KvStore::with_shards(4),
        ));
        node.applied_seen = 0;
        node.restarts += 1;
    }

    pub fn crash(&mut self, i: usize) {
        self.trace(|| format!("crash node {}", i + 1));
        let node = &mut self.nodes[i];
        node.replica = None;
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
            if let Some(replica) = self.nodes[to].replica.as_mut() {
                if self.opts.trace {
                    println!("[{:5}] deliver {}", self.now, message);
                }
                replica.step(message);
            }
        }
        for i in 0..self.nodes.len() {
            if self.rng.chance(self.nodes[i].tick_percent, 100) {
                if let Some(replica) = self.nodes[i].replica.as_mut() {
                    replica.tick();
                }
            }
        }
        self.run_clients();
        for i in 0..self.nodes.len() {
            self.handle_ready(i)?;
        }
        self.observe()
    }

    fn handle_ready(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        let mut outbox = Outbox::default();
        let mut done: Vec<Completion<OpId>> = Vec::new();
        let result = replica.handle_ready(&mut node.durable, &mut outbox, &mut done);
        for &(index, term, prev_term, data) in &node.durable.appended {
            self.checker
                .observe_append(node.id, index, term, prev_term, data)?;
        }
        node.durable.appended.clear();
        for message in &outbox.0 {
            check_promise(
                node.id,
                message,
                node.durable.hard_state,
                node.durable.synced_entries(),
            )?;
        }
        for message in outbox.0 {
            self.net.send(self.now, message, &mut self.rng);
        }
        self.observe_applied(i)?;
        if result.is_err() {
            // Power went out during the sync: what was sent before it is out there.
            self.crash(i);
            return Ok(());
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
        for index in node.applied_seen + 1..=applied {
            let entry = &node.durable.written[index as usize - 1];
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
            if replica.node().role() == Role::Leader {
                let term = replica.node().term();
                if self.checker.observe_leader(term, node.id)? {
                    self.trace(|| format!("node {} leads term {}", node.id, term));
                    self.checker
                        .check_new_leader(node.id, term, |index| node.durable.term_at(index))?;
                }
            }
        }
        Ok(())
    }

    fn run_clients(&mut self) {
        if self.now >= self.reads_only_until && self.rng.chance(1, 400) {
            self.reads_only_until = self.now + self.rng.range(50, 250);
        }
        for c in 0..self.clients.len() {
            let timed_out = self.clients[c].0.filter(|op| {
                self.ops
                    .get(op)
                    .is_some_and(|o| self.now - o.invoked > OP_TIMEOUT_STEPS)
            });
            if let Some(op) = timed_out {
                self.abandon(op);
            }
            match self.clients[c].0 {
                Some(op) if self.ops.get(&op).is_some_and(|o| o.node.is_none()) => self.submit(op),
                Some(_) => {}
                None if self.rng.chance(1, 3) => {
                    let op = self.new_op(c);
                    self.submit(op);
                }
                None => {}
            }
        }
    }

    fn new_op(&mut self, client: usize) -> OpId {
        let key = format!("k{}", self.rng.range(0, KEYS)).into_bytes();
        let id = self.next_op;
        self.next_op += 1;
        let kind = if self.rng.chance(1, 2) && self.now >= self.reads_only_until {
            let value = format!("v{}", id).into_bytes();
            self.history.invoke_write(&key, &value, self.now);
            OpKind::Write { key, value }
        } else {
            OpKind::Read { key }
        };
        self.ops.insert(
            id,
            Op {
                kind,
                client,
                invoked: self.now,
                committed_before: self.checker.max_applied(),
                node: None,
            },
        );
        self.clients[client].0 = Some(id);
        id
    }

    /// Offers an op to the node its client believes leads; on refusal the
    /// client follows the hint (or picks another node) and retries next step.
    pub fn submit(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let client = o.client;
        let target = self.clients[client].1;
        let kind = o.kind.clone();
        let Some(replica) = self.nodes[target as usize - 1].replica.as_mut() else {
            self.clients[client].1 = self.rng.range(1, self.nodes.len() as u64 + 1);
            return;
        };
        let result = match kind {
            OpKind::Write { key, value } => replica.propose(Command::Set(key, value), op),
            OpKind::Read { key } => replica.read(Command::Get(key), op),
        };
        if self.opts.trace {
            println!(
                "[{:5}] submit op {} to node {}: {:?}",
                self.now,
                op,
                target,
                result.as_ref().map_err(|r| r.error)
            );
        }
        match result {
            Ok(()) => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.node = Some(target);
                }
            }
            Err(refused) => {
                let hint = match refused.error {
                    raftkv::raft::ProposeError::NotLeader { leader } if leader != 0 => leader,
                    _ => self.rng.range(1, self.nodes.len() as u64 + 1),
                };
                self.clients[client].1 = hint;
            }
        }
    }

    /// `applied` is the answering node's applied index once its Readies are handled.
    fn complete(
        &mut self,
        node: NodeId,
        applied: u64,
        completion: Completion<OpId>,
    ) -> Result<(), Violation> {
        if self.opts.trace {
            println!(
                "[{:5}] complete op {}: {:?}",
                self.now, completion.waiter, completion.reply
            );
        }
        let Some(op) = self.ops.remove(&completion.waiter) else {
            return Ok(());
        };
        self.clients[op.client].0 = None;
        if matches!(completion.reply, Reply::Bulk(_) | Reply::Nil) {
            check_read_index(node, op.committed_before, applied)?;
        }
        match (op.kind, completion.reply) {
            (OpKind::Write { value, .. }, Reply::Ok) => {
                let Some(&index) = self.history.applied_index.get(&value) else {
                    return Err(format!(
                        "write {:?} acknowledged before it was applied",
                        value
                    ));
                };
                let term = self.checker.applied_at(index).unwrap_or(0);
                self.checker.observe_ack(index, term);
                self.acks += 1;
                self.history
                    .complete_write(&value, self.now, Outcome::Acked(index))
            }
            (OpKind::Write { value, .. }, Reply::Error(e)) if e.starts_with("TRYAGAIN") => self
                .history
                .complete_write(&value, self.now, Outcome::Refused),
            (OpKind::Read { key }, Reply::Bulk(value)) => {
                self.history
                    .check_read(&key, op.invoked, self.now, Some(&value))
            }
            (OpKind::Read { key }, Reply::Nil) => {
                self.history.check_read(&key, op.invoked, self.now, None)
            }
            (OpKind::Read { .. }, Reply::Error(e)) if e.starts_with("TRYAGAIN") => Ok(()),
            (kind, reply) => Err(format!("{:?} answered {:?}", kind, reply)),
        }
    }

    /// The client gives up on an op: a write's outcome becomes unknown.
    fn abandon(&mut self, op: OpId) {
        if let Some(o) = self.ops.remove(&op) {
            self.clients[o.client].0 = None;
            if let OpKind::Write { value, .. } = o.kind {
                let _ = self
                    .history
                    .complete_write(&value, self.now, Outcome::Unknown);
            }
        }
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

    /// Submits one write from a fresh client slot and reports when it is acknowledged.
    pub fn liveness_write(&mut self) -> OpId {
        let client = 0;
        if let Some(op) = self.clients[client].0 {
            self.abandon(op);
        }
        let key = b"liveness".to_vec();
        let id = self.next_op;
        self.next_op += 1;
        let value = format!("v{}", id).into_bytes();
        self.history.invoke_write(&key, &value, self.now);
        self.ops.insert(
            id,
            Op {
                kind: OpKind::Write { key, value },
                client,
                invoked: self.now,
                committed_before: self.checker.max_applied(),
                node: None,
            },
        );
        self.clients[client].0 = Some(id);
        id
    }

    pub fn is_acked(&self, value_op: OpId) -> bool {
        let value = format!("v{}", value_op).into_bytes();
        matches!(
            self.history.writes.get(&value).map(|w| w.outcome),
            Some(Outcome::Acked(_))
        )
    }
}
