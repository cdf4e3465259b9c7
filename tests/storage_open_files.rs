//! The log holds open files for its newest segment only, not one for each:
//! a node keeps 96 descriptors for its own files and gives the rest of the
//! open-files limit to client connections, so a log that grew past about 80
//! segments (5 GiB of 64 MiB segments) while the clients took their share
//! failed to create its next segment with EMFILE, and the node stopped.
//!
//! One test in this binary: it lowers the process's open-files limit.

use raftkv::raft::{Entry, EntryKind};
use raftkv::storage::{Storage, StorageOptions};
use std::path::Path;

/// Four records of `PAYLOAD` bytes to a segment.
const SEGMENT_BYTES: u64 = 4096;
const PAYLOAD: usize = 900;
/// 200 segments: more than the descriptors left under the lowered limit.
const ENTRIES: u64 = 800;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: (0..PAYLOAD)
            .map(|k| (index as usize * 131 + term as usize * 17 + k) as u8)
            .collect(),
    }
}

fn open(dir: &Path) -> Storage {
    let options = StorageOptions {
        segment_bytes: SEGMENT_BYTES,
        ..StorageOptions::default()
    };
    let mut storage = Storage::open(dir, options).unwrap_or_else(|err| panic!("open: {err}"));
    storage.finish_recovery().expect("finish recovery");
    storage
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

/// Lowers the soft open-files limit to `limit`.
fn limit_open_files(limit: u64) {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut current), 0);
        let lowered = libc::rlimit {
            rlim_cur: limit,
            rlim_max: current.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
    }
}

fn check_entries(storage: &Storage, term_of: impl Fn(u64) -> u64) {
    assert_eq!(storage.first_index(), 1);
    assert_eq!(storage.last_index(), ENTRIES);
    let got = storage.entries(1, ENTRIES + 1).expect("entries");
    for (k, e) in got.iter().enumerate() {
        let index = k as u64 + 1;
        assert_eq!(e, &entry(index, term_of(index)), "entry {index}");
    }
}

#[test]
fn a_log_of_many_segments_holds_few_open_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    limit_open_files(open_descriptors() + 40);
    let mut storage = open(dir.path());
    for index in 1..=ENTRIES {
        storage
            .append(&[entry(index, 1)])
            .unwrap_or_else(|err| panic!("append {index}: {err}"));
    }
    for target in storage.take_sync_targets() {
        target.sync().expect("sync");
    }
    check_entries(&storage, |_| 1);

    // A new leader's entries replace the tail from inside an older segment
    // (its file closed): the segment takes records again.
    let from = 601;
    storage.sync().expect("sync");
    let replaced: Vec<Entry> = (from..=ENTRIES).map(|i| entry(i, 2)).collect();
    storage.append(&replaced).expect("append over the tail");
    storage.sync().expect("sync");
    let term_of = |index| if index < from { 1 } else { 2 };
    check_entries(&storage, term_of);
    drop(storage);

    // Reopened, it holds the same entries, under the same limit.
    let storage = open(dir.path());
    check_entries(&storage, term_of);
}
