//! Snapshots: when one is due, handing it out, what writing it (or failing
//! to) lets go of, and installing one received from the leader.
//!
//! The replica decides *when* (every `snapshot_entries` applied entries, one
//! at a time) and hands out a point-in-time view of the map with its
//! metadata ([`Replica::take_snapshot`]); the caller writes it where it likes,
//! off the event loop if it wants, and reports back
//! ([`Replica::snapshot_written`]), which lets the core compact its log. A
//! snapshot received from the leader is installed through
//! [`Durable::install_snapshot`](super::Durable::install_snapshot) while a
//! `Ready` is handled, before its entries.
//!
//! It is a file of its own because the caller drives it on a cycle of its
//! own, beside the requests and the `Ready` batches: the policy and the one
//! snapshot in progress are touched by nothing else.

use super::{reply_outcome_unknown, Completion, Replica};
use crate::kv::{KvSnapshot, KvStore};
use crate::raft::{Entry, NodeId, SnapshotMeta};

/// The most log entries kept below a snapshot's index when the log is
/// compacted, so that a follower slightly behind is caught up from the log
/// and not sent a whole snapshot. SPEC §4 allows at most `snapshot_entries`.
pub const MAX_TRAILING_ENTRIES: u64 = 10_000;

/// A snapshot is also taken once the entries applied since the last carry
/// this many bytes (or the map's size, if larger), whatever their count:
/// the log since the last snapshot stays in memory, and with large values
/// `snapshot_entries` alone would let it grow to many times the live data
/// (100,000 SETs of 8 MiB are 800 GB), in memory and on disk, where SPEC §4
/// bounds the data dir by the live data, two snapshots and a few segments.
/// Tied to the map's size, writing snapshots costs at most about as many
/// bytes as the log took.
pub const SNAPSHOT_LOG_BYTES: u64 = 256 << 20;

/// The most payload bytes the trailing margin keeps below a snapshot, for
/// the same reason: 10,000 entries of 8 MiB would be 80 GB.
pub const MAX_TRAILING_BYTES: u64 = 64 << 20;

/// The trailing margin used with a given `snapshot_entries`.
pub fn trailing_entries(snapshot_entries: u64) -> u64 {
    snapshot_entries.min(MAX_TRAILING_ENTRIES)
}

/// What a written snapshot let go of.
#[derive(Debug)]
pub struct Compacted {
    /// The first index the log on disk must keep; whole segments below it may go.
    pub keep_from: u64,
    /// Entries the core dropped from memory.
    pub dropped: Vec<Entry>,
}

impl<W> Replica<W> {
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

    /// Sets the byte bounds (defaults `SNAPSHOT_LOG_BYTES` and
    /// [`MAX_TRAILING_BYTES`]); for tests, which cannot write gigabytes.
    pub fn set_snapshot_bytes(&mut self, log_bytes: u64, trailing_bytes: u64) {
        self.snapshot_log_bytes = log_bytes;
        self.snapshot_trailing_bytes = trailing_bytes;
    }

    /// Whether the entries applied since the last snapshot carry enough
    /// bytes for another (see [`SNAPSHOT_LOG_BYTES`]).
    fn due_by_bytes(&self) -> bool {
        self.snapshot_every != 0
            && self.applied_bytes_since_snapshot
                >= self.snapshot_log_bytes.max(self.kv.approx_bytes() as u64)
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
        if self.snapshot_in_progress.is_some()
            || (self.applied_index < self.snapshot_due_at && !self.due_by_bytes())
        {
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
        self.applied_bytes_since_snapshot = 0;
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
        let trailing = self.node.trailing_within(
            meta.index,
            self.snapshot_trailing,
            self.snapshot_trailing_bytes,
        );
        let dropped = self.node.compact(meta.clone(), trailing);
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

    /// Returns the map the snapshot replaced.
    pub(super) fn install(
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
        self.applied_bytes_since_snapshot = 0;
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
}
