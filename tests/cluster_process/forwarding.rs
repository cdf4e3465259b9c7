//! A follower's forwards to its leader: forgotten when their clients reset,
//! answered by a reply that arrives with the deadline, and never answered by
//! a reply meant for a previous run of the follower.

use super::common::{bulk, wait_for, Client, Cluster, Resume};
use super::{cluster_that_committed_a_write, info_u64};
use raftkv::kv::Reply;
use std::thread;
use std::time::{Duration, Instant};

/// Closes `client`'s connection with a reset (SO_LINGER 0), as a client
/// that dies or gives up does: the node's next read fails at once, and
/// it drops the connection without waiting for its replies.
fn reset(client: Client) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on the open socket `client` owns, with a
    // pointer to a live `linger` and its size.
    let set = unsafe {
        libc::setsockopt(
            client.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_LINGER");
    drop(client);
}

/// Clients of a follower reset their connections while their requests are
/// forwarded to a leader, which then dies: the follower forgets those
/// forwards. They used to be dropped only when their reply came, or at
/// their deadline or when routed again, both of which need the client: a
/// reset client's read forwarded to a leader that died stayed in the map
/// for the life of the node. (Found by a soak that reset clients and
/// restarted leaders.)
#[test]
fn forwards_of_clients_that_reset_are_forgotten() {
    // Long enough that the follower does not campaign while the leader is
    // frozen and the requests are sent.
    let mut cluster = Cluster::start_with_election_timeout(3, 3000);
    let old = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (0..3).find(|i| *i != old).expect("a follower");
    let forwarded = |cluster: &Cluster| {
        cluster
            .info(follower)
            .get("forwarded_requests")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cluster.client(follower).cmd(&["SET", "k", "v"]), Reply::Ok);
    assert_eq!(forwarded(&cluster), "0");
    let resume = Resume::stop(cluster.pid(old).expect("running"));
    let mut clients = Vec::new();
    for argv in [
        &[&b"GET"[..], b"k"][..],
        &[b"SET", b"w", b"1"],
        &[b"CLUSTER", b"MEMBERS"],
    ] {
        let mut client = cluster.client(follower);
        client.send(argv);
        clients.push(client);
    }
    wait_for(Duration::from_secs(2), "three requests forwarded", || {
        (forwarded(&cluster) == "3").then_some(())
    });
    for client in clients {
        reset(client);
    }
    cluster.kill(old);
    drop(resume);
    let old_id = cluster.nodes[old].id;
    wait_for(Duration::from_secs(20), "another leader", || {
        let leader = cluster
            .info(follower)
            .get("leader_id")?
            .parse::<u64>()
            .ok()?;
        (leader != 0 && leader != old_id).then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "the reset clients' forwards forgotten",
        || (forwarded(&cluster) == "0").then_some(()),
    );
}

/// A relayed reply that reaches a follower in the same loop iteration as
/// the request's deadline answers it: the follower was frozen while the
/// leader committed the write and sent the reply, and resumes after the
/// deadline passed.
#[test]
fn a_relayed_reply_that_arrives_with_the_deadline_answers_the_request() {
    let (cluster, leader) = cluster_that_committed_a_write();
    let follower = (leader + 1) % 3;
    let leader_pid = cluster.pid(leader).expect("leader pid");
    let follower_pid = cluster.pid(follower).expect("follower pid");
    let mut client = cluster.client(follower);
    let term = || info_u64(&cluster, leader, "term");
    // A round counts only if the leader kept its term: on a loaded machine
    // its 50 ms freeze can outlast an election timeout, and a new leader
    // then rightly leaves the outcome unknown. And a round may rightly end
    // in -TIMEOUT when the follower was frozen in the middle of an
    // iteration: resumed, it finishes that iteration, whose deadline fires
    // before the next one reads the reply. Without the rule, every round
    // ends so; with it, most answer +OK.
    let timeout = Reply::Error("TIMEOUT outcome unknown".into());
    let (mut answered, mut counted) = (0, 0);
    for round in 0..10 {
        if answered == 3 {
            break;
        }
        let key = format!("late{round}");
        let before = term();
        let leader_frozen = Resume::stop(leader_pid);
        let sent = Instant::now();
        client.send(&[b"SET", key.as_bytes(), b"v"]);
        thread::sleep(Duration::from_millis(50));
        let follower_frozen = Resume::stop(follower_pid);
        drop(leader_frozen);
        // The leader applies the write, and so sends its reply, with the
        // other follower; the follower gets it only after its deadline (4
        // election timeouts, 800 ms here) has passed.
        wait_for(
            Duration::from_secs(10),
            "the leader to apply the write",
            || (cluster.client(leader).cmd(&["GET", &key]) == bulk("v")).then_some(()),
        );
        thread::sleep(Duration::from_millis(1500).saturating_sub(sent.elapsed()));
        drop(follower_frozen);
        let reply = client.read();
        if cluster.wait_for_leader(Duration::from_secs(10)) != leader || term() != before {
            break;
        }
        counted += 1;
        assert!(
            reply == Reply::Ok || reply == timeout,
            "round {round}: {reply:?}"
        );
        answered += usize::from(reply == Reply::Ok);
        assert_eq!(client.cmd(&["GET", &key]), bulk("v"), "round {round}");
    }
    assert!(counted > 0, "the leader changed in the first round");
    assert!(answered > 0, "no reply in {counted} rounds was +OK");
}

/// A leader answers a forwarded request by the id the follower gave it, on
/// whatever connection to that follower is open when the answer is ready.
/// Here the leader holds a follower's INCRs (three of five nodes frozen, so
/// nothing commits) while that follower is killed and restarted, and the
/// restarted follower forwards GETs meanwhile. Once the frozen nodes resume,
/// the INCRs commit and their answers go to the new run of the follower;
/// they must not answer its GETs. (Every run counted its ids from 1, so the
/// GETs got `:1`, `:2`, `:3`.)
#[test]
fn a_restarted_follower_gets_no_answer_meant_for_its_previous_run() {
    let mut cluster = Cluster::new(5);
    // Long enough that the leader keeps leading, with only the follower
    // heard from, through the restart.
    cluster.set_election_timeout_ms(4000);
    for i in 0..5 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(60));
    let follower = (leader + 1) % 5;
    assert_eq!(cluster.client(leader).cmd(&["SET", "g", "v"]), Reply::Ok);
    wait_for(Duration::from_secs(20), "all peers connected", || {
        (cluster.info(leader)["connected_peers"] == "4").then_some(())
    });
    let frozen: Vec<Resume> = (0..5)
        .filter(|i| *i != leader && *i != follower)
        .map(|i| Resume::stop(cluster.pid(i).expect("running")))
        .collect();
    let mut incr = cluster.client(follower);
    for _ in 0..3 {
        incr.send(&[b"INCR", b"n"]);
    }
    thread::sleep(Duration::from_millis(300));
    cluster.kill(follower);
    cluster.spawn(follower);
    let mut reader = cluster.client(follower);
    wait_for(
        Duration::from_secs(10),
        "the follower to know the leader",
        || (reader.info()["leader_id"] == cluster.nodes[leader].id.to_string()).then_some(()),
    );
    for _ in 0..3 {
        reader.send(&[b"GET", b"g"]);
    }
    thread::sleep(Duration::from_millis(300));
    drop(frozen);
    for n in 0..3 {
        assert_eq!(reader.read(), bulk("v"), "GET {n} after the restart");
    }
    assert_eq!(cluster.client(leader).cmd_retry(&["GET", "n"]), bulk("3"));
}
