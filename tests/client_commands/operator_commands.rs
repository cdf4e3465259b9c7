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

fn client_id(c: &mut Client) -> String {
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

    let lines = listed(asking.cmd(&["CLIENT", "LIST"]));
    assert_eq!(lines.len(), 2, "{lines:?}");
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
    wait_for(Duration::from_secs(10), "the closed client to go", || {
        (listed(asking.cmd(&["CLIENT", "LIST"])).len() == 1).then_some(())
    });
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
