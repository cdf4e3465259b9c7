//! Tests of `Storage`: opening, recovery's repairs and syncs.

use super::*;

/// A data dir whose parents are new too (`data/node1`, say): each
/// directory created has its name made durable in its own parent, not
/// only the last one, and a relative one in the current directory.
#[test]
fn creating_a_directory_makes_the_name_of_every_new_one_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let data_dir = root.join("a").join("b").join("data");
    synced::take();
    create_dir(&data_dir).expect("create");
    let synced = synced::take();
    for parent in [root.clone(), root.join("a"), root.join("a").join("b")] {
        assert!(
            synced.contains(&parent),
            "{} not synced (synced: {:?})",
            parent.display(),
            synced
        );
    }
    assert!(data_dir.is_dir());
    assert_eq!(parent_dir(Path::new("data")), Path::new("."));
    assert_eq!(parent_dir(Path::new("data/node1")), Path::new("data"));
}

fn entry(index: u64) -> Entry {
    Entry {
        index,
        term: 2,
        kind: EntryKind::Noop,
        data: vec![7; 100].into_iter().collect(),
    }
}

/// A process killed (`kill -9`) leaves its unsynced writes in the page
/// cache, where the next start reads them as the log, the stable file
/// and the snapshots: entries it then reports as persisted (a follower
/// acknowledges them with no sync of its own), a vote it then repeats
/// with no write (the hard state is already "on disk"), a snapshot it
/// then compacts the log against. Unless the start makes what it read
/// durable, a power loss after that loses them all the same.
#[test]
fn a_start_makes_durable_what_a_killed_process_left_unsynced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let options = || StorageOptions {
        segment_bytes: 1 << 20,
        check_payload: None,
        ..StorageOptions::default()
    };
    {
        let mut storage = Storage::open(&data_dir, options()).expect("open");
        storage.finish_recovery().expect("finish");
        storage
            .set_hard_state(HardState { term: 2, vote: 1 })
            .expect("stable");
        let entries: Vec<Entry> = (1..=3).map(entry).collect();
        storage.append(&entries).expect("append");
        // Killed here: the records were written, never synced.
    }
    let mut storage = Storage::open(&data_dir, options()).expect("reopen");
    assert_eq!(storage.last_index(), 3);
    synced::take();
    storage.finish_recovery().expect("finish");
    let synced = synced::take();
    let log_dir = data_dir.join(LOG_DIR);
    for path in [
        log_dir.join(segment::file_name(1)),
        log_dir.clone(),
        data_dir.clone(),
        snapshot::snapshot_dir(&data_dir),
    ] {
        assert!(
            synced.contains(&path),
            "{} not synced by the start (synced: {:?})",
            path.display(),
            synced
        );
    }
}

fn entry_of(index: u64, term: u64) -> Entry {
    Entry {
        term,
        ..entry(index)
    }
}

/// What a background sync is handed after each append covers every
/// record written since the last one that no rollover synced already:
/// after records replace others in an older, sealed segment (its file
/// opened again) as after a rollover, and the files a sync still
/// running holds stay whole to it when a truncation or a reset deletes
/// them.
#[test]
fn sync_targets_cover_every_append_across_rollover_truncation_and_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let log_dir = data_dir.join(LOG_DIR);
    // 125-byte records: three to a segment.
    let options = StorageOptions {
        segment_bytes: 400,
        check_payload: None,
        ..StorageOptions::default()
    };
    let mut storage = Storage::open(&data_dir, options).expect("open");
    storage.finish_recovery().expect("finish");
    let paths = |targets: &[SyncTarget]| -> Vec<PathBuf> {
        targets.iter().map(|t| t.path.clone()).collect()
    };
    let seg = |first: u64| log_dir.join(segment::file_name(first));

    storage
        .append(&(1..=2).map(entry).collect::<Vec<_>>())
        .expect("append");
    let held = storage.take_sync_targets();
    assert_eq!(paths(&held), vec![seg(1)]);

    // Rolling over to segment 4 syncs segment 1 on the spot (its last
    // records were handed to the sync above, which may not have run).
    synced::take();
    storage
        .append(&(3..=5).map(entry).collect::<Vec<_>>())
        .expect("append");
    assert!(
        synced::take().contains(&seg(1)),
        "segment 1 not synced at rollover"
    );
    assert_eq!(paths(&storage.take_sync_targets()), vec![seg(4)]);

    // A newer leader's entries from 2 on: segment 4 goes, and segment 1,
    // sealed, takes records again, which the next sync must cover.
    storage
        .append(&[entry_of(2, 3), entry_of(3, 3)])
        .expect("append");
    assert!(!seg(4).exists());
    assert_eq!(paths(&storage.take_sync_targets()), vec![seg(1)]);
    assert_eq!(storage.term(3), Some(3));

    // A reset (a snapshot installed) while the first sync still holds
    // segment 1: its file stays open to it, and the new log's segment
    // is a file of its own, created durably.
    storage.reset(10).expect("reset");
    held.iter()
        .for_each(|t| t.sync().expect("sync a deleted segment"));
    storage.append(&[entry_of(10, 4)]).expect("append");
    assert_eq!(paths(&storage.take_sync_targets()), vec![seg(10)]);
    assert!(storage.take_sync_targets().is_empty());
}

/// The open creates no `log/`, so that a start refused after it (by
/// recovery's checks) leaves the data dir as it was; `create_log_dir`, which
/// a start calls before it writes `founders`, creates it with its name
/// durable, before anything that shows a log was there.
#[test]
fn the_open_leaves_creating_log_dir_to_create_log_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let log_dir = data_dir.join(LOG_DIR);
    let mut storage = Storage::open(&data_dir, StorageOptions::default()).expect("open");
    assert!(!log_dir.exists(), "the open created {}", log_dir.display());
    synced::take();
    storage.create_log_dir().expect("create log/");
    assert!(log_dir.is_dir());
    assert!(synced::take().contains(&data_dir), "log/'s name not synced");
    storage.finish_recovery().expect("finish");
    storage
        .append(&(1..=2).map(entry).collect::<Vec<_>>())
        .expect("append");
    drop(storage);
    let storage = Storage::open(&data_dir, StorageOptions::default()).expect("reopen");
    assert_eq!(storage.last_index(), 2);
}
