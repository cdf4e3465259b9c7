//! The end of the run: one more removal while the clients still write, then
//! healing and the final checks (convergence, every acknowledged write,
//! nodes outside the configuration, term stability, node logs).

use super::cluster_command::{cluster_request, is_tryagain};
use super::cluster_command::{Asked, Change};
use super::common::Cluster;
use super::history::show;
use super::nemesis::{Known, Nemesis};
use super::toolkit::connect;
use super::{CLUSTER_REPLY_LIMIT, MIN_VOTERS, NODES, PROBE_KEY, QUIET_WINDOW, WORKLOAD};
use raftkv::kv::Reply;
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

fn info_of(cluster: &Cluster, i: usize) -> Option<HashMap<String, String>> {
    connect(&cluster.nodes[i].client_addr(), Duration::from_secs(2))?.try_info()
}

/// GET through `addr`, retrying `-TRYAGAIN` (and lost connections) for up to 10 s.
fn final_get(addr: &str, key: &str) -> Option<Reply> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(mut client) = connect(addr, Duration::from_secs(5)) {
            if client.try_send(&[b"GET", key.as_bytes()]) {
                match client.try_read() {
                    Some(reply) if !is_tryagain(&reply) => return Some(reply),
                    _ => {}
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The state every member must agree on at the end.
#[derive(Debug, PartialEq, Eq)]
struct NodeState {
    applied: u64,
    members: String,
    learners: String,
    digest: Reply,
}

fn node_state(cluster: &Cluster, i: usize) -> Option<(NodeState, u64)> {
    let mut client = connect(&cluster.nodes[i].client_addr(), Duration::from_secs(2))?;
    let info = client.try_info()?;
    client.try_send(&[b"DEBUG", b"DIGEST"]).then_some(())?;
    let digest = client.try_read()?;
    let commit = info.get("commit_index")?.parse().ok()?;
    Some((
        NodeState {
            applied: info.get("applied_index")?.parse().ok()?,
            members: info.get("members")?.clone(),
            learners: info.get("learners")?.clone(),
            digest,
        },
        commit,
    ))
}

impl Nemesis<'_> {
    /// CLUSTER ADD or REMOVE through the leader, retrying `-TRYAGAIN` for up to 5 s.
    fn change_via_leader(&mut self, cluster: &Cluster, change: Change) -> Asked {
        let start = Instant::now();
        loop {
            let view = self.must_view(cluster, "before a final change");
            let via = (view.leader.expect("a view has a leader") - 1) as usize;
            let sent = cluster_request(
                &cluster.nodes[via].client_addr(),
                &change.args(cluster),
                CLUSTER_REPLY_LIMIT,
            );
            self.record_change(change, via, &sent, true);
            let retry = matches!(&sent, Asked::Reply(r) if is_tryagain(r))
                && start.elapsed() < Duration::from_secs(5);
            if !retry {
                return sent;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// With the clients still writing: leaves one removed node for the final
    /// checks, half the time removed while it is down and restarted only once
    /// the leader has compacted its log past the removal. Returns its index.
    pub fn final_removal(&mut self, cluster: &mut Cluster) -> Option<usize> {
        self.stopped.resume();
        for i in 0..NODES {
            if !cluster.is_running(i) {
                self.restart(cluster, i);
            }
        }
        let mut view = self.must_view(cluster, "before the final removal");
        if view.voters.len() <= MIN_VOTERS {
            let id = self.rng.pick(
                &(1..=NODES as u64)
                    .filter(|id| !view.members().contains(id))
                    .collect::<Vec<_>>(),
            )?;
            if self.change_via_leader(cluster, Change::Add(id)) != Asked::Reply(Reply::Ok) {
                return None;
            }
            let start = Instant::now();
            loop {
                view = self.must_view(cluster, "waiting for a promotion");
                if view.voters.contains(&id) {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    self.fail(
                        cluster,
                        &format!("node {} added but not promoted within 10 s: {:?}", id, view),
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let candidates: Vec<u64> = view
            .voters
            .iter()
            .copied()
            .filter(|id| Some(*id) != view.leader)
            .collect();
        let id = self.rng.pick(&candidates)?;
        let i = (id - 1) as usize;
        let while_down = self.rng.below(2) == 0;
        if while_down {
            self.count_action("final removal while down");
            cluster.kill(i);
            self.event(format!("kill -9 node {} to remove it while down", id));
        } else {
            self.count_action("final removal");
        }
        let sent = self.change_via_leader(cluster, Change::Remove(id));
        if while_down {
            // At thousands of writes a second, the leader snapshots and
            // drops the log past the removal (snapshot_entries = 1000).
            let snapshot_index = |nemesis: &mut Nemesis, cluster: &Cluster| -> Option<u64> {
                let view = nemesis.view(cluster, Duration::from_secs(5))?;
                info_of(cluster, (view.leader? - 1) as usize)?
                    .get("snapshot_index")?
                    .parse()
                    .ok()
            };
            let before = snapshot_index(self, cluster).unwrap_or(0);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(4) {
                thread::sleep(Duration::from_millis(250));
                if snapshot_index(self, cluster).unwrap_or(0) > before + 3000 {
                    break;
                }
            }
            let now = snapshot_index(self, cluster).unwrap_or(0);
            self.restart(cluster, i);
            self.event(format!(
                "restarted node {} after {} ms down (leader snapshot index {} when removed, {} now)",
                id,
                start.elapsed().as_millis(),
                before,
                now
            ));
        }
        (sent == Asked::Reply(Reply::Ok)).then_some(i)
    }

    /// Heal, then check convergence, every acknowledged write, removed
    /// nodes, term stability and the logs.
    pub fn final_checks(&mut self, cluster: &mut Cluster, removed: Option<usize>) {
        self.stopped.resume();
        for i in 0..NODES {
            if !cluster.is_running(i) {
                self.restart(cluster, i);
            }
        }
        // Every member converges: the same configuration (no learner left),
        // applied index (at least its commit index) and digest.
        let start = Instant::now();
        let mut last_seen = String::new();
        let (view, applied) = loop {
            let attempt = (|| {
                let view = self.view(cluster, Duration::from_secs(2))?;
                if !view.learners.is_empty() {
                    last_seen = format!("learners left: {:?}", view);
                    return None;
                }
                let mut states = Vec::new();
                for &id in &view.voters {
                    states.push((id, node_state(cluster, (id - 1) as usize)?));
                }
                last_seen = format!("{:?}: {:?}", view, states);
                let (first, _) = &states[0].1;
                let expected_members = view
                    .voters
                    .iter()
                    .map(|id| format!("{}={}", id, cluster.nodes[(id - 1) as usize].raft_addr()))
                    .collect::<Vec<_>>()
                    .join(",");
                let agreed = first.members == expected_members
                    && states
                        .iter()
                        .all(|(_, (s, commit))| s == first && s.applied >= *commit);
                agreed.then_some((view.clone(), first.applied))
            })();
            if let Some(done) = attempt {
                break done;
            }
            if start.elapsed() > Duration::from_secs(25) {
                self.fail(
                    cluster,
                    &format!(
                        "the members did not converge (one configuration, no learners, same applied index and digest) within 25 s; last seen {}",
                        last_seen
                    ),
                );
            }
            thread::sleep(Duration::from_millis(100));
        };
        self.event(format!(
            "converged at applied index {} with voters {:?} after {} ms",
            applied,
            view.voters,
            start.elapsed().as_millis()
        ));

        // The model of definite outcomes agrees with the final configuration.
        let final_members = view.members();
        for (&id, &known) in &self.known {
            let present = final_members.contains(&id);
            let bad = match known {
                Known::Member => !present && !self.unknown.contains(&Change::Remove(id)),
                Known::Out => present && !self.unknown.contains(&Change::Add(id)),
                Known::Unknown => false,
            };
            if bad {
                self.hist.violation(format!(
                    "node {}: the last definite CLUSTER outcome says {:?}, but the final configuration is {:?}",
                    id, known, view
                ));
            }
        }

        // Every acknowledged write is readable through every member.
        let hist = self.hist;
        for &id in &view.voters {
            let i = (id - 1) as usize;
            let via = format!("final read through node {}", id);
            for key in WORKLOAD.all_keys() {
                let Some(reply) = final_get(&cluster.nodes[i].client_addr(), &key) else {
                    hist.violation(format!("{}: no answer for GET {} within 10 s", via, key));
                    continue;
                };
                hist.check_final_read(&via, &key, &reply);
            }
        }
        hist.check_no_refused_value_was_read();

        // Nodes outside the configuration (all still running) refuse data
        // commands: a removed node with -TRYAGAIN not a member (SPEC §3), a
        // node never added (or added and removed before it heard of it) with
        // -TRYAGAIN not a member yet. The node removed at the end was a
        // member, so it must say the former. 8 s for all of them together.
        let outside: Vec<usize> = (0..NODES)
            .filter(|i| !final_members.contains(&(*i as u64 + 1)))
            .collect();
        let settled = |i: usize, said: &Option<Reply>| match said {
            Some(Reply::Error(e)) => {
                e == "TRYAGAIN not a member"
                    || (e == "TRYAGAIN not a member yet" && removed != Some(i))
            }
            _ => false,
        };
        let mut said: Vec<Option<Reply>> = vec![None; outside.len()];
        let start = Instant::now();
        loop {
            for (k, &i) in outside.iter().enumerate() {
                if settled(i, &said[k]) {
                    continue;
                }
                let addr = cluster.nodes[i].client_addr();
                if let Some(mut client) = connect(&addr, Duration::from_secs(3)) {
                    if client.try_send(&[b"GET", PROBE_KEY.as_bytes()]) {
                        said[k] = client.try_read();
                    }
                }
            }
            let done = outside.iter().zip(&said).all(|(&i, s)| settled(i, s));
            if done || start.elapsed() > Duration::from_secs(8) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let mut outside_says = Vec::new();
        for (&i, said) in outside.iter().zip(&said) {
            let text = said.as_ref().map(show);
            if !settled(i, said) {
                hist.violation(format!(
                    "node {} is outside the configuration{} but still answers GET with {:?} after 8 s, not -TRYAGAIN not a member: it never learned its removal (its log ever said it was removed: {})",
                    i + 1,
                    if removed == Some(i) { " (the final removal)" } else { "" },
                    text,
                    cluster.log_text(i).contains("was removed from the cluster")
                ));
            }
            outside_says.push(format!("node {}: {:?}", i + 1, text));
        }
        self.event(format!(
            "nodes outside the configuration say {:?}",
            outside_says
        ));

        // Healed: no term grows, the leader stays (a removed node, still
        // running, does not disrupt).
        let terms = |cluster: &Cluster| -> Vec<(usize, Option<u64>, Option<String>)> {
            (0..NODES)
                .map(|i| {
                    let info = info_of(cluster, i);
                    let term = info.as_ref().and_then(|m| m.get("term")?.parse().ok());
                    let leader = info.and_then(|m| m.get("leader_id").cloned());
                    (i + 1, term, leader)
                })
                .collect()
        };
        let before = terms(cluster);
        thread::sleep(QUIET_WINDOW);
        let after = terms(cluster);
        self.event(format!(
            "terms (node, term, leader_id) before {:?} and {:?} after a quiet {:?}",
            before, after, QUIET_WINDOW
        ));
        for (b, a) in before.iter().zip(&after) {
            if b.1.is_none() || a.1.is_none() || a.1 > b.1 {
                hist.violation(format!(
                    "healed, node {}'s term went from {:?} to {:?} within {:?} (leader_id {:?} -> {:?})",
                    b.0, b.1, a.1, QUIET_WINDOW, b.2, a.2
                ));
            }
        }

        for i in 0..NODES {
            let text = cluster.log_text(i);
            if let Some(line) = text.lines().find(|l| l.contains("panicked")) {
                hist.violation(format!("node {} panicked: {}", i + 1, line));
            }
            let refused = "refused a message no honest peer sends";
            if let Some(line) = text.lines().find(|l| l.contains(refused)) {
                hist.violation(format!("node {}: {}", i + 1, line));
            }
        }
    }
}
