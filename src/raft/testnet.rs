//! An in-memory cluster for the core's unit tests (after etcd's `network` and
//! raft-rs `harness`): every node's `Ready` is handled in the legal order with
//! instant persistence, messages are delivered in FIFO order, and links can be
//! cut. The whole-cluster randomized simulator lives in `tests/sim`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::message::{Entry, EntryKind, HardState, Message, MessageBody, NodeId, SnapshotMeta};
use super::ready::{ReadState, Role, TransferOutcome};
use super::{ConfChange, Node, RaftConfig, Restored};

/// The default test config: election 10 ticks, heartbeat 1, no pre-vote, no
/// check-quorum, a generous window and no byte limit.
pub fn config(id: NodeId, voters: &[NodeId]) -> RaftConfig {
    RaftConfig {
        id,
        voters: voters.to_vec(),
        learners: Vec::new(),
        election_ticks: 10,
        heartbeat_ticks: 1,
        pre_vote: false,
        check_quorum: false,
        max_inflight_msgs: 256,
        max_msg_bytes: u64::MAX,
        max_inflight_bytes: u64::MAX,
        max_apply_bytes: u64::MAX,
        acks_are_durable: true,
    }
}

pub fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Vec::new().into(),
    }
}

/// Entries 1.. with the given terms.
pub fn log_of_terms(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| entry(i as u64 + 1, *t))
        .collect()
}

/// What a node has on disk (persistence is instant here).
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    pub entries: Vec<Entry>,
}

impl Disk {
    fn install(&mut self, meta: SnapshotMeta) {
        self.entries.clear();
        self.snapshot = meta;
    }

    fn write(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.index < first.index);
            let last = self.entries.last().map_or(self.snapshot.index, |e| e.index);
            assert_eq!(last + 1, first.index, "gap in the written log");
            self.entries.extend_from_slice(entries);
        }
    }

    /// The caller's side of `Node::compact`: the snapshot replaces the entries
    /// it covers on disk.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        self.entries.retain(|e| e.index > meta.index);
        self.snapshot = meta;
    }
}

/// A predicate choosing messages to drop.
pub type DropFilter = Box<dyn Fn(&Message) -> bool>;

pub struct Net {
    configs: BTreeMap<NodeId, RaftConfig>,
    nodes: BTreeMap<NodeId, Node>,
    pub disks: BTreeMap<NodeId, Disk>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    pub dropped_reads: BTreeMap<NodeId, Vec<u64>>,
    pub transfer_outcomes: BTreeMap<NodeId, Vec<TransferOutcome>>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Every message delivered, in order, for tests that count traffic.
    pub delivered: Vec<Message>,
    /// Messages to drop instead of delivering (a test's custom fault).
    pub drop_if: Option<DropFilter>,
}

impl Net {
    pub fn new(n: u64) -> Net {
        Net::with(n, |_| {})
    }

    /// `n` voters with ids 1..=n, each config adjusted by `tweak`.
    pub fn with(n: u64, tweak: impl Fn(&mut RaftConfig)) -> Net {
        let voters: Vec<NodeId> = (1..=n).collect();
        let mut net = Net {
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            dropped_reads: BTreeMap::new(),
            transfer_outcomes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
            drop_if: None,
        };
        for id in voters.clone() {
            let mut cfg = config(id, &voters);
            tweak(&mut cfg);
            net.add_node(cfg, Disk::default());
        }
        net
    }

    /// Adds (or restarts) a node from `disk`.
    pub fn add_node(&mut self, cfg: RaftConfig, disk: Disk) {
        let id = cfg.id;
        let restored = Restored {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.clone(),
            entries: disk.entries.clone(),
        };
        self.nodes
            .insert(id, Node::new(cfg.clone(), restored, id * 7919));
        self.configs.insert(id, cfg);
        self.disks.insert(id, disk);
        self.applied.entry(id).or_default();
    }

    /// Starts node `id` as a joiner: node 1's settings with no configuration.
    pub fn add_joiner(&mut self, id: NodeId) {
        let mut cfg = self.configs.values().next().expect("a node").clone();
        cfg.id = id;
        cfg.voters.clear();
        cfg.learners.clear();
        self.add_node(cfg, Disk::default());
    }

    /// Proposes a membership change on `id` and lets the cluster settle;
    /// returns the entry's index.
    pub fn conf_change(&mut self, id: NodeId, change: ConfChange) -> u64 {
        let (index, _) = self
            .node_mut(id)
            .propose_conf_change(change)
            .expect("change accepted");
        self.stabilize();
        index
    }

    /// Restarts `id` from a disk holding a log of `terms` (entry i+1 has
    /// `terms[i]`) in hard-state term `term`.
    pub fn set_log(&mut self, id: NodeId, terms: &[u64], term: u64) {
        let disk = Disk {
            hard_state: HardState { term, vote: 0 },
            snapshot: SnapshotMeta::default(),
            entries: log_of_terms(terms),
        };
        let cfg = self.configs[&id].clone();
        self.nodes.remove(&id);
        self.add_node(cfg, disk);
    }

    /// A lone node restored with a log of `terms` (entry i+1 has `terms[i]`) in
    /// hard-state term `term`.
    pub fn node_with_log(id: NodeId, voters: &[NodeId], terms: &[u64], term: u64) -> Node {
        let restored = Restored {
            hard_state: HardState { term, vote: 0 },
            snapshot: SnapshotMeta::default(),
            entries: log_of_terms(terms),
        };
        Node::new(config(id, voters), restored, id)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Removes a node from the network (its messages are dropped) and returns it.
    pub fn take_node(&mut self, id: NodeId) -> Node {
        self.nodes.remove(&id).expect("no such node")
    }

    /// Crashes `id` and restarts it from its disk.
    pub fn restart(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        let cfg = self.configs[&id].clone();
        let disk = self.disks[&id].clone();
        self.add_node(cfg, disk);
    }

    pub fn applied(&self, id: NodeId) -> &[Entry] {
        &self.applied[&id]
    }

    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn isolate(&mut self, id: NodeId) {
        // Ids beyond the nodes present too, for nodes that join later.
        for other in 1..=self.configs.keys().max().map_or(0, |m| m + 5) {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    pub fn heal_pair(&mut self, a: NodeId, b: NodeId) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Handles `id`'s Ready, if any, in the legal order; returns whether there was one.
    pub fn handle_ready(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if !node.has_ready() {
            return false;
        }
        let applied_before = node.status().applied_index;
        let rd = node.ready();
        // Committed entries continue what was applied (or the new snapshot).
        let base = rd.snapshot.as_ref().map_or(applied_before, |m| m.index);
        for (i, e) in rd.committed.iter().enumerate() {
            assert_eq!(
                e.index,
                base + 1 + i as u64,
                "node {id} applies out of order"
            );
        }
        let disk = self.disks.get_mut(&id).expect("disk");
        if let Some(meta) = rd.snapshot.clone() {
            disk.install(meta);
        }
        disk.write(&rd.entries);
        if let Some(hs) = rd.hard_state {
            disk.hard_state = hs;
        }
        self.queue.extend(rd.send_now);
        self.queue.extend(rd.send_after_sync);
        let applied = self.applied.get_mut(&id).expect("applied");
        if let Some(meta) = &rd.snapshot {
            applied.retain(|e| e.index <= meta.index);
        }
        applied.extend(rd.committed);
        self.read_states
            .entry(id)
            .or_default()
            .extend(rd.read_states);
        self.dropped_reads
            .entry(id)
            .or_default()
            .extend(rd.dropped_reads);
        self.transfer_outcomes
            .entry(id)
            .or_default()
            .extend(rd.transfer_outcomes);
        node.advance();
        true
    }

    /// Crashes `id` in the middle of handling its Ready, before the sync: the
    /// leader's `send_now` already left, and only part of what was written
    /// reached the disk (the hard state or not, a prefix of the entries, the
    /// snapshot or not). Then restarts it from its disk.
    pub fn crash_during_ready(
        &mut self,
        id: NodeId,
        keep_hard: bool,
        keep_entries: usize,
        keep_snapshot: bool,
    ) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.has_ready() {
            self.restart(id);
            return;
        }
        let rd = node.ready();
        let disk = self.disks.get_mut(&id).expect("disk");
        let snapshot_kept = match rd.snapshot {
            Some(meta) if keep_snapshot => {
                disk.install(meta);
                true
            }
            Some(_) => false,
            None => true,
        };
        if snapshot_kept {
            disk.write(&rd.entries[..keep_entries.min(rd.entries.len())]);
        }
        if keep_hard {
            if let Some(hs) = rd.hard_state {
                disk.hard_state = hs;
            }
        }
        self.queue.extend(rd.send_now);
        self.restart(id);
    }

    /// Handles every Ready and delivers messages until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut any = false;
            for id in ids {
                any |= self.handle_ready(id);
            }
            if !any && self.queue.is_empty() {
                return;
            }
            self.deliver_queued();
        }
        panic!("the network did not settle");
    }

    /// Delivers what is queued now (not what the deliveries produce).
    pub fn deliver_queued(&mut self) {
        for m in std::mem::take(&mut self.queue) {
            self.deliver(m);
        }
    }

    /// Delivers `m` unless its link is cut, the filter drops it or the
    /// receiver is down; returns whether it was delivered.
    pub fn deliver(&mut self, m: Message) -> bool {
        if self.cut.contains(&(m.from, m.to)) || self.drop_if.as_ref().is_some_and(|f| f(&m)) {
            return false;
        }
        let Some(node) = self.nodes.get_mut(&m.to) else {
            return false;
        };
        self.delivered.push(m.clone());
        node.step(m);
        true
    }

    /// Queues a `Ready`'s messages, as `handle_ready` would.
    pub fn queue_from_ready(&mut self, rd: super::Ready) {
        self.queue.extend(rd.send_now);
        self.queue.extend(rd.send_after_sync);
    }

    /// Takes the queued messages without delivering them.
    pub fn take_queue(&mut self) -> Vec<Message> {
        self.queue.drain(..).collect()
    }

    pub fn tick_node(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.stabilize();
    }

    pub fn tick_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.tick();
        }
        self.stabilize();
    }

    pub fn tick_all_until(&mut self, done: impl Fn(&Net) -> bool, max_ticks: usize) {
        for _ in 0..max_ticks {
            if done(self) {
                return;
            }
            self.tick_all();
        }
        assert!(done(self), "condition not reached in {max_ticks} ticks");
    }

    /// Ticks `id` alone, without delivering anything, until it has `role`.
    pub fn tick_until_role(&mut self, id: NodeId, role: Role) {
        for _ in 0..100 {
            if self.node(id).role() == role {
                return;
            }
            self.node_mut(id).tick();
        }
        panic!("node {id} never became {role:?}");
    }

    /// Makes `id` time out and campaign, then lets the cluster settle.
    pub fn campaign(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let term = node.term();
        for _ in 0..100 {
            node.tick();
            if node.role() != Role::Follower || node.term() != term {
                break;
            }
        }
        self.stabilize();
    }

    /// The leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Proposes on `id` and lets the cluster settle; returns the entry's index.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let (index, _) = self
            .node_mut(id)
            .propose(data.to_vec())
            .expect("proposal accepted");
        self.stabilize();
        index
    }
}

impl Node {
    /// Ticks this node alone until it has `role` (for single-node tests).
    pub fn tick_until_role_for_test(&mut self, role: Role) {
        for _ in 0..100 {
            if self.role() == role {
                return;
            }
            self.tick();
        }
        panic!("node {} never became {role:?}", self.id());
    }

    /// The leader's view of its followers, for failure messages.
    pub fn debug_progress(&self) -> String {
        format!(
            "node {} {:?} t{} commit {} persisted {} last {} first {} snap {}: {:?}",
            self.id,
            self.role,
            self.term,
            self.log.committed,
            self.log.persisted,
            self.log.last_index(),
            self.log.first_index(),
            self.log.snapshot.index,
            self.progress
        )
    }
}
