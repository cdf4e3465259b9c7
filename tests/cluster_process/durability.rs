//! Acknowledged writes kept: `kill -9` of the leader under write load and of
//! every node, a node that cannot write its log, and a follower that lost
//! acknowledged entries with `fsync = never` catching up.

use super::common::load::{LoadResult, WriteLoad};
use super::common::{bulk, wait_for, wait_until_unlocked, Cluster};
use super::info_u64;
use raftkv::kv::Reply;
use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::Duration;

/// Every acknowledged SET readable through node `via`, and the INCR replies unique.
fn check_acknowledged(
    cluster: &Cluster,
    via: usize,
    sets: &HashMap<String, String>,
    incrs: &[i64],
) {
    let mut client = cluster.client(via);
    for (key, value) in sets {
        assert_eq!(
            client.cmd_retry(&["GET", key]),
            bulk(value),
            "acknowledged write {} lost",
            key
        );
    }
    let unique: HashSet<i64> = incrs.iter().copied().collect();
    assert_eq!(unique.len(), incrs.len(), "an INCR reply was given twice");
    let max = incrs.iter().max().expect("an INCR was acknowledged");
    match client.cmd_retry(&["GET", "counter"]) {
        Reply::Bulk(v) => {
            let final_value: i64 = String::from_utf8_lossy(&v).parse().unwrap();
            assert!(
                final_value >= *max,
                "counter {} below an acknowledged {}",
                final_value,
                max
            );
        }
        other => panic!("GET counter answered {:?}", other),
    }
}

/// Waits until all running nodes have applied the same index and hold the same data.
fn wait_converged(cluster: &Cluster) {
    wait_for(Duration::from_secs(20), "nodes to converge", || {
        let running: Vec<usize> = (0..3).filter(|&i| cluster.is_running(i)).collect();
        let states: Vec<(u64, Reply)> = running
            .iter()
            .map(|&i| {
                let info = cluster.info(i);
                let digest = cluster.client(i).cmd(&["DEBUG", "DIGEST"]);
                (info["applied_index"].parse().unwrap(), digest)
            })
            .collect();
        let commit = info_u64(
            cluster,
            cluster.wait_for_leader(Duration::from_secs(10)),
            "commit_index",
        );
        states
            .iter()
            .all(|s| s == &states[0] && s.0 >= commit)
            .then_some(())
    });
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_leader() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10));
    let load = WriteLoad::start(&cluster, 6);
    thread::sleep(Duration::from_millis(800));
    cluster.kill(old_leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_ne!(new_leader, old_leader);
    // The new leader serves writes.
    let before = load.acked_count();
    wait_for(
        Duration::from_secs(10),
        "writes under the new leader",
        || (load.acked_count() > before + 50).then_some(()),
    );
    cluster.spawn(old_leader);
    thread::sleep(Duration::from_millis(800));
    let LoadResult {
        acked: sets, incrs, ..
    } = load.finish();
    assert!(
        sets.len() > 100,
        "too few writes acknowledged: {}",
        sets.len()
    );
    wait_converged(&cluster);
    check_acknowledged(&cluster, old_leader, &sets, &incrs);
}

#[test]
fn acknowledged_writes_survive_kill_9_of_every_node() {
    let mut cluster = Cluster::start(3);
    let load = WriteLoad::start(&cluster, 4);
    thread::sleep(Duration::from_millis(1500));
    // Kill all three while writes are in flight, then stop the writers.
    for i in 0..3 {
        cluster.kill(i);
    }
    let LoadResult {
        acked: sets, incrs, ..
    } = load.finish();
    assert!(
        sets.len() > 50,
        "too few writes acknowledged: {}",
        sets.len()
    );
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_for_leader(Duration::from_secs(15));
    for i in 0..3 {
        check_acknowledged(&cluster, i, &sets, &incrs);
    }
    wait_converged(&cluster);
}

#[test]
fn a_node_that_cannot_write_its_log_stops_naming_the_file_and_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::new(1);
    // A request's deadline is four election timeouts: with the default 200
    // ms, a 1 MB write synced on a loaded machine came back `-TIMEOUT` (1
    // of 12 runs beside two busy loops) before the limit was reached.
    cluster.set_election_timeout_ms(1000);
    cluster.spawn(0);
    cluster.wait_for_settled_leader(Duration::from_secs(15));
    assert_eq!(
        cluster.client(0).cmd_retry(&["SET", "before", "1"]),
        Reply::Ok
    );
    assert_eq!(cluster.terminate(0), Some(0));
    // The first 64 MiB segment exists now; writes past its first 48 MiB fail,
    // as they would on a full disk.
    cluster.nodes[0].file_size = Some(48 << 20);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    let filler = "v".repeat(1 << 20);
    let mut acked = Vec::new();
    let mut sent = 0;
    while sent < 200 {
        let (key, value) = (format!("k{sent}"), format!("{sent}:{filler}"));
        sent += 1;
        if !client.try_send(&[b"SET", key.as_bytes(), value.as_bytes()]) {
            break;
        }
        match client.try_read() {
            Some(Reply::Ok) => acked.push((key, value)),
            Some(other) => panic!("SET {key} answered {other:?}"),
            None => break,
        }
    }
    assert!(
        sent < 200,
        "the node took 200 MB past a 66 MiB file-size limit"
    );
    assert!(
        acked.len() > 30,
        "only {} writes before the limit",
        acked.len()
    );
    assert_eq!(cluster.wait_exit(0, Duration::from_secs(10)), Some(1));
    let log = cluster.log_text(0);
    let failure = log
        .lines()
        .find(|line| line.contains("storage failure"))
        .unwrap_or_else(|| panic!("no storage failure in the log:\n{log}"));
    assert!(
        failure.contains(".seg") && failure.contains("File too large"),
        "the failure names neither the file nor the error: {failure}"
    );

    cluster.nodes[0].file_size = None;
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    for (key, value) in &acked {
        match client.cmd_retry(&["GET", key]) {
            Reply::Bulk(got) if got == value.as_bytes() => {}
            other => panic!("acknowledged {key} lost after the restart: {:.60?}", other),
        }
    }
    assert_eq!(client.cmd_retry(&["SET", "after", "1"]), Reply::Ok);
}

#[test]
fn a_follower_that_lost_acknowledged_entries_without_fsync_catches_up() {
    // `fsync = never`: an OS crash can take the tail of a follower's log,
    // entries it acknowledged. Cutting the tail of a stopped follower's log
    // stands in for that crash.
    let mut cluster = Cluster::new(3);
    let conf = cluster.dir.path().join("never.conf");
    std::fs::write(&conf, "fsync = never\n").expect("write config");
    for node in &mut cluster.nodes {
        node.extra_args = vec!["--config".into(), conf.display().to_string()];
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(leader);
    for i in 0..40 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), "v"]), Reply::Ok);
    }
    let last = info_u64(&cluster, leader, "last_log_index");
    cluster.wait_applied(last, Duration::from_secs(10));
    cluster.kill(follower);
    {
        let mut storage = raftkv::storage::Storage::open(
            cluster.data_dir(follower),
            raftkv::storage::StorageOptions::default(),
        )
        .expect("open the follower's log");
        storage.finish_recovery().expect("recover");
        let first = storage.first_index();
        let kept = storage.entries(first, last - 20).expect("read entries");
        storage.reset(first).expect("empty the log");
        storage.append(&kept).expect("write the kept entries");
        storage.sync().expect("sync");
        assert_eq!(storage.last_index(), last - 21);
    }
    wait_until_unlocked(cluster.data_dir(follower));
    cluster.spawn(follower);
    assert_eq!(client.cmd(&["SET", "after", "v"]), Reply::Ok);
    let last = info_u64(&cluster, leader, "last_log_index");
    wait_for(
        Duration::from_secs(10),
        "the follower to hold the leader's log again",
        || (info_u64(&cluster, follower, "last_log_index") >= last).then_some(()),
    );
    wait_converged(&cluster);
}
