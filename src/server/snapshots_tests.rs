//! A follower's side of a received snapshot, with the helper thread.

use super::*;
use crate::kv::Command;
use crate::raft::{testnet, Node, RaftConfig, Restored};
use crate::storage::snapshot::{self, SnapshotWriter};
use mio::{Poll, Token, Waker};
use std::path::Path;
use std::sync::Arc;

/// Node 2 of voters {1, 2}, fresh (term 0, empty log).
fn follower() -> Replica<u32> {
    // As a server runs its core: with pre-vote and check-quorum.
    let config = RaftConfig {
        pre_vote: true,
        check_quorum: true,
        ..testnet::config(2, &[1, 2])
    };
    Replica::new(Node::new(config, Restored::default(), 7), KvStore::new())
}

/// The bytes of a snapshot file of a map holding one key, at `meta`.
fn snapshot_bytes(meta: &SnapshotMeta) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut kv = KvStore::new();
    kv.apply(&Command::Set(b"k".to_vec(), b"v".to_vec()));
    let mut writer = SnapshotWriter::create(dir.path(), meta).expect("create");
    kv.snapshot_view().write_to(&mut writer).expect("write");
    let info = writer.finish().expect("finish");
    std::fs::read(info.path).expect("read back")
}

/// A chunk from `from` of snapshot `index`/`term`.
fn chunk(from: NodeId, index: u64, term: u64, offset: u64, total: u64, data: &[u8]) -> Chunk<'_> {
    Chunk {
        from,
        index,
        term,
        offset,
        total,
        data,
    }
}

fn message(term: u64, body: MessageBody) -> Message {
    testnet::msg(1, 2, term, body)
}

/// The node's own snapshots, older than the one it is sent: the fallback
/// a start uses if the newest fails its checks.
const OLDER: [(u64, u64); 2] = [(4, 1), (6, 1)];

/// Writes the snapshots of [`OLDER`] into `dir`; returns their paths.
fn older_snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    OLDER
        .iter()
        .map(|&(index, term)| {
            let meta = SnapshotMeta {
                index,
                term,
                voters: vec![1, 2],
                learners: Vec::new(),
            };
            let mut writer = SnapshotWriter::create(dir, &meta).expect("create");
            KvStore::new()
                .snapshot_view()
                .write_to(&mut writer)
                .expect("write");
            writer.finish().expect("finish").path
        })
        .collect()
}

/// Every file in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|item| item.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// Waits (up to 10 s) until the files in `dir` are `want`: the helper
/// thread removes an unused received file after the loop hands it over.
fn wait_for_files(dir: &Path, want: &[std::path::PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(dir) != want {
        assert!(
            Instant::now() < deadline,
            "the snapshot directory holds {:?}, not {:?}",
            files_in(dir),
            want
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Node 2, holding the snapshots of [`OLDER`], is sent a snapshot at index
/// 10 of term 1 from node 1, whole; `meanwhile` runs while the helper thread
/// checks it (given the snapshot directory and the file's bytes), and the
/// loop collects what the thread did after it. Returns the snapshot
/// directory, what the loop kept decoded, the replica and what INFO shows.
fn receive_snapshot(
    meanwhile: impl FnOnce(&mut Replica<u32>, &mut Snapshots, &Path, &[u8]),
) -> (
    tempfile::TempDir,
    Option<Decoded>,
    Replica<u32>,
    SnapshotStats,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    older_snapshots(dir.path());
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let thread = Snapshotter::start(dir.path().to_path_buf(), waker).expect("thread");
    let mut snapshots = Snapshots::new(dir.path().to_path_buf(), thread, 0);
    let mut replica = follower();

    let meta = SnapshotMeta {
        index: 10,
        term: 1,
        voters: vec![1, 2],
        learners: Vec::new(),
    };
    let bytes = snapshot_bytes(&meta);
    snapshots.on_chunk(
        chunk(1, 10, 1, 0, bytes.len() as u64, &bytes),
        replica.node().leader_id(),
    );
    let install = message(1, MessageBody::InstallSnapshot { meta });
    assert!(snapshots.on_install_message(install, &replica).is_none());
    assert!(snapshots.is_finishing());
    meanwhile(&mut replica, &mut snapshots, dir.path(), &bytes);

    let mut decoded = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots.is_finishing() || snapshots.is_writing() {
        assert!(
            Instant::now() < deadline,
            "the snapshot thread never finished"
        );
        snapshots
            .collect(&mut replica, &mut decoded)
            .expect("collect");
        std::thread::sleep(Duration::from_millis(1));
    }
    (dir, decoded, replica, snapshots.stats.clone())
}

/// The core will not install it by the time it is checked: the file goes,
/// and the older snapshots stay. Before, the file was published (renamed
/// to its final name, and the older snapshots pruned to one) as soon as it
/// was checked, so removing it afterwards left a single fallback.
#[test]
fn a_received_snapshot_the_core_will_not_install_is_removed() {
    // While the file is checked, node 1 leads a newer term.
    let (dir, decoded, replica, stats) = receive_snapshot(|replica, _, _, _| {
        replica.step(message(
            2,
            MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
            },
        ))
    });
    assert_eq!(replica.status().snapshot_index, 0, "the core installed it");
    assert!(decoded.is_none(), "an unused map was kept");
    assert_eq!(
        (stats.received, stats.bytes),
        (0, 0),
        "INFO counts a removed snapshot as received and held"
    );
    let older: Vec<_> = OLDER
        .iter()
        .map(|&(index, term)| dir.path().join(snapshot::file_name(index, term)))
        .collect();
    wait_for_files(dir.path(), &older);
}

/// One the core installs is checked and synced but not yet published:
/// that is for the install, once the leader's term is stored. Until then
/// the older snapshots are all there.
#[test]
fn a_received_snapshot_the_core_installs_is_kept() {
    let (dir, decoded, _, stats) = receive_snapshot(|_, _, _, _| {});
    let decoded = decoded.expect("kept decoded for the install");
    let held = std::fs::metadata(decoded.file.tmp_path())
        .map(|m| m.len())
        .expect("the received snapshot is there");
    assert_eq!((stats.received, stats.bytes), (1, held));
    assert_eq!((decoded.file.meta().index, decoded.kv.len()), (10, 1));
    let published = dir.path().join(snapshot::file_name(10, 1));
    let mut want: Vec<_> = OLDER
        .iter()
        .map(|&(index, term)| dir.path().join(snapshot::file_name(index, term)))
        .collect();
    want.push(decoded.file.tmp_path().to_path_buf());
    assert_eq!(files_in(dir.path()), want, "published before the install");

    // The install publishes it, and prunes.
    crate::storage::synced::take();
    let info = decoded.file.publish().expect("publish");
    assert!(
        crate::storage::synced::take().contains(&dir.path().to_path_buf()),
        "the new name is not made durable"
    );
    assert_eq!((info.path.clone(), info.bytes), (published.clone(), held));
    assert_eq!(files_in(dir.path()), vec![want[1].clone(), published]);
}

struct MemDisk;

impl crate::replica::Durable for MemDisk {
    fn append(&mut self, _: &[crate::raft::Entry]) -> Result<(), StorageError> {
        Ok(())
    }
    fn set_hard_state(&mut self, _: crate::raft::HardState) -> Result<(), StorageError> {
        Ok(())
    }
    fn start_sync(&mut self) -> Result<crate::replica::SyncStart, StorageError> {
        Ok(crate::replica::SyncStart::Synced)
    }
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError> {
        panic!("no snapshot install expected, got {:?}", meta);
    }
}

struct Nowhere;

impl crate::replica::Transport for Nowhere {
    fn send(&mut self, _: Message) {}
    fn flush(&mut self) {}
}

#[test]
fn an_unused_received_snapshot_does_not_remove_the_nodes_own_of_the_same_name() {
    // While the file is checked, the log reaches index 10 (term 1) by
    // entries, they are applied, and the node takes its own snapshot there:
    // a file of the same name, written by the same thread after the check.
    let (dir, decoded, replica, _) = receive_snapshot(|replica, snapshots, dir, received| {
        replica.set_snapshot_policy(10, 0);
        let entries = (1..=10)
            .map(|index| crate::raft::Entry {
                index,
                term: 1,
                kind: crate::raft::EntryKind::Noop,
                data: Vec::new().into(),
            })
            .collect();
        replica.step(message(
            1,
            MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries,
                commit: 10,
            },
        ));
        let mut done = Vec::new();
        for _ in 0..3 {
            replica
                .handle_ready(&mut MemDisk, &mut Nowhere, &mut done)
                .expect("in-memory ready");
        }
        assert_eq!(replica.status().commit_index, 10);
        snapshots.maybe_start(replica);
        assert!(snapshots.is_writing(), "no snapshot of its own was due");
        // Both jobs done before the loop looks: the published file is the
        // node's own (an empty map), not the received one.
        let published = dir.join(snapshot::file_name(10, 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read(&published).map_or(true, |now| now == received) {
            assert!(
                Instant::now() < deadline,
                "the own snapshot was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert!(decoded.is_none(), "an unused map was kept");
    assert_eq!(replica.status().snapshot_index, 10, "its own snapshot");
    let published = dir.path().join(snapshot::file_name(10, 1));
    assert!(
        published.exists(),
        "the node's own snapshot {} was removed as an unused received one",
        published.display()
    );
}

/// The temporary files of snapshots being received in `dir`.
fn receiving_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|item| item.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".receiving.tmp"))
        .collect();
    files.sort();
    files
}

/// A follower ready to receive, its snapshot directory and the bytes of a
/// snapshot at index 10 of term 1.
fn receiving_follower(
    voters: &[NodeId],
) -> (
    tempfile::TempDir,
    Snapshots,
    Replica<u32>,
    SnapshotMeta,
    Vec<u8>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let thread = Snapshotter::start(dir.path().to_path_buf(), waker).expect("thread");
    let snapshots = Snapshots::new(dir.path().to_path_buf(), thread, 0);
    let config = RaftConfig {
        pre_vote: true,
        check_quorum: true,
        ..testnet::config(2, voters)
    };
    let replica = Replica::new(Node::new(config, Restored::default(), 7), KvStore::new());
    let meta = SnapshotMeta {
        index: 10,
        term: 1,
        voters: voters.to_vec(),
        learners: Vec::new(),
    };
    let bytes = snapshot_bytes(&meta);
    (dir, snapshots, replica, meta, bytes)
}

/// Node 1 dies part-way through streaming a snapshot, and node 3 leads the
/// next term: node 1's stream will never continue (a new leader streams
/// from offset 0), so its part-written temporary file goes. Kept, it held
/// up to a snapshot's size on disk until some later stream or a restart,
/// beyond the data directory's bound (two snapshots and one being written),
/// and the new leader may well catch the node up from its log.
#[test]
fn a_partly_received_snapshot_from_a_node_no_longer_leading_is_dropped() {
    let (dir, mut snapshots, mut replica, _, bytes) = receiving_follower(&[1, 2, 3]);
    let half = bytes.len() / 2;
    snapshots.on_chunk(
        chunk(1, 10, 1, 0, bytes.len() as u64, &bytes[..half]),
        replica.node().leader_id(),
    );
    assert_eq!(receiving_files(dir.path()).len(), 1, "the stream began");
    // Still node 1's stream while node 1 leads (or no leader is known).
    let mut decoded = None;
    snapshots
        .collect(&mut replica, &mut decoded)
        .expect("collect");
    replica.step(testnet::msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    snapshots
        .collect(&mut replica, &mut decoded)
        .expect("collect");
    assert_eq!(
        receiving_files(dir.path()).len(),
        1,
        "a live stream dropped"
    );
    // Node 3 leads term 2.
    replica.step(testnet::msg(
        3,
        2,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    assert_eq!(replica.node().leader_id(), 3);
    snapshots
        .collect(&mut replica, &mut decoded)
        .expect("collect");
    assert_eq!(
        receiving_files(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "the abandoned stream's file is left"
    );
}

/// The whole file of a snapshot arrives, but by its InstallSnapshot the
/// node no longer needs it (here: it follows a newer term of the same
/// leader, which would stream again from offset 0). The received bytes go:
/// kept, a full snapshot's size stayed on disk until a later stream or a
/// restart.
#[test]
fn a_received_file_whose_message_the_core_answers_without_it_is_dropped() {
    let (dir, mut snapshots, mut replica, meta, bytes) = receiving_follower(&[1, 2]);
    snapshots.on_chunk(
        chunk(1, 10, 1, 0, bytes.len() as u64, &bytes),
        replica.node().leader_id(),
    );
    replica.step(message(
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    let install = message(1, MessageBody::InstallSnapshot { meta });
    assert!(
        snapshots.on_install_message(install, &replica).is_some(),
        "a message of an older term goes to the core"
    );
    assert!(!snapshots.is_finishing());
    assert_eq!(
        receiving_files(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "the unneeded file is left"
    );
}

/// Node 1 leads and streams a snapshot; node 3, which led an earlier term
/// and has not yet learned it no longer does, still sends the rest of a
/// stream it began then. Its chunks continue nothing, and go; node 1's
/// stream goes on. Before, each such chunk dropped node 1's stream, whose
/// InstallSnapshot was then dropped for want of its bytes, and node 1 sent
/// the whole snapshot again after a wait, for as long as node 3 kept on.
#[test]
fn a_chunk_from_another_node_mid_stream_does_not_drop_the_stream() {
    let (dir, mut snapshots, mut replica, meta, bytes) = receiving_follower(&[1, 2, 3]);
    let total = bytes.len() as u64;
    let half = bytes.len() / 2;
    snapshots.on_chunk(
        chunk(1, 10, 1, 0, total, &bytes[..half]),
        replica.node().leader_id(),
    );
    // Node 3's stale stream: another snapshot, or the same one, mid-way.
    snapshots.on_chunk(
        chunk(3, 8, 1, 4096, 1 << 20, &[0u8; 512]),
        replica.node().leader_id(),
    );
    snapshots.on_chunk(
        chunk(3, 10, 1, half as u64, total, &bytes[half..]),
        replica.node().leader_id(),
    );
    snapshots.on_chunk(
        chunk(1, 10, 1, half as u64, total, &bytes[half..]),
        replica.node().leader_id(),
    );
    let install = message(1, MessageBody::InstallSnapshot { meta });
    assert!(snapshots.on_install_message(install, &replica).is_none());
    assert!(
        snapshots.is_finishing(),
        "node 1's stream was dropped by node 3's chunks"
    );
    let mut decoded = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots.is_finishing() {
        assert!(Instant::now() < deadline, "never finished");
        snapshots
            .collect(&mut replica, &mut decoded)
            .expect("collect");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(replica.status().snapshot_index, 10, "not installed");
    let decoded = decoded.expect("kept decoded for the install");
    assert!(decoded.file.tmp_path().starts_with(dir.path()));
    assert_eq!(decoded.file.meta().index, 10);
}

/// The same leader's newer stream of the same snapshot, part-way (begun on
/// a connection opened since), is not dropped by the message of the older
/// one, whose bytes had all arrived before it.
#[test]
fn a_message_not_needed_leaves_a_newer_stream_part_way() {
    let (dir, mut snapshots, mut replica, meta, bytes) = receiving_follower(&[1, 2]);
    let half = bytes.len() / 2;
    snapshots.on_chunk(
        chunk(1, 10, 1, 0, bytes.len() as u64, &bytes[..half]),
        replica.node().leader_id(),
    );
    replica.step(message(
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    let install = message(1, MessageBody::InstallSnapshot { meta });
    assert!(snapshots.on_install_message(install, &replica).is_some());
    assert_eq!(
        receiving_files(dir.path()).len(),
        1,
        "the newer stream went"
    );
}

/// Node 1 leads term 2 and streams a snapshot; node 3, which led term 1 and
/// has not learned it no longer does, begins a stream of its own (a held
/// repeat came due, say). The node it follows is node 1, so node 3's stream
/// is not begun and node 1's goes on to be installed. Before, node 3's first
/// chunk replaced node 1's stream, which then lacked its bytes: its
/// InstallSnapshot was dropped, and node 1 streamed the whole snapshot
/// again after a wait.
#[test]
fn a_stream_begun_by_a_node_that_does_not_lead_leaves_the_leaders_stream() {
    let (_dir, mut snapshots, mut replica, meta, bytes) = receiving_follower(&[1, 2, 3]);
    replica.step(testnet::msg(
        1,
        2,
        2,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    assert_eq!(replica.node().leader_id(), 1);
    let total = bytes.len() as u64;
    let half = bytes.len() / 2;
    let leader = replica.node().leader_id();
    snapshots.on_chunk(chunk(1, 10, 1, 0, total, &bytes[..half]), leader);
    // Node 3's stream from offset 0: the same snapshot, and an older one.
    snapshots.on_chunk(chunk(3, 10, 1, 0, total, &bytes[..half]), leader);
    snapshots.on_chunk(chunk(3, 8, 1, 0, 1 << 20, &[0u8; 512]), leader);
    snapshots.on_chunk(chunk(1, 10, 1, half as u64, total, &bytes[half..]), leader);
    let install = testnet::msg(1, 2, 2, MessageBody::InstallSnapshot { meta });
    assert!(snapshots.on_install_message(install, &replica).is_none());
    assert!(
        snapshots.is_finishing(),
        "node 1's stream was replaced by node 3's"
    );
    let mut decoded = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots.is_finishing() {
        assert!(Instant::now() < deadline, "never finished");
        snapshots
            .collect(&mut replica, &mut decoded)
            .expect("collect");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(replica.status().snapshot_index, 10, "not installed");
}
