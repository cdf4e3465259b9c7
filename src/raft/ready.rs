//! The core's output batch and the order in which the caller must handle it.

use super::message::{Entry, HardState, Message, NodeId, SnapshotMeta};

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    /// The word INFO prints. SPEC knows three roles; a node campaigning
    /// without a leader is a candidate to the outside, in its pre-vote too.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// Volatile state worth reporting when it changes (role, known leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader_id: NodeId,
    pub term: u64,
}

/// How a leadership transfer started by `Node::transfer_leader` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// `target` leads now (this node heard from it as leader of a later term).
    Finished { target: NodeId },
    /// It did not happen within an election timeout, or another node took
    /// over; if this node still leads, it takes proposals again.
    Abandoned { target: NodeId },
}

/// A confirmed ReadIndex request: the read with context `ctx` may be answered
/// once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: u64,
}

/// Everything the core wants done since the last `advance`. The caller handles
/// the fields in this order, then calls `Node::advance`:
///
/// 1. install `snapshot` (if any), then persist `entries` (an entry whose index is
///    already in the log replaces that entry and everything after it) and `hard_state`;
/// 2. send `send_now` (the leader's AppendEntries may leave before its own sync,
///    Raft thesis §10.2.1);
/// 3. sync;
/// 4. send `send_after_sync` (votes and follower acknowledgements promise state
///    that must be on disk first; votes and vote requests promise only the
///    hard state, so a caller that syncs it before the entries may send them
///    once it is, without waiting for a log sync still running);
/// 5. apply `committed` in order;
/// 6. answer `read_states` once the applied index reaches each one's index, and
///    fail the reads in `dropped_reads` (the client may retry elsewhere).
#[derive(Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
    pub send_now: Vec<Message>,
    pub send_after_sync: Vec<Message>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// Contexts of reads that will never be confirmed, because this node stopped
    /// being the leader before a majority confirmed them.
    pub dropped_reads: Vec<u64>,
    /// Leadership transfers started on this node whose outcome became known
    /// (informational, like `soft_state`).
    pub transfer_outcomes: Vec<TransferOutcome>,
}

impl Ready {
    /// Whether handling this batch needs a sync before `send_after_sync`.
    pub fn must_sync(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }
}
