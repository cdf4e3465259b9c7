//! Tests of writing, receiving and publishing snapshot files, apart so that
//! the module reads in one sitting.

use super::*;

#[test]
fn a_large_snapshot_written_in_pieces_of_any_size_loads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = SnapshotMeta {
        index: 7,
        term: 2,
        voters: vec![1, 2, 3],
        learners: Vec::new(),
    };
    let body: Vec<u8> = (0..3_000_000u32).map(|k| (k % 251) as u8).collect();
    let mut writer = SnapshotWriter::create(dir.path(), &meta).expect("create");
    let (small, large) = body.split_at(1_000_000);
    for chunk in small.chunks(10_007).chain(large.chunks(300_007)) {
        writer.write_all(chunk).expect("write");
    }
    writer.finish().expect("finish");

    let loaded = load_latest(dir.path()).expect("load").expect("a snapshot");
    assert_eq!(loaded.meta, meta);
    assert_eq!(loaded.body, body);
}

/// A received snapshot's bytes are synced when it is finished, before
/// anything can install it, and its final name when it is published.
#[test]
fn a_received_snapshot_is_synced_when_finished_and_its_name_when_published() {
    let leader = tempfile::tempdir().expect("tempdir");
    let meta = SnapshotMeta {
        index: 7,
        term: 2,
        voters: vec![1],
        learners: Vec::new(),
    };
    let mut writer = SnapshotWriter::create(leader.path(), &meta).expect("create");
    writer.write_all(b"state").expect("write");
    let bytes = fs::read(writer.finish().expect("finish").path).expect("read");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = SnapshotReceiver::create(dir.path(), 7, 2).expect("create");
    receiver.write_at(0, &bytes).expect("write");
    let receiving = receiver.tmp_path.clone();
    super::super::synced::take();
    let received = receiver.finish(bytes.len() as u64).expect("finish");
    assert_eq!(super::super::synced::take(), vec![receiving]);
    let info = received.publish().expect("publish");
    assert_eq!(super::super::synced::take(), vec![dir.path().to_path_buf()]);
    assert_eq!(fs::read(info.path).expect("read"), bytes);
}
