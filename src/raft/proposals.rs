//! What a caller asks of the leader: append a command or a membership
//! change, start a linearizable read, hand leadership over, and the checks
//! a stopping or self-removing leader makes first. Apart from `mod.rs`,
//! which drives the node, because each is a refusal-checked entry point into
//! the module that does the work (`replication.rs`, `membership.rs`,
//! `read_index.rs`, `transfer.rs`).

use super::conf_change::ConfChange;
use super::message::{Entry, EntryKind, NodeId, Payload};
use super::ready::Role;
use super::{ConfChangeError, Node, ProposeError};

impl Node {
    /// Appends a client command to the leader's log; returns its (index, term).
    /// Nothing is sent yet: the AppendEntries for every proposal made before the
    /// next [`Node::ready`] leave together (group commit).
    pub fn propose(&mut self, data: impl Into<Payload>) -> Result<(u64, u64), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind: EntryKind::Normal,
            data: data.into(),
        });
        self.debug_assert_invariants();
        Ok((index, self.term))
    }

    /// Appends a membership change to the leader's log; returns its (index,
    /// term). The new configuration takes effect at once, on this node and on
    /// each follower as it appends the entry (thesis §4.1); it is committed,
    /// like any entry, when `index` is applied with `term`.
    ///
    /// One change at a time: refused with `ChangeInProgress` while an earlier
    /// change is uncommitted, and until this leader has committed an entry of
    /// its own term (the fix to the single-server algorithm in Ongaro's
    /// raft-dev post of 2015: otherwise two leaders' changes could give
    /// configurations with disjoint majorities).
    ///
    /// A learner is promoted by the leader itself once it has caught up (see
    /// `membership.rs`), so a caller normally proposes only AddLearner and
    /// Remove. A removed node is still sent the log until its removal commits,
    /// so it learns that it is out and stays quiet; then the leader stops
    /// replicating to it. A leader that removes itself keeps leading (without
    /// counting itself) until the removal commits, then steps down and sends
    /// TimeoutNow to the most up-to-date voter.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(u64, u64), ConfChangeError> {
        let assigned = self.propose_conf_change_inner(change);
        self.debug_assert_invariants();
        assigned
    }

    /// Whether this leader would accept `CLUSTER REMOVE id` as far as the
    /// configuration and the voters' reachability go (not the one-change-at-
    /// a-time rule): checked before a leader hands over to remove itself.
    /// `ChangeInProgress` when it cannot tell yet.
    pub fn check_remove(&self, id: NodeId) -> Result<(), ConfChangeError> {
        let next = self.log.conf().apply(&ConfChange::Remove { id })?;
        self.check_removal_quorum(id, &next.voters)
    }

    /// The voter a leader removing itself hands over to: the most up to date
    /// of the voters it heard from lately; None if it heard from none.
    pub fn removal_successor(&self) -> Option<NodeId> {
        self.removal_successor_inner()
    }

    /// The voter a leader that is stopping hands over to (with
    /// [`Node::transfer_leader`]): the most up to date of the voters it heard
    /// from lately for which `reachable` (the caller's view of its
    /// connections) holds. None if this node does not lead or no voter
    /// qualifies: it then stops without handing over.
    pub fn stop_successor(&self, reachable: impl Fn(NodeId) -> bool) -> Option<NodeId> {
        self.stop_successor_inner(reachable)
    }

    /// Starts handing leadership to voter `to` (thesis §3.10): new proposals
    /// and membership changes are refused with `TransferInProgress`, the
    /// target is brought up to date and sent TimeoutNow, and it campaigns at
    /// once, its vote requests marked so that voters in a leader lease answer
    /// them. The outcome comes back in `Ready::transfer_outcomes`: `Finished`
    /// once this node hears from `to` as the leader of a later term, or
    /// `Abandoned` if that has not happened within an election timeout (or
    /// another node took over); proposals are taken again once it is known.
    /// A transfer to this node itself finishes at once.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ConfChangeError> {
        let started = self.transfer_leader_inner(to);
        self.debug_assert_invariants();
        started
    }

    /// Starts a linearizable read; `ctx` comes back in a [`ReadState`](super::ReadState) (or in
    /// `Ready::dropped_reads` if this node stops being the leader first).
    /// Reads made before the next [`Node::ready`] share one confirmation round.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader_id,
            });
        }
        self.start_read(ctx);
        self.debug_assert_invariants();
        Ok(())
    }
}
