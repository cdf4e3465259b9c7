//! Whole-cluster changes: membership kept through a full restart from
//! snapshots, and a cluster grown from 3 to 5 and shrunk by two of its
//! founders (the leader among them) under write load.

use super::common::load::{LoadResult, WriteLoad};
use super::common::{bulk, wait_for, Client, Cluster};
use super::{cluster_cmd, err, index_of, members, ok, wait_voter};
use raftkv::kv::Reply;
use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

#[test]
fn membership_survives_a_full_restart_from_snapshots() {
    let mut cluster = Cluster::with_joiners(3, 2);
    for node in cluster.nodes.iter_mut() {
        node.extra_args = vec!["--snapshot-entries".into(), "20".into()];
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_for_settled_leader(Duration::from_secs(15));
    for i in [3, 4] {
        cluster.spawn(i);
        let (id, addr) = (
            cluster.nodes[i].id.to_string(),
            cluster.nodes[i].raft_addr(),
        );
        assert_eq!(cluster_cmd(&cluster, 0, &["ADD", &id, &addr]), ok());
        wait_voter(&cluster, 0, cluster.nodes[i].id);
    }
    // Remove two founders, the leader among them if it is one.
    for id in ["1", "2"] {
        assert_eq!(cluster_cmd(&cluster, 2, &["REMOVE", id]), ok());
    }
    cluster.terminate(0);
    cluster.terminate(1);
    let mut client = cluster.client(2);
    let conf_applied: u64 = cluster.info(2)["applied_index"].parse().unwrap();
    for n in 0..100 {
        let key = format!("k{}", n);
        assert_eq!(client.cmd_retry(&["SET", &key, "v"]), ok());
    }
    // Every snapshot now covers the configuration changes, so the logs the
    // nodes restart from hold none of them.
    for i in 2..5 {
        wait_for(
            Duration::from_secs(10),
            "a snapshot past the changes",
            || {
                let index: u64 = cluster.info(i)["snapshot_index"].parse().ok()?;
                (index > conf_applied + 20).then_some(())
            },
        );
    }
    for i in 2..5 {
        assert_eq!(cluster.terminate(i), Some(0));
    }
    for i in 2..5 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    assert!(leader >= 2);
    let listed = members(&cluster, 3);
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
    for (id, m) in &listed {
        let node = &cluster.nodes[index_of(&cluster, *id)];
        assert_eq!(m["raft_addr"], node.raft_addr());
        assert_eq!(m["suffrage"], "voter");
    }
    assert_eq!(cluster.client(4).cmd_retry(&["GET", "k99"]), bulk("v"));
    assert_eq!(
        cluster.client(3).cmd_retry(&["SET", "after", "restart"]),
        ok()
    );

    // A removed joiner, restarted, still answers that it was removed.
    let removed = index_of(&cluster, 5);
    assert_eq!(cluster_cmd(&cluster, 2, &["REMOVE", "5"]), ok());
    let says_removed = |cluster: &Cluster| {
        let mut client = Client::try_connect(&cluster.nodes[removed].client_addr())?;
        client.try_send(&[b"GET", b"k99"]).then_some(())?;
        (client.try_read()? == err("TRYAGAIN not a member")).then_some(())
    };
    wait_for(Duration::from_secs(15), "node 5 learns its removal", || {
        says_removed(&cluster)
    });
    // Its own configuration leaves it out, so it restarts with one that does.
    wait_for(
        Duration::from_secs(15),
        "node 5 applies its removal",
        || {
            let info = Client::try_connect(&cluster.nodes[removed].client_addr())?.try_info()?;
            (!info.get("members")?.split(',').any(|m| m.starts_with("5="))).then_some(())
        },
    );
    assert_eq!(cluster.terminate(removed), Some(0));
    cluster.spawn(removed);
    wait_for(
        Duration::from_secs(15),
        "the restarted removed node says it was removed",
        || says_removed(&cluster),
    );
    assert_eq!(cluster.client(2).cmd_retry(&["GET", "k99"]), bulk("v"));
}

fn leader_among(cluster: &Cluster, nodes: &[usize]) -> usize {
    wait_for(
        Duration::from_secs(15),
        "a leader the members agree on",
        || {
            let ids: Vec<String> = nodes
                .iter()
                .map(|&i| Client::try_connect(&cluster.nodes[i].client_addr())?.try_info())
                .map(|info| info.map(|i| i["leader_id"].clone()))
                .collect::<Option<_>>()?;
            let id: u64 = ids[0].parse().ok()?;
            (id != 0 && ids.iter().all(|i| *i == ids[0])).then(|| index_of(cluster, id))
        },
    )
}

#[test]
fn grow_to_five_and_remove_two_founders_with_the_leader_under_load() {
    let mut cluster = Cluster::with_joiners(3, 2);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let first_leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    let load = WriteLoad::start(&cluster, 8);
    thread::sleep(Duration::from_millis(300));
    // Grow 3 -> 5, asking a different node each time.
    for i in [3, 4] {
        cluster.spawn(i);
        let (id, addr) = (cluster.nodes[i].id, cluster.nodes[i].raft_addr());
        assert_eq!(
            cluster_cmd(&cluster, i - 3, &["ADD", &id.to_string(), &addr]),
            ok()
        );
        wait_voter(&cluster, i, id);
    }
    thread::sleep(Duration::from_millis(300));
    // Remove the leader (through a joiner), then another founder.
    let leader_id = cluster.nodes[first_leader].id;
    assert_eq!(
        cluster_cmd(&cluster, 3, &["REMOVE", &leader_id.to_string()]),
        ok()
    );
    let other = (0..3).find(|&i| i != first_leader).unwrap();
    let other_id = cluster.nodes[other].id;
    assert_eq!(
        cluster_cmd(&cluster, 4, &["REMOVE", &other_id.to_string()]),
        ok()
    );
    let remaining: Vec<usize> = (0..5)
        .filter(|&i| i != first_leader && i != other)
        .collect();
    let leader = leader_among(&cluster, &remaining);
    assert_ne!(leader, first_leader);
    thread::sleep(Duration::from_millis(300));
    // Hand leadership to a named node.
    let target = *remaining.iter().find(|&&i| i != leader).unwrap();
    let target_id = cluster.nodes[target].id.to_string();
    assert_eq!(
        cluster_cmd(&cluster, leader, &["TRANSFER", &target_id]),
        ok()
    );
    assert_eq!(cluster.info(target)["role"], "leader");
    thread::sleep(Duration::from_millis(300));
    let LoadResult {
        acked,
        incrs,
        errors,
    } = load.finish();

    // The removed nodes said so and refuse requests; then they go, data and all.
    for i in [first_leader, other] {
        // A removed node learns that its removal committed from the leader (at
        // once, or in answer to its next pre-vote): give it a few seconds.
        wait_for(Duration::from_secs(5), "a removed node to know it", || {
            (cluster.client(i).cmd(&["SET", "x", "y"]) == err("TRYAGAIN not a member"))
                .then_some(())
        });
        assert!(cluster.log_text(i).contains("was removed from the cluster"));
        assert_eq!(cluster.terminate(i), Some(0));
        std::fs::remove_dir_all(cluster.data_dir(i)).expect("delete a removed node's data dir");
    }
    let others: Vec<&String> = errors
        .iter()
        .filter(|e| !e.starts_with("TRYAGAIN"))
        .collect();
    assert!(
        others.is_empty(),
        "errors other than TRYAGAIN: {:?}",
        others
    );
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );

    let leader = leader_among(&cluster, &remaining);
    let mut client = cluster.client(leader);
    for (key, value) in &acked {
        assert_eq!(
            client.cmd_retry(&["GET", key]),
            bulk(value),
            "acknowledged {} lost",
            key
        );
    }
    let unique: std::collections::HashSet<i64> = incrs.iter().copied().collect();
    assert_eq!(unique.len(), incrs.len(), "an INCR reply was given twice");
    assert_eq!(client.cmd_retry(&["SET", "after", "removal"]), ok());
    let commit: u64 = cluster.info(leader)["commit_index"].parse().unwrap();
    wait_for(Duration::from_secs(10), "the members to converge", || {
        let states: Vec<(String, Reply)> = remaining
            .iter()
            .map(|&i| {
                let applied = cluster.info(i)["applied_index"].clone();
                (applied, cluster.client(i).cmd(&["DEBUG", "DIGEST"]))
            })
            .collect();
        let applied: u64 = states[0].0.parse().ok()?;
        (applied >= commit && states.iter().all(|s| *s == states[0])).then_some(())
    });
    let listed = members(&cluster, remaining[0]);
    let ids: Vec<u64> = remaining.iter().map(|&i| cluster.nodes[i].id).collect();
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), ids);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &errors {
        *kinds.entry(e.as_str()).or_default() += 1;
    }
    eprintln!(
        "{} writes acknowledged; error replies during the changes: {:?}",
        acked.len(),
        kinds
    );
}
