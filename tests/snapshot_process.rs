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

mod common;

use common::{bulk, wait_for, wait_until_unlocked, Client, Cluster, Resume};
use raftkv::kv::Reply;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Bytes on disk under `path` (segments are sparse); a file deleted
/// meanwhile (a segment the snapshot thread removes) counts as nothing.
fn bytes_on_disk(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::read_dir(path).map_or(0, |items| {
            items
                .filter_map(Result::ok)
                .map(|item| bytes_on_disk(&item.path()))
                .sum()
        }),
        Ok(meta) => meta.blocks() * 512,
        Err(_) => 0,
    }
}

/// A node's data dir on disk in two parts: the log segments a compaction
/// detached (wholly below the node's first log index), which the snapshot
/// thread deletes and a loaded disk can hold up, and everything else.
struct DataDirUsage {
    kept: u64,
    detached: u64,
    detached_segments: usize,
}

fn data_dir_usage(client: &mut Client, data_dir: &Path) -> DataDirUsage {
    loop {
        let first_index = info_u64(client, "first_log_index");
        let firsts = segment_first_indexes(data_dir);
        let log = data_dir.join("log");
        let mut usage = DataDirUsage {
            kept: 0,
            detached: 0,
            detached_segments: 0,
        };
        for (i, first) in firsts.iter().enumerate() {
            let bytes = bytes_on_disk(&log.join(format!("{:020}.seg", first)));
            if firsts.get(i + 1).is_some_and(|&next| next <= first_index) {
                usage.detached += bytes;
                usage.detached_segments += 1;
            } else {
                usage.kept += bytes;
            }
        }
        for item in fs::read_dir(data_dir).expect("read the data dir").flatten() {
            if item.file_name() != "log" {
                usage.kept += bytes_on_disk(&item.path());
            }
        }
        // A compaction meanwhile moved the line between the two parts.
        if info_u64(client, "first_log_index") == first_index {
            return usage;
        }
    }
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

/// Three running nodes that snapshot every `entries` entries: the cluster,
/// its leader and a follower (indexes).
fn three_nodes_snapshotting_every(entries: u64) -> (Cluster, usize, usize) {
    let mut cluster = Cluster::new(3);
    // Not the tests' 200 ms: loaded (load 17-19, the binary's tests two at a
    // time), writes came back -TIMEOUT at the deadline of four of them, and
    // an election moved the leadership, and the snapshots it sent, to the
    // node the test was not asking (3 of 4 runs). Nor 1 s: with a disk
    // loaded by other synced writes, two nodes took 4.7 s to write a
    // snapshot, the leader lost its lead and a write got -TIMEOUT (once in
    // 11 runs of the binary at load 13-20). None of these tests is about
    // elections.
    cluster.set_election_timeout_ms(2000);
    for node in &mut cluster.nodes {
        node.extra_args = vec!["--snapshot-entries".into(), entries.to_string()];
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    (cluster, leader, (leader + 1) % 3)
}

#[test]
fn a_follower_down_during_300k_writes_catches_up_through_install_snapshot() {
    let (mut cluster, leader, follower) = three_nodes_snapshotting_every(10000);
    let mut client = cluster.client(leader);
    set_many(&mut client, "before:", 0..1000, 500, small_value);
    cluster.kill(follower);

    let started = Instant::now();
    set_many(&mut client, "k", 0..300_000, 1000, small_value);
    let writing = started.elapsed();
    let leader_first = info_u64(&mut client, "first_log_index");
    assert!(
        leader_first > 2000,
        "the leader's log was not compacted past the follower (first index {})",
        leader_first
    );

    // The follower comes back only once the leader's snapshots are done.
    // Under load the leader was still writing the snapshot of the last
    // writes when the follower came back: it streamed the one before,
    // whose index that snapshot then compacted past, so the follower
    // rightly needed the new one as well (two sends; a third, when the
    // first one's late acknowledgement arrived after the second was sent,
    // was a bug, now fixed: see the core's test
    // `a_late_acknowledgement_of_an_older_snapshot_does_not_send_the_newer_one_again`).
    // The log moving on is not what this test is about.
    let target = info_u64(&mut client, "applied_index");
    wait_snapshots_settled(&mut client);
    let started = Instant::now();
    cluster.spawn(follower);
    cluster.wait_applied(target, Duration::from_secs(60));
    let catch_up = started.elapsed();
    let mut to_follower = cluster.client(follower);
    assert!(
        info_u64(&mut to_follower, "snapshots_received") >= 1,
        "the follower caught up without a snapshot"
    );
    assert!(info_u64(&mut to_follower, "snapshot_index") >= leader_first);
    // Once: with the leader's log standing still, appends and heartbeats
    // arriving while the follower decodes the snapshot do not make the
    // leader stream it again.
    assert_eq!(info_u64(&mut client, "snapshots_sent"), 1);
    let applied = |i: usize| info_u64(&mut cluster.client(i), "applied_index");
    assert_eq!(applied(follower), applied(leader));
    let leader_digest = digest(&cluster, leader);
    for i in 0..3 {
        assert_eq!(digest(&cluster, i), leader_digest, "node {} differs", i + 1);
    }
    assert_eq!(to_follower.cmd(&["GET", "k299999"]), bulk("value-299999"));
    assert_eq!(to_follower.cmd(&["GET", "before:7"]), bulk("value-7"));
    println!(
        "300,000 writes in {:?}; follower caught up through InstallSnapshot in {:?}",
        writing, catch_up
    );
}

/// A follower that needs a large snapshot gets it streamed once: appends that
/// arrive while it decodes the snapshot must not make the leader start over.
#[test]
fn a_follower_behind_a_large_snapshot_gets_it_streamed_once() {
    let (mut cluster, leader, follower) = three_nodes_snapshotting_every(5000);
    let mut client = cluster.client(leader);
    cluster.kill(follower);
    set_many(&mut client, "big", 0..60_000, 500, |i| {
        let mut value = vec![b'v'; 1000];
        value[..8].copy_from_slice(&i.to_le_bytes());
        value
    });
    let target = info_u64(&mut client, "applied_index");
    wait_snapshots_settled(&mut client);
    cluster.spawn(follower);
    cluster.wait_applied(target, Duration::from_secs(60));
    assert_eq!(info_u64(&mut client, "snapshots_sent"), 1);
    let leader_digest = digest(&cluster, leader);
    assert_eq!(digest(&cluster, follower), leader_digest);
}

/// Waits until the node takes no snapshot and its newest stays the same. A
/// snapshot the leader is still taking would legitimately need sending too,
/// once it compacts the log past the one being sent.
fn wait_snapshots_settled(client: &mut Client) -> u64 {
    let mut last_seen = u64::MAX;
    wait_for(
        Duration::from_secs(30),
        "the leader's snapshots to settle",
        || {
            let index = info_u64(client, "snapshot_index");
            let settled = info_u64(client, "snapshot_in_progress") == 0 && index == last_seen;
            last_seen = index;
            std::thread::sleep(Duration::from_millis(100));
            settled.then_some(index)
        },
    )
}

/// A follower that cannot use the snapshot it is sent (here its temp file's
/// name is taken by a directory; in life a full disk, or an older build that
/// cannot read the format) asks for it again after each send. The leader
/// sends it again after 1 s, then 2 s, and so on, instead of streaming it
/// back to back, and the follower catches up once it can take it.
#[test]
fn a_snapshot_the_follower_cannot_use_is_sent_again_after_growing_waits() {
    let (cluster, leader, follower) = three_nodes_snapshotting_every(1000);
    let mut client = cluster.client(leader);
    set_many(&mut client, "before:", 0..100, 100, small_value);
    let pid = cluster.pid(follower).expect("follower runs");
    // Stopped rather than killed: a restart would try to clear the
    // follower's temp files.
    let resume = Resume::stop(pid);
    // One write per round trip: each goes out in an AppendEntries of its
    // own, so the stopped follower's window of appends in flight fills long
    // before the leader compacts its log past what the follower holds.
    set_many(&mut client, "k", 0..3000, 1, small_value);
    let target = info_u64(&mut client, "applied_index");
    let settled_at = wait_snapshots_settled(&mut client);
    let snapshot = snapshot_files(cluster.data_dir(leader))
        .pop()
        .expect("the leader has a snapshot");
    let name = snapshot.file_name().and_then(|n| n.to_str()).expect("name");
    // The snapshot the follower is kept from taking, by its file's name
    // (`<index>-<term>.snap`): once, loaded, the leader's log had it asking
    // again for this one while INFO had named another.
    let snapshot_index: u64 = name
        .split('-')
        .next()
        .and_then(|index| index.parse().ok())
        .expect("a snapshot file named by its index");
    let blocker = cluster
        .data_dir(follower)
        .join("snapshot")
        .join(format!("{}.receiving.tmp", name));
    fs::create_dir_all(&blocker).expect("create the blocking directory");

    let sent_before = info_u64(&mut client, "snapshots_sent");
    let resumed = Instant::now();
    drop(resume);
    wait_for(
        Duration::from_secs(30),
        "the snapshot to be sent three times",
        || (info_u64(&mut client, "snapshots_sent") >= sent_before + 3).then_some(()),
    );
    let elapsed = resumed.elapsed();
    // The second send waits 1 s after the first, the third 2 s after it.
    assert!(
        elapsed >= Duration::from_secs(3),
        "three sends within {:?}",
        elapsed
    );
    let leader_log = cluster.log_text(leader);
    assert!(
        leader_log.contains(&format!("asks again for snapshot {}/", snapshot_index)),
        "no ask again for snapshot {} (INFO said {} once settled):\n{}",
        snapshot_index,
        settled_at,
        leader_log
    );
    assert!(cluster
        .log_text(follower)
        .contains("cannot receive a snapshot"));
    std::thread::sleep(Duration::from_millis(500));
    let sent = info_u64(&mut client, "snapshots_sent") - sent_before;
    assert!(sent <= 3, "{} sends within {:?}", sent, resumed.elapsed());

    fs::remove_dir(&blocker).expect("remove the blocking directory");
    cluster.wait_applied(target, Duration::from_secs(30));
    let leader_digest = digest(&cluster, leader);
    assert_eq!(digest(&cluster, follower), leader_digest);
    assert_eq!(
        cluster.client(follower).cmd(&["GET", "k2999"]),
        bulk("value-2999")
    );
}

fn single_node(snapshot_entries: u64) -> Cluster {
    let mut cluster = Cluster::new(1);
    // Not the tests' 200 ms: a write's deadline is four election timeouts,
    // and with a disk loaded by other synced writes the first batch's sync
    // outlasted 800 ms (-TIMEOUT, once in 10 loaded runs of the binary).
    cluster.set_election_timeout_ms(2000);
    cluster.nodes[0].extra_args = vec!["--snapshot-entries".into(), snapshot_entries.to_string()];
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
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

#[test]
fn a_restart_loads_the_newest_snapshot_and_replays_the_log_after_it() {
    // One batch per 300 keys, so snapshots fall inside the run.
    let (mut cluster, mut client) = node_with_a_snapshot(1000, 2600, 300, 2000);
    let info = client.info();
    let snapshot_index: u64 = info["snapshot_index"].parse().unwrap();
    assert!(info["snapshot_bytes"].parse::<u64>().unwrap() > 2000 * 10);
    assert!(info["snapshots_taken"].parse::<u64>().unwrap() >= 2);
    assert_eq!(snapshot_files(cluster.data_dir(0)).len(), 2, "keeps two");
    let before = digest(&cluster, 0);
    assert_eq!(cluster.terminate(0), Some(0));

    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    assert_eq!(info_u64(&mut client, "snapshot_index"), snapshot_index);
    let log = cluster.log_text(0);
    let replayed = log
        .lines()
        .rev()
        .find(|l| l.contains("log entries after it"))
        .expect("a recovery line");
    assert!(
        replayed.contains(&format!("snapshot index {}", snapshot_index)),
        "{}",
        replayed
    );
    wait_for(Duration::from_secs(10), "the log to be replayed", || {
        (digest(&cluster, 0) == before).then_some(())
    });
    assert_eq!(client.cmd(&["GET", "k2599"]), bulk("value-2599"));
    assert_eq!(client.cmd(&["GET", "k0"]), bulk("value-0"));
}

#[test]
fn a_corrupt_newest_snapshot_is_passed_over_when_the_log_covers_it() {
    let (mut cluster, _) = node_with_a_snapshot(1000, 2600, 300, 2000);
    let before = digest(&cluster, 0);
    cluster.kill(0);
    let files = snapshot_files(cluster.data_dir(0));
    let newest = files.last().expect("a snapshot");
    flip_byte(newest, 100);

    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let log = cluster.log_text(0);
    let name = newest.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("passing over snapshot")
            && l.contains(&name)),
        "no warning naming {}",
        name
    );
    wait_for(Duration::from_secs(10), "the log to be replayed", || {
        (digest(&cluster, 0) == before).then_some(())
    });

    // Set aside, kept for inspection, so that it no longer counts as one of
    // the two kept: the next snapshot prunes nothing, and the one this start
    // used stays as the fallback (it used to be pruned, leaving the bad one).
    let mut broken = newest.as_os_str().to_owned();
    broken.push(".broken");
    assert!(std::path::Path::new(&broken).exists(), "not set aside");
    let older = files[..files.len() - 1].to_vec();
    // More than `snapshot_entries` were applied since the one used: the
    // node takes a new one at once.
    let used = older.last().expect("an older snapshot").clone();
    let now = wait_for(Duration::from_secs(20), "a new snapshot", || {
        let now = snapshot_files(cluster.data_dir(0));
        now.iter().any(|file| *file > *newest).then_some(now)
    });
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], used, "the snapshot this start used was pruned");
}

#[test]
fn no_valid_snapshot_stops_the_node_with_exit_status_1() {
    let (mut cluster, _) = node_with_a_snapshot(1000, 2600, 300, 2000);
    cluster.kill(0);
    for file in snapshot_files(cluster.data_dir(0)) {
        flip_byte(&file, 40);
    }
    // What a snapshot cut short by a crash leaves; a start that fails must
    // not clean it up either.
    let unfinished = cluster
        .data_dir(0)
        .join("snapshot")
        .join("unfinished.snap.tmp");
    fs::write(&unfinished, b"half a snapshot").expect("write a leftover");
    let stderr = start_expecting_exit_status_1(&cluster);
    let data_dir = cluster.data_dir(0).display().to_string();
    assert!(
        stderr.contains("cannot be recovered") && stderr.contains(&data_dir),
        "{}",
        stderr
    );
    assert!(
        unfinished.exists(),
        "a refused start deleted {}",
        unfinished.display()
    );
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

/// A deleted stable file must not restart the node at term 0 with no vote
/// (it could vote twice in a term): the log's terms show it is missing.
#[test]
fn a_missing_stable_file_stops_the_node_with_exit_status_1() {
    let mut cluster = single_node(1_000_000);
    let mut client = cluster.client(0);
    set_many(&mut client, "k", 0..100, 100, small_value);
    cluster.kill(0);
    let stable = cluster.data_dir(0).join("stable");
    std::fs::remove_file(&stable).expect("remove the stable file");
    let log_before = std::fs::read_dir(cluster.data_dir(0).join("log"))
        .expect("log dir")
        .count();
    let stderr = start_expecting_exit_status_1(&cluster);
    assert!(
        stderr.contains(&stable.display().to_string()) && stderr.contains("holds term 0"),
        "{}",
        stderr
    );
    assert!(!stable.exists(), "the node wrote a new stable file");
    let log_after = std::fs::read_dir(cluster.data_dir(0).join("log"))
        .expect("log dir")
        .count();
    assert_eq!(log_after, log_before);
}

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

/// 1,000,000 overwrites of 1,000 keys with 1,000-byte values (about 1 GB of
/// log without compaction): the data directory stays under the bound the
/// README states. About 5 s with `fsync = never`.
#[test]
fn the_data_dir_stays_bounded_under_1m_overwrites() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--fsync".into(), "never".into()];
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    let value = |i: u64| {
        let mut v = format!("{:08}-", i).into_bytes();
        v.resize(1000, b'x');
        v
    };
    // The README's bound: the log since the last compaction point
    // ((snapshot_entries + trailing margin) entries of ~1,040 bytes with the
    // default 100,000 and 10,000), the rest of the segment that point falls
    // in plus one more segment (each allocated in full when created, 64 MiB),
    // and three snapshots of the live data (two kept, one being written).
    // Segments a compaction detached are counted apart, and must be gone
    // at the end: the snapshot thread deletes them, which a loaded disk may
    // hold up (4 full segments and two snapshots, 270 MB, in 2 of 6 loaded
    // runs against 204 MB unloaded).
    let entry = 1040;
    let bound = (100_000 + 10_000) * entry + 2 * (64 << 20) + 3 * 1000 * 1100;
    let started = Instant::now();
    let (mut largest, mut most_detached) = (0, 0);
    for round in 0..100u64 {
        // Nothing slows writes while a snapshot is written (the README's
        // bound assumes snapshots keep up): loaded, one took long enough for
        // 40,000 more entries before its compaction, and 4 full segments
        // were kept. Each round waits for the one under way.
        wait_for(Duration::from_secs(30), "the snapshot under way", || {
            (info_u64(&mut client, "snapshot_in_progress") == 0).then_some(())
        });
        let mut next = round * 10_000;
        let end = next + 10_000;
        while next < end {
            let batch_end = (next + 1000).min(end);
            let mut out = Vec::new();
            for i in next..batch_end {
                let key = format!("k{}", i % 1000);
                raftkv::wire::resp::encode_request(&[b"SET", key.as_bytes(), &value(i)], &mut out);
            }
            client.send_raw(&out).expect("write pipeline");
            for _ in next..batch_end {
                assert_eq!(client.read(), Reply::Ok);
            }
            next = batch_end;
        }
        let usage = data_dir_usage(&mut client, cluster.data_dir(0));
        largest = largest.max(usage.kept + usage.detached);
        assert!(
            usage.kept < bound,
            "round {round}: the data dir keeps {} bytes besides {} detached",
            usage.kept,
            usage.detached
        );
        most_detached = most_detached.max(usage.detached_segments);
    }
    let info = client.info();
    println!(
        "1,000,000 overwrites in {:?}; largest data dir {} bytes; at the end {} bytes, log_bytes {}, snapshot_bytes {}",
        started.elapsed(),
        largest,
        bytes_on_disk(cluster.data_dir(0)),
        info["log_bytes"],
        info["snapshot_bytes"]
    );
    println!(
        "bound {} bytes; uncompacted log ~{} bytes; at most {} detached segments at once",
        bound,
        1_000_000 * entry,
        most_detached
    );
    // Deleted, not left for a later compaction (none comes after the last).
    wait_for(
        Duration::from_secs(20),
        "the detached segments' deletion",
        || {
            let usage = data_dir_usage(&mut client, cluster.data_dir(0));
            (usage.detached_segments == 0).then_some(())
        },
    );
}

/// One node with the default heartbeat (50 ms) and election timeout
/// (500 ms) rather than tests/common's fast ones; killed on drop.
struct DefaultTimingNode {
    args: Vec<String>,
    addr: String,
    log_path: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl DefaultTimingNode {
    fn new(cluster: &Cluster) -> DefaultTimingNode {
        let mut args = cluster.args(0);
        for (flag, value) in [("--heartbeat-ms", "50"), ("--election-timeout-ms", "500")] {
            let at = args.iter().position(|a| a == flag).expect("flag in args");
            args[at + 1] = value.to_string();
        }
        DefaultTimingNode {
            args,
            addr: cluster.nodes[0].client_addr(),
            log_path: cluster.nodes[0].log_path.clone(),
            child: None,
        }
    }

    /// Starts the node and waits until it leads.
    fn spawn(&mut self) {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        let child = Command::new(common::BIN)
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftkv");
        self.child = Some(child);
        wait_for(Duration::from_secs(120), "the node to lead", || {
            let info = Client::try_connect(&self.addr)?.try_info()?;
            (info.get("role")? == "leader").then_some(())
        });
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr)
    }

    fn terminate(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        // SAFETY: a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        // Still in `self.child`, so killed on drop if it ignores SIGTERM.
        let status = wait_for(
            Duration::from_secs(20),
            "the node to stop on SIGTERM",
            || child.try_wait().expect("wait for the node"),
        );
        self.child = None;
        status.code()
    }
}

impl Drop for DefaultTimingNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Loads 1,000,000 keys of 100-byte values (MSET, `fsync = never`), then
/// overwrites keys spread over the whole map, 1,000 per pipeline, until a
/// snapshot of them has been written; reports the longest event-loop
/// iteration meanwhile (wall and loop-thread CPU time), and the restart time
/// from that snapshot plus the log written after it. Default timing (heartbeat
/// 50 ms). Ignored: timing-sensitive, and it wants the machine to itself.
#[test]
#[ignore]
fn one_million_keys_snapshot_stall_and_restart_time() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec![
        "--fsync".into(),
        "never".into(),
        "--snapshot-entries".into(),
        "200000".into(),
    ];
    let mut node = DefaultTimingNode::new(&cluster);
    node.spawn();
    let mut client = node.client();
    let value = |i: u64| {
        let mut v = format!("{:08}-", i).into_bytes();
        v.resize(100, b'v');
        v
    };
    let started = Instant::now();
    // MSET of 100 keys per entry: 1,000,000 keys in 10,000 entries, so the
    // load itself triggers no snapshot.
    let mut out = Vec::new();
    for chunk in 0..10_000u64 {
        let mut argv: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in chunk * 100..chunk * 100 + 100 {
            argv.push(format!("key:{}", i).into_bytes());
            argv.push(value(i));
        }
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
        raftkv::wire::resp::encode_request(&refs, &mut out);
        if chunk % 50 == 49 {
            client.send_raw(&out).expect("write pipeline");
            out.clear();
            for _ in 0..50 {
                assert_eq!(client.read(), Reply::Ok);
            }
        }
    }
    println!("loaded 1,000,000 keys in {:?}", started.elapsed());
    // Overwrites spread over all keys until a snapshot is taken and written:
    // each write may copy a shard the snapshot still holds.
    let mut i = 0u64;
    let mut saw_in_progress = false;
    let mut rounds = 0;
    loop {
        set_many(&mut client, "key:", i..i + 1000, 1000, |_| value(7));
        i = (i + 7919 * 1000) % 1_000_000;
        rounds += 1;
        let info = client.info();
        saw_in_progress |= info["snapshot_in_progress"] == "1";
        if info["snapshots_taken"] != "0" {
            break;
        }
        assert!(rounds < 10_000, "no snapshot taken");
    }
    let info = client.info();
    println!(
        "snapshot of 1,000,000 keys: {} bytes in {} ms (seen in progress: {}); longest loop \
         iteration while it was written: {} us wall, {} us of loop-thread CPU; heartbeat 50 ms",
        info["snapshot_bytes"],
        info["last_snapshot_duration_ms"],
        saw_in_progress,
        info["last_snapshot_max_iteration_us"],
        info["last_snapshot_max_iteration_cpu_us"],
    );
    // Wall time also counts time the OS gave other processes (this test may
    // run beside others on a shared machine); the loop's own work is its CPU
    // time, which must stay under the heartbeat interval.
    let stall_us: u64 = info["last_snapshot_max_iteration_cpu_us"].parse().unwrap();
    assert!(
        stall_us < 50_000,
        "a loop iteration took {} us of CPU",
        stall_us
    );
    // Some log after the snapshot, then restart.
    set_many(&mut client, "after:", 0..20_000, 1000, small_value);
    let before = client.cmd(&["DEBUG", "DIGEST"]);
    let applied = info_u64(&mut client, "applied_index");
    drop(client);
    assert_eq!(node.terminate(), Some(0));
    let started = Instant::now();
    node.spawn();
    let serving = started.elapsed();
    wait_for(
        Duration::from_secs(120),
        "the restarted node to catch up",
        || {
            let info = Client::try_connect(&node.addr)?.try_info()?;
            let at: u64 = info.get("applied_index")?.parse().ok()?;
            (at >= applied).then_some(())
        },
    );
    let caught_up = started.elapsed();
    assert_eq!(node.client().cmd(&["DEBUG", "DIGEST"]), before);
    let log = fs::read_to_string(&node.log_path).unwrap_or_default();
    if let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.contains("log entries after it"))
    {
        println!("{}", line);
    }
    println!(
        "restart with 1,000,000 keys from snapshot + log: leader after {:?}, \
         everything applied after {:?}",
        serving, caught_up
    );
}
