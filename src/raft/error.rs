//! Why the leader refused a proposal, a read, a membership change or a
//! leadership transfer. Apart because the shell matches on these and reads
//! them without the core's internals.

use super::message::NodeId;

/// Why a proposal or a read was refused; in every case nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Not the leader; `leader` is the known leader or [`NO_NODE`](super::NO_NODE).
    NotLeader { leader: NodeId },
    /// A leadership transfer is in progress; writes wait until it ends.
    TransferInProgress,
    /// The leader has not yet committed an entry of its term (reads only).
    /// Not returned at present: such reads are queued until that commit.
    NotReady,
}

/// Why a membership change or a leadership transfer was refused; nothing was
/// appended or started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// Not the leader; `leader` is the known leader or [`NO_NODE`](super::NO_NODE).
    NotLeader { leader: NodeId },
    /// A leadership transfer is in progress.
    TransferInProgress,
    /// A membership change is not committed yet, or this leader has not yet
    /// committed an entry of its own term (so an earlier leader's change may
    /// still be pending), or, for a removal, a leader in its first
    /// check-quorum round has not yet heard from enough voters to tell
    /// whether they are up. Retry later.
    ChangeInProgress,
    /// AddLearner of a voter or learner.
    AlreadyMember { id: NodeId },
    /// Promote of a voter.
    AlreadyVoter { id: NodeId },
    /// Promote, Remove or transfer naming a node that is not a member (for
    /// Promote: not a learner), or id 0.
    UnknownNode { id: NodeId },
    /// Removing the only voter: nothing could ever commit again.
    LastVoter { id: NodeId },
    /// Transfer to a learner: it cannot be elected.
    NotVoter { id: NodeId },
    /// AddLearner of a node this one ignores since `--force-new-cluster`
    /// dropped it (see
    /// [`Node::ignore_dropped_peers`](super::Node::ignore_dropped_peers)): it
    /// could never catch up.
    Dropped { id: NodeId },
    /// Removing voter `id` would leave `voters` voters of which fewer than a
    /// majority (`reachable`, this leader included) were heard from lately.
    NoQuorumAfterRemoval {
        id: NodeId,
        voters: usize,
        reachable: usize,
    },
}

impl std::fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfChangeError::NotLeader { leader } => write!(f, "not the leader (leader {leader})"),
            ConfChangeError::TransferInProgress => write!(f, "leadership transfer in progress"),
            ConfChangeError::ChangeInProgress => write!(f, "membership change in progress"),
            ConfChangeError::AlreadyMember { id } => write!(f, "node {id} already a member"),
            ConfChangeError::AlreadyVoter { id } => write!(f, "node {id} already a voter"),
            ConfChangeError::UnknownNode { id } => write!(f, "unknown node {id}"),
            ConfChangeError::LastVoter { id } => write!(f, "node {id} is the last voter"),
            ConfChangeError::NotVoter { id } => write!(f, "node {id} is a learner"),
            ConfChangeError::Dropped { id } => write!(
                f,
                "node {id} was dropped by --force-new-cluster; add the new node under another id"
            ),
            ConfChangeError::NoQuorumAfterRemoval {
                id,
                voters,
                reachable,
            } => write!(
                f,
                "removing node {id} would leave {voters} voters of which only {reachable} are reachable, no quorum"
            ),
        }
    }
}

impl std::error::Error for ConfChangeError {}
