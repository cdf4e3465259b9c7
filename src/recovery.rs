//! What a restarting node continues from: its newest usable snapshot and the
//! part of its log after it. Pure (the caller reads the files and passes what
//! it found), so the server and the simulator decide the same way.
//!
//! The log and the snapshot can disagree after a crash at the wrong moment:
//!
//! - A follower publishes a snapshot received from the leader before the core
//!   installs it and the log is reset. A crash in between leaves the new
//!   snapshot beside the old log, which may end before the snapshot or hold a
//!   different entry at its index. Installing would have discarded that log
//!   (Raft §7), so restart discards it too: an entry that disagrees with a
//!   committed snapshot at its index cannot be committed itself, nor can any
//!   entry after it (log matching).
//! - A crash while the log is reset leaves a prefix of the old log, or none.
//!
//! What cannot be repaired is a gap: a log that starts after the snapshot's
//! next index (the entries in between are gone), or, when a newer snapshot was
//! passed over as corrupt, a log that no longer covers what it covered.

use crate::raft::{conf_change, EntryKind, SnapshotMeta};

/// Whether a log entry's payload decodes as its kind says: a command for a
/// normal entry, a membership change for a ConfChange. The server has
/// storage run it on every record as the log is opened
/// (`StorageOptions::check_payload`), so a record with a valid CRC but a
/// payload none of our encoders wrote stops the node naming the file and
/// offset. Otherwise the core, which trusts restored entries, would panic on
/// a bad membership change, and a bad command would stop the node only when
/// applied, with no file named.
pub fn check_payload(kind: EntryKind, payload: &[u8]) -> Result<(), String> {
    match kind {
        EntryKind::Normal => crate::kv::check_encoded(payload).map_err(|e| e.to_string()),
        EntryKind::ConfChange => conf_change::decode(payload)
            .map(drop)
            .map_err(|e| e.to_string()),
        // Nothing reads a no-op's payload.
        EntryKind::Noop => Ok(()),
    }
}

/// What to do with the log found on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPlan {
    /// The log continues the snapshot: its entries `from..=last` are restored.
    Keep { from: u64 },
    /// Nothing in the log after the snapshot can be trusted: empty it so the
    /// next append is at `next` (the snapshot's index + 1).
    Reset { next: u64 },
}

/// Decides how the log `first..=last` (empty when `last < first`) continues
/// `snapshot` (index 0 when there is none). `term_at` gives the log's term at
/// an index inside it. `must_reach` is the index of the newest snapshot that
/// was passed over as corrupt (0 if none): the log must then still hold every
/// entry up to it, or state would be lost. The error says why the data
/// directory cannot be used.
pub fn plan_log(
    snapshot: &SnapshotMeta,
    first: u64,
    last: u64,
    term_at: impl Fn(u64) -> Option<u64>,
    must_reach: u64,
) -> Result<LogPlan, String> {
    let s = snapshot.index;
    let empty = last < first;
    let matches_at_s = s < first || term_at(s) == Some(snapshot.term);
    if must_reach > s {
        if empty || first > s + 1 || last < must_reach || !matches_at_s {
            return Err(format!(
                "the newest snapshot (index {}) is unusable and the log ({}) does not cover \
                 index {}..={} after the previous snapshot (index {})",
                must_reach,
                describe(first, last),
                s + 1,
                must_reach,
                s
            ));
        }
        return keep_after(snapshot, term_at);
    }
    if first > s + 1 {
        let what = if s == 0 {
            "no snapshot".to_string()
        } else {
            format!("the snapshot ends at index {}", s)
        };
        return Err(format!(
            "the log ({}) starts after index {} but {}: entries {}..{} are missing",
            describe(first, last),
            s + 1,
            what,
            s + 1,
            first
        ));
    }
    if empty {
        return Ok(if first == s + 1 {
            LogPlan::Keep { from: s + 1 }
        } else {
            LogPlan::Reset { next: s + 1 }
        });
    }
    if last < s || !matches_at_s {
        return Ok(LogPlan::Reset { next: s + 1 });
    }
    keep_after(snapshot, term_at)
}

/// Keeps the log from the entry after `snapshot`. Entries after the
/// snapshot's last were appended after it, so their terms cannot be lower (the
/// restored Raft log asserts it): a lower one is damage, not a torn write.
fn keep_after(
    snapshot: &SnapshotMeta,
    term_at: impl Fn(u64) -> Option<u64>,
) -> Result<LogPlan, String> {
    let next = snapshot.index + 1;
    match term_at(next) {
        Some(term) if term < snapshot.term => Err(format!(
            "log entry {} has term {}, below the term {} of the snapshot it follows",
            next, term, snapshot.term
        )),
        _ => Ok(LogPlan::Keep { from: next }),
    }
}

fn describe(first: u64, last: u64) -> String {
    if last < first {
        format!("empty, next index {}", first)
    } else {
        format!("indexes {}..={}", first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term,
            voters: vec![1],
            learners: Vec::new(),
        }
    }

    /// A log whose entry i has term i / 10 + 1.
    fn term_of(i: u64) -> Option<u64> {
        Some(i / 10 + 1)
    }

    #[test]
    fn payloads_are_checked_as_their_kind_says() {
        use crate::kv::Command;
        use crate::raft::{ConfChange, ConfEntry};
        let mut set = Vec::new();
        Command::Set(b"k".to_vec(), b"v".to_vec()).encode(&mut set);
        let mut del = Vec::new();
        Command::Del(vec![b"k".to_vec()]).encode(&mut del);
        let conf = conf_change::encode(&ConfEntry {
            change: ConfChange::Promote { id: 2 },
            voters: vec![1, 2],
            learners: Vec::new(),
        });
        assert_eq!(check_payload(EntryKind::Normal, &set), Ok(()));
        assert_eq!(check_payload(EntryKind::Normal, &del), Ok(()));
        assert_eq!(check_payload(EntryKind::ConfChange, &conf), Ok(()));
        assert_eq!(check_payload(EntryKind::Noop, b"anything"), Ok(()));
        let bad = [0x01, 0x09];
        assert!(check_payload(EntryKind::Normal, &bad).is_err());
        assert!(check_payload(EntryKind::ConfChange, &bad).is_err());
        // A command is not a membership change, nor the other way round.
        assert!(check_payload(EntryKind::ConfChange, &set).is_err());
        assert!(check_payload(EntryKind::Normal, &conf).is_err());
        assert!(check_payload(EntryKind::Normal, &set[..set.len() - 1]).is_err());
    }

    #[test]
    fn a_fresh_directory_starts_at_one() {
        let plan = plan_log(&SnapshotMeta::default(), 1, 0, |_| None, 0);
        assert_eq!(plan, Ok(LogPlan::Keep { from: 1 }));
    }

    #[test]
    fn a_log_with_a_trailing_margin_is_kept_after_the_snapshot() {
        // Snapshot at 25 (term 3); the log keeps 16..=40 as a margin.
        let plan = plan_log(&snap(25, 3), 16, 40, term_of, 0);
        assert_eq!(plan, Ok(LogPlan::Keep { from: 26 }));
    }

    #[test]
    fn a_log_that_disagrees_with_the_snapshot_is_reset() {
        // The log's entry 25 has term 3; a received snapshot says term 4.
        assert_eq!(
            plan_log(&snap(25, 4), 1, 40, term_of, 0),
            Ok(LogPlan::Reset { next: 26 })
        );
        // The log ends before the snapshot (crash before the reset).
        assert_eq!(
            plan_log(&snap(90, 9), 1, 40, term_of, 0),
            Ok(LogPlan::Reset { next: 91 })
        );
        // An empty log left behind the snapshot.
        assert_eq!(
            plan_log(&snap(90, 9), 41, 40, term_of, 0),
            Ok(LogPlan::Reset { next: 91 })
        );
    }

    #[test]
    fn a_log_reset_right_after_the_snapshot_is_kept() {
        assert_eq!(
            plan_log(&snap(90, 9), 91, 90, |_| None, 0),
            Ok(LogPlan::Keep { from: 91 })
        );
        assert_eq!(
            plan_log(&snap(90, 9), 91, 120, term_of, 0),
            Ok(LogPlan::Keep { from: 91 })
        );
    }

    #[test]
    fn a_log_whose_terms_fall_below_the_snapshot_is_an_error() {
        let below = |index: u64| term_of(index).map(|term| term.min(2));
        for must_reach in [0, 95] {
            assert_eq!(
                plan_log(&snap(90, 9), 91, 120, below, must_reach),
                Err("log entry 91 has term 2, below the term 9 of the snapshot it follows".into())
            );
        }
    }

    #[test]
    fn a_gap_between_snapshot_and_log_is_an_error() {
        let err = plan_log(&snap(25, 3), 40, 60, term_of, 0).unwrap_err();
        assert!(err.contains("entries 26..40 are missing"), "{}", err);
        let err = plan_log(&SnapshotMeta::default(), 40, 60, term_of, 0).unwrap_err();
        assert!(err.contains("no snapshot"), "{}", err);
        // An empty log reset for a snapshot that is gone.
        let err = plan_log(&snap(25, 3), 91, 90, term_of, 0).unwrap_err();
        assert!(err.contains("missing"), "{}", err);
    }

    #[test]
    fn falling_back_past_a_corrupt_snapshot_needs_the_log_to_cover_it() {
        // The previous snapshot at 20 plus a log 11..=60 covers the corrupt one at 50.
        assert_eq!(
            plan_log(&snap(20, 3), 11, 60, term_of, 50),
            Ok(LogPlan::Keep { from: 21 })
        );
        // The log starts too late.
        assert!(plan_log(&snap(20, 3), 30, 60, term_of, 50).is_err());
        // The log was reset for the corrupt snapshot, so it holds nothing before it.
        assert!(plan_log(&snap(20, 3), 51, 60, term_of, 50).is_err());
        // The log ends before the corrupt snapshot's index.
        assert!(plan_log(&snap(20, 3), 11, 45, term_of, 50).is_err());
        // No previous snapshot at all: the log must reach back to 1.
        assert_eq!(
            plan_log(&SnapshotMeta::default(), 1, 60, term_of, 50),
            Ok(LogPlan::Keep { from: 1 })
        );
    }
}
