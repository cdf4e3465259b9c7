//! Data dirs written through the storage library, then started with the
//! binary: snapshots corrupt, undecodable or set aside that the log must
//! still cover, and segments an interrupted compaction left behind.

use super::common::{bulk, wait_until_unlocked, Cluster};
use super::{
    flip_byte, info_u64, library_log, segment_first_indexes, snapshot_files,
    start_expecting_exit_status_1,
};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A data directory built with the library: entries 1..=300 in small
/// segments, snapshots at 100 and 250, the log compacted to about 200, then
/// the newest snapshot corrupted. The older snapshot plus the log no longer
/// cover index 101..=250, so the node must stop.
#[test]
fn a_corrupt_newest_snapshot_the_log_does_not_cover_stops_the_node() {
    let cluster = Cluster::new(1);
    let data_dir = cluster.data_dir(0).to_path_buf();
    let mut storage = library_node(&data_dir, 300, &[100, 250]);
    storage.drop_before(200).expect("drop");
    let first = storage.first_index();
    assert!(first > 101 && first <= 200, "first index {}", first);
    drop(storage);
    pad_segments(&data_dir);
    let newest = snapshot_files(&data_dir).pop().expect("a snapshot");
    flip_byte(&newest, 60);

    let stderr = start_expecting_exit_status_1(&cluster);
    assert!(
        stderr.contains("cannot be recovered")
            && stderr.contains(&data_dir.display().to_string())
            && stderr.contains("index 101..=250"),
        "{}",
        stderr
    );
    assert!(newest.exists(), "nothing is deleted");
}

/// A snapshot an earlier start set aside (`<name>.broken`) still counts:
/// the state reached its index once, so a log that no longer reaches it
/// (a second fault) stops the node rather than rolling acknowledged writes
/// back to the older snapshot.
#[test]
fn a_snapshot_set_aside_still_must_be_reached() {
    let cluster = Cluster::new(1);
    let data_dir = cluster.data_dir(0).to_path_buf();
    drop(library_node(&data_dir, 200, &[100, 250]));
    pad_segments(&data_dir);
    let newest = snapshot_files(&data_dir).pop().expect("a snapshot");
    raftkv::storage::snapshot::set_aside(&newest).expect("set aside");

    let stderr = start_expecting_exit_status_1(&cluster);
    let mut broken = newest.into_os_string();
    broken.push(".broken");
    assert!(
        stderr.contains("cannot be recovered")
            && stderr.contains("index 101..=250")
            && stderr.contains(&std::path::PathBuf::from(broken).display().to_string()),
        "{}",
        stderr
    );
}

/// A newest snapshot whose CRC matches but whose body does not decode is
/// passed over like one that fails its CRC, when the older one and the log
/// cover the state (it used to stop the node), and stops the node, naming
/// it, when they do not.
#[test]
fn a_newest_snapshot_whose_body_does_not_decode_is_passed_over_if_the_log_covers_it() {
    for log_covers in [true, false] {
        let mut cluster = Cluster::new(1);
        let data_dir = cluster.data_dir(0).to_path_buf();
        let mut storage = library_node(&data_dir, 300, &[100]);
        if !log_covers {
            storage.drop_before(200).expect("drop");
        }
        drop(storage);
        pad_segments(&data_dir);
        let garbled = garbled_snapshot(&data_dir, 250);
        if !log_covers {
            let stderr = start_expecting_exit_status_1(&cluster);
            assert!(
                stderr.contains("index 101..=250")
                    && stderr.contains(&garbled.display().to_string()),
                "{}",
                stderr
            );
            continue;
        }
        wait_until_unlocked(&data_dir);
        cluster.spawn(0);
        cluster.wait_for_leader(Duration::from_secs(15));
        let mut client = cluster.client(0);
        assert_eq!(client.cmd(&["GET", "k300"]), bulk("v"));
        assert_eq!(client.cmd(&["GET", "k1"]), bulk("v"));
        let log = cluster.log_text(0);
        assert!(
            log.lines().any(|l| l.contains("passing over snapshot")
                && l.contains(&garbled.display().to_string())
                && l.contains("does not decode")),
            "no warning naming {}",
            garbled.display()
        );
    }
}

/// A crash while the segments a compaction detached were being deleted (on
/// the snapshot thread, oldest first) leaves them on disk. The start
/// compacts the log as that snapshot would have: with a snapshot at 500
/// taken every 100 entries, it keeps from 401. It used to keep them until
/// the next snapshot, an interval away, which with large values (taken by
/// bytes, once as many bytes as the map holds were applied) put the data
/// dir past its bound by a whole interval of log.
#[test]
fn a_start_deletes_the_segments_an_interrupted_compaction_left() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--snapshot-entries".into(), "100".into()];
    let data_dir = cluster.data_dir(0).to_path_buf();
    drop(library_node(&data_dir, 550, &[400, 500]));
    pad_segments(&data_dir);
    let before = segment_first_indexes(&data_dir);
    assert!(before[0] == 1 && before.len() > 5, "segments {:?}", before);

    // The next snapshot is due at 600: none is taken while this test looks.
    wait_until_unlocked(&data_dir);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let after = segment_first_indexes(&data_dir);
    assert!(
        after[0] > 1 && after[0] <= 401 && after.get(1).is_none_or(|&next| next > 401),
        "the log should start in the segment holding 401: {:?}",
        after
    );
    let mut client = cluster.client(0);
    assert_eq!(client.cmd(&["GET", "k1"]), bulk("v"));
    assert_eq!(client.cmd(&["GET", "k550"]), bulk("v"));
    assert_eq!(info_u64(&mut client, "snapshot_index"), 500);

    // The log still reaches back to the older snapshot: a restart works,
    // and so would falling back to snapshot 400.
    assert_eq!(cluster.terminate(0), Some(0));
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(cluster.client(0).cmd(&["GET", "k550"]), bulk("v"));
    assert_eq!(segment_first_indexes(&data_dir), after);
}

/// A snapshot at `index` whose CRC matches but whose body is no key-value map.
fn garbled_snapshot(data_dir: &Path, index: u64) -> std::path::PathBuf {
    use raftkv::raft::SnapshotMeta;
    use raftkv::storage::snapshot::{self, SnapshotWriter};
    use std::io::Write as _;
    let meta = SnapshotMeta {
        index,
        term: 1,
        voters: vec![1],
        learners: Vec::new(),
    };
    let dir = snapshot::snapshot_dir(data_dir);
    let mut writer = SnapshotWriter::create(&dir, &meta).expect("writer");
    writer.write_all(b"not a key-value map").expect("write");
    writer.finish().expect("finish").path
}

/// A node's data dir written through the library: a log of `SET k<i> v`
/// for `1..=entries` at term 1, and a snapshot at each of `snapshots`
/// (of that many entries, whether or not the log holds them).
fn library_node(data_dir: &Path, entries: u64, snapshots: &[u64]) -> raftkv::storage::Storage {
    use raftkv::kv::{Command as KvCommand, KvStore};
    use raftkv::raft::{Entry, EntryKind, SnapshotMeta};
    use raftkv::storage::snapshot::{self, SnapshotWriter};
    use raftkv::storage::StorageOptions;

    let options = StorageOptions {
        segment_bytes: 2048,
        ..StorageOptions::default()
    };
    let set = |index: u64| {
        let mut data = Vec::new();
        KvCommand::Set(format!("k{}", index).into_bytes(), b"v".to_vec()).encode(&mut data);
        Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    };
    let logged: Vec<Entry> = (1..=entries).map(set).collect();
    let storage = library_log(data_dir, options, &logged);
    let dir = snapshot::snapshot_dir(data_dir);
    for &index in snapshots {
        let mut kv = KvStore::new();
        for entry in (1..=index).map(set) {
            kv.apply_encoded(&entry.data).expect("a valid entry");
        }
        let meta = SnapshotMeta {
            index,
            term: 1,
            voters: vec![1],
            learners: Vec::new(),
        };
        let mut writer = SnapshotWriter::create(&dir, &meta).expect("writer");
        kv.snapshot_view().write_to(&mut writer).expect("write");
        writer.finish().expect("finish");
    }
    storage
}

/// The binary creates every segment at the default size and refuses a
/// shorter one as cut short; pads the library's small segments with zeros
/// to that size, which is what its own preallocated segments hold past
/// their records.
fn pad_segments(data_dir: &Path) {
    for item in fs::read_dir(data_dir.join("log")).expect("log dir") {
        fs::OpenOptions::new()
            .write(true)
            .open(item.expect("entry").path())
            .and_then(|f| f.set_len(raftkv::storage::StorageOptions::default().segment_bytes))
            .expect("pad segment");
    }
}
