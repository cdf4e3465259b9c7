//! Deterministic whole-cluster simulation of the Raft core and the replica
//! glue: clusters of 3 and 5 nodes in one thread, driven from a seed, under
//! message loss, delay, reordering and duplication, partitions that form and
//! heal, crashes that lose whatever was not synced (also in the middle of a
//! sync), restarts, and clocks that run at different rates. The safety
//! properties in `checker` are checked after every step; at the end the
//! network heals and a write must commit within a bounded time (liveness).
//!
//! `SIM_SEEDS=N` runs N seeds per cluster size (default 500), `SIM_STEPS`
//! sets the steps per run (default 2000). A failure prints the seed and the
//! command that replays it exactly:
//! `SIM_SEED=<seed> SIM_NODES=<n> cargo test --release --test sim replay -- --exact --ignored --nocapture`
//! (add `SIM_TRACE=1` to print every delivered message).

mod checker;
mod cluster;
mod disk;
mod membership;
mod network;

use cluster::{Sim, SimOptions};
use network::NetworkOptions;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Steps allowed, after the last fault, for a leader to emerge and a write to commit.
const LIVENESS_STEPS: u64 = 1500;

/// Random faults for one step.
fn inject_faults(sim: &mut Sim) {
    let n = sim.nodes.len();
    let ids = sim.ids();
    let live = sim.live();
    let crashed: Vec<usize> = (0..n).filter(|i| !live.contains(i)).collect();
    // Crash a node, keeping a majority up most of the time.
    if sim.rng.chance(3, 1000) && !live.is_empty() {
        let minority_left = crashed.len() < (n - 1) / 2;
        if minority_left || sim.rng.chance(1, 10) {
            let victim = live[sim.rng.range(0, live.len() as u64) as usize];
            sim.crash(victim);
        }
    }
    // Rarely, everything at once.
    if sim.rng.chance(1, 4000) {
        for i in sim.live() {
            sim.crash(i);
        }
    }
    for i in crashed {
        if sim.rng.chance(1, 60) {
            sim.restart(i);
        }
    }
    // Power loss in the middle of a sync.
    for i in sim.live() {
        if sim.rng.chance(1, 2000) {
            sim.nodes[i].durable.fail_next_sync = true;
        }
    }
    if sim.net.is_partitioned() {
        if sim.rng.chance(1, 150) {
            sim.net.heal();
        }
    } else if sim.rng.chance(1, 300) {
        if sim.rng.chance(1, 2) {
            let victim = ids[sim.rng.range(0, n as u64) as usize];
            sim.net.isolate(victim, &ids);
        } else {
            let mut side_a = Vec::new();
            let mut side_b = Vec::new();
            for &id in &ids {
                if sim.rng.chance(1, 2) {
                    side_a.push(id)
                } else {
                    side_b.push(id)
                }
            }
            sim.net.partition(&side_a, &side_b);
        }
    }
}

/// Runs one seed; the error names the step and the violation.
fn run_seed(opts: SimOptions) -> Result<Sim, String> {
    let steps = opts.steps;
    let mut sim = Sim::new(opts);
    for _ in 0..steps {
        inject_faults(&mut sim);
        sim.step().map_err(|v| fail(&sim, v))?;
    }
    check_liveness(sim, |_, _| true)
}

/// A violation at the current step, with the run's settings.
fn fail(sim: &Sim, what: String) -> String {
    format!("step {}: {}\n  {}", sim.now, what, sim.describe())
}

/// Liveness: heal everything and run node `i` only if `keep(sim, i)` (the
/// others are stopped, as an operator stops removed nodes), then a leader
/// and a new write within a bound.
fn check_liveness(mut sim: Sim, keep: impl Fn(&Sim, usize) -> bool) -> Result<Sim, String> {
    sim.net.heal();
    sim.net.options = NetworkOptions::reliable();
    sim.faults = false;
    for i in 0..sim.nodes.len() {
        sim.nodes[i].durable.fail_next_sync = false;
        let running = sim.nodes[i].replica.is_some();
        if keep(&sim, i) && !running {
            sim.restart(i);
        } else if !keep(&sim, i) && running {
            sim.crash(i);
        }
    }
    let healed_at = sim.now;
    let mut op = sim.liveness_write();
    let mut op_started = sim.now;
    while !sim.is_acked(op) {
        if sim.now - healed_at > LIVENESS_STEPS {
            let why = format!(
                "liveness: no write committed within {} steps after healing (leader: {:?})",
                LIVENESS_STEPS,
                sim.stable_leader()
            );
            return Err(fail(&sim, why));
        }
        sim.step().map_err(|v| fail(&sim, v))?;
        // A write that timed out (outcome unknown) is retried with a new value.
        if sim.now - op_started > 200 && !sim.is_acked(op) {
            op = sim.liveness_write();
            op_started = sim.now;
        }
    }
    Ok(sim)
}

/// Runs one seed, turning a panic (an assertion inside the core or the
/// replica) into an error, so the failure names its seed and replay command.
fn catch_panic<T>(run: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".to_string());
        Err(format!("panic: {}", what))
    })
}

fn replay_command(seed: u64, nodes: usize, steps: u64) -> String {
    format!(
        "SIM_SEED={} SIM_NODES={} SIM_STEPS={} cargo test --release --test sim replay -- --exact --ignored --nocapture",
        seed, nodes, steps
    )
}

fn run_many(nodes: usize) {
    let seeds = env_u64("SIM_SEEDS", 500);
    let steps = env_u64("SIM_STEPS", 2000);
    let base = env_u64("SIM_SEED_BASE", 0);
    let (mut acks, mut reads, mut messages) = (0u64, 0u64, 0u64);
    let mut snaps = cluster::SnapshotStats::default();
    for seed in base..base + seeds {
        let opts = SimOptions {
            nodes,
            steps,
            seed,
            trace: false,
        };
        match catch_panic(|| run_seed(opts)) {
            Ok(sim) => {
                acks += sim.acks;
                reads += sim.history.reads_checked;
                messages += sim.net.sent;
                let s = sim.snapshot_stats;
                snaps.taken += s.taken;
                snaps.failed += s.failed;
                snaps.sent += s.sent;
                snaps.installed += s.installed;
                snaps.restarts_from_snapshot += s.restarts_from_snapshot;
            }
            Err(why) => panic!(
                "simulation failed: seed {} with {} nodes at {}\nreplay: {}",
                seed,
                nodes,
                why,
                replay_command(seed, nodes, steps)
            ),
        }
    }
    println!(
        "{} nodes: {} seeds x {} steps: {} acknowledged writes, {} reads checked, {} messages; \
         snapshots: {} taken, {} failed writes, {} sent, {} installed, {} restarts from one",
        nodes,
        seeds,
        steps,
        acks,
        reads,
        messages,
        snaps.taken,
        snaps.failed,
        snaps.sent,
        snaps.installed,
        snaps.restarts_from_snapshot
    );
    // Guard against a simulation that passes because nothing happens.
    assert!(acks > seeds * 20, "too few writes acknowledged: {}", acks);
    assert!(reads > seeds * 20, "too few reads checked: {}", reads);
    if seeds >= 50 {
        assert!(
            snaps.taken > seeds * 5 && snaps.installed > seeds / 5,
            "too little snapshot activity: {:?}",
            snaps
        );
    }
}

#[test]
fn three_node_clusters_stay_safe_and_live() {
    run_many(3);
}

#[test]
fn five_node_clusters_stay_safe_and_live() {
    run_many(5);
}

/// Replays one seed (see the module docs); ignored unless asked for.
#[test]
#[ignore]
fn replay() {
    let opts = SimOptions {
        nodes: env_u64("SIM_NODES", 3) as usize,
        steps: env_u64("SIM_STEPS", 2000),
        seed: env_u64("SIM_SEED", 0),
        trace: std::env::var("SIM_TRACE").is_ok(),
    };
    match run_seed(opts.clone()) {
        Ok(sim) => println!(
            "seed {} passed: {} acks, {} reads checked; {}",
            opts.seed,
            sim.acks,
            sim.history.reads_checked,
            sim.describe()
        ),
        Err(why) => panic!("seed {} failed at {}", opts.seed, why),
    }
}

#[test]
fn same_seed_same_run() {
    let opts = SimOptions {
        nodes: 3,
        steps: 600,
        seed: 42,
        trace: false,
    };
    let a = run_seed(opts.clone()).expect("seed 42");
    let b = run_seed(opts).expect("seed 42 again");
    assert_eq!((a.now, a.acks, a.net.sent), (b.now, b.acks, b.net.sent));
    let logs = |s: &Sim| -> Vec<(u64, Vec<(u64, u64)>)> {
        s.nodes
            .iter()
            .map(|n| {
                let log = n
                    .durable
                    .written
                    .iter()
                    .map(|e| (e.index, e.term))
                    .collect();
                (n.durable.offset, log)
            })
            .collect()
    };
    assert_eq!(logs(&a), logs(&b));
}

/// Random membership changes and transfers among five node slots (see
/// `membership`). `SIM_MEMBERSHIP_SEEDS=N` runs N seeds (default 500).
#[test]
fn membership_changes_stay_safe_and_live() {
    let seeds = env_u64("SIM_MEMBERSHIP_SEEDS", 500);
    let steps = env_u64("SIM_STEPS", 2000);
    let base = env_u64("SIM_SEED_BASE", 0);
    let mut total = membership::Stats::default();
    let mut acks = 0;
    for seed in base..base + seeds {
        let opts = SimOptions {
            nodes: membership::SLOTS,
            steps,
            seed,
            trace: false,
        };
        match catch_panic(|| membership::run_seed(opts)) {
            Ok((sim, stats)) => {
                acks += sim.acks;
                total.changes_accepted += stats.changes_accepted;
                total.changes_committed += stats.changes_committed;
                total.transfers_started += stats.transfers_started;
                total.transfers_finished += stats.transfers_finished;
                total.transfer_steps += stats.transfer_steps;
            }
            Err(why) => panic!(
                "membership simulation failed: seed {} at {}\nreplay: SIM_SEED={} SIM_STEPS={} cargo test --release --test sim replay_membership -- --exact --ignored --nocapture",
                seed, why, seed, steps
            ),
        }
    }
    println!(
        "membership: {} seeds x {} steps: {} acknowledged writes, {} changes accepted, {} committed, {} transfers started, {} finished (mean {} steps)",
        seeds,
        steps,
        acks,
        total.changes_accepted,
        total.changes_committed,
        total.transfers_started,
        total.transfers_finished,
        total.transfer_steps / total.transfers_finished.max(1)
    );
    // Guard against a run that passes because nothing changes.
    assert!(
        total.changes_committed > seeds * 2,
        "too few changes committed: {}",
        total.changes_committed
    );
    assert!(acks > seeds * 20, "too few writes acknowledged: {}", acks);
}

/// Replays one membership seed; ignored unless asked for.
#[test]
#[ignore]
fn replay_membership() {
    let opts = SimOptions {
        nodes: membership::SLOTS,
        steps: env_u64("SIM_STEPS", 2000),
        seed: env_u64("SIM_SEED", 0),
        trace: std::env::var("SIM_TRACE").is_ok(),
    };
    match membership::run_seed(opts.clone()) {
        Ok((sim, stats)) => println!(
            "seed {} passed: {} acks, {} changes committed, {} transfers finished; {}",
            opts.seed,
            sim.acks,
            stats.changes_committed,
            stats.transfers_finished,
            sim.describe()
        ),
        Err(why) => panic!("seed {} failed at {}", opts.seed, why),
    }
}
