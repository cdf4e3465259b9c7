//! A single node's restart from its snapshot: the newest loaded and only the
//! log after it replayed, a corrupt newest passed over when the log covers
//! it, and the start refused with no valid snapshot or no stable file.

use super::common::{bulk, wait_for};
use super::{
    digest, flip_byte, info_u64, node_with_a_snapshot, set_many, single_node, small_value,
    snapshot_files, start_expecting_exit_status_1,
};
use std::fs;
use std::time::Duration;

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
        stderr.contains(&format!("{} is missing", stable.display())),
        "{}",
        stderr
    );
    assert!(!stable.exists(), "the node wrote a new stable file");
    let log_after = std::fs::read_dir(cluster.data_dir(0).join("log"))
        .expect("log dir")
        .count();
    assert_eq!(log_after, log_before);
}
