//! Log records found wrong at start: a segment cut short inside a record cut
//! as a torn tail, a torn tail left as it was when the start is refused, and
//! an entry whose payload does not decode stopping the node with its file.

use super::common::{self, bulk, Cluster};
use super::{
    flip_byte, library_log, node_with_a_snapshot, snapshot_files, start_expecting_exit_status_1,
};
use raftkv::kv::Reply;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// `(start, end)` of every record in a segment file.
fn record_spans(segment: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(segment).expect("read segment");
    let mut spans = Vec::new();
    let mut at = 0;
    while let Ok(view) = raftkv::storage::record::decode(&bytes[at..]) {
        spans.push((at, at + view.len));
        at += view.len;
    }
    spans
}

/// A newest segment cut short inside a record (here in the middle of record
/// 3) is, per SPEC §4, a torn write: the last record incomplete with
/// nothing after it. The node cuts it with a warning naming the file and the
/// record's offset, brings the file back to its created size, and starts
/// from its snapshot (the log, now behind the snapshot, is emptied).
#[test]
fn a_segment_cut_short_inside_a_record_is_cut_as_a_torn_tail() {
    let (mut cluster, _) = node_with_a_snapshot(100, 120, 10, 100);
    cluster.kill(0);
    let segment = cluster.data_dir(0).join("log/00000000000000000001.seg");
    let (start, end) = record_spans(&segment)[2];
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len((start + end) as u64 / 2))
        .expect("truncate the segment");

    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let log = cluster.log_text(0);
    let at = format!(
        "{} at offset {}: cutting torn tail",
        segment.display(),
        start
    );
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains(&at)),
        "no warning '{}' in:\n{}",
        at,
        log
    );
    let mut client = cluster.client(0);
    assert_eq!(client.cmd_retry(&["SET", "after", "1"]), Reply::Ok);
    assert_eq!(client.cmd(&["GET", "after"]), bulk("1"));
    let newest = fs::read_dir(cluster.data_dir(0).join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .max()
        .expect("a segment");
    assert_eq!(
        fs::metadata(&newest).expect("stat").len(),
        raftkv::storage::StorageOptions::default().segment_bytes
    );
}

/// A torn tail found at start is only cut once the rest of recovery has
/// succeeded: with no valid snapshot the node stops, and every file (the
/// lock file aside, which names the last pid) is as it was, the torn
/// segment included. Torn by a flipped byte in the last record (which the
/// open used to cut at once) and by a cut inside it.
#[test]
fn a_start_refused_after_finding_a_torn_tail_changes_no_file() {
    for how in ["flip", "cut"] {
        let (mut cluster, _) = node_with_a_snapshot(1000, 1200, 100, 1000);
        cluster.kill(0);
        let data_dir = cluster.data_dir(0).to_path_buf();
        for file in snapshot_files(&data_dir) {
            flip_byte(&file, 40);
        }
        let segment = fs::read_dir(data_dir.join("log"))
            .expect("log dir")
            .map(|e| e.expect("entry").path())
            .max()
            .expect("a segment");
        let &(start, end) = record_spans(&segment).last().expect("records");
        if how == "flip" {
            flip_byte(&segment, ((start + end) / 2) as u64);
        } else {
            fs::OpenOptions::new()
                .write(true)
                .open(&segment)
                .and_then(|f| f.set_len(end as u64 - 3))
                .expect("truncate the segment");
        }
        let before = common::contents(&data_dir, &["lock"]);
        let stderr = start_expecting_exit_status_1(&cluster);
        assert!(
            stderr.contains("cannot be recovered") && stderr.contains("no valid snapshot"),
            "{}: {}",
            how,
            stderr
        );
        assert!(
            common::contents(&data_dir, &["lock"]) == before,
            "{}: the refused start changed files",
            how
        );
    }
}

/// A data directory built with the library whose log holds `records`
/// (kind, payload) from index 1, in term 1, in a segment of the size the
/// binary creates. Returns the segment's path.
fn data_dir_with_log(
    cluster: &Cluster,
    records: &[(raftkv::raft::EntryKind, &[u8])],
) -> std::path::PathBuf {
    use raftkv::raft::Entry;
    use raftkv::storage::StorageOptions;
    let data_dir = cluster.data_dir(0);
    let entries: Vec<Entry> = records
        .iter()
        .enumerate()
        .map(|(k, (kind, payload))| Entry {
            index: k as u64 + 1,
            term: 1,
            kind: *kind,
            data: payload.to_vec().into(),
        })
        .collect();
    library_log(data_dir, StorageOptions::default(), &entries);
    data_dir.join("log").join("00000000000000000001.seg")
}

/// A record with a valid CRC whose payload does not decode as its kind says
/// (a membership change `01 09`, a command `01 09`) once panicked in the
/// core, or stopped the node only on applying it, without naming the file.
#[test]
fn an_entry_whose_payload_does_not_decode_stops_the_node_naming_the_file() {
    use raftkv::kv::Command as KvCommand;
    use raftkv::raft::EntryKind;
    let mut set = Vec::new();
    KvCommand::Set(b"k".to_vec(), b"v".to_vec()).encode(&mut set);
    for kind in [EntryKind::ConfChange, EntryKind::Normal] {
        let cluster = Cluster::new(1);
        let segment = data_dir_with_log(
            &cluster,
            &[(EntryKind::Normal, &set), (kind, &[0x01, 0x09])],
        );
        let before = fs::read(&segment).expect("read segment");
        let offset = raftkv::storage::record::encoded_len(set.len());
        let stderr = start_expecting_exit_status_1(&cluster);
        assert!(
            stderr.contains(&segment.display().to_string())
                && stderr.contains(&format!("at offset {}", offset))
                && !stderr.contains("panicked"),
            "{:?}: {}",
            kind,
            stderr
        );
        assert!(fs::read(&segment).expect("read segment") == before);
    }
}
