//! Client commands on a live cluster, through the leader and a follower: the
//! string and keyspace commands, binary values, inline commands as typed into
//! netcat, and keys' timeouts expiring on every node and surviving a restart.

use super::common::{bulk, wait_for, Client, Cluster};
use super::int;
use raftkv::kv::Reply;
use std::io::Read;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn exercise_commands(client: &mut Client, tag: &str) {
    let k = |name: &str| format!("{}:{}", tag, name);
    assert_eq!(client.cmd_retry(&["SET", &k("a"), "1"]), Reply::Ok);
    assert_eq!(client.cmd(&["GET", &k("a")]), bulk("1"));
    assert_eq!(client.cmd(&["INCR", &k("a")]), int(2));
    assert_eq!(client.cmd(&["INCRBY", &k("a"), "40"]), int(42));
    assert_eq!(client.cmd(&["MSET", &k("b"), "x", &k("c"), "y"]), Reply::Ok);
    assert_eq!(
        client.cmd(&["MGET", &k("a"), &k("b"), &k("c"), &k("none")]),
        Reply::Array(vec![bulk("42"), bulk("x"), bulk("y"), Reply::Nil])
    );
    assert_eq!(
        client.cmd(&["EXISTS", &k("a"), &k("a"), &k("none")]),
        int(2)
    );
    assert_eq!(client.cmd(&["DEL", &k("a"), &k("b"), &k("none")]), int(2));
    assert_eq!(client.cmd(&["GET", &k("a")]), Reply::Nil);
    match client.cmd(&["INCR", &k("c")]) {
        Reply::Error(e) => assert_eq!(e, "ERR value is not an integer or out of range"),
        other => panic!("INCR on a non-integer answered {:?}", other),
    }
    // SET's options, GETSET and SETNX.
    assert_eq!(client.cmd(&["SET", &k("c"), "z", "NX"]), Reply::Nil);
    assert_eq!(client.cmd(&["SET", &k("c"), "z", "XX", "GET"]), bulk("y"));
    assert_eq!(client.cmd(&["GETSET", &k("c"), "w"]), bulk("z"));
    assert_eq!(client.cmd(&["SETNX", &k("c"), "v"]), int(0));
    assert_eq!(client.cmd(&["SETNX", &k("d"), "v"]), int(1));
    assert_eq!(client.cmd(&["GET", &k("c")]), bulk("w"));
    // Binary-safe: every byte value, including \0 and \r\n, survives.
    let value: Vec<u8> = (0..=255u8).collect();
    let key = k("bin").into_bytes();
    client.send(&[b"SET", &key, &value]);
    assert_eq!(client.read(), Reply::Ok);
    client.send(&[b"GET", &key]);
    assert_eq!(client.read(), Reply::Bulk(value));

    // Keyspace commands.
    assert_eq!(client.cmd(&["APPEND", &k("d"), "w"]), int(2));
    assert_eq!(client.cmd(&["STRLEN", &k("d")]), int(2));
    assert_eq!(client.cmd(&["GETRANGE", &k("d"), "-1", "5"]), bulk("w"));
    assert_eq!(
        client.cmd(&["TYPE", &k("d")]),
        Reply::Status("string".into())
    );
    assert_eq!(client.cmd(&["TTL", &k("d")]), int(-1));
    // A time GETEX refuses is judged after the key is found, as in Redis.
    let refused = Reply::Error("ERR invalid expire time in 'getex' command".into());
    assert_eq!(client.cmd(&["GETEX", &k("d"), "EX", "0"]), refused);
    assert_eq!(client.cmd(&["GETEX", &k("none"), "EX", "0"]), Reply::Nil);
    assert_eq!(client.cmd(&["MULTI"]), Reply::Ok);
    for key in [k("none"), k("d")] {
        assert_eq!(
            client.cmd(&["GETEX", &key, "PX", "abc"]),
            Reply::Status("QUEUED".into())
        );
    }
    assert_eq!(
        client.cmd(&["EXEC"]),
        Reply::Array(vec![
            Reply::Nil,
            Reply::Error("ERR value is not an integer or out of range".into())
        ])
    );
    assert_eq!(client.cmd(&["RENAME", &k("d"), &k("e")]), Reply::Ok);
    assert_eq!(client.cmd(&["MSETNX", &k("e"), "1", &k("f"), "2"]), int(0));
    assert_eq!(client.cmd(&["GETDEL", &k("e")]), bulk("vw"));
    let expected = vec![k("bin").into_bytes(), k("c").into_bytes()];
    let pattern = format!("{tag}:*");
    assert_eq!(sorted_keys(client.cmd(&["KEYS", &pattern])), expected);
    let mut scanned = Vec::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..100_000 {
        client.send(&[
            b"SCAN",
            &cursor,
            b"MATCH",
            pattern.as_bytes(),
            b"COUNT",
            b"50",
        ]);
        match client.read() {
            Reply::Array(mut parts) if parts.len() == 2 => {
                scanned.extend(sorted_keys(parts.pop().unwrap_or(Reply::Nil)));
                match parts.pop() {
                    Some(Reply::Bulk(next)) => cursor = next,
                    other => panic!("SCAN's cursor: {other:?}"),
                }
            }
            other => panic!("SCAN answered {other:?}"),
        }
        if cursor == b"0" {
            break;
        }
    }
    scanned.sort();
    assert_eq!(scanned, expected, "one SCAN iteration");
    assert_eq!(client.cmd(&["UNLINK", &k("c"), &k("bin")]), int(2));
}

fn sorted_keys(reply: Reply) -> Vec<Vec<u8>> {
    let Reply::Array(items) = reply else {
        panic!("not an array: {reply:?}");
    };
    let mut keys: Vec<Vec<u8>> = items
        .into_iter()
        .map(|item| match item {
            Reply::Bulk(key) => key,
            other => panic!("not a key: {other:?}"),
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn commands_work_through_the_leader_and_a_follower() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    exercise_commands(&mut cluster.client(leader), "via-leader");
    exercise_commands(&mut cluster.client(follower), "via-follower");

    // A write through the follower is readable through the leader and vice versa.
    let mut to_follower = cluster.client(follower);
    let mut to_leader = cluster.client(leader);
    assert_eq!(
        to_follower.cmd(&["SET", "shared", "from-follower"]),
        Reply::Ok
    );
    assert_eq!(to_leader.cmd(&["GET", "shared"]), bulk("from-follower"));
    assert_eq!(to_leader.cmd(&["SET", "shared", "from-leader"]), Reply::Ok);
    assert_eq!(to_follower.cmd(&["GET", "shared"]), bulk("from-leader"));
}

#[test]
fn inline_commands_as_typed_into_netcat() {
    let cluster = Cluster::start(3);
    for i in 0..3 {
        let mut stream = TcpStream::connect(cluster.nodes[i].client_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let key = format!("inl{}", i);
        let typed = format!(
            "SET {k} \"hello world\"\r\nget {k}\nEXISTS {k} nope\nPING\r\n",
            k = key
        );
        std::io::Write::write_all(&mut stream, typed.as_bytes()).unwrap();
        let expected = b"+OK\r\n$11\r\nhello world\r\n:1\r\n+PONG\r\n";
        let mut got = vec![0u8; expected.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }
}

fn integer(reply: Reply) -> i64 {
    match reply {
        Reply::Integer(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn keys_expire_on_every_node_and_timeouts_survive_a_restart() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let mut via_follower = cluster.client(follower);
    let set_at = Instant::now();
    assert_eq!(
        via_follower.cmd_retry(&["SET", "soon", "v", "PX", "1500"]),
        Reply::Ok
    );
    assert_eq!(via_follower.cmd(&["SET", "later", "v"]), Reply::Ok);
    assert_eq!(via_follower.cmd(&["EXPIRE", "later", "1"]), int(1));
    assert_eq!(via_follower.cmd(&["SETEX", "kept", "100", "v"]), Reply::Ok);
    let pttl = integer(via_follower.cmd(&["PTTL", "soon"]));
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    assert_eq!(via_follower.cmd(&["TTL", "later"]), int(1));
    assert_eq!(via_follower.cmd(&["GET", "soon"]), bulk("v"));
    // Each node's own data (INFO is answered locally; reads go to the
    // leader) holds the three timeouts.
    for node in 0..3 {
        let mut client = cluster.client(node);
        wait_for(Duration::from_secs(5), "timeouts on every node", || {
            let info = client.info();
            (info.get("db0").map(String::as_str) == Some("keys=3,expires=3,avg_ttl=0"))
                .then_some(())
        });
    }

    thread::sleep(Duration::from_millis(1600).saturating_sub(set_at.elapsed()));
    for node in [leader, follower] {
        let mut client = cluster.client(node);
        assert_eq!(client.cmd(&["GET", "soon"]), Reply::Nil, "node {node}");
        assert_eq!(client.cmd(&["EXISTS", "soon", "later"]), int(0));
        assert_eq!(client.cmd(&["PTTL", "soon"]), int(-2));
    }
    // The leader deletes expired keys on every node, nobody reading them.
    for node in 0..3 {
        let mut client = cluster.client(node);
        wait_for(Duration::from_secs(10), "expired keys purged", || {
            let info = client.info();
            (info.get("db0").map(String::as_str) == Some("keys=1,expires=1,avg_ttl=0"))
                .then_some(())
        });
    }
    let ttl = integer(via_follower.cmd(&["TTL", "kept"]));
    assert!((90..=100).contains(&ttl), "TTL {ttl}");

    // A restarted node recovers the timeout from its log.
    cluster.kill(follower);
    cluster.spawn(follower);
    let mut restarted = cluster.client(follower);
    let ttl = integer(restarted.cmd_retry(&["TTL", "kept"]));
    assert!((90..=100).contains(&ttl), "TTL {ttl} after a restart");
    let info = restarted.info();
    assert_eq!(
        info.get("db0").map(String::as_str),
        Some("keys=1,expires=1,avg_ttl=0")
    );
}

/// This machine's wall clock in unix milliseconds, which the nodes stamp
/// writes with and answer reads at.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[test]
fn a_request_sent_after_a_keys_deadline_finds_it_gone() {
    // The client shares the nodes' clock here, so a request it sends once
    // that clock has passed a key's deadline must find the key gone, as in
    // Redis. A leader used to take the time once per loop iteration, before
    // it waited for events, and answered (or stamped) the requests that
    // woke it at that time: up to a tick (10 ms) before they were sent, so
    // most such reads still saw the key, and an INCR added to its value.
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let mut client = cluster.client(leader);
    for round in 0..40u64 {
        let deadline = unix_ms() + 20;
        let at = deadline.to_string();
        assert_eq!(client.cmd_retry(&["SET", "k", "5", "PXAT", &at]), Reply::Ok);
        while unix_ms() <= deadline {
            thread::sleep(Duration::from_micros(200));
        }
        // Requests land at different points of the leader's tick.
        thread::sleep(Duration::from_micros(round % 10 * 1000));
        if round % 2 == 0 {
            assert_eq!(client.cmd(&["GET", "k"]), Reply::Nil, "round {round}");
        } else {
            assert_eq!(client.cmd(&["INCR", "k"]), int(1), "round {round}");
        }
    }
}
