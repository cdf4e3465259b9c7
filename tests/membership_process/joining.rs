//! A node joining: it serves connection commands only until it is added,
//! CLUSTER MEMBERS and the refusals of CLUSTER ADD/REMOVE/TRANSFER read as
//! SPEC says, and MEMBERS pipelined behind an ADD lists the new learner.

use super::common::{self, bulk, wait_for, Cluster};
use super::{cluster_cmd, err, index_of, members, ok, text, wait_voter};
use raftkv::kv::Reply;
use raftkv::wire::resp;
use std::time::Duration;

#[test]
fn a_joiner_waits_then_members_and_errors_read_as_specified() {
    let mut cluster = Cluster::with_joiners(3, 1);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_settled_leader(Duration::from_secs(15));
    let follower = (leader + 1) % 3;
    cluster.spawn(3);
    // The joiner serves connection commands only.
    let mut joiner = cluster.client(3);
    assert_eq!(joiner.cmd(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(joiner.info()["membership"], "joining");
    let waits = format!(
        "waits for a leader to add it (CLUSTER ADD {} {} on any member)",
        cluster.nodes[3].id,
        cluster.nodes[3].raft_addr()
    );
    assert!(
        cluster.log_text(3).contains(&waits),
        "{}",
        cluster.log_text(3)
    );
    assert_eq!(
        joiner.cmd(&["SET", "k", "v"]),
        err("TRYAGAIN not a member yet")
    );
    assert_eq!(joiner.cmd(&["GET", "k"]), err("TRYAGAIN not a member yet"));
    assert_eq!(
        joiner.cmd(&["CLUSTER", "MEMBERS"]),
        err("TRYAGAIN not a member yet")
    );
    for transaction in ["MULTI", "EXEC", "DISCARD"] {
        assert_eq!(
            joiner.cmd(&[transaction]),
            err("TRYAGAIN not a member yet"),
            "{transaction} is not a connection command"
        );
    }
    // Nor are the other commands a member answers by itself: DBSIZE would
    // report keys the joiner does not hold.
    for command in [
        &["DBSIZE"][..],
        &["DEBUG", "DIGEST"],
        &["ECHO", "x"],
        &["CONFIG", "GET", "save"],
        &["UNWATCH"],
    ] {
        assert_eq!(
            joiner.cmd(command),
            err("TRYAGAIN not a member yet"),
            "{command:?} is not a connection command"
        );
    }
    for command in [
        &["CLIENT", "SETNAME", "j"][..],
        &["SELECT", "0"],
        &["AUTH", "default", "x"],
    ] {
        assert_eq!(joiner.cmd(command), Reply::Ok, "{command:?}");
    }
    assert!(matches!(
        joiner.cmd(&["COMMAND", "COUNT"]),
        Reply::Integer(_)
    ));
    assert!(matches!(joiner.cmd(&["HELLO"]), Reply::Array(_)));
    assert_eq!(
        joiner.cmd(&["SET", "k", "v"]),
        err("TRYAGAIN not a member yet")
    );
    let info = joiner.info();
    assert_eq!(info["members"], "");
    assert_eq!(info["learners"], "");

    // MEMBERS through a follower: forwarded to the leader, one line per member.
    // Each follower's match index is 1 or more once its acknowledgement of
    // the leader's first entry arrives, which a loaded machine delayed past
    // the steps above (it read 0).
    let listed = wait_for(
        Duration::from_secs(20),
        "the leader to hear every follower acknowledge its first entry",
        || {
            let listed = members(&cluster, follower);
            listed
                .values()
                .all(|m| m["match_index"].parse::<u64>().is_ok_and(|n| n >= 1))
                .then_some(listed)
        },
    );
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    for (id, m) in &listed {
        let node = &cluster.nodes[index_of(&cluster, *id)];
        assert_eq!(m["raft_addr"], node.raft_addr());
        assert_eq!(m["client_addr"], node.client_addr());
        assert_eq!(m["suffrage"], "voter");
        let is_leader = *id == cluster.nodes[leader].id;
        assert_eq!(m["leader"], if is_leader { "yes" } else { "no" });
        assert_eq!(m.len(), 6, "fields of {:?}", m);
    }

    // ADD through a follower, answered once the learner entry commits.
    let addr4 = cluster.nodes[3].raft_addr();
    assert_eq!(cluster_cmd(&cluster, follower, &["ADD", "4", &addr4]), ok());
    wait_voter(&cluster, follower, 4);
    let mut joiner = cluster.client(3);
    assert_eq!(joiner.cmd_retry(&["SET", "k", "v"]), ok());
    assert_eq!(joiner.cmd_retry(&["GET", "k"]), bulk("v"));
    assert_eq!(
        cluster.client(leader).cmd(&["CLUSTER", "ADD", "4", &addr4]),
        err("ERR node 4 already a member")
    );
    for (args, reply) in [
        (vec!["REMOVE", "7"], "ERR unknown node 7"),
        (vec!["TRANSFER", "7"], "ERR unknown node 7"),
        (vec!["ADD", "x", "h:1"], "ERR invalid node id 'x'"),
        (
            vec!["ADD", "8", "nohost"],
            "ERR invalid raft address 'nohost' (expected host:port)",
        ),
        (
            vec!["ADD", "8"],
            "ERR wrong number of arguments for 'cluster|add' command",
        ),
    ] {
        let mut argv = vec!["CLUSTER"];
        argv.extend(args);
        assert_eq!(
            cluster.client(follower).cmd(&argv),
            err(reply),
            "{:?}",
            argv
        );
    }
    // Every node's INFO lists the four voters with their raft addresses.
    let expected: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.raft_addr()))
        .collect();
    for i in 0..4 {
        wait_for(
            Duration::from_secs(10),
            "INFO members on every node",
            || {
                let info = cluster.info(i);
                (info["members"] == expected.join(",") && info["learners"].is_empty()).then_some(())
            },
        );
    }
}

/// A MEMBERS pipelined right behind an ADD lists the new learner with its
/// address: the leader counts the learner from the proposal on, before the
/// entry is appended.
#[test]
fn members_pipelined_behind_an_add_shows_the_learners_address() {
    let cluster = Cluster::start(1);
    let mut c = cluster.client(0);
    // Until a new leader commits an entry of its term, an ADD waits (and
    // the MEMBERS behind it is answered first): not what this test is about.
    assert_eq!(c.cmd_retry(&["SET", "x", "1"]), ok());
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut pipeline = Vec::new();
    resp::encode_request(&[b"CLUSTER", b"ADD", b"9", addr.as_bytes()], &mut pipeline);
    resp::encode_request(&[b"CLUSTER", b"MEMBERS"], &mut pipeline);
    c.send_raw(&pipeline).expect("send the pipeline");
    assert_eq!(c.read(), ok());
    let listed = text(c.read());
    let line = listed
        .lines()
        .find(|line| line.starts_with("id=9 "))
        .unwrap_or_else(|| panic!("no line for node 9 in {:?}", listed));
    assert!(
        line.starts_with(&format!(
            "id=9 raft_addr={} client_addr= suffrage=learner ",
            addr
        )),
        "{}",
        line
    );
}
