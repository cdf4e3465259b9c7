//! The safety properties, checked from observations the simulator makes
//! after every step. Each `observe_*` returns the first violation it sees.
//!
//! 1. At most one leader per term.
//! 2. Log matching: entries with the same index and term carry the same data
//!    and follow the same previous term (so, by induction, the logs agree up
//!    to there). Every appended entry is observed when it is appended.
//! 3. State machine safety: every node applies the same entry at an index,
//!    and nodes that applied the same prefix hold the same key-value digest.
//! 4. Every acknowledged write is in the log of every leader elected after it
//!    (or below its compaction point, in the snapshot it holds: snapshots are
//!    checked by digest against the nodes that applied the entries).
//! 5. Reads are linearizable (see `History`) and see every entry committed
//!    before they began (`check_read_index`); writes answered `-TRYAGAIN`
//!    are never applied.
//! 6. Nothing is promised before it is durable: a vote (granted, or a
//!    candidate's own behind its request) or an acknowledgement of entries
//!    leaves a node only when its disk holds it (`check_promise`).

use raftkv::raft::{HardState, Message, MessageBody, NodeId};
use std::collections::BTreeMap;

pub type Violation = String;

/// FNV-1a: a deterministic fingerprint of entry data.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<u64, NodeId>,
    /// (index, term) -> (data fingerprint, previous entry's term)
    entries: BTreeMap<(u64, u64), (u64, u64)>,
    /// index -> (term, data fingerprint) of the entry applied there
    applied: BTreeMap<u64, (u64, u64)>,
    /// applied index -> digest of the key-value map after applying it
    digests: BTreeMap<u64, u64>,
    /// (index, term) of acknowledged writes
    acked: Vec<(u64, u64)>,
}

impl Checker {
    pub fn observe_leader(&mut self, term: u64, id: NodeId) -> Result<bool, Violation> {
        match self.leaders.insert(term, id) {
            Some(other) if other != id => Err(format!(
                "two leaders in term {}: nodes {} and {}",
                term, other, id
            )),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    pub fn observe_append(
        &mut self,
        node: NodeId,
        index: u64,
        term: u64,
        prev_term: u64,
        data: u64,
    ) -> Result<(), Violation> {
        match self.entries.insert((index, term), (data, prev_term)) {
            Some(seen) if seen != (data, prev_term) => Err(format!(
                "log matching: node {} has entry {}/{} with (data {:x}, prev term {}) but another node had (data {:x}, prev term {})",
                node, index, term, data, prev_term, seen.0, seen.1
            )),
            _ => Ok(()),
        }
    }

    pub fn observe_applied(
        &mut self,
        node: NodeId,
        index: u64,
        term: u64,
        data: u64,
    ) -> Result<(), Violation> {
        match self.applied.insert(index, (term, data)) {
            Some(seen) if seen != (term, data) => Err(format!(
                "state machine safety: node {} applied {}/{} (data {:x}) where {}/{} (data {:x}) was applied before",
                node, index, term, data, index, seen.0, seen.1
            )),
            _ => Ok(()),
        }
    }

    pub fn observe_digest(
        &mut self,
        node: NodeId,
        applied_index: u64,
        digest: u64,
    ) -> Result<(), Violation> {
        match self.digests.insert(applied_index, digest) {
            Some(seen) if seen != digest => Err(format!(
                "state machine safety: node {} has digest {:x} after applying {} entries, another node had {:x}",
                node, digest, applied_index, seen
            )),
            _ => Ok(()),
        }
    }

    /// The highest index any node applied: committed, so every later read must see it.
    pub fn max_applied(&self) -> u64 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    /// The (index, term) the entry at `index` was applied with, if any node applied it.
    pub fn applied_at(&self, index: u64) -> Option<u64> {
        self.applied.get(&index).map(|(term, _)| *term)
    }

    pub fn observe_ack(&mut self, index: u64, term: u64) {
        self.acked.push((index, term));
    }

    /// A node just observed leading a new term: its log must hold every
    /// acknowledged write above `compacted_through` (what lies at or below it
    /// is in its snapshot). `term_at` gives the term of its log entry at an index.
    pub fn check_new_leader(
        &self,
        node: NodeId,
        term: u64,
        compacted_through: u64,
        term_at: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), Violation> {
        for &(index, acked_term) in &self.acked {
            if index > compacted_through && term_at(index) != Some(acked_term) {
                return Err(format!(
                    "leader completeness: node {} leads term {} but its log has {:?} at {} where the acknowledged write {}/{} is",
                    node,
                    term,
                    term_at(index),
                    index,
                    index,
                    acked_term
                ));
            }
        }
        Ok(())
    }
}

/// ReadIndex (thesis §6.4): a read is served from a state that holds every
/// entry committed before it began, whatever key it reads, so a deposed
/// leader's stale read is caught even when no write to that key raced it.
/// `served_at` is the read's place in the apply order, the state it was
/// served from (see `replica_reads.rs`).
pub fn check_read_index(
    node: NodeId,
    committed_before: u64,
    served_at: u64,
) -> Result<(), Violation> {
    if served_at < committed_before {
        return Err(format!(
            "stale read: node {} answered from index {} but {} was committed before the read began",
            node, served_at, committed_before
        ));
    }
    Ok(())
}

/// What a node's disk holds at one log index, as `check_promise` needs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeldAt {
    /// A crash now would keep the entry written there (or a durable
    /// snapshot covers the index).
    pub synced_as_written: bool,
    /// The written entry there is not the synced one: a newer leader's
    /// entries replaced or cut it since the last sync.
    pub replaced_since_sync: bool,
}

/// Property 6 for one message that left `node`, given what its disk holds:
/// the hard state, and what it holds at a log index (`held_at`). Checked
/// after the node handled its Ready batches, so a vote whose hard state was
/// never written, or an acknowledgement whose sync failed, is caught the
/// moment it leaves; a bad order within one successful batch is not (the
/// sync came after).
///
/// An acknowledgement is checked by the entry it names, not by a count of
/// synced entries: a conflicting suffix rewritten since the last sync leaves
/// that count as it was while the entries it counts are the replaced ones.
/// Log matching (checked apart) carries the entry to the whole prefix.
///
/// An acknowledgement from an older term than the disk's is exempt only
/// where the entry it names was replaced since the last sync: when a newer
/// leader's entries arrive in the same batch, they replace the acked ones
/// before the sync. That breaks no quorum: the newer leader was elected
/// without this node, so a majority of the others decides those entries.
/// An older term's acknowledgement of an entry nobody replaced must be
/// synced like any other (a vote in the newer term leaves without waiting
/// for the log's sync, and such acknowledgements must not go with it).
///
/// Without this a forgotten vote does harm only if the voter restarts and a
/// second candidate of that term asks it again, which random runs seldom hit.
pub fn check_promise(
    node: NodeId,
    message: &Message,
    hard_state: HardState,
    held_at: impl Fn(u64) -> HeldAt,
) -> Result<(), Violation> {
    let holds_vote = |term: u64, candidate: NodeId| {
        hard_state.term > term || (hard_state.term == term && hard_state.vote == candidate)
    };
    match message.body {
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        } if !holds_vote(message.term, message.to) => Err(format!(
            "node {} granted its term {} vote to {} but its disk holds {:?}",
            node, message.term, message.to, hard_state
        )),
        MessageBody::RequestVote {
            pre_vote: false, ..
        } if !holds_vote(message.term, node) => Err(format!(
            "node {} asked for votes in term {} but its disk holds {:?}",
            node, message.term, hard_state
        )),
        MessageBody::AppendResponse {
            success: true,
            index,
            ..
        } => {
            let held = held_at(index);
            let replaced = message.term < hard_state.term && held.replaced_since_sync;
            if held.synced_as_written || replaced {
                Ok(())
            } else {
                Err(format!(
                    "node {} acknowledged entries through {} in term {} but its disk does not hold that entry as written",
                    node, index, message.term
                ))
            }
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Acknowledged `+OK`, applied at this log index.
    Acked(u64),
    /// Answered `-TRYAGAIN`: must never be applied.
    Refused,
    /// Timed out or its node crashed: may or may not have been applied.
    Unknown,
}

pub struct WriteOp {
    pub key: Vec<u8>,
    pub invoked: u64,
    pub completed: Option<u64>,
    pub outcome: Outcome,
}

/// The client-visible history of writes (each with a unique value) and the
/// checks on it.
#[derive(Default)]
pub struct History {
    /// value -> the write that wrote it
    pub writes: BTreeMap<Vec<u8>, WriteOp>,
    /// value -> log index where it was applied (from observed applies)
    pub applied_index: BTreeMap<Vec<u8>, u64>,
    pub reads_checked: u64,
}

impl History {
    pub fn invoke_write(&mut self, key: &[u8], value: &[u8], now: u64) {
        self.writes.insert(
            value.to_vec(),
            WriteOp {
                key: key.to_vec(),
                invoked: now,
                completed: None,
                outcome: Outcome::Pending,
            },
        );
    }

    /// A write's value was applied at `index`.
    pub fn observe_applied_write(
        &mut self,
        key: &[u8],
        value: &[u8],
        index: u64,
    ) -> Result<(), Violation> {
        match self.writes.get(value) {
            Some(w) if w.outcome == Outcome::Refused => {
                return Err(format!(
                    "write of {:?} was answered -TRYAGAIN but applied at {}",
                    String::from_utf8_lossy(value),
                    index
                ))
            }
            Some(w) if w.key != key => {
                return Err(format!("value {:?} applied under another key", value))
            }
            _ => {}
        }
        self.applied_index.entry(value.to_vec()).or_insert(index);
        Ok(())
    }

    pub fn complete_write(
        &mut self,
        value: &[u8],
        now: u64,
        outcome: Outcome,
    ) -> Result<(), Violation> {
        if let Outcome::Refused = outcome {
            if let Some(index) = self.applied_index.get(value) {
                return Err(format!(
                    "write of {:?} was applied at {} but answered -TRYAGAIN",
                    String::from_utf8_lossy(value),
                    index
                ));
            }
        }
        if let Some(w) = self.writes.get_mut(value) {
            w.completed = Some(now);
            w.outcome = outcome;
        }
        Ok(())
    }

    /// A read of `key` invoked at `invoked` and answered at `completed` with
    /// `result` is linearizable if it returns the latest write acknowledged
    /// before the read began, or a later write that began before it ended.
    pub fn check_read(
        &mut self,
        key: &[u8],
        invoked: u64,
        completed: u64,
        result: Option<&[u8]>,
    ) -> Result<(), Violation> {
        self.reads_checked += 1;
        let latest_acked_before = self
            .writes
            .iter()
            .filter(|(_, w)| w.key == key && w.completed.is_some_and(|c| c < invoked))
            .filter_map(|(value, w)| match w.outcome {
                Outcome::Acked(index) => Some((index, value.clone())),
                _ => None,
            })
            .max();
        let shown = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let Some(value) = result else {
            return match latest_acked_before {
                None => Ok(()),
                Some((index, v)) => Err(format!(
                    "stale read of {}: nil, but {} was acknowledged at index {} before the read began",
                    shown(key), shown(&v), index
                )),
            };
        };
        let Some(write) = self.writes.get(value) else {
            return Err(format!(
                "read of {} returned {}, which nobody wrote",
                shown(key),
                shown(value)
            ));
        };
        if write.key != key || write.invoked > completed {
            return Err(format!(
                "read of {} returned {}, written to {} at step {} (read ended at {})",
                shown(key),
                shown(value),
                shown(&write.key),
                write.invoked,
                completed
            ));
        }
        let Some(&index) = self.applied_index.get(value) else {
            return Err(format!(
                "read of {} returned {}, which was never applied",
                shown(key),
                shown(value)
            ));
        };
        match latest_acked_before {
            Some((latest, v)) if index < latest => Err(format!(
                "stale read of {}: {} (index {}), but {} (index {}) was acknowledged before the read began",
                shown(key), shown(value), index, shown(&v), latest
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The checkers must catch hand-made bad histories.
    use super::*;

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut c = Checker::default();
        assert_eq!(c.observe_leader(3, 1), Ok(true));
        assert_eq!(c.observe_leader(3, 1), Ok(false));
        assert_eq!(c.observe_leader(4, 2), Ok(true));
        assert!(c
            .observe_leader(3, 2)
            .unwrap_err()
            .contains("two leaders in term 3"));
    }

    #[test]
    fn log_matching_violations_are_caught() {
        let mut c = Checker::default();
        c.observe_append(1, 5, 2, 1, 0xaa).unwrap();
        c.observe_append(2, 5, 2, 1, 0xaa).unwrap();
        // Same index and term, different data.
        assert!(c.observe_append(3, 5, 2, 1, 0xbb).is_err());
        // Same index and term, different history before it.
        assert!(c.observe_append(3, 5, 2, 2, 0xaa).is_err());
    }

    #[test]
    fn a_changed_committed_entry_is_caught() {
        let mut c = Checker::default();
        c.observe_applied(1, 7, 3, 0x11).unwrap();
        c.observe_applied(2, 7, 3, 0x11).unwrap();
        assert!(c
            .observe_applied(3, 7, 4, 0x22)
            .unwrap_err()
            .contains("state machine safety"));
        c.observe_digest(1, 7, 99).unwrap();
        assert!(c.observe_digest(2, 7, 98).is_err());
    }

    #[test]
    fn a_leader_missing_an_acknowledged_write_is_caught() {
        let mut c = Checker::default();
        c.observe_ack(4, 2);
        assert!(c
            .check_new_leader(1, 3, 0, |i| (i <= 4).then_some(2))
            .is_ok());
        assert!(c
            .check_new_leader(2, 3, 0, |i| (i <= 3).then_some(2))
            .is_err());
        assert!(c
            .check_new_leader(3, 3, 0, |i| (i <= 4).then_some(1))
            .is_err());
        // Compacted into a snapshot: not in the log, and not required there.
        assert!(c
            .check_new_leader(4, 3, 4, |i| (i > 4).then_some(2))
            .is_ok());
        assert!(c
            .check_new_leader(4, 3, 3, |i| (i > 4).then_some(2))
            .is_err());
    }

    #[test]
    fn a_read_behind_the_commit_index_is_caught() {
        assert!(check_read_index(1, 7, 7).is_ok());
        assert!(check_read_index(1, 7, 9).is_ok());
        assert!(check_read_index(1, 7, 6).is_err());
    }

    #[test]
    fn promises_not_on_disk_are_caught() {
        let message = |from, to, term, body| Message {
            from,
            to,
            term,
            body,
        };
        let hs = |term, vote| HardState { term, vote };
        let grant = message(
            1,
            2,
            5,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
        );
        let nothing_synced = |_| HeldAt::default();
        assert!(check_promise(1, &grant, hs(5, 2), nothing_synced).is_ok());
        assert!(check_promise(1, &grant, hs(6, 0), nothing_synced).is_ok());
        assert!(check_promise(1, &grant, hs(5, 0), nothing_synced).is_err());
        assert!(check_promise(1, &grant, hs(4, 2), nothing_synced).is_err());
        let request = message(
            1,
            2,
            5,
            MessageBody::RequestVote {
                pre_vote: false,
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        );
        assert!(check_promise(1, &request, hs(5, 1), nothing_synced).is_ok());
        assert!(check_promise(1, &request, hs(4, 1), nothing_synced).is_err());
        let ack = message(
            1,
            2,
            5,
            MessageBody::AppendResponse {
                success: true,
                index: 7,
                hint_index: 0,
                hint_term: 0,
            },
        );
        let synced_through = |n: u64| {
            move |index: u64| HeldAt {
                synced_as_written: index <= n,
                replaced_since_sync: false,
            }
        };
        let replaced_from = |n: u64| {
            move |index: u64| HeldAt {
                synced_as_written: index < n,
                replaced_since_sync: index >= n,
            }
        };
        assert!(check_promise(1, &ack, hs(5, 2), synced_through(7)).is_ok());
        assert!(check_promise(1, &ack, hs(5, 2), synced_through(6)).is_err());
        // In a newer term, what a newer leader replaced is exempt, and only that.
        assert!(check_promise(1, &ack, hs(5, 2), replaced_from(6)).is_err());
        assert!(check_promise(1, &ack, hs(6, 0), replaced_from(6)).is_ok());
        assert!(check_promise(1, &ack, hs(6, 0), synced_through(6)).is_err());
    }

    fn history_with_two_acked_writes() -> History {
        let mut h = History::default();
        h.invoke_write(b"k", b"v1", 10);
        h.observe_applied_write(b"k", b"v1", 5).unwrap();
        h.complete_write(b"v1", 12, Outcome::Acked(5)).unwrap();
        h.invoke_write(b"k", b"v2", 20);
        h.observe_applied_write(b"k", b"v2", 8).unwrap();
        h.complete_write(b"v2", 22, Outcome::Acked(8)).unwrap();
        h
    }

    #[test]
    fn a_stale_read_is_caught() {
        let mut h = history_with_two_acked_writes();
        // After v2 was acknowledged, v1 is stale and nil is impossible.
        assert!(h
            .check_read(b"k", 30, 31, Some(b"v1"))
            .unwrap_err()
            .contains("stale read"));
        assert!(h
            .check_read(b"k", 30, 31, None)
            .unwrap_err()
            .contains("stale read"));
        assert!(h.check_read(b"k", 30, 31, Some(b"v2")).is_ok());
        // A read concurrent with v2 may see v1 or v2.
        assert!(h.check_read(b"k", 21, 23, Some(b"v1")).is_ok());
        assert!(h.check_read(b"k", 21, 23, Some(b"v2")).is_ok());
        // A read that ended before v2 began cannot see it.
        assert!(h.check_read(b"k", 13, 15, Some(b"v2")).is_err());
        // Values nobody wrote, or never applied, are caught.
        assert!(h.check_read(b"k", 30, 31, Some(b"v9")).is_err());
    }

    #[test]
    fn a_refused_write_that_was_applied_is_caught() {
        let mut h = History::default();
        h.invoke_write(b"k", b"v1", 1);
        h.complete_write(b"v1", 2, Outcome::Refused).unwrap();
        assert!(h.observe_applied_write(b"k", b"v1", 3).is_err());
        let mut h = History::default();
        h.invoke_write(b"k", b"v1", 1);
        h.observe_applied_write(b"k", b"v1", 3).unwrap();
        assert!(h.complete_write(b"v1", 4, Outcome::Refused).is_err());
    }
}
