//! A simulated node's disk: a log that tells "written" from "synced" (a crash
//! keeps only what was synced), the stable term and vote, and snapshots,
//! which like the real ones are durable once published (temp file, sync,
//! rename). One received from the leader stays a temp file, which a crash
//! loses, until it is installed. Compaction and the reset after installing a
//! snapshot are durable at once, as deleting segment files is.

use crate::checker::{fingerprint, HeldAt};
use crate::membership::{last_conf_entry, ConfBefore};
use raftkv::kv::KvStore;
use raftkv::raft::{Entry, HardState, Restored, SnapshotMeta};
use raftkv::recovery::{plan_log, LogPlan};
use raftkv::replica::{Durable, SyncStart};
use raftkv::storage::StorageError;
use std::sync::Arc;

/// The maps here hold a handful of keys.
const SHARDS: usize = 4;

/// Snapshots kept, as `storage::snapshot::KEEP`.
const KEEP: usize = 2;

/// Storage that loses everything not synced when its node crashes.
#[derive(Default)]
pub struct MemDurable {
    pub hard_state: HardState,
    /// The log holds entries `offset + 1 ..`; everything up to `offset` is
    /// covered by a durable snapshot.
    pub offset: u64,
    /// Term of the entry at `offset` (0 when `offset` is 0).
    offset_term: u64,
    pub written: Vec<Entry>,
    synced: Vec<Entry>,
    /// Lowest index appended or truncated since the last sync.
    dirty_from: Option<u64>,
    /// The next sync fails as if power went out during it.
    pub fail_next_sync: bool,
    /// (index, term, previous term, data fingerprint) of each append, for the checker.
    pub appended: Vec<(u64, u64, u64, u64)>,
    /// Durable snapshots, oldest first, with the state machine stream.
    pub snapshots: Vec<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// A snapshot received from the leader, not yet installed: under a
    /// temporary name, which a start deletes.
    pub received: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// (index, digest) of states this node took from a snapshot (installed
    /// from the leader, or restored at start) since the checker last looked.
    pub restored_states: Vec<(u64, u64)>,
    /// Each ConfChange entry appended, with the configuration before it in
    /// this log, for the membership checker.
    pub confs_appended: Vec<(Entry, ConfBefore)>,
    /// Syncs run in the background (as the real sync thread does) rather
    /// than before `start_sync` returns.
    pub background_syncs: bool,
    /// Background syncs started and not finished, oldest first: (ticket,
    /// lowest index they rewrite, the written entries from there when the
    /// sync began). A crash or a snapshot reset voids them.
    running: std::collections::VecDeque<(u64, u64, Vec<Entry>)>,
    next_ticket: u64,
}

impl MemDurable {
    pub fn new(background_syncs: bool) -> MemDurable {
        MemDurable {
            background_syncs,
            ..MemDurable::default()
        }
    }

    /// The term of the log entry at `index`, if the log holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.offset && index > 0 {
            return Some(self.offset_term);
        }
        let i = usize::try_from(index.checked_sub(self.offset + 1)?).ok()?;
        self.written.get(i).map(|e| e.term)
    }

    /// The written entry at `index`, which must be in the log.
    pub fn entry(&self, index: u64) -> &Entry {
        &self.written[(index - self.offset - 1) as usize]
    }

    pub fn crash(&mut self) {
        self.received = None;
        self.written = self.synced.clone();
        self.dirty_from = None;
        self.fail_next_sync = false;
        self.running.clear();
    }

    /// What the disk holds at `index` (see [`HeldAt`]). Everything a
    /// durable snapshot covers is synced.
    pub fn held_at(&self, index: u64) -> HeldAt {
        let Some(i) = index.checked_sub(self.offset + 1) else {
            return HeldAt {
                synced_as_written: true,
                replaced_since_sync: false,
            };
        };
        let i = usize::try_from(i).unwrap_or(usize::MAX);
        match (self.synced.get(i), self.written.get(i)) {
            (Some(synced), Some(written)) => HeldAt {
                synced_as_written: synced.term == written.term,
                replaced_since_sync: synced.term != written.term,
            },
            (_, None) => HeldAt {
                synced_as_written: false,
                replaced_since_sync: true,
            },
            (None, Some(_)) => HeldAt::default(),
        }
    }

    pub fn syncs_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// Finishes the oldest background sync: what was written when it began
    /// becomes durable. Returns its ticket for `Replica::synced`.
    pub fn finish_sync(&mut self) -> Option<u64> {
        let (ticket, from, entries) = self.running.pop_front()?;
        // Compaction may have dropped the start of what it wrote.
        let start = from.max(self.offset + 1);
        let keep = (start - self.offset - 1) as usize;
        assert!(
            keep <= self.synced.len(),
            "sync {} rewrites from {} but only {} entries after {} are synced",
            ticket,
            start,
            self.synced.len(),
            self.offset
        );
        self.synced.truncate(keep);
        self.synced
            .extend(entries.into_iter().filter(|e| e.index >= start));
        Some(ticket)
    }

    /// The configuration at the end of the written log: its last ConfChange
    /// entry, or else the newest snapshot's (the log after the snapshot's
    /// index changes nothing then), or else the founders'.
    fn conf_before(&self) -> ConfBefore {
        if let Some(entry) = last_conf_entry(&self.written) {
            return ConfBefore::Entry(entry);
        }
        match self.snapshots.last() {
            Some((meta, _)) if self.offset > 0 => {
                ConfBefore::Snapshot(meta.voters.clone(), meta.learners.clone())
            }
            _ => ConfBefore::Founders,
        }
    }

    /// Publishes a snapshot (durable at once) and prunes as the storage
    /// does: keeps it and the newest [`KEEP`]` - 1` older than it, and leaves
    /// any named newer alone.
    pub fn publish_snapshot(&mut self, meta: &SnapshotMeta, bytes: Arc<Vec<u8>>) {
        let key = |m: &SnapshotMeta| (m.index, m.term);
        self.snapshots.retain(|(m, _)| key(m) != key(meta));
        self.snapshots.push((meta.clone(), bytes));
        self.snapshots.sort_by_key(|(m, _)| key(m));
        let older = self
            .snapshots
            .iter()
            .filter(|(m, _)| key(m) < key(meta))
            .count();
        let excess = older.saturating_sub(KEEP - 1);
        self.snapshots.drain(..excess);
    }

    /// Deletes the log below `keep_from` (after a snapshot covers it).
    pub fn drop_before(&mut self, keep_from: u64) {
        if keep_from <= self.offset + 1 {
            return;
        }
        let n = (keep_from - self.offset - 1) as usize;
        assert!(
            n <= self.synced.len() && !matches!(self.dirty_from, Some(d) if d < keep_from),
            "compacting to {} past what is synced (offset {}, {} synced, dirty from {:?})",
            keep_from,
            self.offset,
            self.synced.len(),
            self.dirty_from
        );
        self.offset_term = self.synced[n - 1].term;
        self.synced.drain(..n);
        self.written.drain(..n);
        self.offset += n as u64;
    }

    /// Empties the log so that it continues at `next` (durable at once).
    fn reset(&mut self, next: u64, term: u64) {
        self.running.clear();
        self.written.clear();
        self.synced.clear();
        self.dirty_from = None;
        self.offset = next - 1;
        self.offset_term = term;
    }

    /// What a restarting node continues from: the newest snapshot (if any)
    /// and the log after it, resetting a log that does not continue it.
    pub fn restore(&mut self) -> (Restored, KvStore) {
        let (meta, kv) = match self.snapshots.last() {
            Some((meta, bytes)) => {
                let kv = KvStore::restore_from_with_shards(&mut bytes.as_slice(), SHARDS)
                    .unwrap_or_else(|e| panic!("snapshot {} does not decode: {}", meta.index, e));
                (meta.clone(), kv)
            }
            None => (SnapshotMeta::default(), KvStore::with_shards(SHARDS)),
        };
        let first = self.offset + 1;
        let last = self.offset + self.written.len() as u64;
        let plan = plan_log(&meta, first, last, |i| self.term_at(i), 0)
            .unwrap_or_else(|why| panic!("simulated data dir unusable: {}", why));
        let entries = match plan {
            LogPlan::Keep { from } => self.written[(from - first) as usize..].to_vec(),
            LogPlan::Reset { next } => {
                self.reset(next, meta.term);
                Vec::new()
            }
        };
        self.restored_states.push((meta.index, kv.digest()));
        let restored = Restored {
            hard_state: self.hard_state,
            snapshot: meta,
            entries,
        };
        (restored, kv)
    }
}

impl Durable for MemDurable {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        assert!(
            first > self.offset && first <= self.offset + self.written.len() as u64 + 1,
            "append at {} outside the log {}..={}",
            first,
            self.offset + 1,
            self.offset + self.written.len() as u64
        );
        self.written.truncate((first - self.offset - 1) as usize);
        self.dirty_from = Some(self.dirty_from.map_or(first, |d| d.min(first)));
        for entry in entries {
            assert_eq!(
                entry.index,
                self.offset + self.written.len() as u64 + 1,
                "entries not contiguous"
            );
            let prev_term = self.written.last().map_or(self.offset_term, |e| e.term);
            self.appended
                .push((entry.index, entry.term, prev_term, fingerprint(&entry.data)));
            if entry.kind == raftkv::raft::EntryKind::ConfChange {
                let before = self.conf_before();
                self.confs_appended.push((entry.clone(), before));
            }
            self.written.push(entry.clone());
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard_state = hard_state;
        Ok(())
    }

    fn start_sync(&mut self) -> Result<SyncStart, StorageError> {
        if self.fail_next_sync {
            return Err(StorageError::io(
                "sim",
                std::io::Error::other("power lost during sync"),
            ));
        }
        if self.background_syncs {
            let from = self
                .dirty_from
                .take()
                .unwrap_or(self.offset + self.written.len() as u64 + 1);
            let skip = (from - self.offset - 1) as usize;
            self.next_ticket += 1;
            self.running
                .push_back((self.next_ticket, from, self.written[skip..].to_vec()));
            return Ok(SyncStart::Pending(self.next_ticket));
        }
        // A blocking sync makes everything written durable, including what
        // background syncs still running would have.
        while self.finish_sync().is_some() {}
        if let Some(from) = self.dirty_from.take() {
            let keep = ((from - self.offset - 1) as usize).min(self.synced.len());
            self.synced.truncate(keep);
            self.synced.extend_from_slice(&self.written[keep..]);
        }
        Ok(SyncStart::Synced)
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError> {
        let bytes = match self.received.take() {
            Some((received, bytes)) if received == *meta => bytes,
            _ => panic!(
                "installing snapshot {}/{} that was never received",
                meta.index, meta.term
            ),
        };
        assert!(
            meta.term <= self.hard_state.term,
            "snapshot {}/{} published above the stored term {}",
            meta.index,
            meta.term,
            self.hard_state.term
        );
        let kv = KvStore::restore_from_with_shards(&mut bytes.as_slice(), SHARDS)
            .unwrap_or_else(|e| panic!("snapshot {} does not decode: {}", meta.index, e));
        // Published first: the log is reset only once a start would take
        // the snapshot.
        self.publish_snapshot(meta, bytes);
        self.reset(meta.index + 1, meta.term);
        self.restored_states.push((meta.index, kv.digest()));
        Ok(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv::raft::EntryKind;

    fn noops(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|index| Entry {
                index,
                term,
                kind: EntryKind::Noop,
                data: Default::default(),
            })
            .collect()
    }

    #[test]
    fn a_rewritten_suffix_is_not_synced_until_the_next_sync_ends() {
        let mut disk = MemDurable::new(false);
        disk.append(&noops(1, 1..=3)).unwrap();
        disk.start_sync().unwrap();
        assert!((1..=3).all(|i| disk.held_at(i).synced_as_written));
        assert!(!disk.held_at(4).synced_as_written, "never written");
        // A new leader's entries replace 2..=3: as many entries are synced
        // as before, but not these.
        disk.append(&noops(2, 2..=3)).unwrap();
        assert!(disk.held_at(1).synced_as_written);
        for i in 2..=3 {
            let held = disk.held_at(i);
            assert!(!held.synced_as_written && held.replaced_since_sync);
        }
        disk.start_sync().unwrap();
        assert!((1..=3).all(|i| disk.held_at(i).synced_as_written));
    }

    #[test]
    fn an_entry_appended_since_the_sync_is_neither_synced_nor_replaced() {
        let mut disk = MemDurable::new(false);
        disk.append(&noops(1, 1..=1)).unwrap();
        disk.start_sync().unwrap();
        disk.append(&noops(1, 2..=2)).unwrap();
        let held = disk.held_at(2);
        assert!(!held.synced_as_written && !held.replaced_since_sync);
    }
}
