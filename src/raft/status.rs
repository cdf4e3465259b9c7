//! What a node shows of its state: [`Status`] for INFO and tests, and the
//! read-only accessors. Apart from the entry points that change the node, so
//! that what the shell can observe reads in one place.

use super::message::{NodeId, NO_NODE};
use super::ready::Role;
use super::Node;

/// A snapshot of the node's state for INFO and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub vote: NodeId,
    pub leader_id: NodeId,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// The configuration in effect (the latest in the log, committed or not).
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The index of the ConfChange entry that set `voters`/`learners`, 0 when
    /// they date from before the log in memory. The configuration is
    /// committed when `conf_index <= commit_index`.
    pub conf_index: u64,
    /// Leader only: (node, match index) for every node it replicates to, sorted
    /// by id: the members, and a removed node until its removal commits. The
    /// leader's own entry is its persisted index.
    pub progress: Vec<(NodeId, u64)>,
    /// The target of the leadership transfer this node started and whose
    /// outcome is not known yet, or [`NO_NODE`].
    pub transfer_target: NodeId,
}

impl Node {
    /// How many messages this node refused because no honest peer sends them
    /// in its state (another leader of its term, an acknowledgement or commit
    /// index beyond its log): each is logged; any at all means a bug or a
    /// stranger on the raft port.
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

    /// The voters of the configuration in force (the latest appended).
    pub fn voters(&self) -> &[NodeId] {
        &self.log.conf().voters
    }

    /// The target of the transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|t| t.target)
    }

    pub fn status(&self) -> Status {
        let mut progress: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .map(|(id, pr)| (*id, pr.match_index))
            .collect();
        if self.role == Role::Leader {
            progress.push((self.id, self.log.persisted));
            progress.sort_unstable();
        }
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader_id: self.leader_id,
            commit_index: self.log.committed,
            applied_index: self.log.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot.index,
            voters: self.log.conf().voters.clone(),
            learners: self.log.conf().learners.clone(),
            conf_index: self.log.conf_index(),
            progress,
            transfer_target: self.transfer_target().unwrap_or(NO_NODE),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// See [`RaftConfig::max_apply_bytes`](super::RaftConfig::max_apply_bytes).
    pub fn max_apply_bytes(&self) -> u64 {
        self.config.max_apply_bytes
    }

    /// The highest index known to be committed (not durable: it restarts at
    /// the snapshot's index).
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }

    /// The index of the last entry in the log (persisted or not).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The term of the last entry in the log.
    pub fn last_term(&self) -> u64 {
        self.log.last_term()
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn leader_id(&self) -> NodeId {
        self.leader_id
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
}
