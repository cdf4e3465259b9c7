//! Plain data exchanged between the core and its caller: log entries, the hard
//! state, and the messages nodes send each other. No behaviour lives here.

pub use super::payload::Payload;
use std::fmt;

/// A node's id in the cluster. Ids start at 1; [`NO_NODE`] means "none".
pub type NodeId = u64;

/// The absence of a node: no vote cast, no leader known.
pub const NO_NODE: NodeId = 0;

/// The highest term a node takes from a peer or its own stable file. No
/// cluster holds 2^62 elections, and the bound leaves the core room to count
/// terms up without wrapping: a term of `u64::MAX` (a stranger's message on
/// the raft port, a crafted stable file) would have wrapped its next
/// campaign to term 0.
pub const MAX_TERM: u64 = 1 << 62;

/// The highest term a stable file may hold. Higher than [`MAX_TERM`]: a node
/// counts its own term up from the highest it took, and must still start
/// from what it wrote; and as far from wrapping.
pub const MAX_STORED_TERM: u64 = 1 << 63;

/// What an entry's payload means to the layers above the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A client command, opaque to the core.
    Normal = 0,
    /// The empty entry a new leader appends so it can commit in its own term.
    Noop = 1,
    /// A membership change; the payload is a [`super::conf_change::ConfEntry`].
    ConfChange = 2,
}

impl EntryKind {
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One record of the replicated log.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    pub data: Payload,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}:{:?}({}B)",
            self.index,
            self.term,
            self.kind,
            self.data.len()
        )
    }
}

/// What a node must have on disk before it answers anyone: its current term and
/// the vote it cast in that term. The commit index is not part of it; it is
/// learned again from the leader after a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: NodeId,
}

/// What a snapshot covers: the last included entry and the membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// A message between two nodes. `term` is the sender's current term, except for
/// a pre-vote request, where it is the term the sender would campaign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A (pre-)candidate asks for a vote; `last_index`/`last_term` describe its log.
    /// `transfer` marks a campaign started by TimeoutNow: the leader itself
    /// asked for it, so voters answer even inside a leader lease.
    RequestVote {
        pre_vote: bool,
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// AppendEntries: `entries` follow the entry at `prev_index`/`prev_term`.
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// On success `index` is the follower's new match index. On rejection `index`
    /// is the rejected `prev_index`, and `hint_index`/`hint_term` point the leader
    /// at where the logs may agree (the follower's last index, or the first index
    /// of the conflicting term), so a far-behind follower is found in few round trips.
    AppendResponse {
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    },
    /// Leader liveness and commit propagation. `read_round` confirms leadership
    /// for the ReadIndex requests of that round.
    Heartbeat {
        commit: u64,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// Leadership transfer: start an election now, ignoring the timeout.
    TimeoutNow,
    /// The leader's log no longer holds what the follower needs: install this
    /// snapshot. The snapshot's bytes travel beside the message (the caller
    /// streams them); the core sees only the metadata.
    InstallSnapshot {
        meta: SnapshotMeta,
    },
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} t{} ", self.from, self.to, self.term)?;
        match &self.body {
            MessageBody::RequestVote {
                pre_vote,
                last_index,
                last_term,
                transfer,
            } => write!(
                f,
                "{}{} last={}/{}",
                if *pre_vote { "PreVote" } else { "Vote" },
                if *transfer { "(transfer)" } else { "" },
                last_index,
                last_term
            ),
            MessageBody::RequestVoteResponse { pre_vote, granted } => write!(
                f,
                "{}Resp granted={}",
                if *pre_vote { "PreVote" } else { "Vote" },
                granted
            ),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => write!(
                f,
                "App prev={}/{} n={} commit={}",
                prev_index,
                prev_term,
                entries.len(),
                commit
            ),
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => write!(
                f,
                "AppResp ok={} index={} hint={}/{}",
                success, index, hint_index, hint_term
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                write!(f, "Heartbeat commit={} round={}", commit, read_round)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                write!(f, "HeartbeatResp round={}", read_round)
            }
            MessageBody::TimeoutNow => write!(f, "TimeoutNow"),
            MessageBody::InstallSnapshot { meta } => {
                write!(f, "Snapshot {}/{}", meta.index, meta.term)
            }
        }
    }
}
