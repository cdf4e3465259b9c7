//! The commands an operator types at a node: CLIENT LIST and CLIENT INFO
//! (this node's client connections, in Redis's line format) and SHUTDOWN
//! (stops the node as SIGTERM does).

use super::common::{wait_for, Client, Cluster};
use super::{err, status};
use raftkv::kv::Reply;
use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

/// A CLIENT LIST or CLIENT INFO reply's lines, each as its fields.
fn listed(reply: Reply) -> Vec<HashMap<String, String>> {
    let Reply::Bulk(text) = reply else {
        panic!("not a bulk string: {reply:?}");
    };
    let text = String::from_utf8(text).expect("text");
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|line| {
            line.split(' ')
                .map(|pair| {
                    let (field, value) = pair.split_once('=').expect("field=value");
                    (field.to_string(), value.to_string())
                })
                .collect()
        })
        .collect()
}

/// CLIENT LIST's lines once they are those of `ids`, in some order: a
/// connection another client closed is listed until the node reads its
/// close.
pub(super) fn only_these(c: &mut Client, ids: &[&str]) -> Vec<HashMap<String, String>> {
    wait_for(Duration::from_secs(10), "the list to settle", || {
        let lines = listed(c.cmd(&["CLIENT", "LIST"]));
        let mut listed_ids: Vec<&str> = lines.iter().map(|line| line["id"].as_str()).collect();
        listed_ids.sort_unstable();
        let mut wanted = ids.to_vec();
        wanted.sort_unstable();
        (listed_ids == wanted).then_some(lines)
    })
}

fn line_of_id<'a>(lines: &'a [HashMap<String, String>], id: &str) -> &'a HashMap<String, String> {
    lines
        .iter()
        .find(|line| line["id"] == id)
        .unwrap_or_else(|| panic!("client {id} not in {lines:?}"))
}

pub(super) fn client_id(c: &mut Client) -> String {
    match c.cmd(&["CLIENT", "ID"]) {
        Reply::Integer(id) => id.to_string(),
        other => panic!("CLIENT ID answered {other:?}"),
    }
}

#[test]
fn client_list_shows_this_nodes_clients_with_their_names_and_addresses() {
    let cluster = Cluster::start(1);
    let mut named = cluster.client(0);
    let mut asking = cluster.client(0);
    let (named_id, asking_id) = (client_id(&mut named), client_id(&mut asking));
    assert_eq!(named.cmd(&["CLIENT", "SETNAME", "worker-1"]), Reply::Ok);
    assert_eq!(
        named.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
        Reply::Ok
    );
    assert_eq!(
        named.cmd(&["CLIENT", "SETINFO", "lib-ver", "a b"]),
        err("ERR lib-ver cannot contain spaces, newlines or special characters.")
    );

    // The harness's own connections (it waited for a leader with INFO)
    // are gone once the node has read their close.
    let lines = only_these(&mut asking, &[&named_id, &asking_id]);
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|line| line["id"] == id)
            .unwrap_or_else(|| panic!("client {id} not in {lines:?}"))
    };
    let (named_line, asking_line) = (line_of(&named_id), line_of(&asking_id));
    let server_addr = cluster.nodes[0].client_addr();
    for (line, c) in [(named_line, &named), (asking_line, &asking)] {
        let local = c.stream.local_addr().expect("addr").to_string();
        assert_eq!(line["addr"], local, "{line:?}");
        assert_eq!(line["laddr"], server_addr, "{line:?}");
        assert_eq!(line["flags"], "N");
        assert_eq!(line["multi"], "-1");
        assert_eq!(line["db"], "0");
        assert_eq!(line["resp"], "2");
        assert_eq!(line["user"], "default");
    }
    assert_eq!(named_line["name"], "worker-1");
    assert_eq!(named_line["lib-name"], "redis-py");
    assert_eq!(named_line["lib-ver"], "");
    assert_eq!(named_line["cmd"], "client|setinfo");
    assert_eq!(asking_line["name"], "");
    assert_eq!(asking_line["cmd"], "client|list");

    // Whole seconds since the connection came and since it last sent.
    std::thread::sleep(Duration::from_millis(1100));
    let lines = only_these(&mut asking, &[&named_id, &asking_id]);
    let named_line = line_of_id(&lines, &named_id);
    // The asking connection just sent, in the same loop iteration.
    assert_eq!(line_of_id(&lines, &asking_id)["idle"], "0", "{lines:?}");
    assert!(
        named_line["idle"].parse::<u64>().expect("idle") >= 1,
        "{named_line:?}"
    );
    assert!(
        named_line["age"].parse::<u64>().expect("age") >= 1,
        "{named_line:?}"
    );

    let own = listed(named.cmd(&["CLIENT", "INFO"]));
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["id"], named_id);
    assert_eq!(own[0]["name"], "worker-1");
    assert_eq!(own[0]["cmd"], "client|info");

    // The options Redis takes.
    let only = listed(asking.cmd(&["CLIENT", "LIST", "ID", &named_id, "999999"]));
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["id"], named_id);
    assert_eq!(
        listed(asking.cmd(&["CLIENT", "LIST", "TYPE", "normal"])).len(),
        2
    );
    assert!(listed(asking.cmd(&["CLIENT", "LIST", "TYPE", "replica"])).is_empty());
    assert_eq!(
        asking.cmd(&["CLIENT", "LIST", "TYPE", "bogus"]),
        err("ERR Unknown client type 'bogus'")
    );
    assert_eq!(
        asking.cmd(&["CLIENT", "LIST", "ID", "x"]),
        err("ERR Invalid client ID")
    );

    // In a transaction, as the other CLIENT subcommands: queued, and run
    // by EXEC with the connection shown in MULTI.
    assert_eq!(named.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(named.cmd(&["SET", "k", "v"]), status("QUEUED"));
    assert_eq!(named.cmd(&["CLIENT", "INFO"]), status("QUEUED"));
    match named.cmd(&["EXEC"]) {
        Reply::Array(replies) => {
            assert_eq!(replies[0], Reply::Ok);
            let own = listed(replies[1].clone());
            assert_eq!(own[0]["id"], named_id);
        }
        other => panic!("EXEC answered {other:?}"),
    }

    // A closed connection is gone from the list.
    drop(named);
    only_these(&mut asking, &[&asking_id]);
}

/// Reads until the node closes the connection; returns what came first.
fn read_to_close(c: &mut Client) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = c.stream.read_to_end(&mut got);
    got
}

#[test]
fn shutdown_stops_a_one_node_cluster_with_status_0_and_no_reply() {
    let mut cluster = Cluster::start(1);
    let mut c = cluster.client(0);
    // What SHUTDOWN refuses, as Redis 7 does, before it stops anything.
    assert_eq!(
        c.cmd(&["SHUTDOWN", "ABORT"]),
        err("ERR No shutdown in progress.")
    );
    assert_eq!(
        c.cmd(&["SHUTDOWN", "SAVE", "NOSAVE"]),
        err("ERR syntax error")
    );
    assert_eq!(c.cmd(&["SHUTDOWN", "bogus"]), err("ERR syntax error"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["SHUTDOWN"]),
        err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["PING"]), status("PONG"));

    let id = client_id(&mut c);
    let local = c.stream.local_addr().expect("addr");
    // In one write: the SET before SHUTDOWN is answered (SHUTDOWN waits
    // for it), the SHUTDOWN is not, and the SET after it is refused
    // unapplied, as any request a stopping node did not take.
    c.send_raw(
        b"*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n\
          *3\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n$3\r\nNOW\r\n\
          *3\r\n$3\r\nSET\r\n$5\r\nafter\r\n$1\r\n1\r\n",
    )
    .expect("write");
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut c)),
        "+OK\r\n-TRYAGAIN no leader\r\n"
    );
    assert_eq!(cluster.wait_exit(0, Duration::from_secs(10)), Some(0));
    let log = cluster.log_text(0);
    assert!(
        log.contains(&format!(
            "shutdown requested by client id={id} addr={local}"
        )),
        "{log}"
    );
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(30));
    assert_eq!(
        cluster.client(0).cmd(&["GET", "before"]),
        Reply::Bulk(b"1".to_vec())
    );
    assert_eq!(cluster.client(0).cmd(&["GET", "after"]), Reply::Nil);
}

#[test]
fn shutdown_needs_auth_under_requirepass() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--requirepass".into(), "s3cret".into()];
    cluster.spawn(0);
    let mut c = cluster.client(0);
    assert_eq!(c.cmd(&["SHUTDOWN"]), err("NOAUTH Authentication required."));
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), Reply::Ok);
    c.send(&[b"SHUTDOWN"]);
    assert_eq!(read_to_close(&mut c), b"");
    assert_eq!(cluster.wait_exit(0, Duration::from_secs(10)), Some(0));
}

/// On a 3-node cluster: a node lists only its own clients (no peer
/// connection, no request a follower forwarded), and SHUTDOWN sent to the
/// leader stops it as SIGTERM does: it hands over, exits 0, and the others
/// go on taking writes.
#[test]
fn shutdown_on_a_leader_hands_over_and_each_node_lists_only_its_clients() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let follower = (leader + 1) % 3;
    let mut via_follower = cluster.client(follower);
    assert_eq!(via_follower.cmd_retry(&["SET", "k", "1"]), Reply::Ok);
    let follower_client = client_id(&mut via_follower);
    let mut c = cluster.client(leader);
    let id = client_id(&mut c);
    let lines = only_these(&mut c, &[&id]);
    assert_eq!(lines[0]["cmd"], "client|list");
    let lines = only_these(&mut via_follower, &[&follower_client]);
    assert_eq!(
        lines[0]["addr"],
        via_follower.stream.local_addr().expect("addr").to_string()
    );

    c.send(&[b"SHUTDOWN"]);
    assert_eq!(read_to_close(&mut c), b"");
    assert_eq!(cluster.wait_exit(leader, Duration::from_secs(10)), Some(0));
    let log = cluster.log_text(leader);
    assert!(log.contains("shutdown requested by client id="), "{log}");
    assert!(log.contains("handing leadership to node "), "{log}");
    assert!(log.contains(" leads now; stopping"), "{log}");
    let new = cluster.wait_for_leader(Duration::from_secs(30));
    assert_ne!(new, leader);
    assert_eq!(cluster.client(new).cmd_retry(&["SET", "k", "2"]), Reply::Ok);
    assert_eq!(
        cluster.client(new).cmd(&["GET", "k"]),
        Reply::Bulk(b"2".to_vec())
    );

    // Sent to a follower, it stops that follower, not the leader: it is
    // never forwarded.
    let last = (0..3)
        .find(|&i| i != leader && i != new)
        .expect("a third node");
    let mut c = cluster.client(last);
    c.send(&[b"SHUTDOWN"]);
    assert_eq!(read_to_close(&mut c), b"");
    assert_eq!(cluster.wait_exit(last, Duration::from_secs(10)), Some(0));
    assert!(cluster.is_running(new));
    assert!(matches!(
        cluster.client(new).cmd(&["CLIENT", "ID"]),
        Reply::Integer(_)
    ));
    assert!(!cluster.log_text(new).contains("shutdown requested"));
}
