//! Handling the core's `Ready` batches in the one legal order, and what that
//! order goes through: [`Durable`] for the log and the hard state,
//! [`Transport`] for peers. A sync may run in the background
//! ([`SyncStart::Pending`]); the acknowledgements of its batch, and of any
//! batch after it, wait here until it finishes. Votes wait only for the hard
//! state, which is synced before anything else.
//!
//! It is a file of its own because this order is what the persistence
//! contract rests on (the simulator checks it): the numbered steps of
//! `handle_one` read best together, apart from how requests are taken.

use super::{reply_not_committed, Completion, Replica};
use crate::kv::{FlushedKeys, KvStore, Reply};
use crate::raft::{conf_change, ConfEntry, Entry, EntryKind, HardState, Message, MessageBody};
use crate::raft::{Ready, SnapshotMeta, SoftState, TransferOutcome};
use crate::storage::StorageError;
use std::fmt;

/// Where entries and the hard state go. `append` may buffer; only once
/// [`Durable::start_sync`] reports them synced (at once, or later through
/// [`Replica::synced`]) may anything that promises them be sent.
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
    /// Durable when it returns, in that order: the snapshot where a start
    /// takes it, then the log emptied. Called after the batch's hard state
    /// (the leader's term) is stored, so a snapshot a start takes never has
    /// a term above the stable file's.
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

/// Where messages to peers go.
pub trait Transport {
    /// Queues a message; it may be written out at once or on `flush`.
    fn send(&mut self, message: Message);
    /// Pushes queued messages towards the network. Called before a sync, so a
    /// leader's AppendEntries travel while it writes its own copy.
    fn flush(&mut self);
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
    /// The call stopped with more ready, having applied
    /// [`crate::raft::RaftConfig::max_apply_bytes`]: call again soon.
    pub more_ready: bool,
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

/// A batch whose entries are written but whose sync is still running: what
/// it promises waits here.
pub(super) struct Unsynced {
    ticket: u64,
    /// Acknowledgements of this batch and of any later batch that had
    /// nothing to sync itself (they must not overtake this one).
    messages: Vec<Message>,
    /// The batch's last entry: persisted once the sync finishes.
    last_entry: Option<(u64, u64)>,
}

/// Committed entries are applied in batches of this many, the map being told
/// each batch's keys first so that their cache misses overlap.
const PREFETCH_ENTRIES: usize = crate::kv::PREFETCH_KEYS_MAX;

impl<W> Replica<W> {
    /// Handles every batch the core has ready, in the order the persistence
    /// contract requires, and pushes the replies that became known onto `done`;
    /// but stops, with more ready, once it has applied
    /// [`crate::raft::RaftConfig::max_apply_bytes`], so that one call does a bounded
    /// amount of work however far the commit index jumped.
    pub fn handle_ready<D: Durable, T: Transport>(
        &mut self,
        durable: &mut D,
        transport: &mut T,
        done: &mut Vec<Completion<W>>,
    ) -> Result<ReadyOutcome, ReplicaError> {
        let mut outcome = ReadyOutcome::default();
        let mut applying_bytes = 0u64;
        while self.node.has_ready() {
            if applying_bytes >= self.node.max_apply_bytes() {
                outcome.more_ready = true;
                break;
            }
            let ready = self.node.ready();
            applying_bytes = ready.committed.iter().fold(applying_bytes, |sum, e| {
                sum.saturating_add(e.data.len() as u64)
            });
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
        let mut messages = std::mem::take(&mut ready.send_after_sync);
        if messages.iter().any(promises_only_the_hard_state) {
            // Step 0 made the vote durable, which is all election safety
            // needs. Leader completeness needs the log the vote compared
            // with to hold every entry this node acknowledged for an earlier
            // term, and it does: acknowledgements still wait for their sync
            // here, and the vote makes this node refuse the older leaders'
            // appends. A crash that then loses or reverts the unsynced tail
            // loses no committed entry. Holding the vote for a log sync still
            // running would add an fdatasync to each election and transfer
            // under load.
            messages.retain(|message| {
                let vote = promises_only_the_hard_state(message);
                if vote {
                    transport.send(message.clone());
                }
                !vote
            });
            transport.flush();
        }
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
        // 5. acknowledgements, which promise what is on disk, only after it
        //    (they wait here while a background sync runs); votes at once, as
        //    their hard state is on disk since step 0.
        let synced = self.sync_and_promise(&mut ready, durable, transport)?;
        // 6. Apply, answering the proposals whose entries these are.
        //    A read is evaluated between the entries at its place (see
        //    `replica_reads.rs`).
        note_conf_entries(&ready.committed, &mut outcome.conf_applied);
        let mut next_read_place = self.next_read_place();
        if next_read_place <= self.applied_index {
            self.evaluate_due_reads(done);
            next_read_place = self.next_read_place();
        }
        for batch in ready.committed.chunks(PREFETCH_ENTRIES) {
            self.kv
                .prefetch_encoded(batch.iter().map(|entry| &entry.data[..]));
            for entry in batch {
                self.apply(entry, done)?;
                outcome.entries_applied += 1;
                if self.applied_index >= next_read_place {
                    self.evaluate_due_reads(done);
                    next_read_place = self.next_read_place();
                }
            }
        }
        ready.committed.clear();
        for waiter in self.writes.take_older_than(self.applied_term) {
            done.push(Completion {
                waiter,
                reply: reply_not_committed(),
            });
        }
        outcome.flushed.extend(self.kv.take_flushed());
        // 7. Reads: confirmed ones are answered once evaluated; dropped ones never ran.
        self.settle_reads(&mut ready, done);
        self.settle_transfers(std::mem::take(&mut ready.transfer_outcomes), done, outcome);
        Ok(synced)
    }

    fn apply(&mut self, entry: &Entry, done: &mut Vec<Completion<W>>) -> Result<(), ReplicaError> {
        debug_assert_eq!(
            entry.index,
            self.applied_index + 1,
            "entries applied out of order"
        );
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        self.applied_bytes_since_snapshot = self
            .applied_bytes_since_snapshot
            .saturating_add(entry.data.len() as u64);
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
}

/// Votes and vote requests: what they promise (this term's vote) is in the
/// hard state, not in the log.
fn promises_only_the_hard_state(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. }
    )
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
