//! A nemesis against three real processes: for about 35 s it alternately
//! SIGSTOPs the leader (longer than the election timeout, then SIGCONTs it)
//! and `kill -9`s a node (the leader or a follower) and restarts it on the
//! same data dir, while client threads on every node check, without a full
//! linearizability checker:
//!
//! - SET: each writer owns its keys and writes strictly increasing integers.
//!   A read sent after `v` was acknowledged returns at least `v` (or a value
//!   whose write had an unknown outcome, which may be applied late); it never
//!   returns more than the highest value sent before its reply arrived, a
//!   value answered `-TRYAGAIN` (a promise that it was not applied), or
//!   anything that was never written.
//! - INCR on shared counters: each reply is unique, above every reply
//!   acknowledged before it was sent, and not above the INCRs attempted; the
//!   final value lies between the acknowledged and the attempted count.
//! - Reads go to every node: SPEC promises linearizable GET/MGET on any node
//!   (followers forward to the leader), so followers get the same checks.
//! - While the old leader is stopped and the new one has acknowledged a
//!   marker write, a fresh connection queues reads and a write on the stopped
//!   node; once resumed it must not answer them from its stale state (half
//!   the stops end right then, before a check-quorum period has passed), and
//!   a read pipelined after an acknowledged SET on that connection sees it.
//! - A client sets, moves and removes timeouts on keys of its own (replies
//!   unchecked), so that the leaders' stamps and purges go through the kills,
//!   restarts and snapshots too.
//! - At the end every node has converged (same applied index and digest,
//!   which covers the timeouts) and every acknowledged write is readable
//!   through every node.
//!
//! `NEMESIS_SEED=n` replays a run's choices (timing still varies); a failure
//! prints the seed, the nemesis timeline (wall-clock times match the node
//! logs) and the violations, and keeps the node logs under the target dir.

mod clients;
#[path = "../common/mod.rs"]
mod common;
mod history;
mod toolkit;

use clients::{Role, Workload};
use toolkit::{connect, fail_with_report, Rng, StopOnDrop, Stopped};

use history::History;

use common::{Client, Cluster};
use raftkv::kv::Reply;
use raftkv::wire::resp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READERS: usize = 2;
const WORKLOAD: Workload = Workload {
    prefix: "nem",
    probe_key: "nem:probe",
    writers: 4,
    keys_per_writer: 4,
    counters: 2,
    max_ops_per_connection: 350,
    leave_node_on_failure: false,
    op_timeout: Duration::from_secs(2),
    hard_limit: Duration::from_secs(90),
};
const PROBE_KEY: &str = WORKLOAD.probe_key;
/// How long the nemesis disturbs the cluster.
const NEMESIS_TIME: Duration = Duration::from_secs(35);

/// The leader all of `among` agree on (and which is one of them), if they do.
fn leader_among(cluster: &Cluster, among: &[usize]) -> Option<usize> {
    let mut leader = None;
    for &i in among {
        let mut client = connect(&cluster.nodes[i].client_addr(), Duration::from_secs(1))?;
        let id: u64 = client.try_info()?.get("leader_id")?.parse().ok()?;
        if id == 0 || leader.is_some_and(|l| l != id) {
            return None;
        }
        leader = Some(id);
    }
    let index = cluster.nodes.iter().position(|n| Some(n.id) == leader)?;
    among.contains(&index).then_some(index)
}

/// The nemesis side of one run: the shared history and the seed to report.
struct Run<'a> {
    hist: &'a History,
    seed: u64,
}

impl Run<'_> {
    fn fail(&self, cluster: &Cluster, why: &str) -> ! {
        fail_with_report(cluster, self.hist, "nemesis", self.seed, &self.stats(), why)
    }

    fn stats(&self) -> String {
        let h = self.hist;
        let incrs: i64 = h.counters.values().map(|c| c.lock().unwrap().acked).sum();
        format!(
            "acknowledged SETs {}, acknowledged INCRs {}, reads checked {} ({} by stale-leader probes), errors {:?}",
            h.acked_sets.load(Ordering::Relaxed),
            incrs,
            h.checked_reads.load(Ordering::Relaxed),
            h.probe_reads.load(Ordering::Relaxed),
            h.errors.lock().unwrap()
        )
    }

    fn wait_leader(
        &self,
        cluster: &Cluster,
        among: &[usize],
        limit: Duration,
        what: &str,
    ) -> usize {
        let start = Instant::now();
        loop {
            if let Some(leader) = leader_among(cluster, among) {
                return leader;
            }
            if start.elapsed() > limit {
                self.fail(
                    cluster,
                    &format!(
                        "no leader agreed on by nodes {:?} within {:?} ({})",
                        among.iter().map(|i| i + 1).collect::<Vec<_>>(),
                        limit,
                        what
                    ),
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SETs the probe key through `node` (retrying `-TRYAGAIN` for up to
    /// 3 s); whether it was acknowledged.
    fn write_marker(&self, cluster: &Cluster, node: usize) -> bool {
        let via = format!("marker write through node {}", node + 1);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            let Some(mut client) = connect(&cluster.nodes[node].client_addr(), WORKLOAD.op_timeout)
            else {
                return false;
            };
            let value = self.hist.begin_set(PROBE_KEY);
            let v = value.to_string();
            let reply = client
                .try_send(&[b"SET", PROBE_KEY.as_bytes(), v.as_bytes()])
                .then(|| client.try_read())
                .flatten();
            let acked = reply == Some(Reply::Ok);
            let refused = matches!(&reply, Some(Reply::Error(e)) if e.starts_with("TRYAGAIN"));
            self.hist.end_set(PROBE_KEY, value, reply, &via);
            if acked || !refused {
                return acked;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops the leader past the election timeout; once the other two have
    /// elected a leader and acknowledged newer writes, sends the stopped node
    /// reads and a write on a fresh connection, resumes it and checks them.
    fn pause_leader(&self, cluster: &Cluster, stopped: &mut Stopped, rng: &mut Rng) {
        let old = self.wait_leader(
            cluster,
            &[0, 1, 2],
            Duration::from_secs(10),
            "before a stop",
        );
        let pid = cluster.pid(old).expect("the leader runs");
        let keys = WORKLOAD.all_keys();
        let started = Instant::now();
        stopped.stop(pid);
        self.hist.event(format!(
            "SIGSTOP node {} (the leader, pid {})",
            old + 1,
            pid
        ));
        let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        let new = self.wait_leader(
            cluster,
            &others,
            Duration::from_secs(10),
            "while the old leader is stopped",
        );
        self.hist.event(format!(
            "node {} leads after {} ms",
            new + 1,
            started.elapsed().as_millis()
        ));
        // A write the new leader acknowledges while the old one is stopped,
        // so the stopped node's own copy of the data is certainly stale.
        let marked = self.write_marker(cluster, new);

        // The probe: pipelined GETs, an MGET, a SET and a GET of what it set,
        // queued in the stopped node's socket after the new leader acknowledged
        // the marker (and the writers whatever they could).
        let mut probe = connect(&cluster.nodes[old].client_addr(), Duration::from_secs(6));
        let floors = self.hist.all_floors(&keys);
        let probe_floor = self.hist.floor(PROBE_KEY);
        let probe_value = self.hist.begin_set(PROBE_KEY);
        if let Some(client) = &mut probe {
            let mut batch = Vec::new();
            for key in &keys {
                resp::encode_request(&[b"GET", key.as_bytes()], &mut batch);
            }
            let mut mget: Vec<&[u8]> = vec![b"MGET"];
            mget.extend(keys.iter().map(|k| k.as_bytes()));
            resp::encode_request(&mget, &mut batch);
            let v = probe_value.to_string();
            resp::encode_request(&[b"SET", PROBE_KEY.as_bytes(), v.as_bytes()], &mut batch);
            resp::encode_request(&[b"GET", PROBE_KEY.as_bytes()], &mut batch);
            if client.send_raw(&batch).is_err() {
                probe = None;
            }
        }
        // Half the stops end as soon as the probe is queued: the stopped node
        // then missed less than a check-quorum period or two, so on resuming it
        // still believes it leads until a message of the new term reaches it
        // (after a long stop, its catch-up ticks step it down at once).
        let hold = match rng.below(2) {
            0 => Duration::ZERO,
            _ => rng.millis(700, 1600),
        };
        thread::sleep(hold.saturating_sub(started.elapsed()));
        stopped.resume();
        self.hist.event(format!(
            "SIGCONT node {} after {} ms stopped (marker write {}, probe {})",
            old + 1,
            started.elapsed().as_millis(),
            if marked {
                "acknowledged"
            } else {
                "not acknowledged"
            },
            if probe.is_some() {
                "queued"
            } else {
                "not sent"
            }
        ));
        let via = format!("probe of resumed old leader node {}", old + 1);
        match &mut probe {
            Some(client) => self.read_probe(client, &keys, &floors, probe_value, probe_floor, &via),
            None => {
                self.hist.end_set(PROBE_KEY, probe_value, None, &via);
            }
        }
        let leader = self.wait_leader(
            cluster,
            &[0, 1, 2],
            Duration::from_secs(10),
            "after SIGCONT",
        );
        self.hist
            .event(format!("all three agree node {} leads", leader + 1));
    }

    fn read_probe(
        &self,
        client: &mut Client,
        keys: &[String],
        floors: &[i64],
        probe_value: u64,
        probe_floor: i64,
        via: &str,
    ) {
        let hist = self.hist;
        let check = |key: &str, floor: i64, reply: &Reply, via: &str| {
            hist.probe_reads.fetch_add(1, Ordering::Relaxed);
            hist.check_read(key, floor, reply, via);
        };
        // No reply (a timeout): the pipelined SET's outcome stays unknown.
        let gave_up = |what: &str| {
            hist.read_failed(&None, what, via);
            hist.end_set(PROBE_KEY, probe_value, None, via);
        };
        for (key, &floor) in keys.iter().zip(floors) {
            match client.try_read() {
                Some(Reply::Error(e)) => {
                    hist.read_failed(&Some(Reply::Error(e)), "GET", via);
                }
                None => return gave_up("GET"),
                Some(reply) => check(key, floor, &reply, via),
            }
        }
        match client.try_read() {
            Some(Reply::Array(items)) if items.len() == keys.len() => {
                for ((key, &floor), item) in keys.iter().zip(floors).zip(&items) {
                    check(key, floor, item, &format!("{} (MGET)", via));
                }
            }
            Some(Reply::Error(e)) => {
                hist.read_failed(&Some(Reply::Error(e)), "MGET", via);
            }
            None => return gave_up("MGET"),
            Some(other) => hist.violation(format!("{}: MGET answered {:?}", via, other)),
        }
        let set = client.try_read();
        let acked = set == Some(Reply::Ok);
        if !hist.end_set(PROBE_KEY, probe_value, set, via) {
            return;
        }
        // A read pipelined after an acknowledged write on its connection sees it.
        let floor = if acked {
            probe_value as i64
        } else {
            probe_floor
        };
        match client.try_read() {
            Some(Reply::Error(e)) => {
                hist.read_failed(&Some(Reply::Error(e)), "GET", via);
            }
            None => {
                hist.read_failed(&None, "GET", via);
            }
            Some(reply) => check(PROBE_KEY, floor, &reply, via),
        }
    }

    /// `kill -9` the leader or a follower, wait, restart it on its data dir.
    fn kill_and_restart(&self, cluster: &mut Cluster, rng: &mut Rng) {
        let leader = self.wait_leader(
            cluster,
            &[0, 1, 2],
            Duration::from_secs(10),
            "before a kill",
        );
        let target = if rng.below(2) == 0 {
            leader
        } else {
            (leader + 1 + rng.below(2) as usize) % 3
        };
        cluster.kill(target);
        self.hist.event(format!(
            "kill -9 node {} ({})",
            target + 1,
            if target == leader {
                "the leader"
            } else {
                "a follower"
            }
        ));
        let others: Vec<usize> = (0..3).filter(|&i| i != target).collect();
        let down = rng.millis(200, 1500);
        let started = Instant::now();
        let leader = self.wait_leader(
            cluster,
            &others,
            Duration::from_secs(10),
            "with a node killed",
        );
        thread::sleep(down.saturating_sub(started.elapsed()));
        cluster.spawn(target);
        self.hist.event(format!(
            "restarted node {} after {} ms down (node {} led meanwhile)",
            target + 1,
            started.elapsed().as_millis(),
            leader + 1
        ));
        let leader = self.wait_leader(
            cluster,
            &[0, 1, 2],
            Duration::from_secs(15),
            "after a restart",
        );
        self.hist
            .event(format!("all three agree node {} leads", leader + 1));
    }

    /// The applied index every node reached, if all applied the same index,
    /// at least their commit index, with the same data digest.
    fn converged(&self, cluster: &Cluster) -> Option<u64> {
        let mut states = Vec::new();
        for node in &cluster.nodes {
            let mut client = connect(&node.client_addr(), Duration::from_secs(1))?;
            let info = client.try_info()?;
            let applied: u64 = info.get("applied_index")?.parse().ok()?;
            let commit: u64 = info.get("commit_index")?.parse().ok()?;
            client.send(&[b"DEBUG", b"DIGEST"]);
            let digest = client.try_read()?;
            states.push((applied, commit, digest));
        }
        let (applied, _, digest) = &states[0];
        states
            .iter()
            .all(|(a, c, d)| a == applied && d == digest && a >= c)
            .then_some(*applied)
    }

    /// After the nemesis: the nodes converge, every acknowledged write is
    /// readable through every node, counters are within bounds, no node panicked.
    fn final_checks(&self, cluster: &Cluster) {
        let hist = self.hist;
        let start = Instant::now();
        let applied = loop {
            if let Some(applied) = self.converged(cluster) {
                break applied;
            }
            if start.elapsed() > Duration::from_secs(20) {
                self.fail(
                    cluster,
                    "the three nodes did not converge (applied index and digest) within 20 s",
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        hist.event(format!(
            "converged at applied index {} after {} ms",
            applied,
            start.elapsed().as_millis()
        ));
        for (i, node) in cluster.nodes.iter().enumerate() {
            let via = format!("final read through node {}", i + 1);
            let Some(mut client) = connect(&node.client_addr(), Duration::from_secs(5)) else {
                self.fail(cluster, &format!("{}: cannot connect", via));
            };
            for key in WORKLOAD.all_keys() {
                let reply = client.cmd_retry(&["GET", &key]);
                hist.check_final_read(&via, &key, &reply);
            }
        }
        hist.check_no_refused_value_was_read();
        for i in 0..3 {
            if let Some(line) = cluster.log_text(i).lines().find(|l| l.contains("panicked")) {
                hist.violation(format!("node {} panicked: {}", i + 1, line));
            }
            let refused = "refused a message no honest peer sends";
            if let Some(line) = cluster.log_text(i).lines().find(|l| l.contains(refused)) {
                hist.violation(format!("node {} {}", i + 1, line));
            }
        }
    }
}

#[test]
fn reads_and_writes_stay_linearizable_under_stops_and_kills() {
    let seed: u64 = match std::env::var("NEMESIS_SEED") {
        Ok(s) => s.parse().expect("NEMESIS_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
    };
    eprintln!("nemesis seed {} (replay with NEMESIS_SEED={})", seed, seed);
    let test_start = Instant::now();
    let mut rng = Rng(seed);
    let mut cluster = Cluster::start(3);
    // Declared after the cluster, so dropped before it (also when the test
    // fails): the clients stop and a stopped node is resumed before the
    // cluster kills every node.
    let mut stopped = Stopped(None);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let hist = Arc::new(History::new(&WORKLOAD));
    let run = Run { hist: &hist, seed };
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let clients: Vec<_> = (0..WORKLOAD.writers)
        .map(Role::Writer)
        .chain((0..READERS).map(|_| Role::Reader))
        .map(|role| {
            let (addrs, hist, stop) = (addrs.clone(), Arc::clone(&hist), Arc::clone(&stop));
            let client_seed = rng.next();
            thread::spawn(move || WORKLOAD.run_client(role, client_seed, addrs, hist, stop))
        })
        .collect();
    let timed_writes = Arc::new(AtomicU64::new(0));
    let timed = {
        let (addrs, stop, count) = (addrs.clone(), Arc::clone(&stop), Arc::clone(&timed_writes));
        let seed = rng.next();
        thread::spawn(move || run_timed_writes(seed, &addrs, &stop, &count))
    };

    thread::sleep(Duration::from_millis(500));
    let nemesis_start = Instant::now();
    let (mut stops, mut kills) = (0, 0);
    while nemesis_start.elapsed() < NEMESIS_TIME && !hist.has_violations() {
        // Alternate, so that every run has both kinds; targets and times are random.
        if (stops + kills) % 2 == 0 {
            run.pause_leader(&cluster, &mut stopped, &mut rng);
            stops += 1;
        } else {
            run.kill_and_restart(&mut cluster, &mut rng);
            kills += 1;
        }
        thread::sleep(rng.millis(300, 900));
    }
    hist.event(format!(
        "nemesis done: {} leader stops, {} kills; clients go on for a second",
        stops, kills
    ));
    if !hist.has_violations() {
        thread::sleep(Duration::from_secs(1));
    }
    drop(stop_on_drop);
    for client in clients {
        if client.join().is_err() {
            hist.violation("a client thread panicked".to_string());
        }
    }
    if timed.join().is_err() {
        hist.violation("the timed-writes thread panicked".to_string());
    }
    // Requests still queued in a node expire after election_timeout_ms * 4.
    thread::sleep(Duration::from_millis(1000));
    run.wait_leader(
        &cluster,
        &[0, 1, 2],
        Duration::from_secs(15),
        "after the nemesis",
    );
    run.final_checks(&cluster);
    let elapsed = test_start.elapsed();
    eprintln!(
        "nemesis: {}, {} timed writes succeeded, in {:.1} s",
        run.stats(),
        timed_writes.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    if hist.has_violations() {
        run.fail(&cluster, "invariants violated");
    }
    // The run must have exercised what it claims to.
    let sets = hist.acked_sets.load(Ordering::Relaxed);
    let reads = hist.checked_reads.load(Ordering::Relaxed);
    let probes = hist.probe_reads.load(Ordering::Relaxed);
    let incrs: i64 = hist
        .counters
        .values()
        .map(|c| c.lock().unwrap().acked)
        .sum();
    let timed = timed_writes.load(Ordering::Relaxed);
    if stops < 3
        || kills < 3
        || sets < 500
        || reads < 500
        || probes == 0
        || incrs < 100
        || timed < 100
    {
        run.fail(
            &cluster,
            &format!(
                "the run did too little to be meaningful: {} stops, {} kills, {} SETs, {} reads, {} probe reads, {} INCRs",
                stops, kills, sets, reads, probes, incrs
            ),
        );
    }
}

/// Writes that set, keep, move or remove timeouts of a few hundred
/// milliseconds on keys of their own, through random nodes until `stop`;
/// counts those that succeeded. Their replies are not checked: what they test is
/// that every node ends with the same keys and timeouts (the final digests).
fn run_timed_writes(seed: u64, addrs: &[String], stop: &AtomicBool, answered: &AtomicU64) {
    let mut rng = Rng(seed);
    let mut conn: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(client) = conn.as_mut() else {
            let node = rng.below(addrs.len() as u64) as usize;
            conn = connect(&addrs[node], Duration::from_secs(2));
            if conn.is_none() {
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let key = format!("nem:t{}", rng.below(8));
        let other = format!("nem:t{}", rng.below(8));
        let ms = (1 + rng.below(400)).to_string();
        let argv: Vec<&str> = match rng.below(7) {
            0 => vec!["SET", &key, "v", "PX", &ms],
            1 => vec!["PEXPIRE", &key, &ms],
            2 => vec!["INCR", &key],
            3 => vec!["PERSIST", &key],
            4 => vec!["GETEX", &key, "PX", &ms],
            5 => vec!["RENAME", &key, &other],
            _ => vec!["SET", &key, "w", "KEEPTTL"],
        };
        let argv: Vec<&[u8]> = argv.iter().map(|w| w.as_bytes()).collect();
        let reply = client.try_send(&argv).then(|| client.try_read()).flatten();
        match reply {
            // An error (INCR on "v", RENAME of no key) wrote nothing.
            Some(Reply::Error(_)) => {}
            Some(_) => {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            None => conn = None,
        }
        thread::sleep(Duration::from_millis(5));
    }
}
