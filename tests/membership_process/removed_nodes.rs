//! Removed nodes: one removed while it was down learns its removal when it
//! returns (also past the leader's compaction), a removed node and the
//! members stop dialing each other, and it comes back when added again.

use super::common::{bulk, wait_for, Client, Cluster};
use super::{cluster_cmd, err, ok, wait_voter};
use std::thread;
use std::time::Duration;

/// A node removed while it was down never received its removal. When it
/// returns it asks for votes, at a term above the leader's; the leader, which
/// holds its lease then, must still answer with the entries up to the
/// removal, so that the node learns it was removed.
#[test]
fn a_node_removed_while_down_learns_its_removal_when_it_returns() {
    removed_while_down_learns_it(None, false);
}

/// The leader's log no longer holds the returning node's last entry: it
/// learns its removal from the leader's snapshot.
#[test]
fn a_node_removed_while_down_learns_its_removal_past_the_leaders_compaction() {
    removed_while_down_learns_it(Some(20), false);
}

/// As above, but the leader the node returns to no longer dials it (its
/// grace period, three client deadlines, is over). The leader's snapshot,
/// the answer to its pre-vote, found no connection to go on and was
/// dropped, and nothing dialed the node: it pre-voted on and answered
/// `-TRYAGAIN no leader` for good (the membership nemesis, loaded, where
/// the node took 2.6 s to restart).
#[test]
fn a_node_removed_while_down_learns_its_removal_past_the_compaction_after_the_grace_period() {
    removed_while_down_learns_it(Some(20), true);
}

fn removed_while_down_learns_it(snapshot_entries: Option<u64>, after_grace: bool) {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        if let Some(n) = snapshot_entries {
            cluster.nodes[i].extra_args = vec!["--snapshot-entries".into(), n.to_string()];
        }
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "v"]), ok());
    let gone = (0..3).find(|&i| i != leader).expect("a follower");
    assert_eq!(cluster.terminate(gone), Some(0));
    let gone_id = cluster.nodes[gone].id.to_string();
    assert_eq!(cluster_cmd(&cluster, leader, &["REMOVE", &gone_id]), ok());
    if after_grace {
        // The node was down when its removal committed, so the leader's
        // farewell heartbeat could not be sent; it is let go of after its
        // grace period all the same.
        wait_for(
            Duration::from_secs(20),
            "the leader to stop dialing the removed node",
            || {
                cluster
                    .log_text(leader)
                    .contains(&format!("stopped dialing node {gone_id} "))
                    .then_some(())
            },
        );
    }
    if snapshot_entries.is_some() {
        let mut client = cluster.client(leader);
        for n in 0..300 {
            assert_eq!(client.cmd_retry(&["SET", &format!("w{n}"), "v"]), ok());
        }
        // The snapshot is written by a helper thread, the log compacted
        // once it is on disk: on a loaded machine after the last SET.
        wait_for(
            Duration::from_secs(10),
            "the leader to compact its log",
            || {
                let first: u64 = client.info()["first_log_index"]
                    .parse()
                    .expect("first_log_index");
                (first > 10).then_some(())
            },
        );
    }
    cluster.spawn(gone);
    wait_for(
        Duration::from_secs(10),
        "the returned node to answer that it was removed",
        || {
            let mut client = Client::try_connect(&cluster.nodes[gone].client_addr())?;
            client.try_send(&[b"GET", b"k"]).then_some(())?;
            (client.try_read()? == err("TRYAGAIN not a member")).then_some(())
        },
    );
    assert!(cluster
        .log_text(gone)
        .contains("was removed from the cluster"));
    // Its other Raft fields are what it last knew (role:follower, say).
    assert_eq!(cluster.info(gone)["membership"], "removed");
    assert_eq!(cluster.info(leader)["membership"], "member");
    assert_eq!(cluster.client(leader).cmd_retry(&["GET", "k"]), bulk("v"));
}

/// A removed node that knows its removal committed and the members stop
/// dialing each other once the grace period is over (three client
/// deadlines: 2.4 s here): the removed node went on dialing the members,
/// and holding connections to them, until it was stopped.
#[test]
fn a_removed_node_and_the_members_stop_dialing_each_other() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let gone = (0..3).find(|&i| i != leader).expect("a follower");
    let gone_id = cluster.nodes[gone].id;
    assert_eq!(
        cluster_cmd(&cluster, leader, &["REMOVE", &gone_id.to_string()]),
        ok()
    );
    wait_for(
        Duration::from_secs(5),
        "the removed node to know it",
        || {
            (cluster.client(gone).cmd(&["SET", "x", "y"]) == err("TRYAGAIN not a member"))
                .then_some(())
        },
    );
    let connected = |i: usize| cluster.info(i)["connected_peers"].clone();
    wait_for(
        Duration::from_secs(10),
        "the removed node to be connected to nobody",
        || (connected(gone) == "0").then_some(()),
    );
    let log = cluster.log_text(gone);
    let members: Vec<usize> = (0..3).filter(|&i| i != gone).collect();
    for &i in &members {
        let id = cluster.nodes[i].id;
        assert!(
            log.contains(&format!("stopped dialing node {id} ")),
            "the removed node stopped dialing node {id}"
        );
        wait_for(
            Duration::from_secs(10),
            "a member to be connected to the other member only",
            || (connected(i) == "1").then_some(()),
        );
        assert!(cluster
            .log_text(i)
            .contains(&format!("stopped dialing node {gone_id} ")));
    }
    // For good: nothing dials anyone again.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(connected(gone), "0");
    assert_eq!(cluster.info(gone)["membership"], "removed");
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "v"]), ok());
}

/// A removed node that knows its removal committed, and dials nobody any
/// more, comes back when it is added again under the same id (its data
/// dir kept): the leader reaches it, it dials the leader back, catches up,
/// is promoted, and serves again. Nothing else in it dials a member then.
#[test]
fn a_removed_node_that_stopped_dialing_comes_back_when_added_again() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let gone = (0..3).find(|&i| i != leader).expect("a follower");
    let gone_id = cluster.nodes[gone].id.to_string();
    assert_eq!(cluster_cmd(&cluster, leader, &["REMOVE", &gone_id]), ok());
    wait_for(
        Duration::from_secs(10),
        "the removed node to know it and be connected to nobody",
        || {
            let info = cluster.info(gone);
            (info["membership"] == "removed" && info["connected_peers"] == "0").then_some(())
        },
    );
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "v"]), ok());
    let addr = cluster.nodes[gone].raft_addr();
    assert_eq!(
        cluster_cmd(&cluster, leader, &["ADD", &gone_id, &addr]),
        ok()
    );
    wait_voter(&cluster, leader, cluster.nodes[gone].id);
    wait_for(
        Duration::from_secs(10),
        "the node added again to be a member",
        || (cluster.info(gone)["membership"] == "member").then_some(()),
    );
    assert_eq!(cluster.client(gone).cmd_retry(&["GET", "k"]), bulk("v"));
    assert_eq!(cluster.client(gone).cmd_retry(&["SET", "k", "w"]), ok());
    assert_eq!(cluster.client(leader).cmd_retry(&["GET", "k"]), bulk("w"));
    wait_for(
        Duration::from_secs(10),
        "the node added again to be connected to both members",
        || (cluster.info(gone)["connected_peers"] == "2").then_some(()),
    );
}
