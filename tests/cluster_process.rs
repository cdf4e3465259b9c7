//! The real binary, three processes on free loopback ports: commands through
//! the leader and a follower, `kill -9` under load, garbage on both ports,
//! a node of another cluster that must not join, and a node that cannot
//! write its log.

mod common;

use common::load::{LoadResult, WriteLoad};
use common::{bulk, wait_for, Client, Cluster, Resume, Spawned, BIN};
use raftkv::kv::Reply;
use raftkv::wire::resp;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

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
fn pipelined_requests_get_replies_in_order_on_every_node() {
    let cluster = Cluster::start(3);
    for i in 0..3 {
        let mut client = cluster.client(i);
        let counter = format!("ctr{}", i);
        let mut batch = Vec::new();
        for n in 0..200 {
            let key = format!("p{}:{}", i, n);
            raftkv::wire::resp::encode_request(&[b"SET", key.as_bytes(), b"v"], &mut batch);
            raftkv::wire::resp::encode_request(&[b"INCR", counter.as_bytes()], &mut batch);
            raftkv::wire::resp::encode_request(&[b"GET", key.as_bytes()], &mut batch);
        }
        client.send_raw(&batch).expect("write pipeline");
        for n in 0..200 {
            assert_eq!(client.read(), Reply::Ok, "SET #{} on node {}", n, i + 1);
            assert_eq!(client.read(), int(n + 1), "INCR #{} on node {}", n, i + 1);
            assert_eq!(client.read(), bulk("v"), "GET #{} on node {}", n, i + 1);
        }
    }
}

/// Three nodes, started, with a leader that has committed a write.
fn cluster_that_committed_a_write() -> (Cluster, usize) {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "warm", "1"]),
        Reply::Ok
    );
    (cluster, leader)
}

/// Each read in a pipeline sees the writes sent before it on its connection
/// and none sent after it, as if Redis served them one at a time. (A read
/// waits for its ReadIndex round, while the writes pipelined behind it go on
/// and are often applied first: it must be answered from its own place.)
#[test]
fn a_pipelined_read_sees_exactly_the_writes_sent_before_it() {
    let (cluster, _) = cluster_that_committed_a_write();
    let req = |argv: &[&str], out: &mut Vec<u8>| {
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        raftkv::wire::resp::encode_request(&argv, out);
    };
    for i in 0..3 {
        let key = format!("seq{}", i);
        let mut batch = Vec::new();
        for n in 0..100 {
            req(&["SET", &key, &n.to_string()], &mut batch);
            req(&["GET", &key], &mut batch);
            req(&["MGET", &key, &key], &mut batch);
        }
        req(&["DEL", &key], &mut batch);
        req(&["GET", &key], &mut batch);
        req(&["SET", &key, "a"], &mut batch);
        req(&["MULTI"], &mut batch);
        req(&["GET", &key], &mut batch);
        req(&["EXEC"], &mut batch);
        req(&["SET", &key, "b"], &mut batch);
        req(&["EXISTS", &key], &mut batch);
        req(&["DEL", &key], &mut batch);
        let mut client = cluster.client(i);
        client.send_raw(&batch).expect("write pipeline");
        for n in 0..100 {
            let value = n.to_string();
            assert_eq!(client.read(), Reply::Ok, "SET #{} on node {}", n, i + 1);
            assert_eq!(client.read(), bulk(&value), "GET #{} on node {}", n, i + 1);
            assert_eq!(
                client.read(),
                Reply::Array(vec![bulk(&value), bulk(&value)]),
                "MGET #{} on node {}",
                n,
                i + 1
            );
        }
        assert_eq!(client.read(), int(1));
        assert_eq!(client.read(), Reply::Nil, "GET after DEL on node {}", i + 1);
        assert_eq!(client.read(), Reply::Ok);
        assert_eq!(client.read(), Reply::Ok);
        assert_eq!(client.read(), Reply::Status("QUEUED".into()));
        assert_eq!(
            client.read(),
            Reply::Array(vec![bulk("a")]),
            "EXEC of a GET before a later SET on node {}",
            i + 1
        );
        assert_eq!(client.read(), Reply::Ok);
        assert_eq!(client.read(), int(1));
        assert_eq!(client.read(), int(1));
    }
}

/// DBSIZE and INFO's `keys`, pipelined behind writes, count exactly the writes
/// sent before them on their connection, on the leader and on followers, as
/// Redis answering one request at a time would.
#[test]
fn pipelined_dbsize_and_info_count_exactly_the_writes_sent_before_them() {
    let (cluster, leader) = cluster_that_committed_a_write();
    // A follower still catching up may relay a reply before the leader's
    // commit reaches it (README's command table, DBSIZE): right after the
    // election on a loaded machine, node 1 once answered the DBSIZE behind
    // its first SET 0, not having applied "warm". What is checked here is
    // followers that have caught up: they applied what the leader committed,
    // and the leader heard them acknowledge it, so it sends them its commits.
    let committed = info_u64(&cluster, leader, "commit_index");
    cluster.wait_applied(committed, Duration::from_secs(20));
    for i in (0..3).filter(|&i| i != leader) {
        wait_for(
            Duration::from_secs(20),
            "the leader to hear a follower acknowledge its log",
            || (cluster.match_index_known_to(leader, i)? >= committed).then_some(()),
        );
    }
    let req = |argv: &[&str], out: &mut Vec<u8>| {
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        raftkv::wire::resp::encode_request(&argv, out);
    };
    let keys_in = |reply: Reply| -> i64 {
        let Reply::Bulk(text) = reply else {
            panic!("INFO answered {reply:?}");
        };
        let text = String::from_utf8_lossy(&text).to_string();
        common::parse_info(&text)["keys"].parse().expect("keys")
    };
    let mut keys = 1; // "warm"
    for i in 0..3 {
        let mut client = cluster.client(i);
        for round in 0..20 {
            let mut batch = Vec::new();
            let (a, b) = (format!("d{i}-{round}-a"), format!("d{i}-{round}-b"));
            req(&["SET", &a, "1"], &mut batch);
            req(&["DBSIZE"], &mut batch);
            req(&["INFO", "keyspace", "raft"], &mut batch);
            req(&["MSET", &b, "2", &a, "3"], &mut batch);
            req(&["DBSIZE"], &mut batch);
            req(&["DEL", &a], &mut batch);
            req(&["DBSIZE"], &mut batch);
            // Queued in a transaction, run when EXEC's entry is applied.
            req(&["SET", &a, "4"], &mut batch);
            req(&["MULTI"], &mut batch);
            req(&["DBSIZE"], &mut batch);
            req(&["EXEC"], &mut batch);
            req(&["DEL", &a], &mut batch);
            req(&["MULTI"], &mut batch);
            req(&["SET", &a, "5"], &mut batch);
            req(&["DBSIZE"], &mut batch);
            req(&["EXEC"], &mut batch);
            req(&["DEL", &a], &mut batch);
            // At its place in the transaction, as in Redis: not the writes
            // queued after it.
            req(&["MULTI"], &mut batch);
            req(&["DBSIZE"], &mut batch);
            req(&["SET", &a, "6"], &mut batch);
            req(&["DBSIZE"], &mut batch);
            req(&["DEL", &a], &mut batch);
            req(&["EXEC"], &mut batch);
            client.send_raw(&batch).expect("write pipeline");
            let at = format!("node {} round {round}", i + 1);
            assert_eq!(client.read(), Reply::Ok, "{at}");
            assert_eq!(client.read(), int(keys + 1), "DBSIZE after SET, {at}");
            assert_eq!(keys_in(client.read()), keys + 1, "INFO after SET, {at}");
            assert_eq!(client.read(), Reply::Ok, "{at}");
            assert_eq!(client.read(), int(keys + 2), "DBSIZE after MSET, {at}");
            assert_eq!(client.read(), int(1), "{at}");
            assert_eq!(client.read(), int(keys + 1), "DBSIZE after DEL, {at}");
            let queued = Reply::Status("QUEUED".into());
            assert_eq!(client.read(), Reply::Ok, "{at}");
            assert_eq!(client.read(), Reply::Ok, "{at}");
            assert_eq!(client.read(), queued, "{at}");
            assert_eq!(
                client.read(),
                Reply::Array(vec![int(keys + 2)]),
                "DBSIZE alone in EXEC after SET, {at}"
            );
            assert_eq!(client.read(), int(1), "{at}");
            assert_eq!(client.read(), Reply::Ok, "{at}");
            assert_eq!(client.read(), queued, "{at}");
            assert_eq!(client.read(), queued, "{at}");
            assert_eq!(
                client.read(),
                Reply::Array(vec![Reply::Ok, int(keys + 2)]),
                "DBSIZE after SET in EXEC, {at}"
            );
            assert_eq!(client.read(), int(1), "{at}");
            assert_eq!(client.read(), Reply::Ok, "{at}");
            for _ in 0..4 {
                assert_eq!(client.read(), queued, "{at}");
            }
            assert_eq!(
                client.read(),
                Reply::Array(vec![int(keys + 1), Reply::Ok, int(keys + 2), int(1)]),
                "DBSIZE before and after a SET in one EXEC, {at}"
            );
            keys += 1;
        }
    }
}

/// A client that sends a pipeline and shuts its side at once (`nc -N`) gets
/// every reply, including those of writes held behind a read.
#[test]
fn a_pipeline_sent_before_the_client_shuts_its_side_is_served_whole() {
    let (cluster, leader) = cluster_that_committed_a_write();
    for i in 0..3 {
        let key = format!("eof{}", i);
        let typed = format!(
            "SET {k} 1\r\nGET {k}\r\nSET {k} 2\r\nGET {k}\r\nSET {k} 3\r\n",
            k = key
        );
        let mut client = cluster.client(i);
        client.send_raw(typed.as_bytes()).expect("write pipeline");
        client
            .stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shut the write side");
        let mut replies = Vec::new();
        while let Some(reply) = client.try_read() {
            replies.push(reply);
        }
        assert_eq!(
            replies,
            vec![Reply::Ok, bulk("1"), Reply::Ok, bulk("2"), Reply::Ok],
            "on node {}",
            i + 1
        );
        assert_eq!(cluster.client(leader).cmd(&["GET", &key]), bulk("3"));
    }
}

/// `cluster` is needed on first boot only: a node restarted without it (as
/// the SPEC allows) rejoins with the members it was founded with.
#[test]
fn a_node_restarts_without_the_cluster_setting() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(leader);
    assert_eq!(client.cmd_retry(&["SET", "before", "1"]), Reply::Ok);
    assert_eq!(cluster.terminate(follower), Some(0));
    assert_eq!(client.cmd(&["SET", "while-down", "2"]), Reply::Ok);
    cluster.nodes[follower].restart_bare = true;
    assert!(!cluster.args(follower).iter().any(|a| a == "--cluster"));
    cluster.spawn(follower);
    let mut restarted = cluster.client(follower);
    wait_for(
        Duration::from_secs(10),
        "the restarted node to catch up",
        || {
            let info = restarted.try_info()?;
            (info.get("members")?.matches('=').count() == 3
                && info.get("applied_index")? == cluster.info(leader).get("applied_index")?)
            .then_some(())
        },
    );
    assert_eq!(restarted.cmd(&["GET", "while-down"]), bulk("2"));
    assert_eq!(restarted.cmd(&["SET", "after", "3"]), Reply::Ok);
    assert_eq!(client.cmd(&["GET", "after"]), bulk("3"));
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

fn info_u64(cluster: &Cluster, i: usize, field: &str) -> u64 {
    cluster.info(i)[field].parse().expect("numeric INFO field")
}

/// Every acknowledged SET readable through node `via`, and the INCR replies unique.
fn check_acknowledged(
    cluster: &Cluster,
    via: usize,
    sets: &HashMap<String, String>,
    incrs: &[i64],
) {
    let mut client = cluster.client(via);
    for (key, value) in sets {
        assert_eq!(
            client.cmd_retry(&["GET", key]),
            bulk(value),
            "acknowledged write {} lost",
            key
        );
    }
    let unique: HashSet<i64> = incrs.iter().copied().collect();
    assert_eq!(unique.len(), incrs.len(), "an INCR reply was given twice");
    let max = incrs.iter().max().expect("an INCR was acknowledged");
    match client.cmd_retry(&["GET", "counter"]) {
        Reply::Bulk(v) => {
            let final_value: i64 = String::from_utf8_lossy(&v).parse().unwrap();
            assert!(
                final_value >= *max,
                "counter {} below an acknowledged {}",
                final_value,
                max
            );
        }
        other => panic!("GET counter answered {:?}", other),
    }
}

/// Waits until all running nodes have applied the same index and hold the same data.
fn wait_converged(cluster: &Cluster) {
    wait_for(Duration::from_secs(20), "nodes to converge", || {
        let running: Vec<usize> = (0..3).filter(|&i| cluster.is_running(i)).collect();
        let states: Vec<(u64, Reply)> = running
            .iter()
            .map(|&i| {
                let info = cluster.info(i);
                let digest = cluster.client(i).cmd(&["DEBUG", "DIGEST"]);
                (info["applied_index"].parse().unwrap(), digest)
            })
            .collect();
        let commit = info_u64(
            cluster,
            cluster.wait_for_leader(Duration::from_secs(10)),
            "commit_index",
        );
        states
            .iter()
            .all(|s| s == &states[0] && s.0 >= commit)
            .then_some(())
    });
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_leader() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.wait_for_leader(Duration::from_secs(10));
    let load = WriteLoad::start(&cluster, 6);
    thread::sleep(Duration::from_millis(800));
    cluster.kill(old_leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_ne!(new_leader, old_leader);
    // The new leader serves writes.
    let before = load.acked_count();
    wait_for(
        Duration::from_secs(10),
        "writes under the new leader",
        || (load.acked_count() > before + 50).then_some(()),
    );
    cluster.spawn(old_leader);
    thread::sleep(Duration::from_millis(800));
    let LoadResult {
        acked: sets, incrs, ..
    } = load.finish();
    assert!(
        sets.len() > 100,
        "too few writes acknowledged: {}",
        sets.len()
    );
    wait_converged(&cluster);
    check_acknowledged(&cluster, old_leader, &sets, &incrs);
}

#[test]
fn acknowledged_writes_survive_kill_9_of_every_node() {
    let mut cluster = Cluster::start(3);
    let load = WriteLoad::start(&cluster, 4);
    thread::sleep(Duration::from_millis(1500));
    // Kill all three while writes are in flight, then stop the writers.
    for i in 0..3 {
        cluster.kill(i);
    }
    let LoadResult {
        acked: sets, incrs, ..
    } = load.finish();
    assert!(
        sets.len() > 50,
        "too few writes acknowledged: {}",
        sets.len()
    );
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_for_leader(Duration::from_secs(15));
    for i in 0..3 {
        check_acknowledged(&cluster, i, &sets, &incrs);
    }
    wait_converged(&cluster);
}

#[test]
fn garbage_on_either_port_closes_only_that_connection() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let term = info_u64(&cluster, leader, "term");
    let mut bystander = cluster.client(leader);
    assert_eq!(bystander.cmd(&["SET", "before", "1"]), Reply::Ok);

    let garbage: [&[u8]; 4] = [
        b"*abc\r\n",
        b"*1\r\n$99999999999\r\n",
        b"*2\r\n$3\r\nGET\r\n:12\r\n",
        b"\"unbalanced\r\n",
    ];
    for i in 0..3 {
        for bytes in garbage {
            let mut client = cluster.client(i);
            client.send_raw(bytes).unwrap();
            match client.read() {
                Reply::Error(e) => assert!(e.starts_with("ERR protocol error"), "{}", e),
                other => panic!("garbage {:?} answered {:?}", bytes, other),
            }
            assert!(
                client.is_closed(),
                "connection left open after a protocol error"
            );
        }
        // Oversized request: larger than max_request_bytes (8 MiB by default).
        let mut client = cluster.client(i);
        client
            .send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000000\r\n")
            .unwrap();
        assert!(matches!(client.read(), Reply::Error(e) if e.starts_with("ERR protocol error")));

        // Raft port: junk frames, a huge length, a half frame then EOF.
        let raft = format!("127.0.0.1:{}", cluster.nodes[i].raft_port);
        for bytes in [
            &b"hello there, this is not a frame at all\r\n"[..],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1][..],
            &[0, 0, 0, 10, 1, 2][..],
        ] {
            let mut stream = TcpStream::connect(&raft).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = std::io::Write::write_all(&mut stream, bytes);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        }
    }
    // Every node is up, the leader and term did not change, the old connection works.
    for i in 0..3 {
        assert_eq!(
            cluster.client(i).cmd(&["PING"]),
            Reply::Status("PONG".into())
        );
    }
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(5)), leader);
    assert_eq!(info_u64(&cluster, leader, "term"), term);
    assert_eq!(bystander.cmd(&["GET", "before"]), bulk("1"));
}

#[test]
fn a_node_of_another_cluster_does_not_join() {
    let mut cluster = Cluster::new(3);
    cluster.nodes[2].extra_args = vec!["--cluster-name".into(), "other".into()];
    for i in 0..3 {
        cluster.spawn(i);
    }
    // Nodes 1 and 2 form a majority and elect a leader among themselves.
    let leader = wait_for(Duration::from_secs(15), "a leader among nodes 1-2", || {
        let id: u64 = cluster.info(0)["leader_id"].parse().ok()?;
        (id == 1 || id == 2).then_some(id)
    });
    let mut client = cluster.client(leader as usize - 1);
    assert_eq!(client.cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    thread::sleep(Duration::from_millis(1000));
    let outsider = cluster.info(2);
    assert_eq!(outsider["leader_id"], "0", "the outsider found a leader");
    assert_ne!(outsider["role"], "leader");
    assert_eq!(outsider["applied_index"], "0");
    let started = Instant::now();
    match cluster.client(2).cmd(&["SET", "k", "from-outsider"]) {
        Reply::Error(e) => assert!(e.starts_with("TRYAGAIN"), "{}", e),
        other => panic!("the outsider accepted a write: {:?}", other),
    }
    assert!(started.elapsed() >= Duration::from_millis(700));
    let logs = cluster.log_text(0) + &cluster.log_text(1);
    assert!(
        logs.contains("belongs to cluster 'other'"),
        "nodes 1-2 did not log why they refused the outsider"
    );
    assert!(
        cluster
            .log_text(2)
            .contains("refused our connection: node 3 belongs to cluster 'other', not 'raftkv'"),
        "the outsider did not log why it was refused"
    );
    assert_eq!(client.cmd(&["GET", "k"]), bulk("v"));
}

/// A follower relays a reply larger than a peer frame (16 MiB) byte for byte
/// as the leader answers its own client (it used to put errors in place of
/// the largest values): a member's relayed reply may be as large as a reply
/// can be. A transaction is one log entry in one frame: it may hold more than
/// one request, up to the highest `max_request_bytes`, and past that gets an
/// error. None of it may cost the cluster its leader.
#[test]
fn large_relayed_replies_are_the_leaders_bytes_and_oversized_transactions_get_errors() {
    // Not the tests' 200 ms, nor the default 500: a 50 MB reply holds up the
    // heartbeats queued behind it on the same connection, and on a busy
    // machine a node's loop also stalls for half a second (an 8 MB write
    // throttled by other disk traffic, or no CPU): elections followed, and
    // with them a `-TRYAGAIN` for a SET whose slot the new leader took. An
    // election now still fails the test, but only one a reply held up for
    // seconds could cause.
    let cluster = Cluster::start_with_election_timeout(3, 2000);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "warm", "1"]),
        Reply::Ok
    );
    let follower = (leader + 1) % 3;
    let term = cluster.info(leader)["term"].clone();
    // About as large as a request of the default max_request_bytes (8 MiB)
    // allows, and different from each other at every offset.
    let values: Vec<Vec<u8>> = (0..2u32)
        .map(|k| (0..8_380_000u32).map(|i| ((i + k) % 251) as u8).collect())
        .collect();
    let mut c = cluster.client(leader);
    for (key, value) in ["big1", "big2"].iter().zip(&values) {
        c.send(&[b"SET", key.as_bytes(), value]);
        assert_eq!(c.read(), Reply::Ok);
    }
    let mut f = cluster.client(follower);
    let (big1, big2) = (
        Reply::Bulk(values[0].clone()),
        Reply::Bulk(values[1].clone()),
    );
    // The same bytes from the leader and through the follower, and the reply
    // they hold.
    let mut both = |requests: &[&[&str]], expected: Reply| {
        let mut replies = [Vec::new(), Vec::new()];
        for (client, raw) in [&mut c, &mut f].into_iter().zip(&mut replies) {
            for argv in requests {
                let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
                client.send(&argv);
            }
            for argv in &requests[..requests.len() - 1] {
                let queued = match argv[0] {
                    "MULTI" => Reply::Ok,
                    _ => Reply::Status("QUEUED".into()),
                };
                assert_eq!(client.read(), queued);
            }
            *raw = client.read_raw();
        }
        let [from_leader, relayed] = replies;
        let what = requests.last().expect("a request")[0];
        assert!(
            from_leader == relayed,
            "{what}: the follower relayed {} bytes starting {:?}, the leader answered {}",
            relayed.len(),
            String::from_utf8_lossy(&relayed[..relayed.len().min(100)]),
            from_leader.len()
        );
        let parsed = resp::parse_reply(&relayed).expect("RESP").expect("whole");
        assert!(
            parsed == (expected, relayed.len()),
            "{what}: not the values"
        );
    };
    // 16.76 MB: this one did fit a frame, by 17 KB; the next two did not.
    both(
        &[&["MGET", "big1", "big2"]],
        Reply::Array(vec![big1.clone(), big2.clone()]),
    );
    both(
        &[&["MGET", "big2", "nokey", "big1", "big2"]],
        Reply::Array(vec![big2.clone(), Reply::Nil, big1.clone(), big2.clone()]),
    );
    both(
        &[
            &["MULTI"],
            &["GET", "big1"],
            &["SET", "t", "1"],
            &["GET", "big2"],
            &["MGET", "big1", "big2"],
            &["EXEC"],
        ],
        Reply::Array(vec![
            big1.clone(),
            Reply::Ok,
            big2.clone(),
            Reply::Array(vec![big1, big2]),
        ]),
    );

    // A transaction is one log entry in one peer frame: it may hold more
    // than one request of max_request_bytes (8 MiB here), up to the highest
    // setting (15 MiB), relayed and replicated whole.
    let value = &values[0][..6_000_000];
    assert_eq!(f.cmd(&["MULTI"]), Reply::Ok);
    f.send(&[b"SET", b"t1", value]);
    assert_eq!(f.read(), Reply::Status("QUEUED".into()));
    f.send(&[b"SET", b"t2", value]);
    assert_eq!(f.read(), Reply::Status("QUEUED".into()));
    f.send(&[b"SET", b"t3", value]);
    assert_eq!(
        f.read(),
        Reply::Error(
            "ERR the transaction exceeds 15728640 bytes, the most one log entry may hold".into()
        )
    );
    assert_eq!(
        f.cmd(&["EXEC"]),
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(f.cmd(&["EXISTS", "t1"]), int(0));
    assert_eq!(f.cmd(&["MULTI"]), Reply::Ok);
    for key in [b"t1", b"t2"] {
        f.send(&[b"SET", key, value]);
        assert_eq!(f.read(), Reply::Status("QUEUED".into()));
    }
    assert_eq!(f.cmd(&["EXEC"]), Reply::Array(vec![Reply::Ok, Reply::Ok]));
    assert_eq!(f.cmd(&["STRLEN", "t2"]), int(6_000_000));
    let committed = info_u64(&cluster, leader, "commit_index");
    for node in 0..3 {
        wait_for(
            Duration::from_secs(20),
            "every node to apply the 12 MB transaction",
            || (info_u64(&cluster, node, "applied_index") >= committed).then_some(()),
        );
    }
    assert_eq!(f.cmd(&["SET", "after", "1"]), Reply::Ok);
    assert_eq!(cluster.info(leader)["term"], term, "no election");
    assert_eq!(
        cluster.info(follower)["leader_id"],
        cluster.info(leader)["id"]
    );
}

/// Connections to the raft port that never send a handshake cannot lock the
/// members out: past 16 of them the oldest silent one is closed for each new
/// connection, so a member that reconnects still gets through.
#[test]
fn silent_raft_connections_do_not_lock_a_member_out() {
    let (mut cluster, leader) = cluster_that_committed_a_write();
    let follower = (leader + 1) % 3;
    let raft = format!("127.0.0.1:{}", cluster.nodes[leader].raft_port);
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&raft).expect("connect to the raft port"))
        .collect();
    thread::sleep(Duration::from_millis(200));
    cluster.kill(follower);
    cluster.spawn(follower);
    let mut c = cluster.client(leader);
    assert_eq!(c.cmd_retry(&["SET", "after", "1"]), Reply::Ok);
    let index = info_u64(&cluster, leader, "commit_index");
    let id = cluster.nodes[follower].id;
    wait_for(
        Duration::from_secs(10),
        "the leader to hear the restarted follower's acknowledgements",
        || {
            let Reply::Bulk(text) = c.cmd(&["CLUSTER", "MEMBERS"]) else {
                return None;
            };
            let text = String::from_utf8_lossy(&text).into_owned();
            let line = text.lines().find(|l| l.starts_with(&format!("id={id} ")))?;
            let matched: u64 = line.split("match_index=").nth(1)?.trim().parse().ok()?;
            (matched >= index).then_some(())
        },
    );
    drop(silent);
}

/// Sets the soft open-files limit of process `pid`, keeping its hard limit;
/// returns the soft limit it had.
fn set_open_files(pid: u32, soft: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit only reads and writes the structs passed.
    unsafe {
        let pid = pid as libc::pid_t;
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit),
            0
        );
        let before = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()),
            0
        );
        before
    }
}

/// Clients that connect while the node is out of descriptors wait in the
/// listener's queue, and are served once there are descriptors again, with
/// no other connection arriving: the listener's readiness is edge-triggered,
/// so connections left in its queue raised no new event, and waited until
/// someone else connected.
#[test]
fn clients_that_connected_while_descriptors_ran_out_are_served_once_there_are_some() {
    let mut cluster = Cluster::new(1);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let pid = cluster.pid(0).expect("running");
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count() as u64;
    let limit = set_open_files(pid, open);
    let addr = cluster.nodes[0].client_addr();
    let mut queued: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    wait_for(Duration::from_secs(10), "a failed accept", || {
        cluster
            .log_text(0)
            .contains("accept on the client port failed")
            .then_some(())
    });
    thread::sleep(Duration::from_millis(200));
    set_open_files(pid, limit);
    for (k, stream) in queued.iter_mut().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(b"PING\r\n").expect("send");
        let mut reply = [0u8; 7];
        stream
            .read_exact(&mut reply)
            .unwrap_or_else(|err| panic!("connection {k} not served: {err}"));
        assert_eq!(&reply, b"+PONG\r\n");
    }
}

/// Clients that pipeline GETs of a large value and never read the replies
/// are held together to what one such client may have unanswered, not each
/// to it: the replies of ten of them (64 MiB each) were made in one loop
/// iteration of about a second, which cost the cluster its leader.
///
/// The iteration is held to a bound in CPU time, not wall time: on a loaded
/// machine (load average 18) iterations of the fixed loop took 300-470 ms of
/// wall time (12 of 30 runs over 300 ms). Their CPU time was 30-45 ms;
/// with the shared budget removed, 420-550 ms, which the bound catches. No
/// election is asserted: loaded runs had one at 500 ms (1 of 30) and at 2 s
/// (1 of 22, after a 4.2 s iteration with 26 ms of CPU, the loop waiting
/// on the disk), which says nothing of the replies made in an iteration.
#[test]
fn clients_that_never_read_replies_to_large_gets_do_not_stall_the_leader() {
    let cluster = Cluster::start_with_election_timeout(3, 2000);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let mut c = cluster.client(leader);
    let value = vec![b'v'; 4_000_000];
    assert_eq!(c.cmd_retry(&["SET", "warm", "1"]), Reply::Ok);
    c.send(&[b"SET", b"big", &value]);
    assert_eq!(c.read(), Reply::Ok);
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2000);
    let addr = cluster.nodes[leader].client_addr();
    let silent: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).expect("connect");
            stream.write_all(&request).expect("send the GETs");
            stream
        })
        .collect();
    // Time for the node to answer all it will before the clients read.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(c.cmd(&["GET", "warm"]), bulk("1"));
    let info = cluster.info(leader);
    let stall_us: u64 = info["max_iteration_cpu_us"]
        .parse()
        .expect("max_iteration_cpu_us");
    assert!(
        stall_us < 300_000,
        "a loop iteration took {stall_us} us of CPU"
    );
    drop(silent);
}

#[test]
fn a_node_that_cannot_write_its_log_stops_naming_the_file_and_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::new(1);
    // A request's deadline is four election timeouts: with the default 200
    // ms, a 1 MB write synced on a loaded machine came back `-TIMEOUT` (1
    // of 12 runs beside two busy loops) before the limit was reached.
    cluster.set_election_timeout_ms(1000);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(
        cluster.client(0).cmd_retry(&["SET", "before", "1"]),
        Reply::Ok
    );
    assert_eq!(cluster.terminate(0), Some(0));
    // The first 64 MiB segment exists now; writes past its first 48 MiB fail,
    // as they would on a full disk.
    cluster.nodes[0].file_size = Some(48 << 20);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    let filler = "v".repeat(1 << 20);
    let mut acked = Vec::new();
    let mut sent = 0;
    while sent < 200 {
        let (key, value) = (format!("k{sent}"), format!("{sent}:{filler}"));
        sent += 1;
        if !client.try_send(&[b"SET", key.as_bytes(), value.as_bytes()]) {
            break;
        }
        match client.try_read() {
            Some(Reply::Ok) => acked.push((key, value)),
            Some(other) => panic!("SET {key} answered {other:?}"),
            None => break,
        }
    }
    assert!(
        sent < 200,
        "the node took 200 MB past a 66 MiB file-size limit"
    );
    assert!(
        acked.len() > 30,
        "only {} writes before the limit",
        acked.len()
    );
    assert_eq!(cluster.wait_exit(0, Duration::from_secs(10)), Some(1));
    let log = cluster.log_text(0);
    let failure = log
        .lines()
        .find(|line| line.contains("storage failure"))
        .unwrap_or_else(|| panic!("no storage failure in the log:\n{log}"));
    assert!(
        failure.contains(".seg") && failure.contains("File too large"),
        "the failure names neither the file nor the error: {failure}"
    );

    cluster.nodes[0].file_size = None;
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    for (key, value) in &acked {
        match client.cmd_retry(&["GET", key]) {
            Reply::Bulk(got) if got == value.as_bytes() => {}
            other => panic!("acknowledged {key} lost after the restart: {:.60?}", other),
        }
    }
    assert_eq!(client.cmd_retry(&["SET", "after", "1"]), Reply::Ok);
}

#[test]
fn a_node_alone_campaigns_as_a_candidate_without_raising_its_term() {
    let mut cluster = Cluster::new(3);
    cluster.spawn(0);
    let info = wait_for(Duration::from_secs(10), "node 1 to campaign", || {
        let info = cluster.info(0);
        (info["role"] == "candidate").then_some(info)
    });
    assert_eq!(info["leader_id"], "0");
    // Its pre-vote finds no majority, so the term a real election would
    // raise stays where it was.
    assert_eq!(info["term"], "0");
}

/// Whether process `pid` catches SIGTERM (`SigCgt` in /proc/PID/status).
fn catches_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

#[test]
fn sigterm_while_a_node_recovers_a_large_log_stops_it_cleanly() {
    let mut cluster = Cluster::new(1);
    // A request's deadline is four election timeouts: with the default 200
    // ms, a batch of ten 1 MB writes synced beside other disk work came back
    // `-TIMEOUT` (2 of 25 loaded runs).
    cluster.set_election_timeout_ms(1000);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    let value = "v".repeat(1 << 20);
    // In batches, each well within the request deadline.
    for batch in 0..30 {
        for i in batch * 10..batch * 10 + 10 {
            client.send(&[b"SET", format!("k{i}").as_bytes(), value.as_bytes()]);
        }
        for _ in 0..10 {
            assert_eq!(client.read(), Reply::Ok);
        }
    }
    assert_eq!(cluster.terminate(0), Some(0));

    // Replaying 300 MB of log takes a while; SIGTERM meanwhile, once the
    // node catches it and before it serves, must stop it with status 0.
    // Killed on drop, should the test fail before the node exits.
    let mut node = Spawned(
        std::process::Command::new(BIN)
            .args(cluster.args(0))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run raftkv"),
    );
    let child = &mut node.0;
    let pid = child.id();
    wait_for(Duration::from_secs(10), "the node to catch SIGTERM", || {
        if catches_sigterm(pid) {
            return Some(());
        }
        match child.try_wait() {
            Ok(Some(status)) => panic!("the node exited first: {status}"),
            _ => None,
        }
    });
    let serving = TcpStream::connect(cluster.nodes[0].client_addr()).is_ok();
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("the node ignored SIGTERM for 20 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        !serving,
        "recovery was over before the signal; the test proves nothing"
    );
    assert_eq!(status.code(), Some(0), "{status}");

    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let got = cluster.client(0).cmd_retry(&["GET", "k299"]);
    assert!(
        matches!(&got, Reply::Bulk(v) if v.len() == 1 << 20),
        "k299 lost"
    );
}

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
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
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

/// Members named by host name are looked up off the event loop, then
/// dialed: such a cluster forms and replicates like one named by address.
#[test]
fn a_cluster_whose_members_are_named_by_host_name_forms_and_replicates() {
    let mut cluster = Cluster::new(3);
    cluster.name_members_by_host("localhost");
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let follower = (leader + 1) % 3;
    assert_eq!(
        cluster.client(follower).cmd_retry(&["SET", "k", "v"]),
        Reply::Ok
    );
    for i in 0..3 {
        let mut client = cluster.client(i);
        wait_for(Duration::from_secs(10), "all peers connected", || {
            (client.info()["connected_peers"] == "2").then_some(())
        });
        assert_eq!(client.cmd(&["GET", "k"]), bulk("v"));
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

#[test]
fn a_pipeline_larger_than_a_read_budget_is_served_whole_and_in_order() {
    // A node reads 4 MiB of one client's requests at a time and takes up the
    // rest in later iterations: a pipeline of writes larger than that, which
    // waits in the kernel while the node is stopped, is served whole and in
    // order once it runs again.
    let cluster = Cluster::start(1);
    let mut client = cluster.client(0);
    let value = |i: usize| format!("{i}:{}", "v".repeat(300 << 10));
    let mut requests = Vec::new();
    for i in 0..20 {
        let key = format!("big{i}");
        resp::encode_request(
            &[b"SET", key.as_bytes(), value(i).as_bytes()],
            &mut requests,
        );
    }
    let pid = cluster.pid(0).expect("running");
    let resume = Resume::stop(pid);
    let mut writer = client.stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || writer.write_all(&requests));
    thread::sleep(Duration::from_millis(300));
    drop(resume);
    for i in 0..20 {
        assert_eq!(client.read(), Reply::Ok, "SET {i}");
    }
    sender.join().expect("writer").expect("write the pipeline");
    for i in 0..20 {
        assert_eq!(client.cmd(&["GET", &format!("big{i}")]), bulk(&value(i)));
    }
}

#[test]
fn clients_over_an_iterations_read_budget_are_all_served_whole_and_in_order() {
    // A node reads 16 MiB of all its clients' requests in one iteration; the
    // clients left over go first in the next. Four pipelines of 10 MiB,
    // waiting in the kernel while the node is stopped, take many turns each:
    // none is starved, reordered or cut.
    //
    // A 2 s election timeout, not the tests' 200 ms: each write's deadline
    // (4 election timeouts) runs from when the node read it, and the 40 MiB
    // must be synced by then; 800 ms was too short on a machine with other
    // disk traffic (`-TIMEOUT outcome unknown`).
    let cluster = Cluster::start_with_election_timeout(1, 2000);
    let value = |c: usize, i: usize| format!("{c}:{i}:{}", "v".repeat(1 << 20));
    let mut clients = Vec::new();
    let mut pipelines = Vec::new();
    for c in 0..4 {
        clients.push(cluster.client(0));
        let mut requests = Vec::new();
        for i in 0..10 {
            let key = format!("big{c}-{i}");
            resp::encode_request(
                &[b"SET", key.as_bytes(), value(c, i).as_bytes()],
                &mut requests,
            );
        }
        pipelines.push(requests);
    }
    let pid = cluster.pid(0).expect("running");
    let resume = Resume::stop(pid);
    let senders: Vec<_> = clients
        .iter()
        .zip(pipelines)
        .map(|(client, requests)| {
            let mut writer = client.stream.try_clone().expect("clone the stream");
            thread::spawn(move || writer.write_all(&requests))
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    drop(resume);
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..10 {
            assert_eq!(client.read(), Reply::Ok, "client {c}, SET {i}");
        }
    }
    for sender in senders {
        sender.join().expect("writer").expect("write the pipeline");
    }
    let mut client = cluster.client(0);
    for c in 0..4 {
        for i in 0..10 {
            let key = format!("big{c}-{i}");
            assert_eq!(client.cmd(&["GET", &key]), bulk(&value(c, i)), "{key}");
        }
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

#[test]
fn a_follower_that_lost_acknowledged_entries_without_fsync_catches_up() {
    // `fsync = never`: an OS crash can take the tail of a follower's log,
    // entries it acknowledged. Cutting the tail of a stopped follower's log
    // stands in for that crash.
    let mut cluster = Cluster::new(3);
    let conf = cluster.dir.path().join("never.conf");
    std::fs::write(&conf, "fsync = never\n").expect("write config");
    for node in &mut cluster.nodes {
        node.extra_args = vec!["--config".into(), conf.display().to_string()];
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(leader);
    for i in 0..40 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), "v"]), Reply::Ok);
    }
    let last = info_u64(&cluster, leader, "last_log_index");
    cluster.wait_applied(last, Duration::from_secs(10));
    cluster.kill(follower);
    {
        let mut storage = raftkv::storage::Storage::open(
            cluster.data_dir(follower),
            raftkv::storage::StorageOptions::default(),
        )
        .expect("open the follower's log");
        storage.finish_recovery().expect("recover");
        let first = storage.first_index();
        let kept = storage.entries(first, last - 20).expect("read entries");
        storage.reset(first).expect("empty the log");
        storage.append(&kept).expect("write the kept entries");
        storage.sync().expect("sync");
        assert_eq!(storage.last_index(), last - 21);
    }
    cluster.spawn(follower);
    assert_eq!(client.cmd(&["SET", "after", "v"]), Reply::Ok);
    let last = info_u64(&cluster, leader, "last_log_index");
    wait_for(
        Duration::from_secs(10),
        "the follower to hold the leader's log again",
        || (info_u64(&cluster, follower, "last_log_index") >= last).then_some(()),
    );
    wait_converged(&cluster);
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
    let leader = cluster.wait_for_leader(Duration::from_secs(60));
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
        let leader = cluster.wait_for_leader(Duration::from_secs(30));
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

/// A transaction is one log entry, which a peer frame (16 MiB) must hold
/// whole. Its queued words are counted against 15 MiB, but KEYS (or a large
/// SCAN) in a transaction that writes goes in the entry as an error text of
/// about 90 bytes, where its words count 37: 425,000 `KEYS *` made a 38 MB
/// entry that no follower would take, and the leader sent it again and
/// again, committing nothing more. Then EXEC built it to refuse it, which
/// took the leader's loop 0.44 s, long enough for an election. Such a
/// transaction is now refused as it is queued; the cluster goes on.
#[test]
fn a_transaction_whose_entry_would_not_fit_a_frame_is_refused() {
    // 2 s election timeouts, not the tests' 200 ms: under load the leader's
    // loop once went 0.42 s without running (8 ms of CPU) and a follower
    // was elected. The refusal itself is checked as each KEYS is queued.
    let cluster = Cluster::start_with_election_timeout(3, 2000);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "warm", "1"]),
        Reply::Ok
    );
    let term = cluster.info(leader)["term"].clone();
    let mut client = cluster.client(leader);
    let count = 425_000;
    assert_eq!(client.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        client.cmd(&["SET", "a", "b"]),
        Reply::Status("QUEUED".into())
    );
    // In batches, read as they go: the replies would fill the socket.
    let mut batch = Vec::new();
    let mut queued = 0;
    let mut refused = 0;
    for _ in 0..count / 1000 {
        batch.clear();
        for _ in 0..1000 {
            resp::encode_request(&[b"KEYS", b"*"], &mut batch);
        }
        client.send_raw(&batch).expect("send the transaction");
        for _ in 0..1000 {
            match client.read() {
                Reply::Status(text) if text == "QUEUED" && refused == 0 => queued += 1,
                Reply::Error(text) if text.contains("the most one log entry may hold") => {
                    refused += 1
                }
                other => panic!("KEYS number {} answered {other:?}", queued + refused + 1),
            }
        }
    }
    // Each counted as its error text in the entry (89 bytes) and 16 more.
    assert!(
        (100_000..160_000).contains(&queued),
        "{queued} KEYS queued before the transaction was refused"
    );
    match client.cmd(&["EXEC"]) {
        Reply::Error(text) => assert!(text.starts_with("EXECABORT"), "{text}"),
        other => panic!("EXEC of a refused transaction answered {other:?}"),
    }
    assert_eq!(client.cmd(&["EXISTS", "a"]), Reply::Integer(0));
    assert_eq!(client.cmd(&["SET", "after", "1"]), Reply::Ok);
    let committed = info_u64(&cluster, leader, "commit_index");
    for node in 0..3 {
        wait_for(
            Duration::from_secs(20),
            "every node to apply the SET after it",
            || (info_u64(&cluster, node, "applied_index") >= committed).then_some(()),
        );
    }
    assert_eq!(cluster.info(leader)["term"], term, "no election");
}

#[test]
fn a_dialer_that_hangs_up_before_its_handshake_is_no_refusal() {
    // A peer whose connect timed out while a partition healed hangs up
    // before its handshake; the partition harness's checker flagged the
    // warning this used to log ("refused peer connection: closed by peer").
    let cluster = Cluster::start(1);
    cluster.wait_for_leader(Duration::from_secs(10));
    let raft_addr = cluster.nodes[0].raft_addr();
    for _ in 0..3 {
        drop(std::net::TcpStream::connect(&raft_addr).expect("connect to the raft port"));
    }
    let log = wait_for(Duration::from_secs(10), "the hang-ups to be logged", || {
        let log = cluster.log_text(0);
        (log.matches("closed before its handshake").count() == 3).then_some(log)
    });
    assert!(!log.contains("refused peer connection"), "{log}");
}

#[test]
fn writes_parked_past_a_dispatch_budget_all_go_once_there_is_a_leader() {
    // Requests that arrive while there is no leader are parked; once one is
    // elected they are routed 16 MiB at a time, in order. Four clients park
    // 8 MiB each on a node alone, then the others start.
    //
    // Each write's deadline (4 election timeouts) runs from its arrival, and
    // must cover the start of two processes, an election (up to 2 election
    // timeouts after they start) and the replication of 32 MiB: with 1 s
    // election timeouts a loaded machine took longer, and the first writes
    // were answered `-TIMEOUT`. With 3 s the election leaves 6 s for the rest.
    let election_timeout = Duration::from_secs(3);
    let mut cluster = Cluster::new(3);
    cluster.set_election_timeout_ms(election_timeout.as_millis() as u64);
    cluster.spawn(0);
    let value = |c: usize, i: usize| format!("{c}:{i}:{}", "p".repeat(1 << 20));
    let mut clients: Vec<Client> = (0..4).map(|_| cluster.client(0)).collect();
    for client in &clients {
        // The first reply may take up to the writes' deadline.
        let wait = election_timeout * 4 + Duration::from_secs(10);
        client
            .stream
            .set_read_timeout(Some(wait))
            .expect("set the read timeout");
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..8 {
            client.send(&[
                b"SET",
                format!("parked{c}-{i}").as_bytes(),
                value(c, i).as_bytes(),
            ]);
        }
    }
    thread::sleep(Duration::from_millis(300));
    cluster.spawn(1);
    cluster.spawn(2);
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..8 {
            assert_eq!(client.read(), Reply::Ok, "client {c}, SET {i}");
        }
    }
    let mut client = cluster.client(0);
    for c in 0..4 {
        for i in 0..8 {
            let key = format!("parked{c}-{i}");
            assert_eq!(
                client.cmd_retry(&["GET", &key]),
                bulk(&value(c, i)),
                "{key}"
            );
        }
    }
}

/// A follower that restarts dials its peers at once, but hears its leader
/// only on the leader's own connection, which the leader redialed at the
/// end of its wait, up to a second by then: the follower's election timeout
/// ran out first, so it campaigned (pre-vote), and its clients waited for a
/// leader, at each restart of a rolling restart. The leader now dials back
/// as soon as the restarted node dials it. Three restarts, each of which
/// the old behaviour got wrong about two times in three.
///
/// A restart counts only if the leadership held through it (same leader,
/// same term; the follower's pre-vote changes neither): on a loaded
/// machine the leader lost its quorum once in 70 runs (check-quorum, the
/// other follower going pre-candidate too), the restarted follower then
/// campaigned rightly, and another node led. Up to 8 restarts for 3 that
/// count.
#[test]
fn a_restarted_follower_hears_its_leader_before_it_campaigns() {
    let mut cluster = Cluster::start(3);
    let mut counted = 0;
    let (mut leader, mut follower) = (0, 1);
    for round in 0..8 {
        leader = cluster.wait_for_leader(Duration::from_secs(15));
        let leader_id = cluster.nodes[leader].id.to_string();
        let term = cluster.info(leader)["term"].clone();
        follower = (leader + 1) % 3;
        assert_eq!(cluster.terminate(follower), Some(0));
        // The leader's redial wait doubles from 20 ms to its second.
        thread::sleep(Duration::from_millis(1500));
        let logged = cluster.log_text(follower).len();
        cluster.spawn(follower);
        let led_by = wait_for(
            Duration::from_secs(10),
            "the follower to know a leader",
            || {
                let info =
                    Client::try_connect(&cluster.nodes[follower].client_addr())?.try_info()?;
                let id = info.get("leader_id")?.clone();
                (id != "0").then_some(id)
            },
        );
        let term_after = cluster.info(leader)["term"].clone();
        if led_by != leader_id || term_after != term {
            eprintln!(
                "round {round}: node {led_by} leads in term {term_after} (was node {leader_id} in term {term}); not counted"
            );
            continue;
        }
        let log = cluster.log_text(follower);
        assert!(
            !log[logged..].contains("candidate in term"),
            "round {round}: the restarted follower campaigned:\n{}",
            &log[logged..]
        );
        counted += 1;
        if counted == 3 {
            break;
        }
    }
    assert_eq!(counted, 3, "restarts under a steady leader");
    // Its connections are logged with the address dialed.
    let leader_id = cluster.nodes[leader].id;
    let (leader_addr, follower_id) = (
        cluster.nodes[leader].raft_addr(),
        cluster.nodes[follower].id,
    );
    let log = cluster.log_text(leader);
    for line in [
        format!("connected to peer {follower_id} at "),
        format!("disconnected from peer {follower_id} at "),
    ] {
        assert!(log.contains(&line), "no {line:?} in the leader's log");
    }
    assert!(cluster
        .log_text(follower)
        .contains(&format!("connected to peer {leader_id} at {leader_addr}")));
}
