//! Where the log meets snapshots: installing one from the leader, compacting
//! up to one, and the trailing margin of entries compaction keeps in memory.
//! Separate from `log.rs` so that the appends and lookups read in one sitting.

use super::RaftLog;
use crate::raft::message::{Entry, SnapshotMeta};
use crate::raft::quorum::Membership;

impl RaftLog {
    /// How many entries, counting down from `index` (included), a trailing
    /// margin of at most `max_entries` keeps within `max_bytes` of payload;
    /// `max_entries` when all of those still in memory fit.
    pub fn trailing_within(&self, index: u64, max_entries: u64, max_bytes: u64) -> u64 {
        let lo = index.saturating_sub(max_entries).max(self.offset) + 1;
        let hi = index.min(self.last_index());
        let sizes = self.slice(lo, hi).iter().rev().map(|e| e.data.len() as u64);
        trailing_count(sizes, max_entries, max_bytes)
    }

    /// Installs a snapshot from the leader: the log now starts after `meta`,
    /// under `conf` (the configuration at `meta.index`).
    pub fn restore_snapshot(&mut self, meta: SnapshotMeta, conf: Membership) {
        assert!(
            meta.index > self.committed,
            "snapshot {} at or below the commit index {}",
            meta.index,
            self.committed
        );
        self.offset = meta.index;
        self.offset_term = meta.term;
        self.entries.clear();
        self.conf_base = conf;
        self.confs.clear();
        self.committed = meta.index;
        self.applied = meta.index;
        // The entries up to the snapshot are committed cluster-wide; counting them
        // as persisted cannot make the leader count itself for an uncommitted entry.
        self.persisted = meta.index;
        self.unstable = meta.index + 1;
        self.snapshot = meta.clone();
        self.pending_snapshot = Some(meta);
    }

    /// Records `meta` as the latest snapshot and drops entries up to
    /// `meta.index - trailing` from memory; returns them, so the caller can
    /// free them where it likes (a large prefix takes a while to free).
    pub fn compact(&mut self, meta: SnapshotMeta, trailing: u64) -> Vec<Entry> {
        assert!(
            meta.index <= self.applied,
            "snapshot {} covers unapplied entries (applied {})",
            meta.index,
            self.applied
        );
        if meta.index <= self.snapshot.index {
            return Vec::new();
        }
        if let Some(term) = self.term(meta.index) {
            assert_eq!(
                term, meta.term,
                "snapshot {} has the wrong term",
                meta.index
            );
        }
        // Entries whose sync is still running stay: a follower may apply (and
        // snapshot) committed entries before its own copy of them is synced.
        let drop_to = meta.index.saturating_sub(trailing).min(self.persisted);
        self.snapshot = meta;
        if drop_to <= self.offset {
            return Vec::new();
        }
        let term = self.term(drop_to).expect("drop_to is inside the log");
        self.conf_base = self.conf_at(drop_to).clone();
        self.confs.retain(|(i, _)| *i > drop_to);
        // Moves the kept suffix out (O(kept)) rather than draining the prefix.
        let kept = self.entries.split_off((drop_to - self.offset) as usize);
        let dropped = std::mem::replace(&mut self.entries, kept);
        self.offset = drop_to;
        self.offset_term = term;
        dropped
    }
}

/// How many entries a trailing margin of at most `max_entries` keeps, given
/// their payload sizes counting down from the snapshot's index: all of them,
/// or those before the one whose payload would pass `max_bytes`. The running
/// node counts its log in memory; a start counts the one on disk.
pub fn trailing_count(sizes: impl Iterator<Item = u64>, max_entries: u64, max_bytes: u64) -> u64 {
    let mut bytes = 0u64;
    for (kept, size) in (0u64..).zip(sizes) {
        bytes = bytes.saturating_add(size);
        if bytes > max_bytes {
            return kept;
        }
    }
    max_entries
}
