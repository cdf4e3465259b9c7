//! Membership changes (Raft thesis §4.1–4.2): single-server changes, each a
//! log entry whose configuration takes effect as soon as it is appended.
//!
//! # Why single-server changes and not joint consensus
//!
//! Adding or removing one server at a time means any majority of the old
//! configuration and any majority of the new one share a server, so no
//! moment exists where two disjoint majorities could decide. Each change is
//! then one ordinary entry, the configuration in force is simply the latest
//! in the log, and there is no intermediate joint state to carry through
//! snapshots, restarts and truncation. Joint consensus buys arbitrary changes
//! in one step, which an operator adding or removing one node never needs.
//! Two rules make it safe:
//!
//! - **One change at a time.** The leader refuses a change while an earlier
//!   one is uncommitted; the overlap argument holds only between neighbours.
//! - **A new leader first commits an entry of its term** (its Noop) before it
//!   proposes a change. Without it, two leaders of different terms can each
//!   append a change to the same committed configuration (say, each removes a
//!   different server from four), and those two configurations can have
//!   disjoint majorities (Ongaro, raft-dev, 2015).
//!
//! # Learners
//!
//! A new node joins as a learner: it receives the log and snapshots but
//! neither votes nor counts toward commits, reads or check-quorum, so adding
//! a node that is still empty costs no availability. The leader promotes it
//! itself once it has caught up (`maybe_promote_learner`): promotion is a
//! decision about log progress, which only the leader sees, and doing it here
//! keeps it deterministic and covered by the simulator.
//!
//! # Removal
//!
//! A removed node is still sent the log until its removal commits, and a
//! last heartbeat carrying that commit; it then knows it is out and never
//! campaigns. A leader that removes itself keeps leading without counting
//! itself until the removal commits, then steps down and hands over with
//! TimeoutNow (thesis §4.2.2).
//!
//! Who campaigns: voters of the latest configuration; never learners, nodes
//! with no configuration (joining) or nodes whose removal they know to be
//! committed. One exception (thesis §4.2.2: "a server that is not part of its
//! own latest configuration should still start new elections, as it might
//! still be needed until the Cnew entry is committed"): a voter removed by a
//! change it does not know to be committed still campaigns, without counting
//! its own vote. Otherwise a leader that removed itself from {A, B} and
//! restarted before replicating the removal would wait forever: B (still
//! under {A, B}) needs A's vote, which A refuses because A's log is longer,
//! and A would never stand. Such a node always runs a pre-vote first, so it
//! cannot disturb a cluster that has moved on without it.

use super::conf_change::{self, ConfChange, ConfEntry};
use super::message::{Entry, EntryKind, MessageBody, NodeId, SnapshotMeta, NO_NODE};
use super::progress::ProgressState;
use super::ready::Role;
use super::{ConfChangeError, Node};

/// A learner is promoted once its log is within this many entries of the
/// leader's. Any bound is safe; a small one means the new voter seldom
/// holds back commits while it finishes catching up.
pub(super) const PROMOTE_LAG_ENTRIES: u64 = 64;

/// Whether and how this node may stand for election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Suffrage {
    Voter,
    /// Removed by a change not known to be committed (see the module docs).
    Removing,
    None,
}

impl Node {
    pub(super) fn suffrage(&self) -> Suffrage {
        let conf = self.log.conf();
        if conf.is_voter(self.id) {
            return Suffrage::Voter;
        }
        let index = self.log.conf_index();
        if index > self.log.committed && self.log.conf_at(index - 1).is_voter(self.id) {
            Suffrage::Removing
        } else {
            Suffrage::None
        }
    }

    pub(super) fn propose_conf_change_inner(
        &mut self,
        change: ConfChange,
    ) -> Result<(u64, u64), ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if self.transfer.is_some() {
            return Err(ConfChangeError::TransferInProgress);
        }
        assert!(
            !matches!(change, ConfChange::ForceNewCluster { .. }),
            "{change:?} proposed: it is written at start, never replicated as a change"
        );
        if let ConfChange::AddLearner { id, .. } = change {
            if self.dropped_peers.contains(&id) {
                return Err(ConfChangeError::Dropped { id });
            }
        }
        // Checked against the latest configuration before the wait for the
        // one in flight: a change that can never be made (an unknown node,
        // one already a member) is told so at once, as SPEC words it, not
        // `-TRYAGAIN` for the client to retry in vain.
        let next = self.log.conf().apply(&change)?;
        if self.log.conf_index() > self.log.committed || !self.committed_in_current_term() {
            return Err(ConfChangeError::ChangeInProgress);
        }
        if let ConfChange::Remove { id } = change {
            self.check_removal_quorum(id, &next.voters)?;
        }
        let payload = conf_change::encode(&ConfEntry {
            change,
            voters: next.voters.clone(),
            learners: next.learners.clone(),
        });
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind: EntryKind::ConfChange,
            data: payload.into(),
        });
        // The new configuration is in force: a new member needs a progress; a
        // removed one keeps its own until the removal commits.
        let fresh = self.new_progress(index);
        for id in self.replication_targets() {
            self.progress.entry(id).or_insert_with(|| fresh.clone());
        }
        // Fewer voters may mean a smaller majority already holds more.
        self.maybe_commit();
        Ok((index, self.term))
    }

    /// The new configuration is in force once appended, so a removal must
    /// commit under it: with too few of its voters up, it never does, and no
    /// leader can be elected until they return (for good, if the node that is
    /// down is why the operator is shrinking the cluster). Refused up front
    /// instead, as etcd's strict reconfiguration check does. Removing a
    /// learner leaves the voters as they are.
    pub(super) fn check_removal_quorum(
        &self,
        id: NodeId,
        next_voters: &[NodeId],
    ) -> Result<(), ConfChangeError> {
        if !self.log.conf().is_voter(id) {
            return Ok(());
        }
        let reachable = next_voters
            .iter()
            .filter(|v| **v == self.id || self.heard_lately(**v))
            .count();
        let majority = next_voters.len() / 2 + 1;
        if reachable >= majority {
            return Ok(());
        }
        // A new leader commits its Noop on the first acknowledgement, and a
        // removal waiting for that commit is tried at once, before the other
        // voters' acknowledgements are in: refusing then would turn down a
        // removal in a healthy cluster (and, for a leader's removal of
        // itself, after leadership has already moved for it). Such voters
        // are undecided until a check-quorum round has ended.
        let undecided = next_voters
            .iter()
            .filter(|v| **v != self.id && !self.heard_lately(**v))
            .filter(|v| self.progress.get(v).is_some_and(|p| !p.round_ended))
            .count();
        if reachable + undecided >= majority {
            return Err(ConfChangeError::ChangeInProgress);
        }
        Err(ConfChangeError::NoQuorumAfterRemoval {
            id,
            voters: next_voters.len(),
            reachable,
        })
    }

    /// Leader: whether `id` answered in this check-quorum round or the one
    /// before (a follower that is up may not have answered yet in a round
    /// just begun).
    pub(super) fn heard_lately(&self, id: NodeId) -> bool {
        self.progress
            .get(&id)
            .is_some_and(|p| p.recent_active || p.active_last_round)
    }

    /// Leader: the voter to hand over to before removing itself, the most up
    /// to date of those heard from lately. A voter that is down keeps the
    /// match index it had, which in an idle cluster is the leader's last
    /// index too: picked by match index alone, it could be chosen every time,
    /// and every transfer abandoned.
    pub(super) fn removal_successor_inner(&self) -> Option<NodeId> {
        self.freshest_voter_heard_lately(|_| true)
    }

    /// Of the other voters heard from lately that `usable` accepts, the one
    /// with the longest matching log (the lowest id on a tie).
    pub(super) fn freshest_voter_heard_lately(
        &self,
        usable: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        self.log
            .conf()
            .voters
            .iter()
            .filter(|id| **id != self.id && self.heard_lately(**id) && usable(**id))
            .filter_map(|id| self.progress.get(id).map(|pr| (*id, pr.match_index)))
            .max_by_key(|(id, matched)| (*matched, std::cmp::Reverse(*id)))
            .map(|(id, _)| id)
    }

    /// Everyone the leader sends the log to: the members of the configuration
    /// in force, and those of the last committed one (a node being removed
    /// must receive its removal). This node excluded.
    pub(super) fn replication_targets(&self) -> Vec<NodeId> {
        let mut ids = self.log.conf().peers(self.id);
        if self.log.conf_index() > self.log.committed {
            ids.extend(self.log.conf_at(self.log.committed).peers(self.id));
            ids.sort_unstable();
            ids.dedup();
        }
        ids
    }

    /// Leader, after its commit index advanced: once the configuration in
    /// force is committed, stop replicating to nodes outside it, and step
    /// down if this node is one of them.
    pub(super) fn on_leader_commit_membership(&mut self) {
        if self.log.conf_index() > self.log.committed {
            return;
        }
        let targets = self.replication_targets();
        let removed: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| !targets.contains(id))
            .map(|(id, pr)| (*id, pr.match_index.min(self.log.committed)))
            .collect();
        // Best effort: a removed node that learns its removal committed stays
        // quiet; one that does not may run a pre-vote (see the module docs).
        let read_round = self.reads.round;
        for (id, commit) in removed {
            self.progress.remove(&id);
            self.send(id, MessageBody::Heartbeat { commit, read_round });
        }
        if !self.log.conf().is_voter(self.id) {
            self.step_down_removed();
        }
    }

    /// A pre-vote from a node outside the committed configuration: a removed
    /// node that never learned its removal committed. Its acknowledgement may
    /// have been waiting for its sync when the leader stopped replicating to it,
    /// leadership may have moved on since, or (in a larger cluster) the removal
    /// committed without it ever receiving the entry. Bring it the entries up to
    /// the one that removed it, or just the commit index if it has them, so it
    /// applies its removal and stays quiet. Its log matches ours up to its last
    /// entry when that entry's index and term do (log matching), so appending
    /// after it, and a commit index up to it, are both safe.
    ///
    /// When its last entry is not ours (a leader that removed itself, kept
    /// appending, and was cut off before it learned the removal committed),
    /// probe it as a follower is probed: see [`Node::probe_removed_node`].
    pub(super) fn tell_removed_node(&mut self, from: NodeId, last_index: u64, last_term: u64) {
        if !self.removal_committed(from) {
            return;
        }
        if !self.log.match_term(last_index, last_term) {
            let probe = self.log.find_conflict_by_term(last_index, last_term).0;
            self.probe_removed_node(from, probe);
            return;
        }
        let read_round = self.reads.round;
        let removal = self.log.conf_index();
        if last_index >= removal || last_index >= self.log.last_index() {
            let commit = last_index.min(self.log.committed);
            self.send(from, MessageBody::Heartbeat { commit, read_round });
            return;
        }
        self.probe_removed_node(from, last_index);
    }

    /// Whether `id` is outside a committed configuration.
    pub(super) fn removal_committed(&self, id: NodeId) -> bool {
        self.log.conf_index() <= self.log.committed && !self.log.conf().is_member(id)
    }

    /// Sends a removed node our entries after `prev_index`, up to the one that
    /// removed it, checked against our entry there: it accepts them only
    /// if its log agrees there, and otherwise its rejection hints at an
    /// earlier index, which `handle_append_response` probes next. No progress
    /// is kept for it; each answer carries what the next step needs.
    pub(super) fn probe_removed_node(&mut self, to: NodeId, prev_index: u64) {
        let Some(prev_term) = self.log.term(prev_index) else {
            // Compacted away: our snapshot brings it up to where our entries
            // follow. It names the configuration at its index, without this
            // node once the removal is in it; else the entries up to the
            // removal follow when it acknowledges the snapshot.
            if prev_index < self.log.snapshot.index {
                let meta = self.log.snapshot.clone();
                self.send(to, MessageBody::InstallSnapshot { meta });
            }
            return;
        };
        let removal = self.log.conf_index();
        let mut entries = if prev_index < removal {
            self.log
                .entries_from(prev_index + 1, self.config.max_msg_bytes)
        } else {
            Vec::new()
        };
        entries.retain(|e| e.index <= removal);
        let sent_to = entries.last().map_or(prev_index, |e| e.index);
        let commit = sent_to.min(self.log.committed);
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
    }

    /// Thesis §4.2.2: the removed leader steps down once its removal commits.
    /// The voters would elect a successor after an election timeout; telling
    /// the most up-to-date one to campaign now saves that wait.
    fn step_down_removed(&mut self) {
        let last = self.log.last_index();
        let successor = self
            .progress
            .iter()
            .filter(|(id, pr)| self.log.conf().is_voter(**id) && pr.match_index == last)
            .map(|(id, _)| *id)
            .next();
        self.become_follower(self.term, NO_NODE);
        if let Some(id) = successor {
            self.send(id, MessageBody::TimeoutNow);
        }
    }

    /// Leader: proposes the promotion of the first learner that has caught
    /// up, when a change may be made at all. Only one heard from lately: a
    /// progress keeps the Replicate state and match index it had when the
    /// learner stopped answering, and a dead voter raises the quorum without
    /// adding to it. One that answers again is promoted at a later tick.
    pub(super) fn maybe_promote_learner(&mut self) {
        if self.role != Role::Leader
            || self.transfer.is_some()
            || self.log.conf_index() > self.log.committed
            || !self.committed_in_current_term()
        {
            return;
        }
        let last = self.log.last_index();
        let ready = self.log.conf().learners.iter().copied().find(|id| {
            self.heard_lately(*id)
                && self.progress.get(id).is_some_and(|pr| {
                    pr.state == ProgressState::Replicate
                        && pr.match_index + PROMOTE_LAG_ENTRIES >= last
                })
        });
        if let Some(id) = ready {
            let promoted = self.propose_conf_change_inner(ConfChange::Promote { id });
            assert!(
                promoted.is_ok(),
                "promoting learner {id} refused: {promoted:?}"
            );
        }
    }

    pub(super) fn snapshot_meta_at(&self, index: u64) -> SnapshotMeta {
        assert!(
            index <= self.log.applied,
            "snapshot at {index} above the applied index {}",
            self.log.applied
        );
        let term = self
            .log
            .term(index)
            .unwrap_or_else(|| panic!("snapshot at {index}: entry compacted away"));
        let conf = self.log.conf_at(index);
        SnapshotMeta {
            index,
            term,
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
        }
    }

    /// `compact` is given the configuration at its index, or the snapshot
    /// would restore a later, possibly never committed one.
    pub(super) fn check_snapshot_conf(&self, meta: &SnapshotMeta) {
        if meta.index <= self.log.snapshot.index || meta.index < self.log.first_index() - 1 {
            return;
        }
        let conf = self.log.conf_at(meta.index);
        assert!(
            conf.voters == meta.voters && conf.learners == meta.learners,
            "snapshot at {} names voters {:?} learners {:?} but the configuration there is {:?}: build it with Node::snapshot_meta",
            meta.index,
            meta.voters,
            meta.learners,
            conf
        );
    }
}
