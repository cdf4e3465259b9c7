//! `--force-new-cluster` with real processes: a survivor of a three-node
//! cluster that lost two nodes for good restarts as the only member with
//! every key it held, serves, keeps the one-member cluster across a plain
//! restart, grows again with `--join` + `CLUSTER ADD`, and is not disturbed
//! by a dropped member started again with its old data dir. And the starts
//! the flag refuses (exit status 2).

mod common;

use common::{bulk, run_to_exit, wait_for, Cluster};
use raftkv::kv::Reply;
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

const FLAG: &str = "--force-new-cluster";

fn field(info: &HashMap<String, String>, name: &str) -> String {
    info.get(name).cloned().unwrap_or_default()
}

fn number(info: &HashMap<String, String>, name: &str) -> u64 {
    field(info, name).parse().unwrap_or(0)
}

/// Waits until node `i` leads with `members` as its voters; returns its INFO.
fn wait_leading(cluster: &Cluster, i: usize, members: &str) -> HashMap<String, String> {
    wait_for(Duration::from_secs(15), "the node to lead", || {
        let info = cluster.client(i).try_info()?;
        (field(&info, "role") == "leader" && field(&info, "members") == members).then_some(info)
    })
}

fn set_all(cluster: &Cluster, via: usize, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut client = cluster.client(via);
    let mut acked = Vec::new();
    for k in 0..n {
        let (key, value) = (format!("{prefix}{k}"), format!("value-{prefix}-{k}"));
        match client.cmd_retry(&["SET", &key, &value]) {
            Reply::Ok => acked.push((key, value)),
            other => panic!("SET {key}: {other:?}"),
        }
    }
    acked
}

fn check_all(cluster: &Cluster, via: usize, acked: &[(String, String)]) {
    let mut client = cluster.client(via);
    for (key, value) in acked {
        assert_eq!(
            client.cmd_retry(&["GET", key]),
            bulk(value),
            "GET {key} on node {}",
            via + 1
        );
    }
}

#[test]
fn a_survivor_forced_into_a_new_cluster_keeps_its_keys_grows_again_and_ignores_old_members() {
    let mut cluster = Cluster::with_joiners(3, 1);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    let mut acked = set_all(&cluster, leader, "k", 100);
    let commit = number(&cluster.info(leader), "commit_index");
    cluster.wait_applied(commit, Duration::from_secs(10));
    // The survivor, a follower, is cut off (killed here); the old majority
    // goes on without it: leaders change, so its terms pass the survivor's,
    // and it acknowledges writes the survivor never receives. Then both
    // are lost with their disks (killed, not started again until the end).
    let survivor = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.kill(survivor);
    let mut lost = Vec::new();
    for round in 0..4 {
        let from = cluster.wait_for_leader(Duration::from_secs(15));
        let to = (0..3)
            .find(|&i| i != from && i != survivor)
            .expect("the other");
        let id = cluster.nodes[to].id.to_string();
        let moved = cluster
            .client(from)
            .cmd_retry(&["CLUSTER", "TRANSFER", &id]);
        assert_eq!(moved, Reply::Ok, "transfer to node {id}");
        lost.extend(set_all(&cluster, to, &format!("lost{round}-"), 5));
    }
    let (old, other) = {
        let gone: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
        (gone[0], gone[1])
    };
    let old_term = number(&cluster.info(old), "term");
    cluster.kill(old);
    cluster.kill(other);

    cluster.nodes[survivor].extra_args.push(FLAG.to_string());
    cluster.spawn(survivor);
    let me = format!(
        "{}={}",
        cluster.nodes[survivor].id,
        cluster.nodes[survivor].raft_addr()
    );
    let info = wait_leading(&cluster, survivor, &me);
    assert_eq!(field(&info, "learners"), "");
    check_all(&cluster, survivor, &acked);
    // The caveat: what only the old majority acknowledged is gone.
    for (key, _) in &lost {
        assert_eq!(cluster.client(survivor).cmd(&["GET", key]), Reply::Nil);
    }
    acked.extend(set_all(&cluster, survivor, "after-force-", 20));
    let log = cluster.log_text(survivor);
    let dropped: Vec<u64> = [old, other].iter().map(|&i| cluster.nodes[i].id).collect();
    let mut dropped_sorted = dropped.clone();
    dropped_sorted.sort_unstable();
    assert!(
        log.contains(&format!("dropped members {dropped_sorted:?}")),
        "the rewrite is not logged with the dropped members:\n{log}"
    );
    let forced_line = |log: &str| {
        log.lines()
            .filter(|line| line.contains("made the only member by --force-new-cluster"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Made by this start, not replayed from the log it started with.
    let forced = forced_line(&log);
    assert!(
        forced.len() == 1 && !forced[0].contains("replayed"),
        "{forced:?}"
    );

    // A restart without the flag keeps the one-member cluster.
    assert_eq!(cluster.terminate(survivor), Some(0));
    cluster.nodes[survivor].extra_args.clear();
    cluster.spawn(survivor);
    wait_leading(&cluster, survivor, &me);
    check_all(&cluster, survivor, &acked);
    let forced = forced_line(&cluster.log_text(survivor));
    assert!(
        forced.len() == 2 && forced[1].contains("replayed"),
        "{forced:?}"
    );

    // A fresh node joins and catches up.
    let joiner = 3;
    cluster.spawn(joiner);
    let add = cluster.client(survivor).cmd_retry(&[
        "CLUSTER",
        "ADD",
        &cluster.nodes[joiner].id.to_string(),
        &cluster.nodes[joiner].raft_addr(),
    ]);
    assert_eq!(add, Reply::Ok);
    let mut both = [
        me.clone(),
        format!(
            "{}={}",
            cluster.nodes[joiner].id,
            cluster.nodes[joiner].raft_addr()
        ),
    ];
    both.sort();
    let info = wait_leading(&cluster, survivor, &both.join(","));
    let commit = number(&info, "commit_index");
    wait_for(Duration::from_secs(15), "the joiner to catch up", || {
        let joined = cluster.client(joiner).try_info()?;
        (number(&joined, "applied_index") >= commit
            && field(&joined, "keys") == field(&info, "keys"))
        .then_some(())
    });
    acked.extend(set_all(&cluster, joiner, "after-join-", 20));

    // A dropped member comes back with its old data dir: it dials the
    // survivor, which does not hear it, and nobody else knows it.
    let settled = cluster.info(survivor);
    assert!(
        number(&settled, "term") < old_term,
        "the old member's term {old_term} is not above the survivor's: {settled:?}"
    );
    cluster.spawn(old);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let now = cluster.info(survivor);
        assert_eq!(
            field(&now, "role"),
            "leader",
            "the survivor lost the lead: {now:?}"
        );
        assert_eq!(
            field(&now, "term"),
            field(&settled, "term"),
            "the term moved"
        );
        assert_eq!(field(&now, "members"), field(&settled, "members"));
        let back = cluster.info(old);
        assert_ne!(
            field(&back, "role"),
            "leader",
            "the old member leads: {back:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.log_text(survivor);
    assert!(
        log.contains("ignoring nodes")
            && log.contains("dialed this node, but --force-new-cluster dropped it"),
        "the survivor does not say whom it ignores"
    );
    check_all(&cluster, survivor, &acked);
    check_all(&cluster, joiner, &acked);
    acked.extend(set_all(&cluster, survivor, "with-old-back-", 10));
    check_all(&cluster, joiner, &acked);
}

#[test]
fn force_new_cluster_refuses_a_node_with_nothing_to_recover_or_joining() {
    let mut cluster = Cluster::new(3);
    let fresh = {
        let mut args = cluster.args(0);
        args.push(FLAG.to_string());
        args
    };
    let (code, stderr) = run_to_exit(&fresh, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no cluster to recover"), "{stderr}");
    assert!(
        !cluster.data_dir(0).exists(),
        "the refused start created the data dir"
    );
    // A founder that never saw a leader holds no log to recover.
    cluster.spawn(0);
    cluster.kill(0);
    let (code, stderr) = run_to_exit(&fresh, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("holds no log or snapshot"), "{stderr}");
    let mut joining: Vec<String> = fresh
        .iter()
        .take_while(|a| *a != "--cluster")
        .cloned()
        .collect();
    joining.extend(["--join".to_string(), FLAG.to_string()]);
    let (code, stderr) = run_to_exit(&joining, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with join"), "{stderr}");
}
