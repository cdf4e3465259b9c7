//! CLIENT KILL on a live node: which connections it closes (this node's
//! clients, never a peer connection), what it answers, and a caller that
//! kills itself getting its reply before the close.

use super::common::{wait_for, Client, Cluster, Resume};
use super::err;
use super::operator_commands::{client_id, only_these};
use raftkv::kv::Reply;
use std::io::Read;
use std::time::Duration;

fn addr_of(c: &Client) -> String {
    c.stream.local_addr().expect("addr").to_string()
}

/// Everything the node sends until it closes the connection; fails if it
/// is not closed within the read timeout.
fn reply_then_close(c: &mut Client) -> String {
    let mut got = Vec::new();
    c.stream
        .read_to_end(&mut got)
        .expect("the node closes the connection after its reply");
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn client_kill_closes_the_clients_its_filters_name() {
    let cluster = Cluster::start(1);
    let mut asking = cluster.client(0);
    let asking_id = client_id(&mut asking);

    // By ID: the killed client's next read sees the connection closed.
    let mut by_id = cluster.client(0);
    let by_id_id = client_id(&mut by_id);
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ID", &by_id_id]),
        Reply::Integer(1)
    );
    assert!(by_id.is_closed());

    // By ADDR, ANDed with the other filters given.
    let mut by_addr = cluster.client(0);
    let by_addr_id = client_id(&mut by_addr);
    let addr = addr_of(&by_addr);
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ADDR", &addr, "ID", &asking_id]),
        Reply::Integer(0)
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ADDR", "10.9.9.9:1", "ID", &by_addr_id]),
        Reply::Integer(0)
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "TYPE", "pubsub", "ID", &by_addr_id]),
        Reply::Integer(0)
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ADDR", &addr, "TYPE", "normal", "USER", "default"]),
        Reply::Integer(1)
    );
    assert!(by_addr.is_closed());

    // The old form: +OK, and an error once no client has that address.
    let mut old = cluster.client(0);
    let old_addr = addr_of(&old);
    assert_eq!(asking.cmd(&["CLIENT", "KILL", &old_addr]), Reply::Ok);
    assert!(old.is_closed());
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", &old_addr]),
        err("ERR No such client")
    );

    // The caller is skipped unless SKIPME no: it is still served.
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ID", &asking_id]),
        Reply::Integer(0)
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ID", &asking_id, "SKIPME", "yes"]),
        Reply::Integer(0)
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ID", "abc"]),
        err("ERR client-id should be greater than 0")
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "TYPE", "bogus"]),
        err("ERR Unknown client type 'bogus'")
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ID", "1", "SKIPME"]),
        err("ERR syntax error")
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL"]),
        err("ERR wrong number of arguments for 'client|kill' command")
    );
    only_these(&mut asking, &[&asking_id]);
}

#[test]
fn a_client_that_kills_itself_gets_its_reply_then_the_close() {
    let cluster = Cluster::start(1);

    // SKIPME no: `:1`, and nothing pipelined after it is answered.
    let mut c = cluster.client(0);
    let id = client_id(&mut c);
    c.send(&[b"CLIENT", b"KILL", b"ID", id.as_bytes(), b"SKIPME", b"no"]);
    c.send(&[b"PING"]);
    assert_eq!(reply_then_close(&mut c), ":1\r\n");

    // The old form with its own address.
    let mut c = cluster.client(0);
    let own = addr_of(&c);
    c.send(&[b"CLIENT", b"KILL", own.as_bytes()]);
    assert_eq!(reply_then_close(&mut c), "+OK\r\n");

    // Queued in MULTI, it runs at EXEC, after the transaction's writes:
    // EXEC's whole reply comes, then the close.
    let mut c = cluster.client(0);
    let id = client_id(&mut c);
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["CLIENT", "KILL", "ID", &id, "SKIPME", "no"]),
        Reply::Status("QUEUED".into())
    );
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Status("QUEUED".into()));
    c.send(&[b"EXEC"]);
    assert_eq!(reply_then_close(&mut c), "*2\r\n:1\r\n+OK\r\n");
    assert_eq!(
        cluster.client(0).cmd(&["GET", "k"]),
        Reply::Bulk(b"v".to_vec())
    );
}

/// A leader's peer connections are not clients: killing every normal
/// client there counts and closes only the client, and the cluster still
/// commits.
#[test]
fn killing_every_client_on_a_leader_leaves_its_peers_connected() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let mut asking = cluster.client(leader);
    assert_eq!(asking.cmd_retry(&["SET", "before", "1"]), Reply::Ok);
    let mut other = cluster.client(leader);
    let ids = [client_id(&mut asking), client_id(&mut other)];
    only_these(&mut asking, &[&ids[0], &ids[1]]);
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]),
        Reply::Integer(1)
    );
    assert!(other.is_closed());
    assert_eq!(asking.cmd(&["SET", "after", "2"]), Reply::Ok);
    let applied: u64 = asking
        .info()
        .get("applied_index")
        .and_then(|index| index.parse().ok())
        .expect("applied_index");
    cluster.wait_applied(applied, Duration::from_secs(30));
}

/// A client killed while its write awaits commit: the write is not taken
/// back (it is in the leader's log), and commits once the followers answer;
/// only its reply is dropped.
#[test]
fn a_write_in_flight_commits_after_its_client_is_killed() {
    // Long enough that the followers, stopped for a moment, do not start an
    // election when they resume.
    let cluster = Cluster::start_with_election_timeout(3, 5000);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let mut asking = cluster.client(leader);
    assert_eq!(asking.cmd_retry(&["SET", "warm", "1"]), Reply::Ok);
    let mut victim = cluster.client(leader);
    let victim_id = client_id(&mut victim);
    let followers: Vec<Resume> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| Resume::stop(cluster.pid(i).expect("follower runs")))
        .collect();
    victim.send(&[b"SET", b"x", b"1"]);
    wait_for(
        Duration::from_secs(10),
        "the leader to read the SET",
        || {
            let list = asking.cmd(&["CLIENT", "LIST", "ID", &victim_id]);
            let Reply::Bulk(text) = list else {
                panic!("CLIENT LIST answered {list:?}");
            };
            String::from_utf8_lossy(&text)
                .contains("cmd=set ")
                .then_some(())
        },
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "KILL", "ID", &victim_id]),
        Reply::Integer(1)
    );
    drop(followers);
    assert_eq!(reply_then_close(&mut victim), "");
    wait_for(Duration::from_secs(30), "the killed client's write", || {
        (asking.cmd(&["GET", "x"]) == Reply::Bulk(b"1".to_vec())).then_some(())
    });
}
