//! Rollover, prefix drop, truncation and reset across many small segments,
//! and what each leaves on disk across a reopen.

use super::{
    all_entries, build, copy_dir, entries, entry, open, record_spans, segment_files, tempdir,
    write_snapshot, SMALL,
};
use raftkv::raft::Entry;
use raftkv::storage::snapshot;
use std::fs;

#[test]
fn rollover_and_prefix_drop_across_many_segments() {
    let dir = tempdir();
    let want = entries(1, 301, 1);
    build(dir.path(), SMALL, &want);
    let files = segment_files(dir.path());
    assert!(files.len() > 50, "{} segments", files.len());
    let mut storage = open(dir.path(), SMALL);
    assert_eq!(all_entries(&storage), want);
    let bytes_before = storage.log_bytes();
    assert_eq!(bytes_before, files.len() as u64 * SMALL);

    storage.drop_before(150).expect("drop");
    let first = storage.first_index();
    assert!(first <= 150 && first > 140, "first index {}", first);
    assert!(storage.log_bytes() < bytes_before);
    let on_disk = segment_files(dir.path());
    assert!(on_disk[0].ends_with(format!("log/{:020}.seg", first)));
    assert_eq!(storage.term(first - 1), None);
    assert_eq!(all_entries(&storage), want[first as usize - 1..]);

    storage
        .drop_before(10_000)
        .expect("drop all but the newest");
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(storage.last_index(), 300);
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!(storage.last_index(), 300);
    assert_eq!(
        all_entries(&storage),
        want[storage.first_index() as usize - 1..]
    );
}

#[test]
fn detached_segments_stay_until_removed_and_go_before_a_reset() {
    let dir = tempdir();
    let want = entries(1, 301, 1);
    build(dir.path(), SMALL, &want);
    let mut storage = open(dir.path(), SMALL);
    let files_before = segment_files(dir.path()).len();
    let remover = storage.detach_before(150);
    let first = storage.first_index();
    assert!(first <= 150 && first > 140, "first index {}", first);
    assert_eq!(all_entries(&storage), want[first as usize - 1..]);
    // Nothing deleted yet: a crash now reopens the longer log, contiguous.
    // (Reopened from a copy: `storage` still holds the data dir's lock.)
    assert_eq!(segment_files(dir.path()).len(), files_before);
    let crashed = tempdir();
    copy_dir(dir.path(), crashed.path());
    let reopened = open(crashed.path(), SMALL);
    assert_eq!(reopened.first_index(), 1);
    assert_eq!(all_entries(&reopened), want);
    drop(reopened);
    // The remover may run on another thread.
    std::thread::spawn(move || remover.remove().expect("remove"))
        .join()
        .expect("remover thread");
    let on_disk = segment_files(dir.path());
    assert!(on_disk[0].ends_with(format!("log/{:020}.seg", first)));

    // Detached again and never removed: reset deletes them first, so no
    // older file is left beside the new segment.
    let _pending = storage.detach_before(250);
    storage.reset(1_000).expect("reset");
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!(storage.first_index(), 1_000);
}

#[test]
fn truncation_removes_newer_segments_and_zeroes_the_rest() {
    for sync_before_reopen in [false, true] {
        let dir = tempdir();
        build(dir.path(), SMALL, &entries(1, 101, 1));
        let mut storage = open(dir.path(), SMALL);
        let replacement: Vec<Entry> = (40..45).map(|i| entry(i, 2, 3)).collect();
        storage.append(&replacement).expect("append over the tail");
        assert_eq!(storage.last_index(), 44);
        assert_eq!(storage.term(39), Some(1));
        assert_eq!(storage.term(40), Some(2));

        let files = segment_files(dir.path());
        let newest = files.last().expect("a segment");
        let bytes = fs::read(newest).expect("read");
        let end = record_spans(&bytes).last().expect("records").1;
        assert!(
            bytes[end..].iter().all(|&b| b == 0),
            "old records left behind"
        );
        let first_of_newest: u64 = newest
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("numeric name");
        assert!(
            first_of_newest <= 44,
            "segment {} survived",
            first_of_newest
        );

        if sync_before_reopen {
            storage.sync().expect("sync");
        }
        drop(storage);
        let storage = open(dir.path(), SMALL);
        let mut want = entries(1, 40, 1);
        want.extend(replacement.clone());
        assert_eq!(all_entries(&storage), want);
    }
}

#[test]
fn oversized_records_get_a_segment_of_their_own() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SMALL);
    let want = vec![
        entry(1, 1, 2_000), // into a fresh, empty log
        entry(2, 1, 10),
        entry(3, 1, 3_000), // after a record: a new segment
        entry(4, 1, 10),
    ];
    storage.append(&want).expect("append");
    let sizes: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .collect();
    assert_eq!(sizes, vec![2_025, SMALL, 3_025, SMALL]);
    storage.reset(10).expect("reset");
    storage
        .append(&[entry(10, 2, 5_000)])
        .expect("oversized after reset");
    storage.sync().expect("sync");
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!(all_entries(&storage), vec![entry(10, 2, 5_000)]);
}

#[test]
fn reset_is_remembered_across_reopen() {
    let dir = tempdir();
    build(dir.path(), SMALL, &entries(1, 60, 1));
    let mut storage = open(dir.path(), SMALL);
    storage.reset(1_000).expect("reset");
    assert_eq!((storage.first_index(), storage.last_index()), (1_000, 999));
    drop(storage);
    let mut storage = open(dir.path(), SMALL);
    assert_eq!((storage.first_index(), storage.last_index()), (1_000, 999));
    assert_eq!(segment_files(dir.path()).len(), 1);
    storage.append(&entries(1_000, 1_010, 3)).expect("append");
    assert_eq!(storage.term(1_000), Some(3));
}

#[test]
#[should_panic(expected = "outside the log")]
fn append_after_reset_must_start_at_the_reset_index() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SMALL);
    storage.reset(50).expect("reset");
    let _ = storage.append(&[entry(51, 1, 1)]);
}

#[test]
fn a_fresh_log_may_start_at_any_index() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SMALL);
    assert_eq!((storage.first_index(), storage.last_index()), (1, 0));
    assert_eq!(storage.log_bytes(), 0);
    storage.append(&entries(42, 50, 1)).expect("append");
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!((storage.first_index(), storage.last_index()), (42, 49));
}

/// A snapshot at the largest index there is (its CRC good: a crafted file,
/// or another build's bug) is corrupt, named with its offset: the log after
/// it would start at index 0 (`index + 1` wraps), which made a start's plan
/// for the log overflow.
#[test]
fn a_snapshot_at_the_largest_index_is_corrupt() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let info = write_snapshot(&snaps, u64::MAX, 1);
    let err = snapshot::load_latest(&snaps)
        .map(|loaded| loaded.map(|l| l.meta))
        .expect_err("a snapshot no log can follow");
    assert!(
        matches!(err.kind, raftkv::storage::StorageErrorKind::Corrupt(_)),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&info.path.display().to_string()) && text.contains("offset 12"),
        "{text}"
    );
}
