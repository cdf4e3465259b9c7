//! Snapshots with the real binary: a follower that was down while the log
//! was compacted catches up through InstallSnapshot; one that cannot use the
//! snapshot is sent it again after growing waits; a restart loads the
//! newest snapshot and replays only the log after it; a corrupt newest
//! snapshot is passed over, but stops the node when the log no longer covers
//! what it held, as does a directory whose snapshots are all corrupt (which
//! then changes no file, a torn tail included), or an entry whose payload
//! does not decode; a segment cut short inside a record is a torn tail;
//! 1,000,000 overwrites keep the data directory bounded. The stall and restart measurement with 1,000,000 keys is
//! `#[ignore]`d (timing-sensitive): run it with
//! `cargo test --release --test snapshot_process -- --ignored --nocapture --test-threads 1`.
//!
//! The tests are grouped by what they are about, one module each; this file
//! holds the helpers more than one of them uses.

mod bounded_data_dir;
#[path = "../common/mod.rs"]
mod common;
mod install_snapshot;
mod library_data_dirs;
mod log_records;
mod one_million_keys;
mod restarts;

use common::{wait_for, wait_until_unlocked, Client, Cluster};
use raftkv::kv::Reply;
use std::fs;
use std::path::Path;
use std::time::Duration;

fn info_u64(client: &mut Client, field: &str) -> u64 {
    let info = client.info();
    info.get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {}: {:?}", field, info))
}

/// Pipelines `SET <prefix><i> <value(i)>` for `i` in `range`, `batch` per
/// round trip, and checks every reply is `+OK`.
fn set_many(
    client: &mut Client,
    prefix: &str,
    range: std::ops::Range<u64>,
    batch: u64,
    value: impl Fn(u64) -> Vec<u8>,
) {
    let mut next = range.start;
    while next < range.end {
        let end = (next + batch).min(range.end);
        let mut out = Vec::new();
        for i in next..end {
            let key = format!("{}{}", prefix, i);
            raftkv::wire::resp::encode_request(&[b"SET", key.as_bytes(), &value(i)], &mut out);
        }
        client.send_raw(&out).expect("write pipeline");
        for i in next..end {
            match client.read() {
                Reply::Ok => {}
                other => panic!("SET {}{} answered {:?}", prefix, i, other),
            }
        }
        next = end;
    }
}

fn small_value(i: u64) -> Vec<u8> {
    format!("value-{}", i).into_bytes()
}

fn digest(cluster: &Cluster, i: usize) -> Reply {
    cluster.client(i).cmd(&["DEBUG", "DIGEST"])
}

fn snapshot_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(data_dir.join("snapshot"))
        .expect("snapshot dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read snapshot");
    bytes[offset as usize] ^= 0xff;
    fs::write(path, bytes).expect("write snapshot");
}

fn single_node(snapshot_entries: u64) -> Cluster {
    let mut cluster = Cluster::new(1);
    // Not the tests' 200 ms: a write's deadline is four election timeouts,
    // and with a disk loaded by other synced writes the first batch's sync
    // outlasted 800 ms (-TIMEOUT, once in 10 loaded runs of the binary).
    cluster.set_election_timeout_ms(2000);
    cluster.nodes[0].extra_args = vec!["--snapshot-entries".into(), snapshot_entries.to_string()];
    cluster.spawn(0);
    cluster.wait_for_settled_leader(Duration::from_secs(15));
    cluster
}

fn wait_snapshot_at_least(client: &mut Client, index: u64) {
    wait_for(Duration::from_secs(20), "a snapshot", || {
        let info = client.try_info()?;
        let at: u64 = info.get("snapshot_index")?.parse().ok()?;
        let busy = info.get("snapshot_in_progress")? != "0";
        (at >= index && !busy).then_some(())
    });
}

/// One node snapshotting every `snapshot_entries`, written keys `k0..k{keys}`
/// in pipelined batches of `batch`, once it holds a snapshot at `snapshot_at`
/// or later.
fn node_with_a_snapshot(
    snapshot_entries: u64,
    keys: u64,
    batch: u64,
    snapshot_at: u64,
) -> (Cluster, Client) {
    let cluster = single_node(snapshot_entries);
    let mut client = cluster.client(0);
    set_many(&mut client, "k", 0..keys, batch, small_value);
    wait_snapshot_at_least(&mut client, snapshot_at);
    (cluster, client)
}

/// Starts node 1 and returns its stderr once it exits with status 1; a node
/// that is still running after 20 s (it accepted the data dir) fails the test.
/// The data dir is often one the library just wrote: its lock must be gone
/// (see `wait_until_unlocked`), or the node refuses it for that instead.
fn start_expecting_exit_status_1(cluster: &Cluster) -> String {
    wait_until_unlocked(cluster.data_dir(0));
    let (code, stderr) = common::run_to_exit(&cluster.args(0), Duration::from_secs(20));
    assert_eq!(code, Some(1), "{}", stderr);
    stderr
}

/// Writes `entries` to a new data dir's log with the storage library, as a
/// node that voted for itself in term 1 would have; returns the storage.
fn library_log(
    data_dir: &Path,
    options: raftkv::storage::StorageOptions,
    entries: &[raftkv::raft::Entry],
) -> raftkv::storage::Storage {
    use raftkv::raft::HardState;
    let mut storage = raftkv::storage::Storage::open(data_dir, options).expect("open storage");
    storage.finish_recovery().expect("finish recovery");
    storage.append(entries).expect("append");
    storage.sync().expect("sync");
    storage
        .set_hard_state(HardState { term: 1, vote: 1 })
        .expect("hard state");
    storage
}

/// First indexes of the segment files under `data_dir/log`, in order.
fn segment_first_indexes(data_dir: &Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = fs::read_dir(data_dir.join("log"))
        .expect("log dir")
        .filter_map(|item| {
            let name = item.expect("entry").file_name();
            name.to_str()?.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    firsts.sort_unstable();
    firsts
}
