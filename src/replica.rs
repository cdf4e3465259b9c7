//! IO-free glue between the Raft core, the key-value state machine and the
//! durable log: it turns client commands into proposals and reads, handles
//! every `Ready` batch in the one legal order, and says which waiting request
//! got which reply.
//!
//! The shell (`server/`) and the simulator (`tests/sim`) both drive a
//! [`Replica`], so the ordering rules of `replica_ready.rs` are exercised by
//! both.
//!
//! This file holds the replica's state, the writes, membership changes and
//! leadership transfers it takes, and the replies it gives. Four parts live in
//! files of their own, each readable without the rest: handling a `Ready`
//! batch, with the storage and transport it goes through (`replica_ready.rs`);
//! linearizable reads (`replica_reads.rs`); snapshots
//! (`replica_snapshots.rs`); and the keyspace's clock, purges and reads of
//! many keys (`replica_keyspace.rs`).

#[path = "replica_keyspace.rs"]
mod keyspace;
#[path = "replica_reads.rs"]
mod reads;
#[path = "replica_ready.rs"]
mod ready;
#[path = "replica_snapshots.rs"]
mod snapshots;

pub use keyspace::{FullRead, PurgeLimits, PurgeOutcome};
pub use ready::{Durable, ReadyOutcome, ReplicaError, SyncStart, Transport};
pub use snapshots::{trailing_entries, Compacted, MAX_TRAILING_BYTES, MAX_TRAILING_ENTRIES};

use crate::kv::{Command, KvStore, Reply};
use crate::pending_writes::PendingWrites;
use crate::raft::{ConfChange, ConfChangeError, TransferOutcome};
use crate::raft::{Message, Node, NodeId, PayloadArena, SnapshotMeta};
use crate::raft::{ProposeError, Role, Status};
use log::info;
use reads::ReadsByCtx;
use ready::Unsynced;
use std::collections::{BTreeSet, VecDeque};

/// A reply for a request that was waiting on the log or a read round.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<W> {
    pub waiter: W,
    pub reply: Reply,
}

/// The reply given when a write can no longer be committed: its log slot was
/// taken by another leader's entry, so it was not and will not be applied.
pub fn reply_not_committed() -> Reply {
    Reply::error("TRYAGAIN no leader")
}

/// The reply given when a write's fate is unknown to this node: the entries
/// that decided it arrived inside a snapshot from the leader.
pub fn reply_outcome_unknown() -> Reply {
    Reply::error("TIMEOUT outcome unknown")
}

/// A request the core would not take, handed back untouched.
#[derive(Debug)]
pub struct Refused<W> {
    pub error: ProposeError,
    pub command: Command,
    pub waiter: W,
}

/// The reply to a `CLUSTER TRANSFER` whose transfer did not finish.
pub fn reply_transfer_abandoned(target: NodeId) -> Reply {
    Reply::Error(format!("ERR transfer to {} abandoned", target))
}

pub struct Replica<W> {
    node: Node,
    kv: KvStore,
    /// Local proposals by (index, term), waiting for their index to be applied.
    /// A node that led an earlier term may still hold proposals of that term at
    /// indexes above its current ones, so they are kept sorted, not in arrival order.
    writes: PendingWrites<W>,
    /// Reads waiting for their ReadIndex round, their place in the apply
    /// order, or both, by context.
    reads: ReadsByCtx<W>,
    /// The reads not yet evaluated, by (place in the apply order, context).
    reads_to_evaluate: BTreeSet<(u64, u64)>,
    next_read_ctx: u64,
    applied_index: u64,
    /// Term of the entry at `applied_index` (0 until one is applied or installed).
    applied_term: u64,
    payload_buf: Vec<u8>,
    /// Where proposals' payloads are packed (see `raft::payload`).
    payloads: PayloadArena,
    /// Take a snapshot every this many applied entries (0: never).
    snapshot_every: u64,
    /// Entries kept below a snapshot when compacting.
    snapshot_trailing: u64,
    /// The applied index at which the next snapshot is due.
    snapshot_due_at: u64,
    /// A snapshot is also due once the entries applied since the last one
    /// carry this many bytes, or as many as the map holds if that is more.
    snapshot_log_bytes: u64,
    /// The most payload bytes the trailing margin keeps below a snapshot.
    snapshot_trailing_bytes: u64,
    /// Payload bytes applied since the last snapshot was taken or installed.
    applied_bytes_since_snapshot: u64,
    /// A snapshot handed out by `take_snapshot` and not yet reported.
    snapshot_in_progress: Option<SnapshotMeta>,
    /// Batches whose sync is running, oldest first.
    unsynced: VecDeque<Unsynced>,
    /// Who waits for the outcome of a leadership transfer, by target.
    transfers: Vec<(NodeId, W)>,
    /// Reads dropped unconfirmed when this node stopped leading, kept for the
    /// caller to route again (see [`Replica::keep_dropped_reads`]); `None`:
    /// they are answered `-TRYAGAIN` instead.
    dropped_reads: Option<Vec<(W, Command)>>,
    /// The wall clock (unix ms) as the caller last set it: a leader stamps
    /// writes with it and answers reads at it (see `kv/timeouts.rs`).
    now_ms: u64,

    /// Where the next search for expired keys starts.
    purge_cursor: usize,
    /// The index of the last purge proposed: the next waits until it is
    /// applied, so that no two purges name the same keys.
    purge_index: u64,
    /// Confirmed reads of many keys, kept for the caller to answer elsewhere
    /// (see [`Replica::answer_full_reads_elsewhere`]); `None`: answered here.
    full_reads: Option<Vec<FullRead<W>>>,
}

impl<W> Replica<W> {
    /// Joins a core restarted from durable state with the state machine that
    /// corresponds to its snapshot (empty when there is none).
    pub fn new(node: Node, kv: KvStore) -> Replica<W> {
        let applied_index = node.status().applied_index;
        Replica {
            node,
            kv,
            writes: PendingWrites::default(),
            reads: ReadsByCtx::new(1),
            reads_to_evaluate: BTreeSet::new(),
            next_read_ctx: 1,
            dropped_reads: None,
            full_reads: None,
            now_ms: 0,
            purge_cursor: 0,
            purge_index: 0,
            applied_index,
            applied_term: 0,
            payload_buf: Vec::new(),
            payloads: PayloadArena::default(),
            snapshot_every: 0,
            snapshot_trailing: 0,
            snapshot_due_at: u64::MAX,
            snapshot_log_bytes: snapshots::SNAPSHOT_LOG_BYTES,
            snapshot_trailing_bytes: snapshots::MAX_TRAILING_BYTES,
            applied_bytes_since_snapshot: 0,
            snapshot_in_progress: None,
            unsynced: VecDeque::new(),
            transfers: Vec::new(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The core itself: for a transfer or a change that no client waits
    /// for (a leader removing itself hands over first; the simulator's
    /// nemesis), which the wrapped calls would tie to a waiter.
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    pub fn status(&self) -> Status {
        self.node.status()
    }

    pub fn is_leader(&self) -> bool {
        self.node.role() == Role::Leader
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Requests waiting on the log or a read round.
    pub fn pending(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    pub fn step(&mut self, message: Message) {
        self.node.step(message);
    }

    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.node.report_unreachable(peer);
    }

    /// Proposes a write (or a MULTI/EXEC transaction). On `Err` nothing was
    /// appended and the request comes back, so the caller may forward or park it.
    pub fn propose(&mut self, command: Command, waiter: W) -> Result<(), Refused<W>> {
        self.payload_buf.clear();
        if command.is_stamped() {
            let stamp = self.time();
            command.encode_stamped(stamp, &mut self.payload_buf);
        } else {
            command.encode(&mut self.payload_buf);
        }
        self.propose_payload_buf(waiter)
            .map_err(|(error, waiter)| Refused {
                error,
                command,
                waiter,
            })
    }

    /// `propose(Command::Set(key, value), waiter)` without building the
    /// command: a plain SET is most requests under load. On `Err` nothing was
    /// appended and the waiter comes back.
    pub fn propose_set(
        &mut self,
        key: &[u8],
        value: &[u8],
        waiter: W,
    ) -> Result<(), (ProposeError, W)> {
        self.payload_buf.clear();
        crate::kv::encode_set(key, value, &mut self.payload_buf);
        self.propose_payload_buf(waiter)
    }

    fn propose_payload_buf(&mut self, waiter: W) -> Result<(), (ProposeError, W)> {
        match self.node.propose(self.payloads.push(&self.payload_buf)) {
            Ok((index, term)) => {
                self.writes.insert(index, term, waiter);
                Ok(())
            }
            Err(error) => Err((error, waiter)),
        }
    }

    /// Proposes a membership change; `waiter` gets `+OK` once its entry is
    /// applied, like a write. On `Err` nothing was appended.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        waiter: W,
    ) -> Result<(), (ConfChangeError, W)> {
        let (index, term) = match self.node.propose_conf_change(change) {
            Ok(assigned) => assigned,
            Err(error) => return Err((error, waiter)),
        };
        self.writes.insert(index, term, waiter);
        Ok(())
    }

    /// Starts (or joins) a leadership transfer to `to`; `waiter` gets `+OK`
    /// when it finishes and [`reply_transfer_abandoned`] when it does not.
    pub fn transfer_leader(&mut self, to: NodeId, waiter: W) -> Result<(), (ConfChangeError, W)> {
        match self.node.transfer_leader(to) {
            Ok(()) => {
                // With the outcome's line below, it shows how long a
                // transfer held this leader's writes.
                info!("transferring leadership to node {}", to);
                self.transfers.push((to, waiter));
                Ok(())
            }
            Err(error) => Err((error, waiter)),
        }
    }

    /// Takes every waiter of a leadership transfer not settled yet, with its
    /// target: a node about to exit answers them itself, since the outcome
    /// will never reach it.
    pub fn take_transfer_waiters(&mut self) -> Vec<(NodeId, W)> {
        std::mem::take(&mut self.transfers)
    }

    /// Stops keeping `waiter` for a transfer's outcome, since it was answered
    /// otherwise (at its deadline); the transfer's target, if it waited.
    pub fn forget_transfer_waiter(&mut self, waiter: &W) -> Option<NodeId>
    where
        W: PartialEq,
    {
        let at = self.transfers.iter().position(|(_, w)| w == waiter)?;
        Some(self.transfers.swap_remove(at).0)
    }

    /// Answers the transfer waiters whose target's outcome is known, and
    /// reports the outcomes.
    fn settle_transfers(
        &mut self,
        outcomes: Vec<TransferOutcome>,
        done: &mut Vec<Completion<W>>,
        report: &mut ReadyOutcome,
    ) {
        for outcome in &outcomes {
            let (target, reply) = match *outcome {
                TransferOutcome::Finished { target } => (target, Reply::Ok),
                TransferOutcome::Abandoned { target } => {
                    info!("leadership transfer to node {} abandoned", target);
                    (target, reply_transfer_abandoned(target))
                }
            };
            let mut i = 0;
            while i < self.transfers.len() {
                if self.transfers[i].0 == target {
                    let (_, waiter) = self.transfers.swap_remove(i);
                    done.push(Completion {
                        waiter,
                        reply: reply.clone(),
                    });
                } else {
                    i += 1;
                }
            }
        }
        report.transfer_outcomes.extend(outcomes);
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
