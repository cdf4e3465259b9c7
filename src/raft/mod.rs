//! The Raft consensus core: a deterministic state machine with no IO.
//!
//! (Helper A: replace this stub with the real core; keep the public API below.)

pub mod message;
pub mod ready;
pub mod rng;

pub use message::{
    Entry, EntryKind, HardState, Message, MessageBody, NodeId, SnapshotMeta, NO_NODE,
};
pub use ready::{ReadState, Ready, Role, SoftState};

/// Static settings of a node's core, all in ticks.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// The bootstrap voters (used only when the restored state has no membership).
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Base election timeout; each timeout is drawn from [t, 2t).
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// AppendEntries in flight per follower in the replicate state.
    pub max_inflight_msgs: usize,
    /// Payload bytes per AppendEntries (at least one entry is always sent).
    pub max_msg_bytes: u64,
}

/// The durable state a node restarts from.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// The snapshot the log continues from (index 0 when there is none).
    pub snapshot: SnapshotMeta,
    /// Entries `snapshot.index + 1 ..`, contiguous.
    pub entries: Vec<Entry>,
}

/// Why a proposal or a read was refused; in every case nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Not the leader; `leader` is the known leader or [`NO_NODE`].
    NotLeader { leader: NodeId },
    /// A leadership transfer is in progress; writes wait until it ends.
    TransferInProgress,
    /// The leader has not yet committed an entry of its term (reads only).
    NotReady,
}

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
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Leader only: (peer, match index), sorted by id.
    pub progress: Vec<(NodeId, u64)>,
}

pub struct Node {
    _private: (),
}

impl Node {
    /// A node restarted from `restored`; `seed` seeds its election jitter.
    pub fn new(_config: RaftConfig, _restored: Restored, _seed: u64) -> Node {
        todo!()
    }
    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        todo!()
    }
    /// Handles one message from a peer (messages for another node are ignored).
    pub fn step(&mut self, _msg: Message) {
        todo!()
    }
    /// Appends a client command to the leader's log; returns its (index, term).
    pub fn propose(&mut self, _data: Vec<u8>) -> Result<(u64, u64), ProposeError> {
        todo!()
    }
    /// Starts a linearizable read; `ctx` comes back in a [`ReadState`].
    pub fn read_index(&mut self, _ctx: u64) -> Result<(), ProposeError> {
        todo!()
    }
    pub fn has_ready(&self) -> bool {
        todo!()
    }
    /// Takes the output batch; the caller must handle it and call `advance`
    /// before calling `ready` again.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }
    /// The last `Ready` was handled: its entries are synced and its committed
    /// entries applied.
    pub fn advance(&mut self) {
        todo!()
    }
    /// The caller took a snapshot covering `meta.index`; entries up to
    /// `meta.index - trailing` may be dropped from memory.
    pub fn compact(&mut self, _meta: SnapshotMeta, _trailing: u64) {
        todo!()
    }
    /// The caller finished (or failed) sending a snapshot to `to`.
    pub fn report_snapshot(&mut self, _to: NodeId, _success: bool) {
        todo!()
    }
    /// The caller could not deliver to `to` (connection down).
    pub fn report_unreachable(&mut self, _to: NodeId) {
        todo!()
    }
    pub fn status(&self) -> Status {
        todo!()
    }
    pub fn role(&self) -> Role {
        todo!()
    }
    pub fn term(&self) -> u64 {
        todo!()
    }
    pub fn leader_id(&self) -> NodeId {
        todo!()
    }
    pub fn id(&self) -> NodeId {
        todo!()
    }
}
