//! Tests of the in-memory log, apart so that the log reads in one sitting.

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
