//! A leader stopped with SIGTERM answers its own clients' requests still
//! waiting before it exits, in each connection's order: a write it never
//! appended (parked for want of a connected quorum, or while a leadership
//! transfer is under way) `-TRYAGAIN no leader`, one it appended whose
//! commit never came `-TIMEOUT outcome unknown`. Before, those clients saw
//! only the connection close, and could not tell a write safe to send again
//! from one that may have been applied. A write answered `-TRYAGAIN` must
//! never be applied.
//!
//! Also here: a plain `CLUSTER TRANSFER` holds the CLUSTER ADD that arrives
//! during it, as a stop's handover does, rather than refuse it.

mod common;

use common::{bulk, wait_for, Client, Cluster, Resume};
use raftkv::kv::Reply;
use std::time::Duration;

const ELECTION_TIMEOUT_MS: u64 = 4000;

fn tryagain() -> Option<Reply> {
    Some(Reply::Error("TRYAGAIN no leader".into()))
}

/// A three-node cluster with a leader that holds one acknowledged write.
fn cluster_with_a_leader(election_timeout_ms: u64) -> (Cluster, usize) {
    let cluster = Cluster::start_with_election_timeout(3, election_timeout_ms);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "before", "1"]),
        Reply::Ok
    );
    (cluster, leader)
}

/// How many requests the node behind `observer` has handled, this INFO
/// included.
fn commands_processed(observer: &mut Client) -> u64 {
    observer.info()["total_commands_processed"]
        .parse()
        .expect("numeric total_commands_processed")
}

/// Waits until the node behind `observer` has handled `sent` requests
/// since `before` was read (each INFO asked counts itself): a stop that
/// comes after this cannot come before the node read them, however slow
/// the machine.
fn wait_until_handled(observer: &mut Client, before: u64, sent: u64) {
    let mut asked = 0;
    wait_for(
        Duration::from_secs(20),
        "the node to read the requests",
        || {
            asked += 1;
            (commands_processed(observer) >= before + sent + asked).then_some(())
        },
    );
}

/// Sends `requests` on `writer` to the leader, waits until the leader has
/// handled them, stops it with SIGTERM and returns what `writer` got for
/// each.
fn send_then_stop(
    cluster: &mut Cluster,
    leader: usize,
    writer: &mut Client,
    requests: &[&[&[u8]]],
) -> Vec<Option<Reply>> {
    let mut observer = cluster.client(leader);
    let before = commands_processed(&mut observer);
    for request in requests {
        writer.send(request);
    }
    // The leader reads them before the stop closes its ears.
    wait_until_handled(&mut observer, before, requests.len() as u64);
    assert_eq!(cluster.terminate(leader), Some(0), "exit status");
    requests.iter().map(|_| writer.try_read()).collect()
}

/// Freezes a follower and has a client of the leader start a `CLUSTER
/// TRANSFER` to it, which stays under way until its timeout: the frozen
/// follower (resumed when dropped), that client, and the follower's id.
fn transfer_to_a_frozen_follower(cluster: &Cluster, leader: usize) -> (Resume, Client, String) {
    let target = (0..3).find(|&i| i != leader).expect("a follower");
    let target_id = cluster.nodes[target].id.to_string();
    let frozen = Resume::stop(cluster.pid(target).expect("running"));
    let mut transferrer = cluster.client(leader);
    transferrer.send(&[b"CLUSTER", b"TRANSFER", target_id.as_bytes()]);
    let started = format!("transferring leadership to node {target_id}");
    wait_for(Duration::from_secs(5), "the transfer to start", || {
        cluster.log_text(leader).contains(&started).then_some(())
    });
    (frozen, transferrer, target_id)
}

/// Reads, through a leader the cluster elects, that `keys` hold nothing.
fn assert_never_applied(cluster: &Cluster, keys: &[&str]) {
    let next = cluster.wait_for_leader(Duration::from_secs(30));
    let mut reader = cluster.client(next);
    assert_eq!(reader.cmd_retry(&["GET", "before"]), bulk("1"));
    for key in keys {
        assert_eq!(
            reader.cmd_retry(&["GET", key]),
            Reply::Nil,
            "{key}, answered -TRYAGAIN, was applied"
        );
    }
}

/// Both followers killed: the leader, its connections to them closed,
/// parks its clients' writes rather than append what could not commit (it
/// steps down an election timeout after it last heard them; the stop comes
/// well before), and a read pipelined behind them waits with them. Nobody
/// can take over, so it stops at once.
#[test]
fn writes_parked_on_a_leader_without_a_quorum_are_refused_tryagain_when_it_stops() {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    for i in (0..3).filter(|&i| i != leader) {
        cluster.kill(i);
    }
    let mut writer = cluster.client(leader);
    wait_for(
        Duration::from_secs(5),
        "the leader to see its followers gone",
        || (writer.info()["connected_peers"] == "0").then_some(()),
    );
    let requests: [&[&[u8]]; 3] = [
        &[b"SET", b"parked", b"1"],
        &[b"GET", b"parked"],
        &[b"SET", b"later", b"1"],
    ];
    let replies = send_then_stop(&mut cluster, leader, &mut writer, &requests);
    assert_eq!(replies, [tryagain(), tryagain(), tryagain()]);
    for i in 0..3 {
        cluster.spawn(i);
    }
    assert_never_applied(&cluster, &["parked", "later"]);
}

/// A `CLUSTER TRANSFER` to a frozen follower: no write is appended while
/// it is under way, so another client's write is parked. The stop waits
/// for that transfer, which outlasts the bound (2 s, its own timeout being
/// 4 s): the transfer gets `-ERR transfer to N abandoned` (its deadline's
/// answer: the target may still act on it), the parked write `-TRYAGAIN`.
#[test]
fn a_write_parked_during_a_transfer_is_refused_tryagain_when_the_leader_stops() {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    let (frozen, mut transferrer, target_id) = transfer_to_a_frozen_follower(&cluster, leader);
    let mut writer = cluster.client(leader);
    let replies = send_then_stop(
        &mut cluster,
        leader,
        &mut writer,
        &[&[b"SET", b"parked", b"1"]],
    );
    assert_eq!(
        transferrer.try_read(),
        Some(Reply::Error(format!(
            "ERR transfer to {target_id} abandoned"
        )))
    );
    assert_eq!(replies, [tryagain()], "the parked write");
    drop(frozen);
    cluster.spawn(leader);
    assert_never_applied(&cluster, &["parked"]);
}

/// Both followers frozen (their connections stay open): the leader appends
/// its client's writes, which cannot commit, and its read waits for a
/// ReadIndex round that cannot finish. The handover to a frozen follower
/// outlasts the bound; at exit the writes' outcome is unknown (`-TIMEOUT`:
/// the next leader may commit them), the read changed nothing (`-TRYAGAIN`).
#[test]
fn writes_a_stopping_leader_appended_are_answered_timeout_in_order() {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    let frozen: Vec<Resume> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| Resume::stop(cluster.pid(i).expect("running")))
        .collect();
    let mut writer = cluster.client(leader);
    let requests: [&[&[u8]]; 3] = [
        &[b"SET", b"appended", b"1"],
        &[b"GET", b"appended"],
        &[b"SET", b"appended", b"2"],
    ];
    let replies = send_then_stop(&mut cluster, leader, &mut writer, &requests);
    let timeout = Some(Reply::Error("TIMEOUT outcome unknown".into()));
    assert_eq!(replies, [timeout.clone(), tryagain(), timeout]);
    drop(frozen);
}
/// A `CLUSTER ADD` sent while a plain `CLUSTER TRANSFER` is under way (to a
/// frozen follower, so it is abandoned at its timeout) is held, as during a
/// stop's handover, and carried out once the transfer is over: not refused
/// `-TRYAGAIN leadership transfer in progress` for its client to retry.
#[test]
fn a_cluster_add_during_a_plain_transfer_is_held_and_carried_out() {
    let mut cluster = Cluster::with_joiners(3, 1);
    cluster.set_election_timeout_ms(1000);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let (frozen, mut transferrer, target_id) = transfer_to_a_frozen_follower(&cluster, leader);
    let addr = cluster.nodes[3].raft_addr();
    let mut adder = Client::connect(&cluster.nodes[leader].client_addr());
    adder.send(&[b"CLUSTER", b"ADD", b"4", addr.as_bytes()]);
    assert_eq!(
        transferrer.try_read(),
        Some(Reply::Error(format!(
            "ERR transfer to {target_id} abandoned"
        )))
    );
    assert_eq!(adder.try_read(), Some(Reply::Ok), "the CLUSTER ADD");
    drop(frozen);
}
