//! HELLO in RESP2 and RESP3, the connection commands clients send on
//! connect, and every connection command and subcommand at every arity.

use super::common::{bulk, Client, Cluster};
use super::{err, raw, status};
use raftkv::kv::Reply;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn hello_switches_protocol_and_answers_as_redis_does() {
    let cluster = Cluster::start(1);
    let addr = cluster.nodes[0].client_addr();
    let mut c = cluster.client(0);
    // In RESP2 the map is a flat array of alternating names and values.
    match c.cmd(&["HELLO"]) {
        Reply::Array(flat) => {
            assert_eq!(flat.len(), 14, "{:?}", flat);
            let fields: Vec<(Reply, Reply)> = flat
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            for (name, value) in [
                ("server", bulk("raftkv")),
                ("version", bulk(env!("CARGO_PKG_VERSION"))),
                ("proto", Reply::Integer(2)),
                ("mode", bulk("standalone")),
                ("role", bulk("master")),
                ("modules", Reply::Array(Vec::new())),
            ] {
                assert!(
                    fields.contains(&(bulk(name), value.clone())),
                    "{} {:?}",
                    name,
                    fields
                );
            }
        }
        other => panic!("HELLO answered {:?}", other),
    }
    assert_eq!(
        c.cmd(&["HELLO", "4"]),
        err("NOPROTO unsupported protocol version")
    );
    // Integers as Redis reads them: no sign, no leading zero, no `-0`.
    for version in ["x", "03", "+3", "-0", " 3"] {
        assert_eq!(
            c.cmd(&["HELLO", version]),
            err("ERR Protocol version is not an integer or out of range"),
            "HELLO {version:?}"
        );
    }
    // RESP2 gives the map as a flat array and nil as $-1; RESP3 uses % and _.
    raw(&addr, b"GET missing\r\n", b"$-1\r\n");
    raw(
        &addr,
        b"HELLO 2\r\n",
        b"*14\r\n$6\r\nserver\r\n$6\r\nraftkv\r\n",
    );
    raw(
        &addr,
        b"HELLO 3\r\nGET missing\r\n",
        b"%7\r\n$6\r\nserver\r\n$6\r\nraftkv\r\n",
    );
    let mut three = TcpStream::connect(&addr).unwrap();
    three
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    three
        .write_all(b"HELLO 3\r\nGET missing\r\nHELLO 2\r\nGET missing\r\n")
        .unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&all).ends_with("$-1\r\n") {
        let n = three.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        all.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("\r\n_\r\n*14\r\n"),
        "RESP3 nil, then back to RESP2: {:?}",
        text
    );
}

#[test]
fn connection_commands_clients_send_on_connect() {
    let cluster = Cluster::start(1);
    let mut c: Client = cluster.client(0);
    assert_eq!(c.cmd(&["PING", "hello"]), bulk("hello"));
    assert_eq!(c.cmd(&["ECHO", "hi"]), bulk("hi"));
    assert_eq!(c.cmd(&["SELECT", "0"]), Reply::Ok);
    assert_eq!(c.cmd(&["SELECT", "1"]), err("ERR DB index is out of range"));
    assert_eq!(
        c.cmd(&["SELECT", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME"]),
        err("ERR wrong number of arguments for 'client|setname' command")
    );
    assert_eq!(
        c.cmd(&["CLIENT", "NoSuch"]),
        err("ERR unknown subcommand 'NoSuch'. raftkv supports CLIENT SETNAME, GETNAME, ID, SETINFO, LIST, INFO, KILL, MAINT_NOTIFICATIONS, NO-EVICT and NO-TOUCH.")
    );
    let long = "X".repeat(200);
    assert_eq!(
        c.cmd(&["CONFIG", &long]),
        err(&format!(
            "ERR unknown subcommand '{}'. raftkv supports CONFIG GET only.",
            &long[..128]
        ))
    );
    assert_eq!(
        c.cmd(&["CLUSTER", "Nodes"]),
        err("ERR unknown subcommand 'Nodes'. Try CLUSTER MEMBERS, ADD, REMOVE or TRANSFER.")
    );
    assert_eq!(c.cmd(&["CLIENT", "NO-EVICT", "On"]), Reply::Ok);
    assert_eq!(c.cmd(&["CLIENT", "no-touch", "off"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["CLIENT", "NO-EVICT", "maybe"]),
        err("ERR syntax error")
    );
    for argv in [
        &["CLIENT", "NO-EVICT"][..],
        &["CLIENT", "no-touch", "on", "x"],
        &["CLIENT", "SETINFO", "lib-name"],
    ] {
        let sub = argv[1].to_ascii_lowercase();
        let arity = format!("ERR wrong number of arguments for 'client|{sub}' command");
        assert_eq!(c.cmd(argv), err(&arity));
        assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
        assert_eq!(c.cmd(argv), err(&arity), "refused when queued");
        assert_eq!(
            c.cmd(&["EXEC"]),
            err("EXECABORT Transaction discarded because of previous errors.")
        );
    }
    let split = format!("{}é", "x".repeat(127));
    assert_eq!(
        c.cmd(&["CONFIG", &split]),
        err(&format!(
            "ERR unknown subcommand '{}'. raftkv supports CONFIG GET only.",
            &split[..127]
        ))
    );
    assert_eq!(c.cmd(&["COMMAND", "COUNT"]), Reply::Integer(0));
    assert_eq!(
        c.cmd(&["DBSIZE", "x"]),
        err("ERR wrong number of arguments for 'dbsize' command")
    );
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "tester"]), Reply::Ok);
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("tester"));
    assert_eq!(c.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "x"]), Reply::Ok);
    assert!(matches!(c.cmd(&["CLIENT", "ID"]), Reply::Integer(_)));
    assert!(matches!(c.cmd(&["COMMAND", "DOCS"]), Reply::Error(_)));
    assert_eq!(
        c.cmd(&["COMMAND", "INFO", "get", "nosuch"]),
        Reply::Array(vec![Reply::Nil, Reply::Nil])
    );
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "two words"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("tester"));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", ""]), Reply::Ok);
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::Nil);
    // What redis-benchmark asks for, and this node's own settings by glob.
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "save", "appendonly"]),
        Reply::Array(vec![
            bulk("save"),
            bulk(""),
            bulk("appendonly"),
            bulk("yes")
        ])
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "*TIMEOUT*"]),
        Reply::Array(vec![bulk("election_timeout_ms"), bulk("200")])
    );
    assert_eq!(c.cmd(&["CONFIG", "GET", "no-such"]), Reply::Array(vec![]));
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "databases"]),
        Reply::Array(vec![bulk("databases"), bulk("1")])
    );
    assert_eq!(c.cmd(&["FOO"]), err("ERR unknown command 'FOO'"));
    assert_eq!(
        c.cmd(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        c.cmd(&["PING"]),
        status("PONG"),
        "the connection stays usable"
    );
}

/// Every command and subcommand the node answers itself, with none to four
/// arguments, alone and queued in a transaction: each gets a reply and the
/// node lives. (A subcommand read an argument its arity check let be
/// missing, and `CLIENT NO-EVICT` alone killed the node.)
#[test]
fn every_connection_command_at_every_arity_gets_a_reply() {
    let cluster = Cluster::start(1);
    let families: &[(&str, &[&str])] = &[
        ("PING", &[]),
        ("ECHO", &[]),
        ("INFO", &[]),
        ("HELLO", &[]),
        ("AUTH", &[]),
        ("SELECT", &[]),
        ("DBSIZE", &[]),
        ("UNWATCH", &[]),
        ("WATCH", &[]),
        ("DISCARD", &[]),
        (
            "CLIENT",
            &[
                "SETNAME",
                "GETNAME",
                "ID",
                "SETINFO",
                "MAINT_NOTIFICATIONS",
                "NO-EVICT",
                "NO-TOUCH",
                "LIST",
                "INFO",
            ],
        ),
        ("COMMAND", &["COUNT", "DOCS", "INFO", "LIST", "GETKEYS"]),
        ("CONFIG", &["GET", "SET"]),
        ("DEBUG", &["DIGEST", "SLEEP"]),
        (
            "CLUSTER",
            &["MEMBERS", "ADD", "REMOVE", "TRANSFER", "NODES"],
        ),
    ];
    let mut requests: Vec<Vec<String>> = Vec::new();
    for (name, subs) in families {
        let heads: Vec<Vec<String>> = std::iter::once(vec![name.to_string()])
            .chain(
                subs.iter()
                    .map(|sub| vec![name.to_string(), sub.to_string()]),
            )
            .collect();
        for head in heads {
            for extra in 0..=4 {
                let mut argv = head.clone();
                argv.extend((0..extra).map(|i| format!("{}", i + 1)));
                requests.push(argv);
            }
        }
    }
    for argv in &requests {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut alone = cluster.client(0);
        let reply = alone.try_send(&argv.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        assert!(reply, "sending {argv:?}");
        assert!(alone.try_read().is_some(), "no reply to {argv:?}");
        let mut queued = cluster.client(0);
        assert_eq!(queued.cmd(&["MULTI"]), Reply::Ok);
        queued.cmd(&argv);
        assert!(
            matches!(queued.cmd(&["EXEC"]), Reply::Array(_) | Reply::Error(_)),
            "EXEC after {argv:?}"
        );
        assert_eq!(
            cluster.client(0).cmd(&["PING"]),
            Reply::Status("PONG".into()),
            "after {argv:?}"
        );
    }
}
