//! The client threads both nemesis tests run: writers SET increasing values
//! on keys of their own and INCR shared counters, readers GET and MGET any
//! key; every reply is recorded in, and checked against, the [`History`].

use super::common::Client;
use super::history::History;
use super::toolkit::{connect, Rng};
use raftkv::kv::Reply;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The keys of a run, and how its clients treat a failed request.
#[derive(Clone, Copy)]
pub struct Workload {
    /// Of every key: `{prefix}:w{writer}:k{n}`, `{prefix}:ctr{n}`.
    pub prefix: &'static str,
    /// A key written outside the writers' loops (by the nemesis itself).
    pub probe_key: &'static str,
    pub writers: usize,
    pub keys_per_writer: usize,
    pub counters: usize,
    /// Requests on one connection before moving to another node, at most.
    pub max_ops_per_connection: u64,
    /// Move to another node after any failed request, not only after one
    /// that leaves the connection unusable: a joiner or a removed node
    /// refuses every request at once.
    pub leave_node_on_failure: bool,
    /// A client gives up on a reply after this long (outcome unknown).
    pub op_timeout: Duration,
    /// No client thread runs longer than this, whatever happens.
    pub hard_limit: Duration,
}

#[derive(Clone, Copy)]
pub enum Role {
    Writer(usize),
    Reader,
}

impl Workload {
    pub fn writer_key(&self, w: usize, j: usize) -> String {
        format!("{}:w{}:k{}", self.prefix, w, j)
    }

    pub fn counter_key(&self, c: usize) -> String {
        format!("{}:ctr{}", self.prefix, c)
    }

    pub fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = (0..self.writers)
            .flat_map(|w| (0..self.keys_per_writer).map(move |j| self.writer_key(w, j)))
            .collect();
        keys.extend((0..self.counters).map(|c| self.counter_key(c)));
        keys.push(self.probe_key.to_string());
        keys
    }

    /// One client thread: connects to a random node of `addrs`, works until
    /// `stop`, and moves to another node after a failure (see
    /// `leave_node_on_failure`) or a few hundred requests.
    pub fn run_client(
        self,
        role: Role,
        seed: u64,
        addrs: Vec<String>,
        hist: Arc<History>,
        stop: Arc<AtomicBool>,
    ) {
        let mut rng = Rng(seed);
        let keys = self.all_keys();
        let mut conn: Option<(usize, Client)> = None;
        let mut ops_left = 0;
        let mut next_key = 0;
        while !stop.load(Ordering::Relaxed) && hist.start.elapsed() < self.hard_limit {
            let Some((node, client)) = conn.as_mut() else {
                let node = rng.below(addrs.len() as u64) as usize;
                match connect(&addrs[node], self.op_timeout) {
                    Some(client) => {
                        ops_left = 50 + rng.below(self.max_ops_per_connection - 50);
                        conn = Some((node, client));
                    }
                    None => thread::sleep(Duration::from_millis(20)),
                }
                continue;
            };
            let via = format!("node {}", *node + 1);
            // (the connection is still usable, the request succeeded)
            let (keep, success) = match role {
                Role::Writer(w) if rng.below(4) == 0 => {
                    let key = self.counter_key(w % self.counters);
                    let floor = hist.begin_incr(&key);
                    let reply = client
                        .try_send(&[b"INCR", key.as_bytes()])
                        .then(|| client.try_read())
                        .flatten();
                    let success = matches!(reply, Some(Reply::Integer(_)));
                    (hist.end_incr(&key, floor, reply, &via), success)
                }
                Role::Writer(w) => {
                    let key = self.writer_key(w, next_key % self.keys_per_writer);
                    next_key += 1;
                    let value = hist.begin_set(&key);
                    let v = value.to_string();
                    let reply = client
                        .try_send(&[b"SET", key.as_bytes(), v.as_bytes()])
                        .then(|| client.try_read())
                        .flatten();
                    let success = reply == Some(Reply::Ok);
                    (hist.end_set(&key, value, reply, &via), success)
                }
                Role::Reader if rng.below(3) == 0 => {
                    let picked: Vec<String> = (0..3)
                        .map(|_| keys[rng.below(keys.len() as u64) as usize].clone())
                        .collect();
                    let floors = hist.all_floors(&picked);
                    let mut argv: Vec<&[u8]> = vec![b"MGET"];
                    argv.extend(picked.iter().map(|k| k.as_bytes()));
                    let reply = client.try_send(&argv).then(|| client.try_read()).flatten();
                    match reply {
                        Some(Reply::Array(items)) if items.len() == picked.len() => {
                            for ((key, floor), item) in picked.iter().zip(floors).zip(&items) {
                                hist.check_read(key, floor, item, &format!("{} (MGET)", via));
                            }
                            (true, true)
                        }
                        Some(Reply::Error(_)) | None => {
                            (hist.read_failed(&reply, "MGET", &via), false)
                        }
                        Some(other) => {
                            hist.violation(format!(
                                "{}: MGET {:?} answered {:?}",
                                via, picked, other
                            ));
                            (false, false)
                        }
                    }
                }
                Role::Reader => {
                    let key = &keys[rng.below(keys.len() as u64) as usize];
                    let floor = hist.floor(key);
                    let reply = client
                        .try_send(&[b"GET", key.as_bytes()])
                        .then(|| client.try_read())
                        .flatten();
                    match reply {
                        Some(Reply::Error(_)) | None => {
                            (hist.read_failed(&reply, "GET", &via), false)
                        }
                        Some(reply) => {
                            hist.check_read(key, floor, &reply, &via);
                            (true, true)
                        }
                    }
                }
            };
            ops_left = ops_left.saturating_sub(1);
            let leave = !keep || (self.leave_node_on_failure && !success);
            if leave || ops_left == 0 {
                conn = None;
                if leave && self.leave_node_on_failure {
                    // Do not spin on a node that refuses at once.
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
