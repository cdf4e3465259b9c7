//! A follower installing a snapshot received from the leader, on a real
//! data dir, killed at each step: the data dir is copied as it stands at
//! that instant (what `kill -9` leaves) and started from, as the server
//! starts (`recover::check` then `recover::finish`).
//!
//! The follower was started from its own snapshot at index 6 (it holds one
//! at 4 too) and the log after it, in term 1; the leader, of term 3, sends
//! it a snapshot at index 10 of term 2. What each instant must restart to:
//! - received and checked, not installed: the old state, all of it (the
//!   received file is a temp file the start deletes, and pruned nothing);
//! - the leader's term stored, the snapshot not yet published: the old
//!   state, at the new term;
//! - published, the log not yet reset: the new snapshot (the log does not
//!   continue it, so the start empties it);
//! - installed: the new snapshot, the log continuing at 11.
//!
//! In none is a snapshot published with a term above the stable file's.

use super::recover;
use super::snapshots::{Chunk, Snapshots};
use super::snapshotter::Snapshotter;
use super::DiskLog;
use crate::kv::{Command, KvStore};
use crate::raft::{
    testnet, Entry, EntryKind, HardState, Message, MessageBody, Node, RaftConfig, SnapshotMeta,
};
use crate::replica::{Durable, Replica, SyncStart, Transport};
use crate::storage::snapshot::{self, SnapshotWriter};
use crate::storage::{Storage, StorageError, StorageOptions};
use mio::{Poll, Token, Waker};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn options() -> StorageOptions {
    StorageOptions {
        segment_bytes: 1 << 20,
        check_payload: None,
        ..StorageOptions::default()
    }
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        voters: vec![1, 2],
        learners: Vec::new(),
    }
}

/// A map holding only `key`.
fn map_with(key: &[u8]) -> KvStore {
    let mut kv = KvStore::new();
    kv.apply(&Command::Set(key.to_vec(), b"v".to_vec()));
    kv
}

fn write_snapshot(dir: &Path, meta: &SnapshotMeta, kv: &KvStore) -> PathBuf {
    let mut writer = SnapshotWriter::create(dir, meta).expect("create");
    kv.snapshot_view().write_to(&mut writer).expect("write");
    writer.finish().expect("finish").path
}

/// The follower's data dir: term 1, entries 1..=8 of term 1, its own
/// snapshots at 4 and 6 (the map holding `old`).
fn follower_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut storage = Storage::open(dir.path(), options()).expect("open");
    storage.finish_recovery().expect("finish");
    storage
        .set_hard_state(HardState { term: 1, vote: 1 })
        .expect("stable");
    let entries: Vec<Entry> = (1..=8)
        .map(|index| Entry {
            index,
            term: 1,
            kind: EntryKind::Noop,
            data: Vec::new().into(),
        })
        .collect();
    storage.append(&entries).expect("append");
    storage.sync().expect("sync");
    let snapshots = snapshot::snapshot_dir(dir.path());
    for index in [4, 6] {
        write_snapshot(&snapshots, &meta(index, 1), &map_with(b"old"));
    }
    dir
}

/// A start from `data_dir` as the server makes it.
struct Started {
    storage: Storage,
    recovered: recover::Recovered,
}

fn start(data_dir: &Path) -> Started {
    let mut storage = Storage::open(data_dir, options()).expect("open");
    let checked = match recover::check(data_dir, &storage) {
        Ok(checked) => checked,
        Err(err) => panic!("start refused: {err}"),
    };
    let recovered = match recover::finish(data_dir, &mut storage, checked, 2) {
        Ok(recovered) => recovered,
        Err(err) => panic!("start failed: {err}"),
    };
    Started { storage, recovered }
}

/// Copies the data dir as it stands now, as a crash would leave it.
fn crash_copy(data_dir: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for item in std::fs::read_dir(from).expect("list") {
            let path = item.expect("entry").path();
            let target = to.join(path.file_name().expect("name"));
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    copy(data_dir, dir.path());
    dir
}

/// The snapshot files (final names) in a data dir, as (index, term).
fn published(data_dir: &Path) -> Vec<(u64, u64)> {
    let mut found: Vec<(u64, u64)> = std::fs::read_dir(snapshot::snapshot_dir(data_dir))
        .expect("list")
        .filter_map(|item| snapshot::parse_path(&item.expect("entry").path()))
        .collect();
    found.sort();
    found
}

/// Every file in the snapshot directory.
fn snapshot_dir_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(snapshot::snapshot_dir(data_dir))
        .expect("list")
        .map(|item| {
            item.expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The invariant the start's pass-over used to make up for: no snapshot
/// under a final name has a term above the stable file's.
fn assert_no_snapshot_above_the_stored_term(data_dir: &Path, when: &str) {
    let storage = Storage::open(data_dir, options()).expect("open");
    let stored = storage.hard_state().term;
    for (index, term) in published(data_dir) {
        assert!(
            term <= stored,
            "{when}: snapshot {index}/{term} published above the stored term {stored}"
        );
    }
}

/// Starts from a crash copy of `data_dir`: the snapshot it starts from, the
/// map's key, the stored term and the log's range.
fn restart_from(data_dir: &Path, when: &str) -> (u64, Vec<u8>, u64, (u64, u64)) {
    assert_no_snapshot_above_the_stored_term(data_dir, when);
    let started = start(data_dir);
    let kv = &started.recovered.kv;
    let key = [b"old".as_slice(), b"new"]
        .into_iter()
        .find(|key| kv.get(key).is_some())
        .map_or_else(Vec::new, <[u8]>::to_vec);
    assert_eq!(kv.len(), 1, "{when}: a map of one key");
    assert!(
        !snapshot_dir_files(data_dir)
            .iter()
            .any(|name| name.ends_with(".tmp")),
        "{when}: the start left a temp file: {:?}",
        snapshot_dir_files(data_dir)
    );
    (
        started.recovered.restored.snapshot.index,
        key,
        started.recovered.restored.hard_state.term,
        (started.storage.first_index(), started.storage.last_index()),
    )
}

struct Nowhere;

impl Transport for Nowhere {
    fn send(&mut self, _: Message) {}
    fn flush(&mut self) {}
}

/// The disk, copied as a crash would leave it when the install begins (the
/// batch's hard state stored, nothing of the snapshot done yet).
struct CrashAtInstall<'a> {
    disk: &'a mut DiskLog,
    copy: Option<tempfile::TempDir>,
}

impl Durable for CrashAtInstall<'_> {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.disk.append(entries)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.disk.set_hard_state(hard_state)
    }
    fn start_sync(&mut self) -> Result<SyncStart, StorageError> {
        self.disk.start_sync()
    }
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError> {
        self.copy = Some(crash_copy(self.disk.storage.data_dir()));
        self.disk.install_snapshot(meta)
    }
}

#[test]
fn a_crash_at_each_step_of_installing_a_received_snapshot_restarts_to_a_whole_state() {
    let data_dir = follower_data_dir();
    let started = start(data_dir.path());
    assert_eq!(started.recovered.restored.snapshot.index, 6);
    let config = RaftConfig {
        pre_vote: true,
        check_quorum: true,
        ..testnet::config(2, &[1, 2])
    };
    let mut replica: Replica<u32> = Replica::new(
        Node::new(config, started.recovered.restored, 7),
        started.recovered.kv,
    );
    let snapshot_dir = snapshot::snapshot_dir(data_dir.path());
    let mut disk = DiskLog {
        storage: started.storage,
        fsync: true,
        snapshot_dir: snapshot_dir.clone(),
        decoded: None,
        syncer: None,
    };
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let thread = Snapshotter::start(snapshot_dir.clone(), waker).expect("thread");
    let mut snapshots = Snapshots::new(snapshot_dir.clone(), thread, 0);

    // The leader's snapshot, streamed whole, and its message.
    let leaders = tempfile::tempdir().expect("temp dir");
    let sent = std::fs::read(write_snapshot(
        leaders.path(),
        &meta(10, 2),
        &map_with(b"new"),
    ))
    .expect("read");
    let chunk = Chunk {
        from: 1,
        index: 10,
        term: 2,
        offset: 0,
        total: sent.len() as u64,
        data: &sent,
    };
    snapshots.on_chunk(chunk, replica.node().leader_id());
    let install = testnet::msg(1, 2, 3, MessageBody::InstallSnapshot { meta: meta(10, 2) });
    assert!(snapshots.on_install_message(install, &replica).is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots.is_finishing() {
        assert!(Instant::now() < deadline, "never finished");
        snapshots
            .collect(&mut replica, &mut disk.decoded)
            .expect("collect");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(disk.decoded.is_some(), "not kept for the install");

    // Killed once the file is checked and the core stepped its message.
    let received = crash_copy(data_dir.path());
    assert_eq!(
        restart_from(received.path(), "received"),
        (6, b"old".to_vec(), 1, (1, 8)),
        "a crash before the install restarts from the old state"
    );
    assert_eq!(published(received.path()), vec![(4, 1), (6, 1)]);

    let mut crash = CrashAtInstall {
        disk: &mut disk,
        copy: None,
    };
    let mut done = Vec::new();
    let outcome = replica
        .handle_ready(&mut crash, &mut Nowhere, &mut done)
        .expect("ready");
    assert_eq!(outcome.snapshot_installed, Some(meta(10, 2)));

    // Killed as the install began: the term stored, nothing else.
    let term_stored = crash.copy.take().expect("copied at the install");
    let published_not_reset = crash_copy(term_stored.path());
    assert_eq!(
        restart_from(term_stored.path(), "term stored"),
        (6, b"old".to_vec(), 3, (1, 8)),
        "a crash before the snapshot is published restarts from the old state"
    );
    assert_eq!(published(term_stored.path()), vec![(4, 1), (6, 1)]);

    // Killed between the rename and the log's reset (made here from the
    // copy above: the received file under its final name).
    let dir = snapshot::snapshot_dir(published_not_reset.path());
    let tmp = snapshot_dir_files(published_not_reset.path())
        .into_iter()
        .find(|name| name.ends_with(".received.tmp"))
        .expect("the received file, synced, under a temp name");
    std::fs::rename(dir.join(tmp), dir.join(snapshot::file_name(10, 2))).expect("rename");
    assert_eq!(
        restart_from(published_not_reset.path(), "published"),
        (10, b"new".to_vec(), 3, (11, 10)),
        "a crash before the log's reset restarts from the new snapshot"
    );

    // Killed once installed.
    let installed = crash_copy(data_dir.path());
    assert_eq!(published(installed.path()), vec![(6, 1), (10, 2)]);
    assert_eq!(
        restart_from(installed.path(), "installed"),
        (10, b"new".to_vec(), 3, (11, 10)),
        "a crash after the install restarts from the new snapshot"
    );
}
