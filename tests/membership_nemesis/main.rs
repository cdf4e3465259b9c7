//! Membership changes under failures, with real processes: 3 founders and 2
//! joiners (started with `--join`). For about 40 s a nemesis picks, at
//! random, one of:
//!
//! - `CLUSTER ADD` of a node that is not a member (a joiner, or a removed
//!   node still running on its data dir);
//! - `CLUSTER REMOVE` of a learner or a voter (a founder or the leader too),
//!   keeping at least 3 voters;
//! - `CLUSTER TRANSFER` to a random voter;
//! - `kill -9` of a random node (half the time the leader), restarted on its
//!   data dir after 0.2–1.5 s; half the time a change is made while it is
//!   down (its own removal when allowed: it must learn of it on return);
//! - a change (ADD/REMOVE) sent through one node and, 0–80 ms later,
//!   `kill -9` of the leader or of the node the change is about;
//! - SIGSTOP of the leader for 0.3–1.5 s, sometimes with a change or a
//!   transfer sent through another node meanwhile.
//!
//! Meanwhile writers SET increasing values and INCR counters, and readers
//! GET/MGET, through random nodes (members or not); the replies are checked
//! as in tests/nemesis (its history checker is reused): acknowledged values
//! never go back or get lost, refused writes never appear, INCR replies are
//! unique and within bounds.
//!
//! Every CLUSTER reply must be one SPEC allows, and must come within 5 s from
//! a node that is neither stopped nor killed. A model of the membership
//! (member / not / unknown after `-TIMEOUT`) follows the definite replies:
//! `+OK` of ADD and REMOVE must show in CLUSTER MEMBERS at once, and the
//! final configuration must agree with it.
//!
//! At the end, with the writers still running, one more member is removed:
//! half the time while it is down, restarted only after the leader has
//! snapshotted and compacted past the removal. Then everything is healed
//! (resumed, restarted) and, within bounded time: all members agree on the
//! configuration (no learner left: every added node caught up and was
//! promoted), on the applied index and DEBUG DIGEST; every acknowledged
//! write is readable through every member; every node outside the
//! configuration (all still running) answers `-TRYAGAIN not a member` (or
//! `not a member yet` if it never was one, as far as it knows); no term
//! grows for 3 s (a removed node does not disrupt); no node log says
//! "panicked" or "refused a message no honest peer sends".
//!
//! `MEMBERSHIP_NEMESIS_SEED=n` replays the nemesis choices (timing varies). A
//! failure prints the seed, the timeline and the violations, and keeps the
//! node logs and the report under the target dir.

#[path = "../nemesis/clients.rs"]
mod clients;
mod cluster_command;
#[path = "../common/mod.rs"]
mod common;
mod final_checks;
#[allow(dead_code)]
#[path = "../nemesis/history.rs"]
mod history;
mod nemesis;
mod steps;
#[path = "../nemesis/toolkit.rs"]
mod toolkit;

use clients::{Role, Workload};
use toolkit::{Rng, StopOnDrop, Stopped};

use cluster_command::{cluster_request, Change};
use common::Cluster;
use history::History;
use nemesis::{Known, Nemesis, Stats, Step};
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const READERS: usize = 2;
const WORKLOAD: Workload = Workload {
    prefix: "mn",
    probe_key: "mn:probe",
    writers: 3,
    keys_per_writer: 4,
    counters: 2,
    max_ops_per_connection: 250,
    leave_node_on_failure: true,
    op_timeout: Duration::from_secs(2),
    hard_limit: Duration::from_secs(100),
};
const PROBE_KEY: &str = WORKLOAD.probe_key;

const FOUNDERS: usize = 3;
const JOINERS: usize = 2;
const NODES: usize = FOUNDERS + JOINERS;
/// Fewer voters than this are never asked for.
const MIN_VOTERS: usize = 3;
/// How long the nemesis disturbs the cluster.
const NEMESIS_TIME: Duration = Duration::from_secs(40);
/// How long it may go on doing what a run still lacks to be meaningful
/// (random steps can leave one kind out, more so on a loaded machine).
const NEMESIS_TIME_LIMIT: Duration = Duration::from_secs(60);
/// A node that is neither stopped nor killed answers a CLUSTER command within
/// its request deadline (election_timeout_ms * 4 = 800 ms here); this is
/// generous for a loaded 2-core machine.
const CLUSTER_REPLY_LIMIT: Duration = Duration::from_secs(5);
/// After healing, no node's term may grow during this window.
const QUIET_WINDOW: Duration = Duration::from_secs(3);

#[test]
fn membership_changes_stay_safe_under_kills_and_stops() {
    let seed: u64 = match std::env::var("MEMBERSHIP_NEMESIS_SEED") {
        Ok(s) => s.parse().expect("MEMBERSHIP_NEMESIS_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
    };
    eprintln!(
        "membership nemesis seed {} (replay with MEMBERSHIP_NEMESIS_SEED={})",
        seed, seed
    );
    let test_start = Instant::now();
    let mut rng = Rng(seed);
    let mut cluster = Cluster::with_joiners(FOUNDERS, JOINERS);
    for node in cluster.nodes.iter_mut() {
        // Snapshots (and snapshot installs to new and returning nodes) happen
        // several times a run.
        node.extra_args = vec!["--snapshot-entries".into(), "1000".into()];
    }
    for i in 0..FOUNDERS {
        cluster.spawn(i);
    }
    cluster.wait_for_leader(Duration::from_secs(15));
    for i in FOUNDERS..NODES {
        cluster.spawn(i);
    }
    let hist = Arc::new(History::new(&WORKLOAD));
    let client_seeds: Vec<u64> = (0..WORKLOAD.writers + READERS)
        .map(|_| rng.next())
        .collect();
    // Declared after the cluster, so dropped before it (also when the test
    // fails): the clients stop and a stopped node is resumed before the
    // cluster kills every node.
    let mut nemesis = Nemesis {
        hist: &hist,
        seed,
        rng,
        known: (1..=NODES as u64)
            .map(|id| {
                let known = if id as usize <= FOUNDERS {
                    Known::Member
                } else {
                    Known::Out
                };
                (id, known)
            })
            .collect(),
        unknown: HashSet::new(),
        stopped: Stopped(None),
        stats: Stats::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let clients: Vec<_> = (0..WORKLOAD.writers)
        .map(Role::Writer)
        .chain((0..READERS).map(|_| Role::Reader))
        .zip(client_seeds)
        .map(|(role, client_seed)| {
            let (addrs, hist, stop) = (addrs.clone(), Arc::clone(&hist), Arc::clone(&stop));
            thread::spawn(move || WORKLOAD.run_client(role, client_seed, addrs, hist, stop))
        })
        .collect();

    thread::sleep(Duration::from_millis(300));
    let nemesis_start = Instant::now();
    // Grow to five first, so that every kind of step has something to do.
    for id in [4u64, 5] {
        let via = nemesis.rng.below(FOUNDERS as u64) as usize;
        let sent = cluster_request(
            &cluster.nodes[via].client_addr(),
            &Change::Add(id).args(&cluster),
            CLUSTER_REPLY_LIMIT,
        );
        nemesis.record_change(Change::Add(id), via, &sent, true);
        thread::sleep(Duration::from_millis(300));
    }
    while !hist.has_violations() {
        let elapsed = nemesis_start.elapsed();
        let shortfall = nemesis.shortfall();
        if elapsed >= NEMESIS_TIME_LIMIT || (elapsed >= NEMESIS_TIME && shortfall.is_none()) {
            break;
        }
        // Past its time, the nemesis does what the run still lacks.
        let step = match shortfall {
            Some((_, Some(step))) if elapsed >= NEMESIS_TIME => step,
            _ => Step::random(&mut nemesis.rng),
        };
        match step {
            Step::Change => nemesis.change(&cluster),
            Step::Transfer => nemesis.transfer(&cluster),
            Step::Kill => nemesis.kill_and_restart(&mut cluster),
            Step::KillMidChange => nemesis.kill_mid_change(&mut cluster),
            Step::StopLeader => nemesis.stop_leader(&cluster),
        }
        let pause = nemesis.rng.millis(100, 500);
        thread::sleep(pause);
    }
    nemesis.event("nemesis done; clients go on during the final removal".to_string());
    let removed = if hist.has_violations() {
        None
    } else {
        nemesis.final_removal(&mut cluster)
    };
    drop(stop_on_drop);
    for client in clients {
        if client.join().is_err() {
            hist.violation("a client thread panicked".to_string());
        }
    }
    // Requests still queued in a node expire after election_timeout_ms * 4.
    thread::sleep(Duration::from_millis(900));
    nemesis.final_checks(&mut cluster, removed);
    eprintln!(
        "membership nemesis: {} in {:.1} s",
        nemesis.summary(),
        test_start.elapsed().as_secs_f64()
    );
    if hist.has_violations() {
        nemesis.fail(&cluster, "invariants violated");
    }
    // The run must have exercised what it claims to.
    if let Some((what, _)) = nemesis.shortfall() {
        let why = format!("the run did too little to be meaningful: not enough {what}");
        nemesis.fail(&cluster, &why);
    }
}
