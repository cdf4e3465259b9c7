//! Pipelines: replies in order on every node, and each pipelined read (GET,
//! DBSIZE, INFO) seeing exactly the writes sent before it on its connection,
//! also when the client shuts its side right after the pipeline.

use super::common;
use super::common::{bulk, wait_for, Cluster};
use super::{cluster_that_committed_a_write, info_u64, int};
use raftkv::kv::Reply;
use std::time::Duration;

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
