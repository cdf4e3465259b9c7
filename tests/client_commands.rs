//! The client protocol's exact replies on a live node (SPEC §3): AUTH with
//! requirepass, MULTI/EXEC/DISCARD and their errors, HELLO in RESP2 and
//! RESP3, and the connection commands clients send on connect. Raw bytes are
//! compared where the encoding matters.

mod common;

use common::{bulk, Client, Cluster};
use raftkv::kv::Reply;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn err(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

fn status(text: &str) -> Reply {
    Reply::Status(text.to_string())
}

/// Sends `request` as typed and returns exactly `expected.len()` bytes of reply.
fn raw(addr: &str, request: &[u8], expected: &[u8]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}

#[test]
fn requirepass_gates_everything_but_auth_hello_and_quit() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--requirepass".into(), "s3cret".into()];
    cluster.spawn(0);
    let mut c = cluster.client(0);
    assert_eq!(c.cmd(&["PING"]), err("NOAUTH Authentication required."));
    assert_eq!(
        c.cmd(&["HELLO", "2"]),
        err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
    );
    // As Redis: an unknown command or a wrong arity is reported first.
    assert_eq!(c.cmd(&["FOO"]), err("ERR unknown command 'FOO'"));
    assert_eq!(
        c.cmd(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        c.cmd(&["CLUSTER", "INFO"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(
        c.cmd(&["SET", "k", "v"]),
        err("NOAUTH Authentication required.")
    );
    // MSET's odd pairs are found when it runs, after the check of AUTH.
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b"]),
        err("NOAUTH Authentication required.")
    );
    // A refused EXEC is an EXECABORT, as in Redis 7.0.
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of: NOAUTH Authentication required.")
    );
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command")
    );
    assert_eq!(c.cmd(&["AUTH", "wrong"]), err("WRONGPASS invalid password"));
    assert_eq!(
        c.cmd(&["AUTH", "default", "wrong"]),
        err("WRONGPASS invalid password")
    );
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), Reply::Ok);
    assert_eq!(c.cmd(&["PING"]), status("PONG"));
    assert_eq!(c.cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    // A HELLO answered with an error changes nothing, its AUTH included.
    let mut refused = cluster.client(0);
    assert_eq!(
        refused.cmd(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "a b"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        refused.cmd(&["PING"]),
        err("NOAUTH Authentication required.")
    );
    // An unknown option is echoed cut to 128 bytes, however long.
    let long_option = "x".repeat(100_000);
    assert_eq!(
        refused.cmd(&["HELLO", "2", &long_option]),
        err(&format!(
            "ERR Syntax error in HELLO option '{}'",
            &long_option[..128]
        ))
    );
    // HELLO can authenticate and switch protocol in one go.
    let mut h = cluster.client(0);
    match h.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]) {
        Reply::Map(fields) => assert!(fields.contains(&(bulk("proto"), Reply::Integer(3)))),
        other => panic!("HELLO 3 AUTH answered {:?}", other),
    }
    assert_eq!(h.cmd(&["GET", "k"]), bulk("v"));
    // redis-cli falls back to the help it was built with on an error.
    assert_eq!(
        h.cmd(&["COMMAND", "DOCS"]),
        err("ERR COMMAND DOCS is not supported")
    );
    let mut q = cluster.client(0);
    assert_eq!(q.cmd(&["QUIT"]), Reply::Ok);
    assert!(q.is_closed());
}

/// Without requirepass, as redis-server 7.0 answers: the default user takes
/// any password, and the one-argument form is a configuration mistake.
#[test]
fn auth_without_requirepass_is_answered_as_redis_does() {
    let cluster = Cluster::start(1);
    let mut c = cluster.client(0);
    assert_eq!(
        c.cmd(&["AUTH", "x"]),
        err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
    assert_eq!(c.cmd(&["AUTH", "default", "x"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["AUTH", "bob", "x"]),
        err("WRONGPASS invalid password")
    );
    assert_eq!(c.cmd(&["AUTH", "a", "b", "c"]), err("ERR syntax error"));
    // Another user fails in HELLO as in AUTH, and the protocol stays.
    assert_eq!(
        c.cmd(&["HELLO", "3", "AUTH", "bob", "x"]),
        err("WRONGPASS invalid password")
    );
    assert!(matches!(c.cmd(&["HELLO"]), Reply::Array(_)), "still RESP2");
    match c.cmd(&["HELLO", "3", "AUTH", "default", "x"]) {
        Reply::Map(fields) => assert!(fields.contains(&(bulk("proto"), Reply::Integer(3)))),
        other => panic!("HELLO 3 AUTH answered {:?}", other),
    }
    assert_eq!(c.cmd(&["PING"]), status("PONG"));
}

#[test]
fn multi_exec_discard_and_their_errors() {
    let cluster = Cluster::start(1);
    let addr = cluster.nodes[0].client_addr();
    let mut c = cluster.client(0);
    assert_eq!(c.cmd(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command")
    );
    assert_eq!(c.cmd(&["DISCARD"]), err("ERR DISCARD without MULTI"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["MULTI"]), err("ERR MULTI calls can not be nested"));
    assert_eq!(c.cmd(&["SET", "t", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "t"]), status("QUEUED"));
    assert_eq!(c.cmd(&["SET", "s", "text"]), status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "s"]), status("QUEUED"));
    // Odd pairs are found when EXEC runs MSET, as in Redis.
    assert_eq!(c.cmd(&["MSET", "t", "9", "u"]), status("QUEUED"));
    assert_eq!(c.cmd(&["GET", "t"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![
            Reply::Ok,
            Reply::Integer(2),
            Reply::Ok,
            err("ERR value is not an integer or out of range"),
            err("ERR wrong number of arguments for 'mset' command"),
            bulk("2"),
        ])
    );
    // DISCARD drops the queue; nothing was applied.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "d", "x"]), status("QUEUED"));
    assert_eq!(c.cmd(&["DISCARD"]), Reply::Ok);
    assert_eq!(c.cmd(&["GET", "d"]), Reply::Nil);
    // A command refused at queue time aborts the transaction.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "a", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["NOSUCH", "x"]), err("ERR unknown command 'NOSUCH'"));
    assert_eq!(
        c.cmd(&["SET", "only-key"]),
        err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["GET", "a"]), Reply::Nil);
    assert_eq!(c.cmd(&["WATCH", "a"]), err("ERR WATCH is not supported"));
    // Connection commands are queued too, and answered in their places.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["PING"]), status("QUEUED"));
    assert_eq!(c.cmd(&["SET", "m", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["ECHO", "between"]), status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "m"]), status("QUEUED"));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "in-multi"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![
            status("PONG"),
            Reply::Ok,
            bulk("between"),
            Reply::Integer(2),
            Reply::Ok,
        ])
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("in-multi"));
    // They run when the entry is applied, so they see its writes.
    let keys = match c.cmd(&["DBSIZE"]) {
        Reply::Integer(n) => n,
        other => panic!("DBSIZE answered {:?}", other),
    };
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "new-in-multi", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["DBSIZE"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::Ok, Reply::Integer(keys + 1)])
    );
    // Wrong arity and unknown subcommands are refused at once, as in Redis.
    assert_eq!(
        c.cmd(&["MULTI", "x"]),
        err("ERR wrong number of arguments for 'multi' command")
    );
    assert_eq!(
        c.cmd(&["WATCH"]),
        err("ERR wrong number of arguments for 'watch' command")
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["CLIENT", "FOO"]),
        err("ERR unknown subcommand 'FOO'. raftkv supports CLIENT SETNAME, GETNAME, ID, SETINFO, MAINT_NOTIFICATIONS, NO-EVICT and NO-TOUCH.")
    );
    assert_eq!(
        c.cmd(&["DISCARD", "x"]),
        err("ERR wrong number of arguments for 'discard' command")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "q", "2"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command")
    );
    assert_eq!(c.cmd(&["GET", "q"]), Reply::Nil);
    assert_eq!(c.cmd(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["ECHO"]),
        err("ERR wrong number of arguments for 'echo' command")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    // A membership change cannot go in a transaction's log entry.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "q", "3"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["CLUSTER", "MEMBERS"]),
        err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["GET", "q"]), Reply::Nil);
    // Nor can a protocol switch, which would come after the replies to
    // requests pipelined behind EXEC; HELLO without a version can.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["HELLO", "3"]),
        err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    raw(
        &addr,
        b"MULTI\r\nHELLO\r\nGET nokey\r\nEXEC\r\nGET nokey\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*14\r\n",
    );
    // Inline, the way a person types it.
    raw(
        &addr,
        b"MULTI\r\nSET x 1\r\nINCR x\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n",
    );
}

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
        err("ERR unknown subcommand 'NoSuch'. raftkv supports CLIENT SETNAME, GETNAME, ID, SETINFO, MAINT_NOTIFICATIONS, NO-EVICT and NO-TOUCH.")
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

/// Every client costs a file descriptor. With `ulimit -n 150` the node keeps
/// 96 for itself and takes 54 clients; the next ones are told so and closed,
/// and the node still opens the files it needs (a new log segment after
/// 64 MiB of writes) instead of stopping.
#[test]
fn clients_beyond_the_open_files_limit_are_refused_and_the_node_lives() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].open_files = Some(150);
    cluster.spawn(0);
    let addr = cluster.nodes[0].client_addr();
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..140 {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 36];
        let n = stream.read(&mut reply).unwrap();
        match &reply[..n] {
            b"+PONG\r\n" => kept.push(stream),
            b"-ERR max number of clients reached\r\n" => refused += 1,
            other => panic!("unexpected reply {:?}", String::from_utf8_lossy(other)),
        }
    }
    assert!(
        (40..=60).contains(&kept.len()) && refused == 140 - kept.len(),
        "{} kept, {} refused",
        kept.len(),
        refused
    );
    drop(kept.pop());
    let mut c = common::wait_for(Duration::from_secs(5), "a free client slot", || {
        let mut c = common::Client::try_connect(&addr)?;
        (c.cmd(&["PING"]) == status("PONG")).then_some(c)
    });
    let value = vec![b'v'; 8_000_000];
    for i in 0..10 {
        c.send(&[b"SET", format!("big{i}").as_bytes(), &value]);
        assert_eq!(c.read(), Reply::Ok, "SET big{i}");
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Integer(10));
}

/// Everything the client sent up to EOF, after its whole `request` was taken.
fn reply_after_sending(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    for timeout in [
        stream.set_read_timeout(Some(Duration::from_secs(10))),
        stream.set_write_timeout(Some(Duration::from_secs(10))),
    ] {
        timeout.unwrap();
    }
    stream
        .write_all(request)
        .expect("the node takes the whole request before it closes");
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("the connection ends with EOF, not a reset");
    reply
}

/// A client that sends a request too large to take, as libraries do (the
/// whole request, then read), gets the error, not a reset: the node reads and
/// drops the rest instead of closing a socket with unread input. So does one
/// that pipelines past QUIT.
#[test]
fn a_closing_connection_drains_what_the_client_still_sends() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--max-request-bytes".into(), "1024".into()];
    cluster.spawn(0);
    assert_eq!(cluster.client(0).cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    let addr = cluster.nodes[0].client_addr();
    let mut oversized = Vec::new();
    let value = vec![b'v'; 4 << 20];
    raftkv::wire::resp::encode_request(&[b"SET", b"k", &value], &mut oversized);
    assert_eq!(
        String::from_utf8_lossy(&reply_after_sending(&addr, &oversized)),
        "-ERR protocol error: request exceeds max_request_bytes (1024)\r\n"
    );
    let mut after_quit = b"PING\r\nQUIT\r\n".to_vec();
    after_quit.extend(b"PING\r\n".repeat(500_000));
    assert_eq!(
        String::from_utf8_lossy(&reply_after_sending(&addr, &after_quit)),
        "+PONG\r\n+OK\r\n"
    );
    assert_eq!(cluster.client(0).cmd(&["GET", "k"]), bulk("v"));
}

/// A client that never closes after QUIT is not kept: after the time it had
/// to send the rest of its request, the node closes the connection.
#[test]
fn a_lingering_connection_is_closed_in_the_end() {
    let cluster = Cluster::start(1);
    let addr = cluster.nodes[0].client_addr();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"PING\r\nQUIT\r\n").unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("EOF after the replies");
    assert_eq!(reply, b"+PONG\r\n+OK\r\n");
    let mut observer = cluster.client(0);
    let clients = |c: &mut Client| c.info()["connected_clients"].clone();
    assert_eq!(clients(&mut observer), "2", "the lingering one counts");
    common::wait_for(
        Duration::from_secs(30),
        "the lingering connection closed",
        || (clients(&mut observer) == "1").then_some(()),
    );
    drop(stream);
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

/// A CLIENT GETNAME pipelined behind an EXEC that runs a CLIENT SETNAME sees
/// that name, as in Redis, whether the transaction reads or writes: the
/// connection commands queued in it run when EXEC's reply comes, so what the
/// connection sent after EXEC waits for it.
#[test]
fn a_request_pipelined_behind_exec_sees_the_connection_commands_run_in_it() {
    let cluster = Cluster::start(1);
    cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client(0);
    for (queued, answer) in [
        (&["GET", "k"][..], Reply::Nil),
        (&["SET", "k", "v"][..], Reply::Ok),
    ] {
        let name = format!("after-{}", queued[0]);
        let mut batch = Vec::new();
        for argv in [
            vec!["MULTI"],
            queued.to_vec(),
            vec!["CLIENT", "SETNAME", &name],
            vec!["EXEC"],
            vec!["CLIENT", "GETNAME"],
        ] {
            let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
            raftkv::wire::resp::encode_request(&argv, &mut batch);
        }
        c.send_raw(&batch).expect("write pipeline");
        assert_eq!(c.read(), Reply::Ok);
        assert_eq!(c.read(), status("QUEUED"));
        assert_eq!(c.read(), status("QUEUED"));
        assert_eq!(c.read(), Reply::Array(vec![answer, Reply::Ok]));
        assert_eq!(c.read(), bulk(&name), "GETNAME ran before EXEC's SETNAME");
    }
}

/// The node's `used_memory` (INFO), its resident size.
fn used_memory(c: &mut Client) -> u64 {
    c.info()["used_memory"]
        .parse()
        .expect("used_memory is a number")
}

/// The highest `used_memory` of `samples` taken `every` apart.
fn peak_used_memory(c: &mut Client, samples: usize, every: Duration) -> u64 {
    let mut peak = 0;
    for _ in 0..samples {
        std::thread::sleep(every);
        peak = peak.max(used_memory(c));
    }
    peak
}

/// A read pipelined behind the connection's own write of a large value is
/// expected to hold that value until the write is answered.
#[test]
fn a_client_that_reads_no_replies_cannot_copy_a_value_its_own_pipeline_writes_first() {
    // The GETs are read before the SET ahead of them is applied: judged by
    // the map alone, each would be expected to answer nothing.
    let cluster = Cluster::start(1);
    let mut c = cluster.client(0);
    let before = used_memory(&mut c);
    let value = vec![b'v'; 1 << 20];
    let requests = 600;
    let mut pipeline = Vec::new();
    raftkv::wire::resp::encode_request(&[b"SET", b"fresh", &value], &mut pipeline);
    pipeline.extend_from_slice(&b"GET fresh\r\n".repeat(requests));
    let mut silent = Client::connect(&cluster.nodes[0].client_addr());
    silent
        .send_raw(&pipeline)
        .expect("the node takes the requests");
    let peak = peak_used_memory(&mut c, 15, Duration::from_millis(100));
    assert!(
        peak < before + (300 << 20),
        "RSS grew from {before} to {peak} bytes"
    );
    assert_eq!(silent.read_raw(), b"+OK\r\n");
    for i in 0..requests {
        assert_eq!(silent.read_raw().len(), value.len() + 12, "reply {i}");
    }
    assert_eq!(c.cmd(&["PING"]), status("PONG"));
}

/// A client that pipelines reads of a large value and reads none of the
/// replies is stopped at the output limit (64 MiB), counting the replies in
/// flight, not yet answered: a few kilobytes of `GET big` used to make the
/// node hold a copy of the value per request (600 here, 1.2 GB of RSS).
/// Once the client reads, every reply comes.
#[test]
fn a_client_that_reads_no_replies_cannot_make_the_node_copy_a_value_per_request() {
    let cluster = Cluster::start(1);
    let mut c = cluster.client(0);
    let value = vec![b'v'; 1 << 20];
    c.send(&[b"SET", b"big", &value]);
    assert_eq!(c.read(), Reply::Ok);
    let before = used_memory(&mut c);
    let requests = 600;
    let mut silent = Client::connect(&cluster.nodes[0].client_addr());
    silent
        .send_raw(&b"GET big\r\n".repeat(requests))
        .expect("the node takes the requests");
    let peak = peak_used_memory(&mut c, 15, Duration::from_millis(100));
    assert!(
        peak < before + (300 << 20),
        "RSS grew from {before} to {peak} bytes"
    );
    for i in 0..requests {
        assert_eq!(silent.read_raw().len(), value.len() + 12, "reply {i}");
    }
    assert_eq!(c.cmd(&["PING"]), status("PONG"));
}

/// Writes held while there is no leader count what they carry toward the
/// same limit: a client pipelining large SETs to a node that cannot reach
/// its cluster, and reading nothing, used to make it hold every one of them
/// until their deadline.
#[test]
fn a_client_that_reads_no_replies_cannot_make_a_node_without_a_leader_hold_its_writes() {
    let mut cluster = Cluster::new(3);
    cluster.spawn(0);
    let mut c = cluster.client(0);
    let before = used_memory(&mut c);
    let value = vec![b'v'; 1 << 20];
    let requests = 400;
    let mut silent = Client::connect(&cluster.nodes[0].client_addr());
    let writer = {
        let mut stream = silent.stream.try_clone().expect("clone the stream");
        let value = value.clone();
        std::thread::spawn(move || {
            let mut request = Vec::new();
            raftkv::wire::resp::encode_request(&[b"SET", b"k", &value], &mut request);
            for _ in 0..requests {
                if stream.write_all(&request).is_err() {
                    return false;
                }
            }
            true
        })
    };
    let peak = peak_used_memory(&mut c, 10, Duration::from_millis(50));
    assert!(
        peak < before + (200 << 20),
        "memory grew from {before} to {peak} bytes"
    );
    for i in 0..requests {
        match silent.read() {
            Reply::Error(e) => assert!(e.starts_with("TRYAGAIN"), "reply {i}: {e}"),
            other => panic!("reply {i}: {other:?}"),
        }
    }
    assert!(writer.join().expect("the writer"), "every request was sent");
}

/// `redis-cli --memkeys` asks MEMORY USAGE of every key it scans; it is a
/// read like STRLEN, answered through a follower too and inside MULTI.
#[test]
fn memory_usage_is_answered_for_redis_cli_memkeys() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client((leader + 1) % 3);
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Ok);
    // The entry's smallest allocation (32 bytes) and its table slot (16).
    assert_eq!(c.cmd(&["MEMORY", "USAGE", "k"]), Reply::Integer(48));
    assert_eq!(
        c.cmd(&["memory", "usage", "missing", "SAMPLES", "5"]),
        Reply::Nil
    );
    assert_eq!(
        c.cmd(&["MEMORY", "STATS"]),
        err("ERR unknown subcommand 'STATS'. Try MEMORY HELP.")
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["MEMORY", "USAGE", "k"]), status("QUEUED"));
    assert_eq!(c.cmd(&["SET", "k2", "v"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::Integer(48), Reply::Ok])
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["MEMORY", "DOCTOR"]),
        err("ERR unknown subcommand 'DOCTOR'. Try MEMORY HELP.")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
}
