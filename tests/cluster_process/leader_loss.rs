//! Requests held by a leader that is deposed, dies, freezes or loses its
//! quorum, and a transfer whose leader froze: answered by the next leader
//! where they can be, otherwise `-TRYAGAIN` (never applied) or `-TIMEOUT`.

use super::common::{bulk, wait_for, Cluster, Resume};
use raftkv::kv::Reply;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn reads_a_deposed_leader_took_are_answered_by_the_next_one() {
    let cluster = Cluster::start(3);
    let old = cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(old);
    assert_eq!(client.cmd(&["SET", "k", "old"]), Reply::Ok);
    let pid = cluster.pid(old).expect("running");
    let resume = Resume::stop(pid);
    // These wait in the stopped leader's socket; when it runs again it may
    // take them as leader before it hears of its successor.
    for _ in 0..20 {
        client.send(&[b"GET", b"k"]);
    }
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = wait_for(Duration::from_secs(10), "a new leader", || {
        others
            .iter()
            .copied()
            .find(|&i| cluster.info(i)["role"] == "leader")
    });
    assert_eq!(
        cluster.client(new).cmd_retry(&["SET", "k", "new"]),
        Reply::Ok
    );
    drop(resume);
    for _ in 0..20 {
        let reply = client.read();
        assert!(
            reply == bulk("old") || reply == bulk("new"),
            "a read the old leader took got {reply:?}"
        );
    }
}

/// A leader dies holding requests a follower forwarded to it. Once the
/// follower knows another leader, the reads (a GET, CLUSTER MEMBERS) go
/// there and are answered, and the write, whose outcome nobody can know,
/// gets `-TIMEOUT`, all before their deadline (the reads used to get
/// `-TRYAGAIN` at their deadline). A read pipelined between two writes
/// cannot go elsewhere (it would see the second if that was applied): it
/// gets `-TRYAGAIN` as soon as the writes are settled. It used to wait for
/// the dead leader until its deadline, holding up the replies behind it,
/// and then said `-TRYAGAIN no leader`, with a leader elected long before.
#[test]
fn requests_forwarded_to_a_leader_that_died_are_settled_by_the_next() {
    let mut cluster = Cluster::start(3);
    let old = cluster.wait_for_leader(Duration::from_secs(15));
    let follower = (0..3).find(|i| *i != old).expect("a follower");
    let mut client = cluster.client(follower);
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::Ok);
    let mut between = cluster.client(follower);
    assert_eq!(between.cmd(&["PING"]), Reply::Status("PONG".into()));
    let pid = cluster.pid(old).expect("running");
    let resume = Resume::stop(pid);
    // A read after a write is not held behind it: both are forwarded.
    client.send(&[b"SET", b"w", b"1"]);
    client.send(&[b"GET", b"k"]);
    let mut members = cluster.client(follower);
    members.send(&[b"CLUSTER", b"MEMBERS"]);
    for argv in [
        &[&b"SET"[..], b"a", b"1"][..],
        &[b"GET", b"k"],
        &[b"SET", b"a", b"2"],
    ] {
        between.send(argv);
    }
    thread::sleep(Duration::from_millis(100));
    cluster.kill(old);
    drop(resume);
    assert_eq!(
        client.read(),
        Reply::Error("TIMEOUT outcome unknown".into())
    );
    assert_eq!(client.read(), bulk("v"), "the read went to the next leader");
    let timeout = Reply::Error("TIMEOUT outcome unknown".into());
    assert_eq!(between.read(), timeout);
    assert_eq!(
        between.read(),
        Reply::Error("TRYAGAIN leader changed".into()),
        "a read between two writes to a dead leader"
    );
    assert_eq!(between.read(), timeout);
    match members.read() {
        Reply::Bulk(text) => {
            let text = String::from_utf8_lossy(&text).into_owned();
            assert!(text.contains("leader=yes"), "{text}");
        }
        other => panic!("CLUSTER MEMBERS answered {other:?}"),
    }
}

/// A leader whose connections to a majority of the voters closed (they
/// died) holds new writes unwritten, its own clients' and those a follower
/// forwards: they get `-TRYAGAIN` (SPEC's answer for no quorum), and are
/// not applied when the followers return. It refuses membership changes
/// with `-TRYAGAIN` at once. (They used to be appended and
/// answered `-TIMEOUT outcome unknown`, then applied once the followers were
/// back.) The election timeout is 1 s here so that the leader is still
/// leading when the writes arrive: it steps down after an election timeout
/// without its quorum.
#[test]
fn writes_to_a_leader_that_lost_its_quorum_get_tryagain_and_never_apply() {
    let mut cluster = Cluster::new(5);
    cluster.set_election_timeout_ms(1000);
    for i in 0..5 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    let via = (leader + 1) % 5;
    let mut client = cluster.client(leader);
    let mut through_follower = cluster.client(via);
    assert_eq!(client.cmd_retry(&["SET", "before", "v"]), Reply::Ok);
    wait_for(Duration::from_secs(10), "all peers connected", || {
        (client.info()["connected_peers"] == "4").then_some(())
    });
    let dead: Vec<usize> = (0..5).filter(|i| *i != leader && *i != via).collect();
    for &i in &dead {
        cluster.kill(i);
    }
    wait_for(
        Duration::from_secs(5),
        "the leader to see three connections close",
        || (client.info()["connected_peers"] == "1").then_some(()),
    );
    assert_eq!(client.info()["role"], "leader", "stepped down too early");
    client.send(&[b"SET", b"k", b"direct"]);
    through_follower.send(&[b"SET", b"f", b"forwarded"]);
    // Membership changes likewise: they used to be appended, answered
    // `-TIMEOUT` at their deadline, and applied once the voters returned
    // and re-elected this node.
    let mut add_direct = cluster.client(leader);
    let mut add_via = cluster.client(via);
    add_direct.send(&[b"CLUSTER", b"ADD", b"9", b"127.0.0.1:1"]);
    add_via.send(&[b"CLUSTER", b"ADD", b"10", b"127.0.0.1:2"]);
    let tryagain = Reply::Error("TRYAGAIN no leader".into());
    assert_eq!(add_direct.read(), tryagain, "a change at the leader");
    assert_eq!(add_via.read(), tryagain, "a forwarded change");
    assert_eq!(client.read(), tryagain, "a write to the leader");
    assert_eq!(through_follower.read(), tryagain, "a forwarded write");
    for &i in &dead {
        cluster.spawn(i);
    }
    cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(client.cmd_retry(&["GET", "before"]), bulk("v"));
    assert_eq!(client.cmd_retry(&["GET", "k"]), Reply::Nil);
    assert_eq!(client.cmd_retry(&["GET", "f"]), Reply::Nil);
    match client.cmd_retry(&["CLUSTER", "MEMBERS"]) {
        Reply::Bulk(text) => {
            let text = String::from_utf8_lossy(&text).into_owned();
            assert!(
                !text.contains("id=9 ") && !text.contains("id=10 "),
                "{text}"
            );
        }
        other => panic!("CLUSTER MEMBERS answered {other:?}"),
    }
}

/// A leader frozen by SIGSTOP keeps its connections but answers nothing.
/// Reads a follower forwarded to it (a GET, CLUSTER MEMBERS) go to the next
/// leader as soon as the follower knows it, instead of waiting out the
/// client's deadline (they used to get `-TRYAGAIN no leader` there, with a
/// leader elected).
#[test]
fn reads_forwarded_to_a_frozen_leader_are_answered_by_the_next() {
    let cluster = Cluster::start(3);
    let old = cluster.wait_for_leader(Duration::from_secs(15));
    let follower = (0..3).find(|i| *i != old).expect("a follower");
    let mut client = cluster.client(follower);
    assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::Ok);
    let mut members = cluster.client(follower);
    let pid = cluster.pid(old).expect("running");
    let resume = Resume::stop(pid);
    client.send(&[b"GET", b"k"]);
    members.send(&[b"CLUSTER", b"MEMBERS"]);
    assert_eq!(client.read(), bulk("v"), "the read went to the next leader");
    let old_id = cluster.nodes[old].id;
    match members.read() {
        Reply::Bulk(text) => {
            let text = String::from_utf8_lossy(&text).into_owned();
            let leader_line = text
                .lines()
                .find(|line| line.contains("leader=yes"))
                .unwrap_or_else(|| panic!("no leader in {text}"));
            assert!(!leader_line.starts_with(&format!("id={old_id} ")), "{text}");
        }
        other => panic!("CLUSTER MEMBERS answered {other:?}"),
    }
    drop(resume);
}

/// A CLUSTER TRANSFER a follower forwarded to a leader that told the target
/// to campaign and was then frozen: the target leads within milliseconds,
/// and the follower answers `+OK` once it knows (SPEC: `+OK` once that node
/// is leader). It used to wait for the frozen leader until the deadline and
/// answer `-TRYAGAIN no leader`, the promise that nothing happened, after
/// the leadership had moved as asked, even when the follower was the target
/// and led itself.
#[test]
fn a_transfer_whose_leader_froze_is_answered_once_the_target_leads() {
    let mut cluster = Cluster::new(3);
    // Long enough that no ordinary election follows the freeze in the
    // second the target is watched for.
    cluster.set_election_timeout_ms(1000);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let mut counted = 0;
    for round in 0..6 {
        if counted == 2 {
            break;
        }
        let leader = cluster.wait_for_settled_leader(Duration::from_secs(30));
        let (via, target) = if round % 2 == 0 {
            ((leader + 1) % 3, (leader + 2) % 3)
        } else {
            ((leader + 1) % 3, (leader + 1) % 3)
        };
        let target_id = cluster.nodes[target].id.to_string();
        let mut client = cluster.client(via);
        assert_eq!(client.cmd(&["SET", "k", "v"]), Reply::Ok);
        let pid = cluster.pid(leader).expect("running");
        client.send(&[b"CLUSTER", b"TRANSFER", target_id.as_bytes()]);
        // Past the forward and the leader's TimeoutNow, before the target's
        // win reaches the leader.
        thread::sleep(Duration::from_millis(2));
        let frozen = Resume::stop(pid);
        let started = Instant::now();
        let mut target_leads = false;
        while started.elapsed() < Duration::from_millis(900) {
            if cluster.info(target)["role"] == "leader" {
                target_leads = true;
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let reply = client.read();
        drop(frozen);
        if target_leads {
            counted += 1;
            assert_eq!(reply, Reply::Ok, "round {round}: the target leads");
        }
    }
    assert!(
        counted > 0,
        "the target never led while the leader was frozen"
    );
}

/// A write a follower forwards while the leader transfers its leadership
/// is held until the transfer ends. When it is abandoned (the target is
/// frozen) after three of the five voters died, the leader has no
/// connected quorum: the write waits for one as a new write does, and
/// gets `-TRYAGAIN no leader`, never applied. (It used to be appended
/// then, and answered `-TIMEOUT outcome unknown` once the leader stepped
/// down.) The election timeout is 2 s so that the write reaches the
/// leader, and the three die, well within the transfer.
#[test]
fn a_write_held_for_a_transfer_abandoned_without_a_quorum_gets_tryagain() {
    let mut cluster = Cluster::new(5);
    cluster.set_election_timeout_ms(2000);
    for i in 0..5 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(30));
    let via = (leader + 1) % 5;
    let target = (leader + 2) % 5;
    let mut client = cluster.client(leader);
    let mut through_follower = cluster.client(via);
    assert_eq!(client.cmd_retry(&["SET", "before", "v"]), Reply::Ok);
    wait_for(Duration::from_secs(10), "all peers connected", || {
        (client.info()["connected_peers"] == "4").then_some(())
    });
    let target_id = cluster.nodes[target].id.to_string();
    let frozen = Resume::stop(cluster.pid(target).expect("running"));
    let mut transfer = cluster.client(leader);
    transfer.send(&[b"CLUSTER", b"TRANSFER", target_id.as_bytes()]);
    let started = format!("transferring leadership to node {target_id}");
    wait_for(Duration::from_secs(5), "the transfer to start", || {
        cluster.log_text(leader).contains(&started).then_some(())
    });
    through_follower.send(&[b"SET", b"f", b"forwarded"]);
    // Time for the forward to reach the leader, which holds it.
    thread::sleep(Duration::from_millis(200));
    let dead: Vec<usize> = (0..5).filter(|i| *i != leader && *i != via).collect();
    for &i in &dead {
        cluster.kill(i);
    }
    drop(frozen);
    let abandoned = Reply::Error(format!("ERR transfer to {target_id} abandoned"));
    assert_eq!(transfer.read(), abandoned);
    assert_eq!(
        through_follower.read(),
        Reply::Error("TRYAGAIN no leader".into()),
        "the held write"
    );
    for &i in &dead {
        cluster.spawn(i);
    }
    cluster.wait_for_leader(Duration::from_secs(30));
    assert_eq!(client.cmd_retry(&["GET", "before"]), bulk("v"));
    assert_eq!(client.cmd_retry(&["GET", "f"]), Reply::Nil);
}
