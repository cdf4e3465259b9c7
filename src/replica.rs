//! IO-free glue between the Raft core, the key-value state machine and the
//! durable log: it turns client commands into proposals and reads, handles
//! every `Ready` batch in the one legal order, and says which waiting request
//! got which reply.
//!
//! The shell (`server/`) and the simulator (`tests/sim`) both drive a
//! [`Replica`], so the ordering rules below are exercised by both.
//!
//! # Snapshots
//!
//! The replica decides *when* (every `snapshot_entries` applied entries, one
//! at a time) and hands out a point-in-time view of the map with its
//! metadata ([`Replica::take_snapshot`]); the caller writes it where it likes,
//! off the event loop if it wants, and reports back
//! ([`Replica::snapshot_written`]), which lets the core compact its log. A
//! snapshot received from the leader is installed through
//! [`Durable::install_snapshot`] while a `Ready` is handled, before its entries.

use crate::kv::{Command, FlushedKeys, KvSnapshot, KvStore, Reply};
use crate::pending_writes::PendingWrites;
use crate::raft::{conf_change, ConfChange, ConfChangeError, ConfEntry, TransferOutcome};
use crate::raft::{Entry, NodeId, PayloadArena, SnapshotMeta};
use crate::raft::{
    EntryKind, HardState, Message, Node, ProposeError, Ready, Role, SoftState, Status,
};
use crate::storage::StorageError;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Where entries and the hard state go. `append` and `set_hard_state` may
/// buffer; only after `sync` returns may anything that promises them be sent.
pub trait Durable {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Durable when it returns (the stable file is replaced atomically).
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    /// Starts making everything appended so far durable (group commit: one
    /// sync per batch, never per entry). [`SyncStart::Synced`] means all of it
    /// is durable already (a blocking sync, or `fsync = never`);
    /// [`SyncStart::Pending`] hands back a ticket that the caller reports to
    /// [`Replica::synced`] when the sync finishes. Tickets finish in order.
    fn start_sync(&mut self) -> Result<SyncStart, StorageError>;
    /// Makes the snapshot `meta` names, received from the leader beside its
    /// InstallSnapshot message, this node's state: returns the state machine
    /// it holds and empties the log so that it continues at `meta.index + 1`.
    /// Durable when it returns (the snapshot itself was made durable when it
    /// was received, before the core saw the message).
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError>;
}

/// What [`Durable::start_sync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStart {
    /// Everything appended so far is durable now.
    Synced,
    /// A sync is running; this ticket will be reported when it finishes.
    Pending(u64),
}

/// A batch whose entries are written but whose sync is still running: what
/// it promises waits here.
struct Unsynced {
    ticket: u64,
    /// Votes and acknowledgements of this batch and of any later batch that
    /// had nothing to sync itself (they must not overtake this one).
    messages: Vec<Message>,
    /// The batch's last entry: persisted once the sync finishes.
    last_entry: Option<(u64, u64)>,
}

/// The most log entries kept below a snapshot's index when the log is
/// compacted, so that a follower slightly behind is caught up from the log
/// and not sent a whole snapshot. SPEC §4 allows at most `snapshot_entries`.
pub const MAX_TRAILING_ENTRIES: u64 = 10_000;

/// Committed entries are applied in batches of this many, the map being told
/// each batch's keys first so that their cache misses overlap.
const PREFETCH_ENTRIES: usize = crate::kv::PREFETCH_KEYS_MAX;

/// The trailing margin used with a given `snapshot_entries`.
pub fn trailing_entries(snapshot_entries: u64) -> u64 {
    snapshot_entries.min(MAX_TRAILING_ENTRIES)
}

/// Where messages to peers go.
pub trait Transport {
    /// Queues a message; it may be written out at once or on `flush`.
    fn send(&mut self, message: Message);
    /// Pushes queued messages towards the network. Called before a sync, so a
    /// leader's AppendEntries travel while it writes its own copy.
    fn flush(&mut self);
}

/// A fatal error: the node must stop (a sync that failed cannot be retried
/// safely, and a committed entry that does not decode means a corrupt log).
#[derive(Debug)]
pub enum ReplicaError {
    Storage(StorageError),
    BadEntry { index: u64, reason: String },
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaError::Storage(err) => write!(f, "storage failure: {}", err),
            ReplicaError::BadEntry { index, reason } => {
                write!(f, "committed entry {} does not decode: {}", index, reason)
            }
        }
    }
}

impl std::error::Error for ReplicaError {}

impl From<StorageError> for ReplicaError {
    fn from(err: StorageError) -> Self {
        ReplicaError::Storage(err)
    }
}

/// What a written snapshot let go of.
#[derive(Debug)]
pub struct Compacted {
    /// The first index the log on disk must keep; whole segments below it may go.
    pub keep_from: u64,
    /// Entries the core dropped from memory.
    pub dropped: Vec<Entry>,
}

/// A reply for a request that was waiting on the log or a read round.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<W> {
    pub waiter: W,
    pub reply: Reply,
}

/// What one call of [`Replica::handle_ready`] observed, for logging and INFO.
#[derive(Debug, Default)]
pub struct ReadyOutcome {
    /// The last role/leader/term change seen, if any.
    pub soft_state: Option<SoftState>,
    pub entries_applied: u64,
    /// A snapshot from the leader that replaced this node's state.
    pub snapshot_installed: Option<SnapshotMeta>,
    /// The map that snapshot replaced, for the caller to free where it likes
    /// (freeing millions of keys takes a while).
    pub replaced_state: Option<KvStore>,
    /// Maps that FLUSHALL emptied, for the caller to free where it likes.
    pub flushed: Vec<FlushedKeys>,
    /// ConfChange entries written to the log, by index, in order: the
    /// configuration each names is in force from then on (unless truncated).
    pub conf_appended: Vec<(u64, ConfEntry)>,
    /// ConfChange entries applied (committed), by index, in order.
    pub conf_applied: Vec<(u64, ConfEntry)>,
    /// Leadership transfers started on this node whose outcome became known.
    pub transfer_outcomes: Vec<TransferOutcome>,
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

struct PendingRead<W> {
    waiter: W,
    command: Command,
    /// The last log index when the read arrived: a read is answered only after
    /// every write proposed before it is applied, so a client that pipelines
    /// SET then GET reads its own write (as Redis users expect), not only a
    /// state as of the read index.
    after_index: u64,
}

pub struct Replica<W> {
    node: Node,
    kv: KvStore,
    /// Local proposals by (index, term), waiting for their index to be applied.
    /// A node that led an earlier term may still hold proposals of that term at
    /// indexes above its current ones, so they are kept sorted, not in arrival order.
    writes: PendingWrites<W>,
    /// Reads waiting for their ReadIndex round to be confirmed, by context.
    reads_unconfirmed: BTreeMap<u64, PendingRead<W>>,
    /// Confirmed reads waiting for the applied index to reach theirs.
    reads_confirmed: VecDeque<(u64, PendingRead<W>)>,
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
    /// From now on, reads dropped unconfirmed when this node stops leading are
    /// kept for [`Replica::take_dropped_reads`] rather than answered
    /// `-TRYAGAIN`: a read has no effect, so the caller can route it to the
    /// next leader and a client sees the change of leader as a delay.
    pub fn keep_dropped_reads(&mut self) {
        self.dropped_reads.get_or_insert_with(Vec::new);
    }

    /// The reads dropped since the last call (empty unless
    /// [`Replica::keep_dropped_reads`] was called).
    pub fn take_dropped_reads(&mut self) -> Vec<(W, Command)> {
        self.dropped_reads
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Joins a core restarted from durable state with the state machine that
    /// corresponds to its snapshot (empty when there is none).
    pub fn new(node: Node, kv: KvStore) -> Replica<W> {
        let applied_index = node.status().applied_index;
        Replica {
            node,
            kv,
            writes: PendingWrites::default(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: VecDeque::new(),
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
            snapshot_in_progress: None,
            unsynced: VecDeque::new(),
            transfers: Vec::new(),
        }
    }

    /// Take a snapshot every `every` applied entries (0: never) and keep
    /// `trailing` entries below it in the log (see [`trailing_entries`]).
    pub fn set_snapshot_policy(&mut self, every: u64, trailing: u64) {
        assert!(
            every == 0 || trailing <= every,
            "trailing margin {trailing} exceeds snapshot_entries {every}"
        );
        self.snapshot_every = every;
        self.snapshot_trailing = trailing;
        let last = self.node.status().snapshot_index;
        self.snapshot_due_at = self.due_after(last);
    }

    fn due_after(&self, index: u64) -> u64 {
        match self.snapshot_every {
            0 => u64::MAX,
            every => index.saturating_add(every),
        }
    }

    /// A point-in-time view of the map and its metadata when a snapshot is
    /// due and none is being written. The caller writes it durably, then calls
    /// [`Replica::snapshot_written`] (or [`Replica::snapshot_failed`]); until
    /// then no other snapshot is handed out. The view costs O(shards) now;
    /// the map copies a shard on its first write while the view holds it.
    pub fn take_snapshot(&mut self) -> Option<(SnapshotMeta, KvSnapshot)> {
        if self.snapshot_in_progress.is_some() || self.applied_index < self.snapshot_due_at {
            return None;
        }
        assert!(
            self.applied_term > 0,
            "snapshot due at applied index {} with no applied entry seen",
            self.applied_index
        );
        // The membership in force at the applied index, not the newest one:
        // a later, uncommitted change may still be undone.
        let meta = self.node.snapshot_meta(self.applied_index)?;
        assert_eq!(
            meta.term, self.applied_term,
            "the log's term at applied index {} differs from the applied entry's",
            self.applied_index
        );
        self.snapshot_in_progress = Some(meta.clone());
        Some((meta, self.kv.snapshot_view()))
    }

    /// Whether a snapshot handed out by `take_snapshot` is being written.
    pub fn snapshot_in_progress(&self) -> Option<&SnapshotMeta> {
        self.snapshot_in_progress.as_ref()
    }

    /// The snapshot from `take_snapshot` is durable: the core drops the
    /// entries it covers but a trailing margin, and sends it to followers
    /// that need them. Says what the log on disk must keep, and hands back
    /// the entries dropped from memory for the caller to free.
    ///
    /// # Panics
    /// If `meta` is not the snapshot in progress.
    pub fn snapshot_written(&mut self, meta: &SnapshotMeta) -> Compacted {
        assert_eq!(
            self.snapshot_in_progress.as_ref(),
            Some(meta),
            "reported a snapshot that was not handed out"
        );
        self.snapshot_in_progress = None;
        // A newer snapshot installed from the leader meanwhile already set the
        // next due index further on, and makes this compaction a no-op.
        self.snapshot_due_at = self.snapshot_due_at.max(self.due_after(meta.index));
        let dropped = self.node.compact(meta.clone(), self.snapshot_trailing);
        // The core keeps entries whose sync is still running even below the
        // trailing margin, so the log keeps from where the core did.
        Compacted {
            keep_from: dropped.last().map_or(0, |e| e.index + 1),
            dropped,
        }
    }

    /// Writing the snapshot from `take_snapshot` failed; the next attempt
    /// waits for another `snapshot_entries` entries, so a full disk is not
    /// retried on every iteration.
    pub fn snapshot_failed(&mut self) {
        self.snapshot_in_progress = None;
        self.snapshot_due_at = self.due_after(self.applied_index);
    }

    /// Reports how streaming an InstallSnapshot handed to the transport went
    /// (see the core's contract: exactly once per such message).
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        self.node.report_snapshot(to, success);
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The core itself, for what this glue does not wrap (membership
    /// changes, leadership transfer).
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
        self.writes.len() + self.reads_unconfirmed.len() + self.reads_confirmed.len()
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    pub fn step(&mut self, message: Message) {
        self.node.step(message);
    }

    pub fn report_unreachable(&mut self, peer: crate::raft::NodeId) {
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
                self.transfers.push((to, waiter));
                Ok(())
            }
            Err(error) => Err((error, waiter)),
        }
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
                TransferOutcome::Abandoned { target } => (target, reply_transfer_abandoned(target)),
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

    /// Starts a linearizable read; it is answered after a ReadIndex round
    /// confirms leadership and the state machine has caught up with it.
    pub fn read(&mut self, command: Command, waiter: W) -> Result<(), Refused<W>> {
        let ctx = self.next_read_ctx;
        if let Err(error) = self.node.read_index(ctx) {
            return Err(Refused {
                error,
                command,
                waiter,
            });
        }
        self.next_read_ctx += 1;
        let after_index = self.node.last_index();
        self.reads_unconfirmed.insert(
            ctx,
            PendingRead {
                waiter,
                command,
                after_index,
            },
        );
        Ok(())
    }

    /// Handles every batch the core has ready, in the order the persistence
    /// contract requires, and pushes the replies that became known onto `done`.
    pub fn handle_ready<D: Durable, T: Transport>(
        &mut self,
        durable: &mut D,
        transport: &mut T,
        done: &mut Vec<Completion<W>>,
    ) -> Result<ReadyOutcome, ReplicaError> {
        let mut outcome = ReadyOutcome::default();
        while self.node.has_ready() {
            let ready = self.node.ready();
            let synced = self.handle_one(ready, durable, transport, done, &mut outcome)?;
            if synced {
                self.node.advance();
            } else {
                self.node.advance_written();
            }
        }
        Ok(outcome)
    }

    /// The sync with `ticket` finished (and so did every earlier one): sends
    /// what those batches promised and lets the core count their entries as
    /// persisted. Call [`Replica::handle_ready`] afterwards.
    pub fn synced<T: Transport>(&mut self, ticket: u64, transport: &mut T) {
        while self.unsynced.front().is_some_and(|u| u.ticket <= ticket) {
            if let Some(batch) = self.unsynced.pop_front() {
                self.release(batch, transport);
            }
        }
        transport.flush();
    }

    /// Syncs still running.
    pub fn syncs_pending(&self) -> usize {
        self.unsynced.len()
    }

    fn release<T: Transport>(&mut self, batch: Unsynced, transport: &mut T) {
        for message in batch.messages {
            transport.send(message);
        }
        if let Some((index, term)) = batch.last_entry {
            self.node.persisted(index, term);
        }
    }

    /// Syncs this batch's entries (or starts to) and sends what it promises
    /// once they and everything before them are durable. Returns whether the
    /// batch is durable now.
    fn sync_and_promise<D: Durable, T: Transport>(
        &mut self,
        ready: &mut Ready,
        durable: &mut D,
        transport: &mut T,
    ) -> Result<bool, ReplicaError> {
        let messages = std::mem::take(&mut ready.send_after_sync);
        let start = match ready.entries.last() {
            Some(_) => Some(durable.start_sync()?),
            None => None,
        };
        match start {
            Some(SyncStart::Pending(ticket)) => {
                self.unsynced.push_back(Unsynced {
                    ticket,
                    messages,
                    last_entry: ready.entries.last().map(|e| (e.index, e.term)),
                });
                return Ok(false);
            }
            Some(SyncStart::Synced) => {
                // Everything appended so far is durable, earlier batches too.
                while let Some(batch) = self.unsynced.pop_front() {
                    self.release(batch, transport);
                }
            }
            None => {
                if let Some(last) = self.unsynced.back_mut() {
                    // Nothing of its own to sync, but it must not overtake
                    // the promises of a batch whose sync is still running.
                    last.messages.extend(messages);
                    transport.flush();
                    return Ok(true);
                }
            }
        }
        for message in messages {
            transport.send(message);
        }
        transport.flush();
        Ok(true)
    }

    fn handle_one<D: Durable, T: Transport>(
        &mut self,
        mut ready: Ready,
        durable: &mut D,
        transport: &mut T,
        done: &mut Vec<Completion<W>>,
        outcome: &mut ReadyOutcome,
    ) -> Result<bool, ReplicaError> {
        if let Some(soft) = ready.soft_state {
            outcome.soft_state = Some(soft);
        }
        // 0. The hard state first (durable on return): whatever a crash leaves
        //    behind, no snapshot or entry on disk has a term above the stable
        //    file's, which is how recovery tells a missing or stale stable file
        //    from a crash (`recover`).
        if let Some(hard_state) = ready.hard_state {
            durable.set_hard_state(hard_state)?;
        }
        // 1. A snapshot from the leader replaces the state before the entries
        //    that follow it are written.
        if let Some(meta) = ready.snapshot.take() {
            let kv = durable.install_snapshot(&meta)?;
            outcome.replaced_state = Some(self.install(&meta, kv, done));
            outcome.snapshot_installed = Some(meta);
        }
        // 2. Entries, which wait for the sync.
        if !ready.entries.is_empty() {
            durable.append(&ready.entries)?;
            note_conf_entries(&ready.entries, &mut outcome.conf_appended);
        }
        // 3. The leader's AppendEntries leave before its own sync (thesis §10.2.1):
        //    followers write their copies while we write ours.
        for message in ready.send_now.drain(..) {
            transport.send(message);
        }
        transport.flush();
        // 4. One sync for everything appended in this batch (group commit), and
        // 5. votes and acknowledgements, which promise what is on disk, only
        //    after it (they wait here while a background sync runs).
        let synced = self.sync_and_promise(&mut ready, durable, transport)?;
        // 6. Apply, answering the proposals whose entries these are.
        note_conf_entries(&ready.committed, &mut outcome.conf_applied);
        for batch in ready.committed.chunks(PREFETCH_ENTRIES) {
            self.kv
                .prefetch_encoded(batch.iter().map(|entry| &entry.data[..]));
            for entry in batch {
                self.apply(entry, done)?;
                outcome.entries_applied += 1;
            }
        }
        ready.committed.clear();
        outcome.flushed.extend(self.kv.take_flushed());
        // 7. Reads: confirmed ones wait for the applied index; dropped ones never ran.
        for ctx in ready.dropped_reads.drain(..) {
            if let Some(read) = self.reads_unconfirmed.remove(&ctx) {
                match self.dropped_reads.as_mut() {
                    Some(kept) => kept.push((read.waiter, read.command)),
                    None => done.push(Completion {
                        waiter: read.waiter,
                        reply: reply_not_committed(),
                    }),
                }
            }
        }
        for state in ready.read_states.drain(..) {
            if let Some(read) = self.reads_unconfirmed.remove(&state.ctx) {
                // Raising an index only makes a read wait longer, which is always
                // safe; it keeps the queue sorted so answering looks at its front.
                let floor = self.reads_confirmed.back().map_or(0, |(index, _)| *index);
                let index = state.index.max(read.after_index).max(floor);
                self.reads_confirmed.push_back((index, read));
            }
        }
        self.answer_reads(done);
        self.settle_transfers(std::mem::take(&mut ready.transfer_outcomes), done, outcome);
        Ok(synced)
    }

    /// Returns the map the snapshot replaced.
    fn install(
        &mut self,
        meta: &SnapshotMeta,
        kv: KvStore,
        done: &mut Vec<Completion<W>>,
    ) -> KvStore {
        assert!(
            meta.index > self.applied_index,
            "installing snapshot {} at or below the applied index {}",
            meta.index,
            self.applied_index
        );
        let replaced = std::mem::replace(&mut self.kv, kv);
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.snapshot_due_at = self.due_after(meta.index);
        // Our proposals at or below the snapshot were decided by entries this
        // node never saw: they may or may not be in it.
        while let Some((_, _, waiter)) = self.writes.pop_up_to(meta.index) {
            done.push(Completion {
                waiter,
                reply: reply_outcome_unknown(),
            });
        }
        replaced
    }

    fn apply(&mut self, entry: &Entry, done: &mut Vec<Completion<W>>) -> Result<(), ReplicaError> {
        debug_assert_eq!(
            entry.index,
            self.applied_index + 1,
            "entries applied out of order"
        );
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        // Every proposal made at this index is decided now: the one whose term
        // matches is applied; any other can never be (its slot is taken for good).
        let mut ours = None;
        while let Some((index, term, waiter)) = self.writes.pop_up_to(entry.index) {
            if (index, term) == (entry.index, entry.term) {
                ours = Some(waiter);
            } else {
                done.push(Completion {
                    waiter,
                    reply: reply_not_committed(),
                });
            }
        }
        let reply = match entry.kind {
            EntryKind::Normal => {
                self.kv
                    .apply_encoded(&entry.data)
                    .map_err(|err| ReplicaError::BadEntry {
                        index: entry.index,
                        reason: err.to_string(),
                    })?
            }
            EntryKind::Noop | EntryKind::ConfChange => Reply::Ok,
        };
        if let Some(waiter) = ours {
            done.push(Completion { waiter, reply });
        }
        Ok(())
    }

    fn answer_reads(&mut self, done: &mut Vec<Completion<W>>) {
        let now = self.time();
        while self
            .reads_confirmed
            .front()
            .is_some_and(|(index, _)| *index <= self.applied_index)
        {
            if let Some((_, read)) = self.reads_confirmed.pop_front() {
                if let Some(full_reads) = self
                    .full_reads
                    .as_mut()
                    .filter(|_| read.command.reads_many_keys())
                {
                    full_reads.push(FullRead {
                        waiter: read.waiter,
                        command: read.command,
                        view: self.kv.clone(),
                        now,
                    });
                    continue;
                }
                let reply = self.kv.read_at(&read.command, now);
                done.push(Completion {
                    waiter: read.waiter,
                    reply,
                });
            }
        }
    }
}

/// Collects the decodable ConfChange entries among `entries` (the core has
/// decoded each one already when it entered the log, so none fails here).
fn note_conf_entries(entries: &[Entry], out: &mut Vec<(u64, ConfEntry)>) {
    for entry in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
        if let Ok(conf) = conf_change::decode(&entry.data) {
            out.push((entry.index, conf));
        }
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;

#[path = "replica_keyspace.rs"]
mod keyspace;
pub use keyspace::{FullRead, PurgeLimits, PurgeOutcome};
