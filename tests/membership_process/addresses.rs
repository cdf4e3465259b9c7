//! Raft addresses: a joined node restarted on another raft port is refused,
//! and CLUSTER ADD refuses an address a member holds (however it is written,
//! and when a removed node held it first) and one too long for a host name.

use super::common::{self, bulk, Cluster};
use super::{cluster_cmd, err, members, ok, wait_voter};
use raftkv::kv::Reply;
use std::time::Duration;

/// A node that joined is known to the members by the address it was added
/// at, and they keep dialing that one: restarted on another raft port it is
/// refused (status 1, naming the address book, nothing changed) as a founder
/// is, where it used to start, sit unreachable and still count as a voter.
/// A joiner never added may move, as nobody knows it yet.
#[test]
fn a_joined_node_restarted_on_another_raft_port_exits_1_and_changes_nothing() {
    let mut cluster = Cluster::with_joiners(3, 2);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    cluster.spawn(3);
    cluster.spawn(4);
    let old_raft = cluster.nodes[3].raft_addr();
    assert_eq!(
        cluster_cmd(&cluster, leader, &["ADD", "4", &old_raft]),
        ok()
    );
    wait_voter(&cluster, leader, 4);
    assert_eq!(cluster.client(3).cmd_retry(&["SET", "k", "v"]), ok());
    assert_eq!(cluster.terminate(3), Some(0));

    let dir = cluster.data_dir(3).to_path_buf();
    let before = common::contents(&dir, &[]);
    let new_raft = format!("127.0.0.1:{}", common::free_port());
    let mut args = cluster.args(3);
    let at = args
        .iter()
        .position(|arg| arg == "--raft-addr")
        .expect("--raft-addr")
        + 1;
    args[at] = new_raft.clone();
    let (code, stderr) = common::run_to_exit(&args, Duration::from_secs(15));
    assert_eq!(code, Some(1), "{}", stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("raftkv: "))
        .unwrap_or_else(|| panic!("no error line:\n{}", stderr));
    assert!(
        line.starts_with(&format!(
            "raftkv: {}: node 4 joined at {}, but raft_addr is {}",
            dir.join("addresses").display(),
            old_raft,
            new_raft
        )),
        "{}",
        line
    );
    assert_eq!(common::contents(&dir, &[]), before, "the data dir changed");

    cluster.spawn(3);
    assert_eq!(cluster.client(3).cmd_retry(&["GET", "k"]), bulk("v"));

    cluster.kill(4);
    cluster.nodes[4].raft_port = common::free_port();
    cluster.spawn(4);
    let moved = cluster.nodes[4].raft_addr();
    assert_eq!(cluster_cmd(&cluster, leader, &["ADD", "5", &moved]), ok());
    wait_voter(&cluster, leader, 5);
    assert_eq!(cluster.client(4).cmd_retry(&["GET", "k"]), bulk("v"));
}

/// `CLUSTER ADD` refuses a raft address a member holds, also when a node
/// removed earlier held it first. The address book keeps every node it
/// learned, removed ones too, and the check took the first holder there
/// (the lowest id): a removed node hid the member, and a second node was
/// added at the member's address. (Found by a soak that removed nodes and
/// added new ones.) No node runs at the address: learners are added and
/// removed without one.
#[test]
fn an_address_a_removed_node_held_first_is_still_refused_while_a_member_holds_it() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let addr = format!("127.0.0.1:{}", common::free_port());
    assert_eq!(cluster_cmd(&cluster, leader, &["ADD", "4", &addr]), ok());
    assert_eq!(cluster_cmd(&cluster, leader, &["REMOVE", "4"]), ok());
    assert_eq!(cluster_cmd(&cluster, leader, &["ADD", "5", &addr]), ok());
    assert_eq!(
        cluster_cmd(&cluster, leader, &["ADD", "6", &addr]),
        err(&format!("ERR address {addr} is node 5's"))
    );
    assert!(!members(&cluster, leader).contains_key(&6));
}

/// The leader dials `127.0.0.1:07002` as `127.0.0.1:7002`: an address a
/// member holds is refused however it is written, or the new learner would
/// be dialed at that member, which refuses a handshake meant for another.
#[test]
fn an_address_a_member_holds_written_another_way_is_refused() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let node = &cluster.nodes[(leader + 1) % 3];
    let padded = format!("127.0.0.1:0{}", node.raft_port);
    assert_eq!(
        cluster_cmd(&cluster, leader, &["ADD", "4", &padded]),
        err(&format!("ERR address {padded} is node {}'s", node.id))
    );
    assert!(!members(&cluster, leader).contains_key(&4));
}

/// Each AddLearner entry carries the raft address of every member, so raft
/// addresses that each fit in a request (up to `max_request_bytes`, 8 MiB)
/// added up to an entry larger than any peer frame may be: the followers
/// dropped every connection that brought it, and nothing committed again.
/// A raft address is at most a host name's 253 bytes and a port.
#[test]
fn a_raft_address_too_long_for_a_host_name_is_refused_and_writes_go_on() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "v"]), ok());
    for (id, letter) in [("4", "a"), ("5", "b"), ("6", "c")] {
        let addr = format!("{}:7004", letter.repeat(6 << 20));
        let reply = cluster.client(leader).cmd(&["CLUSTER", "ADD", id, &addr]);
        assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("ERR invalid raft address")),
            "CLUSTER ADD {id} with a 6 MiB address: {reply:?}"
        );
    }
    let long_name = format!("{}:7004", "h".repeat(254));
    let reply = cluster
        .client(leader)
        .cmd(&["CLUSTER", "ADD", "4", &long_name]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("ERR invalid raft address")),
        "{reply:?}"
    );
    assert_eq!(cluster.client(leader).cmd_retry(&["SET", "k", "w"]), ok());
    assert_eq!(members(&cluster, leader).len(), 3);
}
