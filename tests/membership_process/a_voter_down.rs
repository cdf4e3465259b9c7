//! Removals with a voter down: one that would leave no reachable quorum is
//! refused, the dead one of two voters is removed by the survivor, and a
//! leader removing itself hands over to a voter that is up.

use super::common::{bulk, wait_for, Cluster};
use super::{cluster_cmd, err, members, ok};
use raftkv::kv::Reply;
use std::thread;
use std::time::Duration;

/// With one of three voters down, removing another (a follower or the
/// leader) would put in force a configuration of two whose only reachable
/// voter cannot commit the removal or win an election: the cluster used to
/// stay without a leader until the dead node returned. It is refused with
/// `-TRYAGAIN`, changing nothing, while removing the dead node goes ahead.
#[test]
fn removing_a_voter_that_would_leave_no_reachable_quorum_is_refused() {
    // With one voter of three dead, the leader keeps leading only while it
    // hears the live one every check-quorum round (an election timeout):
    // 2 s, not the tests' 200 ms, which a loaded machine's stalls outlast.
    let election_timeout = Duration::from_millis(2000);
    let mut cluster = Cluster::start_with_election_timeout(3, election_timeout.as_millis() as u64);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "v"]), ok());
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (live, dead) = (followers[0], followers[1]);
    cluster.kill(dead);
    // The leader counts a voter as down once it missed a whole check-quorum
    // round: within two election timeouts, however late the leader runs (a
    // late wake-up runs every tick it missed).
    thread::sleep(election_timeout * 5 / 2);
    for target in [live, leader] {
        let id = cluster.nodes[target].id;
        let reply = cluster
            .client(live)
            .cmd(&["CLUSTER", "REMOVE", &id.to_string()]);
        assert_eq!(
            reply,
            err(&format!(
                "TRYAGAIN removing node {} would leave 2 voters of which only 1 are reachable, no quorum",
                id
            ))
        );
    }
    assert_eq!(members(&cluster, live).len(), 3);
    assert_eq!(cluster.info(leader)["role"], "leader");
    assert_eq!(cluster.client(live).cmd(&["SET", "k", "w"]), ok());
    let dead_id = cluster.nodes[dead].id.to_string();
    assert_eq!(cluster_cmd(&cluster, live, &["REMOVE", &dead_id]), ok());
    assert_eq!(cluster.client(live).cmd(&["SET", "k", "x"]), ok());
    assert_eq!(cluster.client(leader).cmd(&["GET", "k"]), bulk("x"));
}

/// One of two voters dies: its leader's connections to a majority of the
/// voters of today are closed, yet removing the dead one leaves a
/// configuration, in force once appended, of which the leader is a majority
/// by itself, so the removal commits at once (README: "Remove the node that
/// is down first"). It was refused `-TRYAGAIN no leader` like an addition,
/// and once the leader stepped down for want of a quorum no node could ever
/// be elected again. The election timeout is 2 s so that the leader still
/// leads when the removal arrives.
#[test]
fn the_dead_one_of_two_voters_is_removed_by_the_survivor_while_it_leads() {
    let mut cluster = Cluster::start_with_election_timeout(2, 2000);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let dead = 1 - leader;
    let mut client = cluster.client(leader);
    assert_eq!(client.cmd_retry(&["SET", "k", "v"]), ok());
    wait_for(Duration::from_secs(10), "the peer connected", || {
        (client.info()["connected_peers"] == "1").then_some(())
    });
    cluster.kill(dead);
    wait_for(
        Duration::from_secs(5),
        "the leader to see its peer's connection close",
        || (client.info()["connected_peers"] == "0").then_some(()),
    );
    assert_eq!(client.info()["role"], "leader", "stepped down too early");
    let dead_id = cluster.nodes[dead].id.to_string();
    assert_eq!(client.cmd(&["CLUSTER", "REMOVE", &dead_id]), ok());
    assert_eq!(members(&cluster, leader).len(), 1);
    assert_eq!(client.cmd(&["SET", "k", "w"]), ok(), "a cluster of one");
    assert_eq!(client.cmd(&["GET", "k"]), bulk("w"));
}

/// A follower that is down keeps the match index it had, which in an idle
/// cluster is the leader's last index: the leader removing itself used to
/// pick it as its successor whenever its id was the lowest, abandon the
/// transfer after an election timeout and answer `-TRYAGAIN`, every time.
/// It hands over to a voter it hears from instead.
#[test]
fn a_leader_removing_itself_hands_over_to_a_voter_that_is_up() {
    // With one voter of four dead, the leader keeps its quorum only while it
    // hears both others every check-quorum round (an election timeout): with
    // the tests' 200 ms, a follower that a loaded machine did not run for
    // 1.3 s cost it the leadership, and the REMOVE got `-TRYAGAIN no leader`.
    let election_timeout = Duration::from_millis(2000);
    let mut cluster = Cluster::start_with_election_timeout(4, election_timeout.as_millis() as u64);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "v"]), ok());
    let dead = (0..4).find(|&i| i != leader).expect("a follower");
    let dead_id = cluster.nodes[dead].id;
    assert!((0..4).all(|i| i == leader || cluster.nodes[i].id >= dead_id));
    // Every follower acknowledged the write, so all match the leader's log.
    let last: u64 = cluster.info(leader)["last_log_index"]
        .parse()
        .expect("last_log_index");
    wait_for(Duration::from_secs(10), "every follower to match", || {
        members(&cluster, leader)
            .values()
            .all(|m| m["match_index"].parse::<u64>().ok() == Some(last))
            .then_some(())
    });
    cluster.kill(dead);
    // Counted down once it missed a whole check-quorum round: within two
    // election timeouts, however late the leader runs (a late wake-up runs
    // every tick it missed).
    thread::sleep(election_timeout * 5 / 2);
    let leader_id = cluster.nodes[leader].id.to_string();
    // On a loaded machine the successor may not take over within an
    // election timeout (`-TRYAGAIN transfer to N abandoned`), and the
    // client retries; what must hold is that N is never the dead node.
    let abandoned_to_dead = format!("TRYAGAIN transfer to {dead_id} abandoned");
    let mut tries = 0;
    loop {
        let reply = cluster
            .client(leader)
            .cmd(&["CLUSTER", "REMOVE", &leader_id]);
        match reply {
            Reply::Ok => break,
            Reply::Error(e) if e.starts_with("TRYAGAIN transfer to") && tries < 4 => {
                assert!(!e.starts_with(&abandoned_to_dead), "{e}");
                tries += 1;
            }
            other => panic!("CLUSTER REMOVE of the leader answered {other:?}"),
        }
    }
    let via = (0..4)
        .find(|&i| i != leader && i != dead)
        .expect("a live follower");
    let now = members(&cluster, via);
    assert!(!now.contains_key(&cluster.nodes[leader].id), "{now:?}");
    assert!(now[&dead_id]["leader"] == "no", "{now:?}");
    assert_eq!(cluster.client(via).cmd_retry(&["GET", "k"]), bulk("v"));
}
