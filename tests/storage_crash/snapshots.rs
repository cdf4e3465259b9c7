//! Snapshots: the newest two are kept and the newest whole one loaded; a
//! corrupt or foreign one is passed over; streaming to a receiver, and
//! received or unfinished snapshots that a start must not take.

use super::{body, capture_logs, copy_dir, flip, meta, tempdir, warnings_naming, write_snapshot};
use raftkv::storage::snapshot::{self, RawReader, SnapshotReceiver, SnapshotWriter};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn snapshots_keep_the_newest_two_and_load_the_newest() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    assert!(snapshot::load_latest(&snaps).expect("load").is_none());
    let infos: Vec<_> = [(10, 1), (20, 2), (30, 2)]
        .iter()
        .map(|&(i, t)| write_snapshot(&snaps, i, t))
        .collect();
    assert_eq!(
        snapshot_files(&snaps),
        vec![infos[1].path.clone(), infos[2].path.clone()]
    );
    assert_eq!(
        infos[2].path.file_name().and_then(|n| n.to_str()),
        Some("00000000000000000030-00000000000000000002.snap")
    );
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(loaded.meta, meta(30, 2));
    assert_eq!(loaded.body, body(30));
    assert_eq!(loaded.path, infos[2].path);
    assert!(loaded.skipped.is_empty());
    assert_eq!(
        infos[2].bytes,
        fs::metadata(&infos[2].path).expect("stat").len()
    );
}

/// Snapshots named newer than the one published (another build's, left
/// by a node that then caught up from further back) neither count nor go:
/// pruning by rank alone deleted the one just published, and its writer
/// was told it succeeded.
#[test]
fn pruning_keeps_the_snapshot_published_and_the_one_before_it() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let fallback = write_snapshot(&snaps, 50, 1);
    // Written elsewhere and copied in, so that writing them prunes nothing here.
    let elsewhere = tempdir();
    let newer: Vec<PathBuf> = [100, 110]
        .iter()
        .map(|&i| {
            let written = write_snapshot(elsewhere.path(), i, 2).path;
            let here = snaps.join(written.file_name().expect("name"));
            fs::copy(&written, &here).expect("copy");
            here
        })
        .collect();
    let published = write_snapshot(&snaps, 60, 2);
    assert!(
        published.path.exists(),
        "the snapshot just published is gone"
    );
    let mut want = vec![fallback.path, published.path.clone()];
    want.extend(newer.iter().cloned());
    assert_eq!(snapshot_files(&snaps), want);

    // The next one keeps itself and the one before it, as always.
    let next = write_snapshot(&snaps, 70, 2);
    let mut want = vec![published.path, next.path];
    want.extend(newer);
    assert_eq!(snapshot_files(&snaps), want);
}

#[test]
fn corrupt_newest_snapshot_is_passed_over_for_the_previous() {
    capture_logs();
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let older = write_snapshot(&snaps, 10, 1);
    let newest = write_snapshot(&snaps, 20, 2);
    flip(&newest.path, 5_000);
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(loaded.meta, meta(10, 1));
    assert_eq!(loaded.body, body(10));
    assert_eq!(
        loaded.skipped,
        vec![snapshot::Skipped {
            path: newest.path.clone(),
            corrupt: true
        }]
    );
    let warned = warnings_naming(&newest.path);
    assert!(
        warned
            .iter()
            .any(|w| w.contains(&older.path.display().to_string())),
        "warning names the skipped and the used file: {:?}",
        warned
    );

    // Set aside, it is no longer listed, but its index still is.
    let broken = snapshot::set_aside(&newest.path).expect("set aside");
    assert!(broken.display().to_string().ends_with(".snap.broken"));
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!((loaded.meta, loaded.skipped), (meta(10, 1), Vec::new()));
    assert_eq!(
        snapshot::set_aside_snapshots(&snaps).expect("list"),
        vec![(20, broken.clone())]
    );

    // One that cannot be read is passed over too, but not as corrupt: it
    // may be good, and is not to be set aside.
    let unreadable = snaps.join(newest.path.file_name().expect("name"));
    fs::create_dir(&unreadable).expect("a directory in its place");
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(
        loaded.skipped,
        vec![snapshot::Skipped {
            path: unreadable.clone(),
            corrupt: false
        }]
    );

    // Nor does it count among the snapshots pruning keeps, and it does not
    // stop pruning (it used to fail every snapshot published after it).
    let newer = write_snapshot(&snaps, 30, 2);
    let newest = write_snapshot(&snaps, 40, 2);
    assert!(unreadable.is_dir());
    assert_eq!(
        snapshot_files(&snaps),
        vec![unreadable, broken, newer.path, newest.path],
        "the two newest snapshots beside what is no snapshot"
    );
}

/// A whole snapshot of another version (its CRC matches) is passed over as
/// one this build cannot read, not as corrupt: it is not set aside.
#[test]
fn a_snapshot_of_another_version_is_passed_over_but_not_as_corrupt() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    write_snapshot(&snaps, 10, 1);
    let newest = write_snapshot(&snaps, 20, 2);
    let mut bytes = fs::read(&newest.path).expect("read");
    let crc_at = bytes.len() - 4;
    bytes[8..12].copy_from_slice(&99u32.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
    fs::write(&newest.path, &bytes).expect("write");
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(loaded.meta, meta(10, 1));
    assert_eq!(
        loaded.skipped,
        vec![snapshot::Skipped {
            path: newest.path,
            corrupt: false
        }]
    );
}

#[test]
fn all_snapshots_corrupt_is_an_error_naming_the_newest() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let older = write_snapshot(&snaps, 10, 1);
    let newest = write_snapshot(&snaps, 20, 2);
    flip(&older.path, 100);
    flip(&newest.path, 2);
    let err = snapshot::load_latest(&snaps).expect_err("both corrupt");
    assert!(
        err.to_string().contains(&newest.path.display().to_string()),
        "{}",
        err
    );
}

#[test]
fn snapshot_streams_to_a_receiver_in_chunks_of_any_size() {
    let leader = tempdir();
    let info = write_snapshot(leader.path(), 42, 5);
    let reader = RawReader::open(&info.path).expect("open raw");
    assert_eq!(reader.len(), info.bytes);
    for chunk in [1usize, 3, 4, 5, 999, 1 << 20] {
        let follower = tempdir();
        let mut receiver = SnapshotReceiver::create(follower.path(), 42, 5).expect("create");
        let mut offset = 0;
        while offset < reader.len() {
            let bytes = reader.read_chunk(offset, chunk).expect("chunk");
            receiver.write_at(offset, &bytes).expect("write_at");
            offset += bytes.len() as u64;
        }
        assert!(reader.read_chunk(offset, chunk).expect("end").is_empty());
        let got = receiver.finish(reader.len()).expect("finish");
        assert_eq!(got.meta(), &meta(42, 5));
        let got = got.publish().expect("publish");
        let loaded = snapshot::load_latest(follower.path())
            .expect("load")
            .expect("some");
        assert_eq!(loaded.body, body(42), "chunk size {}", chunk);
        assert_eq!(snapshot_files(follower.path()), vec![got.path]);
    }
}

/// A snapshot received whole and checked stays under a temporary name,
/// synced, until the node installs it (`publish`): killed before that, a
/// start loads the snapshots the node had, all of them still there, and
/// deletes the received file as a leftover. It used to be published (and
/// prune the older ones) as soon as it was checked.
#[test]
fn a_received_snapshot_is_no_snapshot_a_start_takes_until_published() {
    let leader = tempdir();
    let raw = fs::read(write_snapshot(leader.path(), 42, 5).path).expect("read");
    let follower = tempdir();
    let snaps = follower.path().join("snapshot");
    let older: Vec<PathBuf> = [(10, 1), (20, 2)]
        .iter()
        .map(|&(i, t)| write_snapshot(&snaps, i, t).path)
        .collect();
    let received = receive(&snaps, 42, 5, &raw)
        .finish(raw.len() as u64)
        .expect("finish");
    let tmp = received.tmp_path().to_path_buf();
    assert!(
        tmp.display().to_string().ends_with(".tmp"),
        "{}",
        tmp.display()
    );
    let mut want = older.clone();
    want.push(tmp.clone());
    want.sort();
    assert_eq!(snapshot_files(&snaps), want, "published or pruned");

    // Killed here: a start takes the newest snapshot the node had.
    let crashed = tempdir();
    copy_dir(&snaps, crashed.path());
    let loaded = snapshot::load_latest(crashed.path())
        .expect("load")
        .expect("some");
    assert_eq!((loaded.meta, loaded.skipped), (meta(20, 2), Vec::new()));
    assert_eq!(
        snapshot::remove_temp_files(crashed.path()).expect("remove"),
        1
    );
    assert_eq!(snapshot_files(crashed.path()).len(), 2);

    // Installed: published under its final name, the newest, and pruned.
    let info = received.publish().expect("publish");
    assert_eq!(snapshot_files(&snaps), vec![older[1].clone(), info.path]);
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!((loaded.meta, loaded.body), (meta(42, 5), body(42)));

    // Dropped instead (refused, or not needed), it leaves nothing.
    let raw = fs::read(write_snapshot(leader.path(), 50, 5).path).expect("read");
    let unused = receive(&snaps, 50, 5, &raw)
        .finish(raw.len() as u64)
        .expect("finish");
    drop(unused);
    assert_eq!(
        snapshot_files(&snaps).len(),
        2,
        "{:?}",
        snapshot_files(&snaps)
    );
}

fn receive(dir: &Path, index: u64, term: u64, bytes: &[u8]) -> SnapshotReceiver {
    let mut receiver = SnapshotReceiver::create(dir, index, term).expect("create");
    receiver.write_at(0, bytes).expect("write_at");
    receiver
}

#[test]
fn receiver_rejects_bad_streams_and_leaves_no_file() {
    let leader = tempdir();
    let info = write_snapshot(leader.path(), 42, 5);
    let raw = fs::read(&info.path).expect("read");
    let follower = tempdir();

    let mut receiver = SnapshotReceiver::create(follower.path(), 42, 5).expect("create");
    receiver.write_at(0, &raw[..10]).expect("write_at");
    assert!(
        receiver.write_at(20, &raw[20..30]).is_err(),
        "a gap is out of order"
    );
    assert!(
        receiver.write_at(0, &raw[..10]).is_err(),
        "a repeat is out of order"
    );
    drop(receiver);

    let short = receive(follower.path(), 42, 5, &raw[..raw.len() - 1]);
    assert!(short.finish(raw.len() as u64).is_err(), "missing bytes");

    let mut damaged = raw.clone();
    damaged[500] ^= 1;
    let err = receive(follower.path(), 42, 5, &damaged)
        .finish(raw.len() as u64)
        .expect_err("bad crc");
    assert!(err.to_string().contains("receiving.tmp"), "{}", err);

    let wrong = receive(follower.path(), 43, 5, &raw)
        .finish(raw.len() as u64)
        .expect_err("header names another index");
    assert!(wrong.to_string().contains("index 42"), "{}", wrong);

    assert!(
        snapshot_files(follower.path()).is_empty(),
        "failed receives leave nothing"
    );
}

#[test]
fn unfinished_writer_leaves_nothing_and_temp_files_are_ignored() {
    let dir = tempdir();
    let mut writer = SnapshotWriter::create(dir.path(), &meta(5, 1)).expect("create");
    writer.write_all(b"half a snapshot").expect("write");
    drop(writer);
    assert!(snapshot_files(dir.path()).is_empty());

    write_snapshot(dir.path(), 5, 1);
    let stale = dir
        .path()
        .join("00000000000000000009-00000000000000000001.snap.writing.tmp");
    fs::write(&stale, b"crashed mid-write").expect("tmp");
    let loaded = snapshot::load_latest(dir.path())
        .expect("load")
        .expect("some");
    assert_eq!(loaded.meta.index, 5);
    assert_eq!(snapshot::remove_temp_files(dir.path()).expect("remove"), 1);
    assert!(!stale.exists());

    // One that cannot be removed (a directory) is passed over, not fatal:
    // the start that calls this has already repaired the log.
    let stuck = dir.path().join("x.tmp");
    fs::create_dir(&stuck).expect("mkdir");
    fs::write(&stale, b"crashed mid-write").expect("tmp");
    assert_eq!(snapshot::remove_temp_files(dir.path()).expect("remove"), 1);
    assert!(!stale.exists() && stuck.is_dir());
}
