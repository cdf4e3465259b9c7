//! Membership changes and leadership transfers under the simulator's faults.
//!
//! Five node slots: the founders 1-3 start as the cluster, 4 and 5 start
//! empty as joiners. Now and then the current leader adds a learner (the
//! leader promotes it by itself once caught up), removes a member (itself
//! included; voters stay between 3 and 5) or hands leadership to another
//! voter. Removed nodes keep running (and crashing) with their disks; a node
//! added again keeps its disk too (re-adding an id with a wiped disk is not
//! safe: a vote cast before the wipe could be cast again).
//!
//! On top of the usual safety checks, after every step:
//!
//! 1. **One single-server change at a time.** Every ConfChange entry, on
//!    every node that appends it, names exactly the configuration that its
//!    change makes from the configuration before it in that log (the founders
//!    if none), and that previous ConfChange entry was already committed.
//!    Together these are what rule out two disjoint majorities: any two
//!    configurations that can be in force at once are neighbours in a chain of
//!    single-server changes, and a majority of one intersects a majority of the
//!    other. (The simpler-looking "configurations in force on any two nodes
//!    differ by at most one voter" is not an invariant: a node that was down
//!    through several changes still holds an old one, harmlessly, since it
//!    cannot be elected without the committed entries it lacks.)
//! 2. **Committed configurations form that chain**, in index order.
//! 3. **Only voters campaign or lead**, except a node whose removal it does
//!    not know to be committed (thesis §4.2.2); joiners with no
//!    configuration never do.
//!
//! A log compacted past its last ConfChange entry takes the configuration
//! before an append from its newest snapshot (see `disk::MemDurable`).

use crate::cluster::{Sim, SimOptions};
use crate::{check_liveness, fail, inject_faults};
use raftkv::raft::conf_change::{self, ConfChange, ConfEntry};
use raftkv::raft::{Entry, EntryKind, NodeId, Role};
use std::collections::BTreeMap;

pub const FOUNDERS: [NodeId; 3] = [1, 2, 3];
pub const SLOTS: usize = 5;
const MIN_VOTERS: usize = 3;

/// The configuration a node's log was in when it appended a ConfChange entry.
pub enum ConfBefore {
    /// The previous ConfChange entry in that log.
    Entry(Entry),
    /// No ConfChange entry left in the log: the snapshot's (voters, learners).
    Snapshot(Vec<NodeId>, Vec<NodeId>),
    /// Neither: the bootstrap configuration.
    Founders,
}

/// The last ConfChange entry of `log`, if any.
pub fn last_conf_entry(log: &[Entry]) -> Option<Entry> {
    log.iter()
        .rev()
        .find(|e| e.kind == EntryKind::ConfChange)
        .cloned()
}

type Conf = (Vec<NodeId>, Vec<NodeId>);

fn decode(entry: &Entry) -> Result<ConfEntry, String> {
    conf_change::decode(&entry.data)
        .map_err(|e| format!("ConfChange entry {}/{}: {e}", entry.index, entry.term))
}

/// The configuration `change` makes from `prev`, or why it is not a valid
/// single-server change of it.
fn apply(prev: &Conf, change: &ConfChange) -> Result<Conf, String> {
    let (mut voters, mut learners) = prev.clone();
    let member = |id| voters.contains(&id) || learners.contains(&id);
    match change {
        ConfChange::AddLearner { id, .. } if !member(*id) => learners.push(*id),
        ConfChange::Promote { id } if learners.contains(id) => {
            learners.retain(|l| l != id);
            voters.push(*id);
        }
        ConfChange::Remove { id } if member(*id) => {
            voters.retain(|v| v != id);
            learners.retain(|l| l != id);
        }
        _ => return Err(format!("{change:?} is not a change of {prev:?}")),
    }
    voters.sort_unstable();
    learners.sort_unstable();
    Ok((voters, learners))
}

/// A leadership transfer the driver started: (leader, target, step).
type PendingTransfer = (NodeId, NodeId, u64);

#[derive(Default)]
pub struct Stats {
    pub changes_accepted: u64,
    pub changes_committed: u64,
    pub transfers_started: u64,
    pub transfers_finished: u64,
    pub transfer_steps: u64,
}

#[derive(Default)]
pub struct Membership {
    /// Every ConfChange entry appended anywhere, by (index, term).
    seen: BTreeMap<(u64, u64), ConfEntry>,
    /// The committed ones, by index.
    committed: BTreeMap<u64, Conf>,
    transfers: Vec<PendingTransfer>,
    pub stats: Stats,
}

impl Membership {
    /// The last committed configuration (the founders before any change).
    pub fn committed_conf(&self) -> Conf {
        self.committed
            .values()
            .next_back()
            .cloned()
            .unwrap_or_else(|| (FOUNDERS.to_vec(), Vec::new()))
    }

    /// Whether `id` is a member of the last committed configuration or of
    /// one appended after it: a change still in flight when the faults stop
    /// may commit later (and the leader may then promote its learner), so
    /// the liveness phase must not stop that node as a removed one.
    fn may_be_member(&self, id: NodeId) -> bool {
        let last_committed = self.committed.keys().next_back().copied().unwrap_or(0);
        let (voters, learners) = self.committed_conf();
        let in_flight = self
            .seen
            .iter()
            .filter(|((index, _), _)| *index > last_committed)
            .map(|(_, conf)| conf);
        voters.contains(&id)
            || learners.contains(&id)
            || in_flight
                .into_iter()
                .any(|c| c.voters.contains(&id) || c.learners.contains(&id))
    }

    /// The live leader of the highest term, if any.
    fn leader(sim: &Sim) -> Option<usize> {
        sim.live()
            .into_iter()
            .filter(|&i| {
                sim.nodes[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.node().role() == Role::Leader)
            })
            .max_by_key(|&i| sim.nodes[i].replica.as_ref().map_or(0, |r| r.node().term()))
    }

    /// Sometimes asks the leader for a change or a transfer.
    pub fn maybe_change(&mut self, sim: &mut Sim) {
        if !sim.rng.chance(1, 120) {
            return;
        }
        let Some(leader) = Self::leader(sim) else {
            return;
        };
        let status = sim.nodes[leader].replica.as_ref().map(|r| r.status());
        let Some(status) = status else { return };
        let id = sim.rng.range(1, SLOTS as u64 + 1);
        let voter = status.voters.contains(&id);
        let member = voter || status.learners.contains(&id);
        let change = match sim.rng.range(0, 10) {
            0..=4 if !member => {
                // The operator starts the node before adding it.
                if sim.nodes[id as usize - 1].replica.is_none() {
                    sim.restart(id as usize - 1);
                }
                ConfChange::AddLearner {
                    id,
                    context: format!("127.0.0.1:{}", 7000 + id).into_bytes(),
                }
            }
            0..=8 if member && (!voter || status.voters.len() > MIN_VOTERS) => {
                ConfChange::Remove { id }
            }
            9 if voter => {
                let node = sim.nodes[leader].replica.as_mut().map(|r| r.node_mut());
                if node.is_some_and(|n| n.transfer_leader(id).is_ok()) {
                    self.stats.transfers_started += 1;
                    self.transfers.push((status.id, id, sim.now));
                }
                return;
            }
            _ => return,
        };
        let node = sim.nodes[leader].replica.as_mut().map(|r| r.node_mut());
        if node.is_some_and(|n| n.propose_conf_change(change).is_ok()) {
            self.stats.changes_accepted += 1;
        }
    }

    /// The checks of the module docs, after a step.
    pub fn observe(&mut self, sim: &mut Sim) -> Result<(), String> {
        for i in 0..sim.nodes.len() {
            let appended = std::mem::take(&mut sim.nodes[i].durable.confs_appended);
            for (entry, before) in appended {
                self.observe_append(sim.nodes[i].id, &entry, &before, sim.max_commit)?;
            }
        }
        self.observe_commits(sim)?;
        self.observe_roles(sim)?;
        self.observe_transfers(sim);
        Ok(())
    }

    fn observe_append(
        &mut self,
        node: NodeId,
        entry: &Entry,
        before: &ConfBefore,
        max_commit: u64,
    ) -> Result<(), String> {
        let conf = decode(entry)?;
        let prev = match before {
            ConfBefore::Entry(b) => {
                if b.index > max_commit {
                    return Err(format!(
                        "node {node} appended change {}/{} while the change at {} was uncommitted (highest commit {max_commit})",
                        entry.index, entry.term, b.index
                    ));
                }
                let b = decode(b)?;
                (b.voters, b.learners)
            }
            // A snapshot holds only committed state.
            ConfBefore::Snapshot(voters, learners) => (voters.clone(), learners.clone()),
            ConfBefore::Founders => (FOUNDERS.to_vec(), Vec::new()),
        };
        let expected = apply(&prev, &conf.change)
            .map_err(|why| format!("node {node}, entry {}: {why}", entry.index))?;
        if expected != (conf.voters.clone(), conf.learners.clone()) {
            return Err(format!(
                "node {node}, entry {}: {:?} of {prev:?} names {:?}/{:?}, expected {expected:?}",
                entry.index, conf.change, conf.voters, conf.learners
            ));
        }
        self.seen.insert((entry.index, entry.term), conf);
        Ok(())
    }

    fn observe_commits(&mut self, sim: &Sim) -> Result<(), String> {
        let fresh: Vec<(u64, ConfEntry)> = self
            .seen
            .iter()
            .filter(|((index, term), _)| {
                !self.committed.contains_key(index) && sim.checker.applied_at(*index) == Some(*term)
            })
            .map(|((index, _), conf)| (*index, conf.clone()))
            .collect();
        for (index, conf) in fresh {
            if let Some((&later, _)) = self.committed.range(index..).next() {
                return Err(format!(
                    "change at {index} committed after the one at {later}"
                ));
            }
            let expected = apply(&self.committed_conf(), &conf.change)?;
            if expected != (conf.voters.clone(), conf.learners.clone()) {
                return Err(format!(
                    "committed change at {index} makes {:?}/{:?}, not {expected:?}",
                    conf.voters, conf.learners
                ));
            }
            self.committed.insert(index, expected);
            self.stats.changes_committed += 1;
        }
        Ok(())
    }

    fn observe_roles(&self, sim: &Sim) -> Result<(), String> {
        for i in sim.live() {
            let Some(replica) = sim.nodes[i].replica.as_ref() else {
                continue;
            };
            let status = replica.status();
            let voter = status.voters.contains(&status.id);
            let removing = status.conf_index > status.commit_index;
            if status.role != Role::Follower && !voter && !removing {
                return Err(format!(
                    "node {} is {:?} but not a voter of its committed configuration {:?}",
                    status.id, status.role, status.voters
                ));
            }
        }
        Ok(())
    }

    fn observe_transfers(&mut self, sim: &Sim) {
        let leader_id = Self::leader(sim).map(|i| sim.nodes[i].id);
        let mut still = Vec::new();
        for (from, to, started) in std::mem::take(&mut self.transfers) {
            let node = sim.nodes[from as usize - 1].replica.as_ref();
            match node.map(|r| r.node().transfer_target()) {
                Some(Some(_)) => still.push((from, to, started)),
                Some(None) if leader_id == Some(to) => {
                    self.stats.transfers_finished += 1;
                    self.stats.transfer_steps += sim.now - started;
                }
                _ => {}
            }
        }
        self.transfers = still;
    }
}

/// One seed with membership changes; the error names the step and violation.
pub fn run_seed(opts: SimOptions) -> Result<(Sim, Stats), String> {
    assert_eq!(opts.nodes, SLOTS, "membership runs use {SLOTS} slots");
    let steps = opts.steps;
    let mut sim = Sim::new(opts);
    // Nothing ran yet: restarting is starting with another configuration.
    for i in 0..SLOTS {
        sim.nodes[i].bootstrap_voters = if i < FOUNDERS.len() {
            FOUNDERS.to_vec()
        } else {
            Vec::new()
        };
        sim.restart(i);
    }
    let mut membership = Membership::default();
    for _ in 0..steps {
        inject_faults(&mut sim);
        membership.maybe_change(&mut sim);
        sim.step().map_err(|v| fail(&sim, v))?;
        membership.observe(&mut sim).map_err(|v| fail(&sim, v))?;
    }
    let members: Vec<bool> = (0..SLOTS)
        .map(|i| membership.may_be_member(sim.nodes[i].id))
        .collect();
    let sim = check_liveness(sim, |_, i| members[i])?;
    Ok((sim, membership.stats))
}

#[cfg(test)]
mod tests {
    //! The membership checks must catch hand-made bad histories.
    use super::*;

    fn conf_entry(index: u64, change: ConfChange, voters: &[u64], learners: &[u64]) -> Entry {
        Entry {
            index,
            term: 1,
            kind: EntryKind::ConfChange,
            data: conf_change::encode(&ConfEntry {
                change,
                voters: voters.to_vec(),
                learners: learners.to_vec(),
            })
            .into(),
        }
    }

    #[test]
    fn a_change_of_two_servers_is_caught() {
        let mut m = Membership::default();
        let add = ConfChange::AddLearner {
            id: 4,
            context: Vec::new(),
        };
        let good = conf_entry(5, add.clone(), &[1, 2, 3], &[4]);
        assert!(m.observe_append(1, &good, &ConfBefore::Founders, 0).is_ok());
        // AddLearner that also makes 4 a voter: two steps at once.
        let bad = conf_entry(5, add, &[1, 2, 3, 4], &[]);
        assert!(m.observe_append(1, &bad, &ConfBefore::Founders, 0).is_err());
        let remove_two = conf_entry(9, ConfChange::Remove { id: 3 }, &[1], &[4]);
        assert!(m
            .observe_append(1, &remove_two, &ConfBefore::Entry(good.clone()), 5)
            .is_err());
    }

    #[test]
    fn a_change_on_top_of_an_uncommitted_one_is_caught() {
        let mut m = Membership::default();
        let first = conf_entry(5, ConfChange::Remove { id: 3 }, &[1, 2], &[]);
        let second = conf_entry(7, ConfChange::Remove { id: 2 }, &[1], &[]);
        assert!(m
            .observe_append(1, &second, &ConfBefore::Entry(first.clone()), 4)
            .unwrap_err()
            .contains("uncommitted"));
        assert!(m
            .observe_append(1, &second, &ConfBefore::Entry(first.clone()), 5)
            .is_ok());
    }
}
