//! The stable file (term and vote) and the data dir around the log: a
//! damaged stable file, a removed `log/` beside it, a half-created data dir,
//! and a data dir another open `Storage` holds. Each fails loudly or opens
//! as the state it holds, never silently as defaults.

use super::{all_entries, build, entries, open, open_err, segment_files, tempdir, SEG};
use raftkv::raft::HardState;
use std::fs;

#[test]
fn hard_state_survives_reopen_and_defaults_when_missing() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SEG);
    assert_eq!(storage.hard_state(), HardState::default());
    let hard_state = HardState { term: 7, vote: 3 };
    storage.set_hard_state(hard_state).expect("set");
    drop(storage);
    assert_eq!(open(dir.path(), SEG).hard_state(), hard_state);
    assert!(!dir.path().join("stable.tmp").exists());
}

#[test]
fn stable_file_with_a_flipped_byte_is_an_error_naming_it() {
    let dir = tempdir();
    open(dir.path(), SEG)
        .set_hard_state(HardState { term: 7, vote: 3 })
        .expect("set");
    let stable = dir.path().join("stable");
    for at in 0..28 {
        let mut bytes = fs::read(&stable).expect("read");
        bytes[at] ^= 1;
        let work = tempdir();
        fs::write(work.path().join("stable"), bytes).expect("write");
        let message = open_err(work.path(), SEG);
        let named = work.path().join("stable").display().to_string();
        assert!(message.contains(&named), "flip at {}: {}", at, message);
    }
    fs::write(&stable, b"").expect("truncate");
    assert!(open_err(dir.path(), SEG).contains("stable"));
}

/// `rm -rf data_dir/log` on a node with state: the stable file shows a log
/// was there (log/ is created before the first stable file), so the open
/// fails naming log/ and recreates nothing, instead of starting empty.
#[test]
fn a_removed_log_dir_next_to_a_stable_file_is_an_error_naming_it() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 41, 3));
    open(dir.path(), SEG)
        .set_hard_state(HardState { term: 3, vote: 1 })
        .expect("set");
    let log_dir = dir.path().join("log");
    fs::remove_dir_all(&log_dir).expect("remove log/");
    let stable_before = fs::read(dir.path().join("stable")).expect("read stable");
    let message = open_err(dir.path(), SEG);
    assert!(
        message.contains(&log_dir.display().to_string()) && message.contains("missing"),
        "{}",
        message
    );
    assert!(
        !log_dir.exists(),
        "the open recreated {}",
        log_dir.display()
    );
    assert_eq!(
        fs::read(dir.path().join("stable")).expect("read"),
        stable_before
    );
    // Every later attempt fails the same way.
    assert_eq!(open_err(dir.path(), SEG), message);
}

/// What a first start can leave behind at any point, and a node that joined
/// and holds a term but never received an entry: all open.
#[test]
fn a_new_or_half_created_data_dir_and_a_stable_file_with_an_empty_log_open() {
    // Nothing yet, not even the directory.
    let parent = tempdir();
    let fresh = parent.path().join("a/b/data");
    assert_eq!(open(&fresh, SEG).last_index(), 0);
    assert!(fresh.join("log").is_dir());
    // Only the directory, or the directory and its lock file: a crash before log/.
    let bare = tempdir();
    assert_eq!(open(bare.path(), SEG).last_index(), 0);
    let locked_only = tempdir();
    fs::write(locked_only.path().join("lock"), b"12345\n").expect("write lock");
    assert_eq!(open(locked_only.path(), SEG).last_index(), 0);
    // A stable file next to an empty log/ (a joiner that only heard a term).
    let joiner = tempdir();
    let hard_state = HardState { term: 5, vote: 0 };
    open(joiner.path(), SEG)
        .set_hard_state(hard_state)
        .expect("set");
    let storage = open(joiner.path(), SEG);
    assert_eq!(storage.hard_state(), hard_state);
    assert_eq!((storage.first_index(), storage.last_index()), (1, 0));
}

/// One open `Storage` per data dir: a second open, here in the same process,
/// fails naming the directory and the holder, and changes nothing; once the
/// first is dropped (as a process's lock goes when it dies) it opens.
#[test]
fn a_data_dir_open_elsewhere_is_refused_until_released() {
    let dir = tempdir();
    let want = entries(1, 31, 2);
    let mut first = open(dir.path(), SEG);
    first.append(&want).expect("append");
    first.sync().expect("sync");
    let lock = dir.path().join("lock");
    let pid = std::process::id().to_string();
    assert_eq!(fs::read_to_string(&lock).expect("read lock").trim(), pid);
    let segments = segment_files(dir.path());
    let before: Vec<Vec<u8>> = segments
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    let message = open_err(dir.path(), SEG);
    assert_eq!(
        message,
        format!(
            "data dir {} is in use by another process: pid {} holds the lock on {}",
            dir.path().display(),
            pid,
            lock.display()
        )
    );
    let after: Vec<Vec<u8>> = segments
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    assert_eq!(after, before);
    assert_eq!(all_entries(&first), want);
    drop(first);
    assert_eq!(all_entries(&open(dir.path(), SEG)), want);
}
