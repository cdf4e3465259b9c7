//! Memory: a client that reads no replies cannot make the node hold copies
//! of a value or its writes past the output limit (measured by INFO's
//! `used_memory`), and MEMORY USAGE answered as `redis-cli --memkeys` asks.

use super::common::{Client, Cluster};
use super::{err, status};
use raftkv::kv::Reply;
use std::io::Write;
use std::time::Duration;

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
