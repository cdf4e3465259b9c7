//! `RaftLog`: the node's whole log since the last compaction, in memory.
//!
//! The core never reads storage after startup: storage is write-mostly, and the
//! in-memory log is what the core sends, compares and applies from. Indexes:
//!
//! ```text
//!   (compacted) offset | offset+1 = entries[0] ............ last_index
//!                      applied <= committed <= last_index
//!                      persisted < unstable <= last_index + 1
//! ```
//!
//! Entries below `unstable` were handed out in a `Ready`; entries up to
//! `persisted` were acknowledged as synced by `advance()`. `committed` may be
//! above `persisted` (a majority of followers can commit what the leader has
//! not synced yet); the caller still syncs before it applies.
//!
//! Invariants (checked by `check_invariants`):
//! - `entries[i].index == offset + 1 + i`, terms non-decreasing, all >= `offset_term`;
//! - `offset <= applied <= committed <= last_index`;
//! - `persisted < unstable <= last_index + 1`: what was synced was handed out first;
//! - `snapshot.index >= offset` (compaction may keep a trailing margin below the
//!   snapshot);
//! - `confs` lists exactly the ConfChange entries of `entries`, ascending.
//!
//! # Configurations
//!
//! A node uses the latest configuration in its log, committed or not (thesis
//! §4.1): a ConfChange entry takes effect when it is appended and is undone
//! when it is truncated. The log therefore keeps the configuration in effect
//! at `offset` (`conf_base`) and that of every ConfChange entry after it, so
//! truncation can fall back to the one before, and a snapshot can name the
//! configuration as of its own index rather than a later, uncommitted one.

use super::conf_change;
use super::message::{Entry, EntryKind, SnapshotMeta};
use super::quorum::Membership;

#[path = "log_compaction.rs"]
mod compaction;

pub use compaction::trailing_count;

#[derive(Debug)]
pub(super) struct RaftLog {
    /// Index of the entry just before `entries[0]`: the compaction point.
    offset: u64,
    /// Term of the entry at `offset` (0 for the empty log).
    offset_term: u64,
    entries: Vec<Entry>,
    /// Highest index known to be committed (a majority has it).
    pub committed: u64,
    /// Highest index the caller has applied to its state machine.
    pub applied: u64,
    /// Highest index acknowledged by `advance()` as synced to local disk.
    pub persisted: u64,
    /// First index not yet handed to the caller in a `Ready`.
    pub unstable: u64,
    /// The latest snapshot, sent to followers that are behind `offset`.
    pub snapshot: SnapshotMeta,
    /// A snapshot installed from the leader and not yet handed out in a `Ready`.
    pub pending_snapshot: Option<SnapshotMeta>,
    /// The configuration in effect at `offset`.
    conf_base: Membership,
    /// (index, configuration) of each ConfChange entry in `entries`, ascending.
    confs: Vec<(u64, Membership)>,
}

impl RaftLog {
    /// A log restored from disk: `entries` continue `snapshot` and are all
    /// persisted; only the snapshot is known to be committed and applied.
    /// `conf_base` is the configuration in effect at the snapshot's index.
    pub fn restore(snapshot: SnapshotMeta, conf_base: Membership, entries: Vec<Entry>) -> RaftLog {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snapshot.index + 1 + i as u64,
                "restored entries must continue snapshot {} contiguously",
                snapshot.index
            );
        }
        let last = snapshot.index + entries.len() as u64;
        let confs = entries.iter().filter_map(conf_of).collect();
        let log = RaftLog {
            offset: snapshot.index,
            offset_term: snapshot.term,
            entries,
            committed: snapshot.index,
            applied: snapshot.index,
            persisted: last,
            unstable: last + 1,
            snapshot,
            pending_snapshot: None,
            conf_base,
            confs,
        };
        log.check_invariants();
        log
    }

    /// The configuration in effect: that of the last ConfChange entry, or the
    /// one at `offset` when there is none.
    pub fn conf(&self) -> &Membership {
        self.confs.last().map_or(&self.conf_base, |(_, m)| m)
    }

    /// The index of the entry that set the configuration in effect, or 0 when
    /// it dates from before the first entry in memory (then it is committed).
    pub fn conf_index(&self) -> u64 {
        self.confs.last().map_or(0, |(i, _)| *i)
    }

    /// The configuration in effect at `index` (at least the compaction point).
    pub fn conf_at(&self, index: u64) -> &Membership {
        assert!(
            index >= self.offset,
            "configuration at {index} asked below the compaction point {}",
            self.offset
        );
        let n = self.confs.partition_point(|(i, _)| *i <= index);
        if n == 0 {
            &self.conf_base
        } else {
            &self.confs[n - 1].1
        }
    }

    pub fn first_index(&self) -> u64 {
        self.offset + 1
    }

    pub fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// The term of entry `index`, or None when it is compacted or beyond the end.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.offset - 1) as usize].term)
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours if its
    /// last term is higher, or equal with a last index at least as high.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries `lo..=hi`; all must be in memory.
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        if lo > hi {
            return &[];
        }
        assert!(
            lo > self.offset && hi <= self.last_index(),
            "slice {lo}..={hi} outside the log ({}..={})",
            self.first_index(),
            self.last_index()
        );
        &self.entries[(lo - self.offset - 1) as usize..(hi - self.offset) as usize]
    }

    /// Entries from `lo` whose payloads total at most `max_bytes`, but always at
    /// least one (an entry bigger than the limit must still get through).
    pub fn entries_from(&self, lo: u64, max_bytes: u64) -> Vec<Entry> {
        let all = self.slice(lo, self.last_index());
        all[..count_within(all, max_bytes)].to_vec()
    }

    /// The leader's append: `entry` must continue the log.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "appended entry does not continue the log"
        );
        assert!(
            entry.term >= self.last_term(),
            "appended entry {:?} has a term below the last term {}",
            entry,
            self.last_term()
        );
        if let Some(conf) = conf_of(&entry) {
            self.confs.push(conf);
        }
        self.entries.push(entry);
    }

    /// The follower's append (Raft §5.3): entries already present with the same
    /// term are kept, the first conflicting one truncates the log from there, and
    /// the rest is appended. Returns the index of the last entry of `entries`.
    /// The caller checked that the entry before `entries[0]` matches.
    pub fn append_from_leader(&mut self, prev_index: u64, entries: &[Entry]) -> u64 {
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term));
        let Some(start) = conflict else {
            return last_new;
        };
        let first_new = entries[start].index;
        if first_new <= self.last_index() {
            assert!(
                first_new > self.committed,
                "entry {:?} conflicts with committed entry {}/{:?}",
                entries[start],
                first_new,
                self.term(first_new)
            );
            self.truncate_from(first_new);
        }
        for e in &entries[start..] {
            self.append(e.clone());
        }
        last_new
    }

    /// Drops `index..` from memory. What was handed out or persisted from there
    /// no longer counts: the caller will be handed the replacements.
    fn truncate_from(&mut self, index: u64) {
        self.entries.truncate((index - self.offset - 1) as usize);
        self.confs.retain(|(i, _)| *i < index);
        self.unstable = self.unstable.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    /// The leader's term at or below `index` that is at most `term`, and its
    /// index: the largest `i <= index` with `term(i) <= term` (etcd
    /// `findConflictByTerm`). Both sides use it to skip a whole diverging term
    /// per round trip. Terms are non-decreasing, so a binary search suffices.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let index = index.min(self.last_index());
        if index <= self.offset {
            return (index, self.term(index).unwrap_or(0));
        }
        let upto = &self.entries[..(index - self.offset) as usize];
        let n = upto.partition_point(|e| e.term <= term);
        if n == 0 {
            (self.offset, self.offset_term)
        } else {
            let e = &upto[n - 1];
            (e.index, e.term)
        }
    }

    /// Raises the commit index (never lowers it).
    pub fn commit_to(&mut self, index: u64) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit index {index} beyond the last index {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// Entries not yet handed out, and marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let out = self.slice(self.unstable, self.last_index()).to_vec();
        self.unstable = self.last_index() + 1;
        out
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable <= self.last_index()
    }

    /// Committed entries not yet applied (`applied+1 ..= committed`).
    pub fn committed_unapplied(&self) -> &[Entry] {
        self.slice(self.applied + 1, self.committed)
    }

    /// The first of [`RaftLog::committed_unapplied`] up to `max_bytes` of
    /// payload, and at least one.
    pub fn committed_unapplied_within(&self, max_bytes: u64) -> &[Entry] {
        let all = self.committed_unapplied();
        &all[..count_within(all, max_bytes)]
    }

    /// `advance()` for a `Ready` whose entries ended at `last_handed`: those of
    /// them still in the log are now on disk.
    pub fn persisted_through(&mut self, last_handed: u64) {
        let still_valid = last_handed.min(self.unstable - 1);
        self.persisted = self.persisted.max(still_valid);
    }

    /// A background sync that covered the entry `index`/`term` finished. It
    /// counts only if that entry is still in the log and was handed out: if it
    /// was truncated and replaced meanwhile, the replacement was not in that
    /// sync (etcd `stableTo`). Returns whether `persisted` moved.
    pub fn persisted_to(&mut self, index: u64, term: u64) -> bool {
        if index <= self.persisted || index >= self.unstable || !self.match_term(index, term) {
            return false;
        }
        self.persisted = index;
        true
    }

    /// Panics with the offending values if an invariant above is broken.
    pub fn check_invariants(&self) {
        debug_assert!(
            self.confs.iter().map(|(i, _)| *i).eq(self
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::ConfChange)
                .map(|e| e.index)),
            "configuration list {:?} does not match the log's ConfChange entries",
            self.confs.iter().map(|(i, _)| i).collect::<Vec<_>>()
        );
        let last = self.last_index();
        assert!(
            self.offset <= self.applied && self.applied <= self.committed && self.committed <= last,
            "log indexes out of order: offset {} applied {} committed {} last {}",
            self.offset,
            self.applied,
            self.committed,
            last
        );
        assert!(
            self.persisted <= last && self.persisted < self.unstable && self.unstable <= last + 1,
            "persistence marks out of order: persisted {} unstable {} last {}",
            self.persisted,
            self.unstable,
            last
        );
        assert!(
            self.snapshot.index >= self.offset,
            "snapshot {} below the compaction point {}",
            self.snapshot.index,
            self.offset
        );
        if let (Some(first), Some(end)) = (self.entries.first(), self.entries.last()) {
            assert!(
                first.index == self.offset + 1 && end.index == last,
                "entries {}..={} do not sit at offset {}",
                first.index,
                end.index,
                self.offset
            );
            assert!(
                first.term >= self.offset_term && end.term >= first.term,
                "log terms decrease: offset term {}, first {}, last {}",
                self.offset_term,
                first.term,
                end.term
            );
        }
    }
}

/// The (index, configuration) a ConfChange entry sets, None for other kinds.
///
/// # Panics
///
/// If a ConfChange payload does not decode. Entries reach the log from this
/// node's own encoder, from a peer frame whose decoder validated them, or
/// from storage, which the daemon opens with `recovery::check_payload` so
/// that it checks every payload first; a bad one is then a bug, not an input
/// error. (Storage opened without that check trusts its files.)
fn conf_of(entry: &Entry) -> Option<(u64, Membership)> {
    if entry.kind != EntryKind::ConfChange {
        return None;
    }
    let conf = conf_change::decode(&entry.data)
        .unwrap_or_else(|err| panic!("ConfChange entry {}/{}: {err}", entry.index, entry.term));
    Some((entry.index, Membership::new(&conf.voters, &conf.learners)))
}

/// How many of `entries`, from the first, fit in `max_bytes` of payload;
/// at least one (when there is one).
fn count_within(entries: &[Entry], max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    let mut taken = 0;
    for e in entries {
        bytes = bytes.saturating_add(e.data.len() as u64);
        if taken > 0 && bytes > max_bytes {
            break;
        }
        taken += 1;
    }
    taken
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
