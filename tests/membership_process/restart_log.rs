//! What a restarted node logs about the membership changes in its log.

use super::common::Cluster;
use super::{cluster_cmd, ok};
use std::time::Duration;

/// Every start applies the membership changes in the node's log again. The
/// log used to say "membership change committed ... node 9 removed" then as
/// if it happened at that moment; an operator reading it after a restart
/// took changes made long ago for new ones. Those replayed now say so, and
/// a change made after the restart does not.
#[test]
fn a_restarted_node_logs_the_changes_in_its_log_as_replayed() {
    let mut cluster = Cluster::new(3);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    // A learner nobody runs: added and removed, two changes in every log.
    assert_eq!(
        cluster_cmd(&cluster, leader, &["ADD", "9", "127.0.0.1:1"]),
        ok()
    );
    assert_eq!(cluster_cmd(&cluster, leader, &["REMOVE", "9"]), ok());
    let removal: u64 = cluster.info(leader)["commit_index"]
        .parse()
        .expect("commit_index");
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.wait_applied(removal, Duration::from_secs(10));
    assert_eq!(cluster.terminate(follower), Some(0));
    let before_restart = cluster.log_text(follower).len();
    cluster.spawn(follower);
    cluster.wait_applied(removal, Duration::from_secs(10));
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    assert_eq!(
        cluster_cmd(&cluster, leader, &["ADD", "8", "127.0.0.1:2"]),
        ok()
    );
    let added: u64 = cluster.info(leader)["commit_index"]
        .parse()
        .expect("commit_index");
    cluster.wait_applied(added, Duration::from_secs(10));
    let log = cluster.log_text(follower);
    let after_restart = &log[before_restart..];
    let line = |what: &str| {
        after_restart
            .lines()
            .find(|line| line.contains("membership change committed") && line.contains(what))
            .unwrap_or_else(|| panic!("no line for {what} after the restart:\n{after_restart}"))
            .to_owned()
    };
    assert!(
        line("node 9 removed").contains("replayed"),
        "{after_restart}"
    );
    assert!(
        line("node 9 added as a learner").contains("replayed"),
        "{after_restart}"
    );
    assert!(
        !line("node 8 added as a learner").contains("replayed"),
        "{after_restart}"
    );
}
