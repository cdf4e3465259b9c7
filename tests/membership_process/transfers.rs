//! CLUSTER TRANSFER: transfers finish or are abandoned, changes pipelined
//! behind one run one at a time, and a follower's pipeline held by a
//! finishing transfer is served whole and in order.

use super::common::{bulk, wait_for, Client, Cluster, Resume};
use super::{cluster_cmd, err, members, ok};
use raftkv::wire::resp;
use std::time::{Duration, Instant};

#[test]
fn transfers_finish_or_are_abandoned_and_pipelined_changes_run_one_at_a_time() {
    let mut cluster = Cluster::with_joiners(3, 2);
    // A transfer must finish within an election timeout: 1 s, not the tests'
    // 200 ms, in which a loaded machine once did not let the target even
    // acknowledge the leader's first entry (`-ERR transfer to 2 abandoned`).
    cluster.set_election_timeout_ms(1000);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let id_a = cluster.nodes[a].id.to_string();
    // And it starts from a target the leader knows to hold its log, as a
    // transfer to a caught-up follower is what this part checks.
    let last: u64 = cluster.info(leader)["last_log_index"]
        .parse()
        .expect("last_log_index");
    wait_for(
        Duration::from_secs(20),
        "the leader to hear node a acknowledge its log",
        || (cluster.match_index_known_to(leader, a)? >= last).then_some(()),
    );
    // Asked through another follower, answered once node a leads.
    assert_eq!(cluster_cmd(&cluster, b, &["TRANSFER", &id_a]), ok());
    assert_eq!(cluster.info(a)["leader_id"], id_a);
    assert_eq!(cluster.info(a)["role"], "leader");
    assert_eq!(
        cluster.client(b).cmd_retry(&["SET", "after", "transfer"]),
        ok()
    );

    // Changes pipelined on one connection are served one after the other,
    // as if sent one at a time: each waits for the reply to the one before
    // (sent together, the second found the first uncommitted and was
    // refused). Through a follower. Nodes 4 and 5 are not running, so 4
    // stays a learner.
    let (addr4, addr5) = (cluster.nodes[3].raft_addr(), cluster.nodes[4].raft_addr());
    let mut client = cluster.client(b);
    let mut pipeline = Vec::new();
    resp::encode_request(&[b"CLUSTER", b"ADD", b"4", addr4.as_bytes()], &mut pipeline);
    resp::encode_request(&[b"CLUSTER", b"ADD", b"5", addr5.as_bytes()], &mut pipeline);
    resp::encode_request(&[b"CLUSTER", b"REMOVE", b"5"], &mut pipeline);
    client.send_raw(&pipeline).expect("send the pipeline");
    for change in ["ADD 4", "ADD 5", "REMOVE 5"] {
        assert_eq!(client.read(), ok(), "{change}");
    }
    let listed = members(&cluster, b);
    assert_eq!(listed[&4]["suffrage"], "learner");
    assert_eq!(listed[&4]["client_addr"], "");
    assert_eq!(listed[&4]["match_index"], "0");
    assert!(!listed.contains_key(&5));
    // Node b follows: the changes committed with the leader and the other
    // follower may reach it a little later.
    let learners = format!("4={}", addr4);
    wait_for(Duration::from_secs(10), "node b to list learner 4", || {
        (cluster.info(b)["learners"] == learners).then_some(())
    });
    assert_eq!(
        cluster.client(b).cmd(&["CLUSTER", "TRANSFER", "4"]),
        err("ERR node 4 is a learner")
    );
    assert_eq!(cluster_cmd(&cluster, b, &["REMOVE", "4"]), ok());
    assert!(!members(&cluster, b).contains_key(&4));

    // A transfer to a node that does not answer is abandoned after an
    // election timeout, and writes go on.
    cluster.kill(b);
    let id_b = cluster.nodes[b].id.to_string();
    // Meanwhile a follower's client pipelines a write and a read of it: the
    // leader holds the write until the transfer's outcome, and the read
    // behind it, so the read sees it.
    let started = Instant::now();
    let mut asker = cluster.client(a);
    send_pipeline(&mut asker, &[&["CLUSTER", "TRANSFER", &id_b]]);
    std::thread::sleep(Duration::from_millis(100));
    let mut through_follower = cluster.client(leader);
    send_pipeline(
        &mut through_follower,
        &[&["SET", "during", "transfer"], &["GET", "during"]],
    );
    assert_eq!(
        asker.read(),
        err(&format!("ERR transfer to {} abandoned", id_b))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(through_follower.read(), ok());
    assert_eq!(through_follower.read(), bulk("transfer"));
    assert_eq!(cluster.info(a)["role"], "leader");
    assert_eq!(
        cluster
            .client(leader)
            .cmd_retry(&["SET", "after", "abandon"]),
        ok()
    );
    assert_eq!(cluster.client(a).cmd(&["GET", "after"]), bulk("abandon"));
}

/// A transfer that finishes while a follower's client pipelines `SET`,
/// `GET`, `SET` and a `CLUSTER TRANSFER` to the same target: the leader
/// holds the three until the transfer is done, then refuses them in order,
/// and the follower routes them again in order to the new leader. The read,
/// refused before the write behind it was decided, is routed again with it
/// rather than refused, and so are the writes, though the TRANSFER after
/// them was answered.
#[test]
fn a_pipeline_held_by_a_finishing_transfer_is_served_whole_and_in_order() {
    let cluster = Cluster::start_with_election_timeout(3, 2000);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "warm", "1"]),
        ok()
    );
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (follower, target) = (others[0], others[1]);
    let target_id = cluster.nodes[target].id.to_string();
    let frozen = Resume::stop(cluster.pid(target).expect("target's pid"));
    // Writes the target misses, so that the transfer waits for it.
    for i in 0..20 {
        assert_eq!(
            cluster.client(leader).cmd(&["SET", &format!("m{i}"), "x"]),
            ok()
        );
    }
    let mut asker = cluster.client(leader);
    send_pipeline(&mut asker, &[&["CLUSTER", "TRANSFER", &target_id]]);
    std::thread::sleep(Duration::from_millis(100));
    let mut client = cluster.client(follower);
    send_pipeline(
        &mut client,
        &[
            &["SET", "a", "1"],
            &["GET", "a"],
            &["SET", "a", "2"],
            &["CLUSTER", "TRANSFER", &target_id],
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(frozen);
    assert_eq!(asker.read(), ok(), "the transfer");
    // The second TRANSFER joins the first and is answered with it, before
    // the held requests come back: it touches no key, so they still go.
    assert_eq!(
        (client.read(), client.read(), client.read(), client.read()),
        (ok(), bulk("1"), ok(), ok())
    );
    assert_eq!(cluster.client(follower).cmd_retry(&["GET", "a"]), bulk("2"));
}

/// Writes `requests` to `client` in one write, without reading the replies.
fn send_pipeline(client: &mut Client, requests: &[&[&str]]) {
    let mut pipeline = Vec::new();
    for argv in requests {
        let argv: Vec<&[u8]> = argv.iter().map(|word| word.as_bytes()).collect();
        resp::encode_request(&argv, &mut pipeline);
    }
    client.send_raw(&pipeline).expect("send the pipeline");
}
