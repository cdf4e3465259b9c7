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

    /// How many entries, counting down from `index` (included), a trailing
    /// margin of at most `max_entries` keeps within `max_bytes` of payload;
    /// `max_entries` when all of those still in memory fit.
    pub fn trailing_within(&self, index: u64, max_entries: u64, max_bytes: u64) -> u64 {
        let lo = index.saturating_sub(max_entries).max(self.offset) + 1;
        let hi = index.min(self.last_index());
        let sizes = self.slice(lo, hi).iter().rev().map(|e| e.data.len() as u64);
        trailing_count(sizes, max_entries, max_bytes)
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
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![0; 10].into(),
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| ent(i as u64 + 1, *t))
            .collect();
        RaftLog::restore(SnapshotMeta::default(), Membership::new(&[1], &[]), entries)
    }

    #[test]
    fn term_lookup_covers_offset_and_rejects_outside() {
        let log = RaftLog::restore(
            SnapshotMeta {
                index: 5,
                term: 2,
                ..Default::default()
            },
            Membership::new(&[1], &[]),
            vec![ent(6, 2), ent(7, 3)],
        );
        assert_eq!(log.term(4), None);
        assert_eq!(log.term(5), Some(2));
        assert_eq!(log.term(7), Some(3));
        assert_eq!(log.term(8), None);
        assert_eq!(log.committed, 5);
        assert_eq!(log.persisted, 7);
    }

    #[test]
    fn up_to_date_compares_last_term_then_last_index() {
        // Reference: Raft §5.4.1.
        let log = log_with_terms(&[1, 1, 2]);
        assert!(
            log.is_up_to_date(1, 3),
            "higher last term wins even if shorter"
        );
        assert!(log.is_up_to_date(3, 2), "same term, same length");
        assert!(!log.is_up_to_date(2, 2), "same term, shorter");
        assert!(
            !log.is_up_to_date(9, 1),
            "lower last term loses even if longer"
        );
    }

    #[test]
    fn conflicting_entry_truncates_the_suffix_only() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.take_unstable();
        log.persisted_through(4);
        let last = log.append_from_leader(1, &[ent(2, 1), ent(3, 2)]);
        assert_eq!(last, 3);
        assert_eq!(
            log.last_index(),
            3,
            "entry 4 followed the conflict and went"
        );
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.unstable, 3, "the caller must rewrite from the conflict");
        assert_eq!(log.persisted, 2);
        // A stale, shorter append of matching entries changes nothing.
        assert_eq!(log.append_from_leader(0, &[ent(1, 1)]), 1);
        assert_eq!(log.last_index(), 3);
    }

    #[test]
    #[should_panic(expected = "conflicts with committed entry")]
    fn committed_entries_are_never_truncated() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.commit_to(2);
        log.append_from_leader(1, &[ent(2, 5)]);
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with_terms(&[1, 1, 3, 3, 3, 5, 5]);
        assert_eq!(log.find_conflict_by_term(7, 4), (5, 3));
        assert_eq!(log.find_conflict_by_term(7, 5), (7, 5));
        assert_eq!(log.find_conflict_by_term(4, 2), (2, 1));
        assert_eq!(log.find_conflict_by_term(20, 3), (5, 3), "clamped to last");
        assert_eq!(log.find_conflict_by_term(7, 0), (0, 0));
    }

    #[test]
    fn entries_from_respects_the_byte_limit_but_sends_one() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.entries_from(1, 25).len(), 2);
        assert_eq!(
            log.entries_from(1, 5).len(),
            1,
            "one entry even over the limit"
        );
        assert_eq!(log.entries_from(3, 1000).len(), 2);
    }

    fn conf_ent(index: u64, voters: &[u64]) -> Entry {
        let conf = conf_change::ConfEntry {
            change: conf_change::ConfChange::Remove { id: 9 },
            voters: voters.to_vec(),
            learners: Vec::new(),
        };
        Entry {
            index,
            term: 1,
            kind: EntryKind::ConfChange,
            data: conf_change::encode(&conf).into(),
        }
    }

    #[test]
    fn configurations_follow_appends_truncation_and_compaction() {
        let mut log = RaftLog::restore(
            SnapshotMeta::default(),
            Membership::new(&[1, 2, 3], &[]),
            vec![ent(1, 1), conf_ent(2, &[1, 2]), ent(3, 1)],
        );
        log.append(conf_ent(4, &[1]));
        assert_eq!((log.conf().voters.clone(), log.conf_index()), (vec![1], 4));
        assert_eq!(log.conf_at(3).voters, vec![1, 2]);
        assert_eq!(log.conf_at(1).voters, vec![1, 2, 3]);
        log.append_from_leader(3, &[ent(4, 2)]);
        assert_eq!(
            (log.conf().voters.clone(), log.conf_index()),
            (vec![1, 2], 2)
        );
        log.take_unstable();
        log.persisted_through(4);
        log.commit_to(4);
        log.applied = 4;
        let meta = SnapshotMeta {
            index: 3,
            term: 1,
            voters: vec![1, 2],
            learners: Vec::new(),
        };
        log.compact(meta, 0);
        assert_eq!(
            (log.conf().voters.clone(), log.conf_index()),
            (vec![1, 2], 0),
            "folded into the configuration at the compaction point"
        );
        log.check_invariants();
    }

    #[test]
    fn compaction_keeps_a_trailing_margin() {
        let mut log = log_with_terms(&[1, 1, 2, 2, 2, 3]);
        log.take_unstable();
        log.persisted_through(6);
        log.commit_to(6);
        log.applied = 5;
        let meta = SnapshotMeta {
            index: 5,
            term: 2,
            ..Default::default()
        };
        let dropped: Vec<u64> = log
            .compact(meta.clone(), 2)
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(dropped, vec![1, 2, 3]);
        assert_eq!(log.first_index(), 4);
        // An older or equal snapshot drops nothing.
        assert!(log.compact(meta, 0).is_empty());
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert_eq!(log.snapshot.index, 5);
        log.check_invariants();
    }
}
