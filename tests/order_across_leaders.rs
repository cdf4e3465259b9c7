//! A connection's pipelined requests take effect in the order it sent them,
//! also while the leader changes under them: a client of a follower
//! pipelines `SET`/`GET` pairs on one key per batch while the leadership
//! moves back and forth between the two other nodes.

mod common;

use common::{bulk, wait_for, Cluster, Resume};
use raftkv::kv::Reply;
use raftkv::wire::resp;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// `SET`/`GET` pairs per chunk of the pipeline.
const PAIRS: usize = 16;
const KEY: &str = "order";

/// The values the key may hold after each reply, given the replies so far: `+OK` fixes it, `-TRYAGAIN` changes nothing, `-TIMEOUT` may or
/// may not have. Panics on a reply that breaks the connection's order.
struct Order {
    possible: Vec<Option<String>>,
}

impl Order {
    fn check(&mut self, replies: &[Reply]) {
        for (pair, replies) in replies.chunks(2).enumerate() {
            let value = pair.to_string();
            match &replies[0] {
                Reply::Ok => self.possible = vec![Some(value)],
                Reply::Error(text) if text.starts_with("TRYAGAIN") => {}
                Reply::Error(text) if text.starts_with("TIMEOUT") => {
                    self.possible.push(Some(value))
                }
                other => panic!("SET {} answered {:?}", pair, other),
            }
            let seen = match &replies[1] {
                Reply::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
                Reply::Nil => None,
                Reply::Error(text) if text.starts_with("TRYAGAIN") => continue,
                other => panic!("GET after SET {} answered {:?}", pair, other),
            };
            assert!(
                self.possible.contains(&seen),
                "GET after SET {} saw {:?}, the connection's order allows {:?}",
                pair,
                seen,
                self.possible,
            );
        }
    }
}

fn transfer(cluster: &Cluster, from: usize, to: usize) {
    let id = cluster.nodes[to].id.to_string();
    let reply = cluster.client(from).cmd(&["CLUSTER", "TRANSFER", &id]);
    assert_eq!(reply, Reply::Ok, "transfer from {} to {}", from, to);
}

fn value_of(reply: Reply) -> Option<String> {
    match reply {
        Reply::Bulk(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Reply::Nil => None,
        other => panic!("GET {} answered {:?}", KEY, other),
    }
}

/// The leadership moves by transfers, then by a frozen leader's followers
/// electing another, while the follower's client sends without waiting for
/// replies: requests the old leader refuses or drops come back to the
/// follower after it has sent later ones to the new leader.
#[test]
fn a_followers_pipeline_keeps_its_order_while_the_leadership_moves() {
    let mut cluster = Cluster::new(3);
    cluster.set_election_timeout_ms(1000);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let first = cluster.wait_for_leader(Duration::from_secs(20));
    let others: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let (follower, second) = (others[0], others[1]);
    assert_eq!(
        cluster.client(follower).cmd_retry(&["SET", "warm", "1"]),
        Reply::Ok
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent_all = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut client = cluster.client(follower);
    let mut sending = client.stream.try_clone().expect("clone the stream");
    let writer = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let mut pairs = 0;
            while !stop.load(Ordering::Acquire) {
                let mut pipeline = Vec::new();
                for _ in 0..PAIRS {
                    let value = pairs.to_string();
                    resp::encode_request(
                        &[b"SET", KEY.as_bytes(), value.as_bytes()],
                        &mut pipeline,
                    );
                    resp::encode_request(&[b"GET", KEY.as_bytes()], &mut pipeline);
                    pairs += 1;
                }
                sending.write_all(&pipeline).expect("send a chunk");
                sent.store(pairs * 2, Ordering::Release);
                thread::sleep(Duration::from_millis(1));
            }
            pairs
        })
    };
    let reader = {
        let (sent_all, sent) = (Arc::clone(&sent_all), Arc::clone(&sent));
        thread::spawn(move || {
            let mut replies = Vec::new();
            loop {
                let done = sent_all.load(Ordering::Acquire);
                if replies.len() < sent.load(Ordering::Acquire) {
                    replies.push(client.read());
                } else if done {
                    return replies;
                } else {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };

    let (mut leader, mut target) = (first, second);
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(200));
        transfer(&cluster, leader, target);
        std::mem::swap(&mut leader, &mut target);
    }
    thread::sleep(Duration::from_millis(200));
    {
        let _frozen = Resume::stop(cluster.pid(leader).expect("the leader's pid"));
        let frozen_id = cluster.nodes[leader].id.to_string();
        wait_for(Duration::from_secs(10), "a new leader", || {
            let led_by = cluster.info(follower).get("leader_id").cloned()?;
            (led_by != frozen_id && led_by != "0").then_some(())
        });
        thread::sleep(Duration::from_millis(300));
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    let pairs = writer.join().expect("the writer");
    sent_all.store(true, Ordering::Release);
    let replies = reader.join().expect("the reader");
    assert_eq!(replies.len(), pairs * 2, "a reply for every request");

    let mut order = Order {
        possible: vec![None],
    };
    order.check(&replies);
    let last = value_of(cluster.client(follower).cmd_retry(&["GET", KEY]));
    assert!(
        order.possible.contains(&last),
        "the key ended as {:?}, the connection's order allows {:?}",
        last,
        order.possible,
    );
    assert_eq!(
        cluster.client(second).cmd_retry(&["GET", "warm"]),
        bulk("1")
    );
}
