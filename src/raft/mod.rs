//! The Raft consensus core: a deterministic state machine with no IO.
//!
//! A [`Node`] changes only when its caller feeds it: [`Node::tick`] (one logical
//! tick), [`Node::step`] (a message from a peer), [`Node::propose`] (a client
//! command) and [`Node::read_index`] (a linearizable read). What it wants done in
//! return is collected into a [`Ready`] batch. Time is counted in ticks and the
//! only randomness (election jitter) comes from the seed given to [`Node::new`],
//! so a whole cluster can be replayed from one seed.
//!
//! ```text
//! loop {
//!     node.tick() / node.step(msg) / node.propose(cmd) / node.read_index(ctx)
//!     if node.has_ready() {
//!         let rd = node.ready();
//!         // handle rd in the order below
//!         node.advance();
//!     }
//! }
//! ```
//!
//! # The persistence contract
//!
//! Raft is safe only if what a node promises to others is on its disk first.
//! The caller handles each [`Ready`] in this order (etcd `doc.go`):
//!
//! 1. If `snapshot` is set, install it: the log now starts after `snapshot.index`
//!    and the state machine is the snapshot's (the caller received its bytes
//!    beside the InstallSnapshot message).
//! 2. Write `entries`. An entry whose index is already in the log replaces that
//!    entry and everything after it (a follower's conflicting suffix is cut).
//!    Write `hard_state` if set: it is set whenever the term or vote changed.
//! 3. Send `send_now`. These are the leader's AppendEntries, heartbeats,
//!    InstallSnapshot and TimeoutNow, and heartbeat responses. They promise
//!    nothing about this node's disk, so they may leave before the sync (thesis
//!    §10.2.1: the leader writes its log in parallel with replicating it, and
//!    counts itself toward a majority only for what it has synced).
//! 4. Sync once (`Ready::must_sync` says whether anything needs it).
//! 5. Send `send_after_sync`: vote requests, votes and AppendEntries responses.
//!    Each promises durable state (a vote, the candidate's own vote, or "these
//!    entries are on my disk"), so they must not leave before the sync. Votes
//!    and vote requests promise only `hard_state`: a caller that syncs it
//!    before the entries (as `replica` does) may send them once it is.
//! 6. Apply `committed` to the state machine, in order. They are always entries
//!    handed out in this or an earlier `Ready`, so step 4 made them durable.
//! 7. Answer each `read_states` entry once the applied index reaches its
//!    `index`; fail the reads in `dropped_reads`.
//! 8. Call [`Node::advance`]: the entries of this `Ready` are now persisted (the
//!    leader may count itself for them, which can commit more) and its committed
//!    entries applied. `soft_state` (role, leader, term) and `transfer_outcomes`
//!    are informational.
//!
//! For each InstallSnapshot in `send_now` the caller streams the snapshot's bytes
//! beside the message and then calls [`Node::report_snapshot`] (success or
//! failure); the follower gets nothing else until then.
//!
//! Calling [`Node::ready`] again before `advance` panics. `tick`, `step`,
//! `propose` and `read_index` may be called between `ready` and `advance`; what
//! they produce goes into the next `Ready`.
//!
//! # Membership and leadership transfer
//!
//! Membership changes are single-server changes (thesis §4.1–4.2; why not
//! joint consensus: `membership.rs`), each an [`EntryKind::ConfChange`] entry
//! whose payload ([`conf_change`]) carries the change and the whole resulting
//! configuration. A configuration is in force on a node as soon as the entry
//! is in its log and is undone if the entry is truncated; [`Status`] shows it,
//! with `conf_index <= commit_index` once it is committed.
//!
//! - [`Node::propose_conf_change`]: `AddLearner` (with an opaque context, the
//!   shell's place for the raft address), `Promote`, `Remove`; one uncommitted
//!   change at a time. The leader promotes a learner by itself once its log
//!   is within `PROMOTE_LAG_ENTRIES` of the leader's and it was heard from
//!   in this election timeout or the one before, so a caller proposes
//!   only AddLearner and Remove. The change is committed (answer the client)
//!   when its (index, term) is applied, like a write.
//! - Only voters campaign. A node started with no configuration (joining,
//!   `RaftConfig::voters` empty) waits for a leader to send it the log or a
//!   snapshot; a removed node stays quiet once it knows its removal committed.
//! - [`Node::transfer_leader`], with the outcome in `Ready::transfer_outcomes`.
//! - Snapshots carry the configuration in force at their index: build their
//!   metadata with [`Node::snapshot_meta`]; [`Node::compact`] checks it.
//!   `Restored::snapshot` and InstallSnapshot restore it; entries after the
//!   snapshot (restored or received) change it again.
//!
//! # Memory
//!
//! The whole log since the last compaction stays in memory; the core never reads
//! storage after startup. [`Node::compact`] drops entries once the caller has a
//! snapshot, and that snapshot is what lagging followers are sent.
//!
//! # Assertions
//!
//! A broken invariant panics with the values involved: an illegal role
//! transition, a commit index beyond the log, truncating a committed entry, two
//! leaders in one term. In debug builds every `tick` and `step` ends by checking
//! the node's invariants. Messages a peer could legitimately send in any order
//! (stale, duplicated, from an older term) never panic.
//!
//! # Where things are
//!
//! This file holds the settings, the [`Node`] state and the driving loop's
//! calls (`new`, `tick`, `step`, `ready`/`advance`). The caller's other
//! entry points are grouped by what they touch: `proposals.rs` (writes,
//! membership changes, reads, leadership transfer), `snapshots.rs`
//! (snapshot metadata, compaction, delivery reports), `status.rs` (what the
//! node shows), `dropped_peers.rs` (the `--force-new-cluster` filter), and
//! `error.rs` (their refusals). The rules themselves are in `node.rs` (roles,
//! terms, routing, the `Ready` cycle), `election.rs`, `replication.rs`,
//! `membership.rs`, `read_index.rs` and `transfer.rs`.

#[cfg(test)]
mod chaos_tests;
pub mod conf_change;
mod dropped_peers;
#[cfg(test)]
mod dropped_peers_tests;
mod election;
mod error;
mod log;
pub use log::trailing_count;
mod membership;
#[cfg(test)]
mod membership_removal_tests;
#[cfg(test)]
mod membership_tests;
pub mod message;
mod node;
mod payload;
mod progress;
mod proposals;
mod quorum;
mod read_index;
pub mod ready;
mod replication;
pub mod rng;
mod snapshots;
mod status;
#[cfg(test)]
pub(crate) mod testnet;
mod transfer;
#[cfg(test)]
mod transfer_tests;

use std::collections::BTreeMap;

/// Makes every node of this process check the core's invariants after
/// each step and tick in a release build too, as debug builds and unit
/// tests always do. For the simulation, which runs in the release test
/// command: a node that breaks one panics with the offending values. Not
/// for a serving node (the checks cost a pass over the leader's progress
/// each step).
pub fn check_invariants_in_release() {
    node::INVARIANTS_IN_RELEASE.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub use conf_change::{ConfChange, ConfEntry};
pub use error::{ConfChangeError, ProposeError};
pub use message::{
    Entry, EntryKind, HardState, Message, MessageBody, NodeId, Payload, SnapshotMeta,
    MAX_STORED_TERM, MAX_TERM, NO_NODE,
};
pub use payload::{PayloadArena, PayloadBuffer};
pub use ready::{ReadState, Ready, Role, SoftState, TransferOutcome};
pub use status::Status;

use self::log::RaftLog;
use self::progress::Progress;
use self::quorum::Membership;
use self::read_index::ReadQueue;
use self::rng::Rng;
use self::transfer::Transfer;

/// Static settings of a node's core, all in ticks.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub id: NodeId,
    /// The bootstrap configuration: the one in effect before the first
    /// ConfChange entry, used when the restored snapshot names no voters.
    /// Every founding member must be given the same one; a node that joins a
    /// running cluster is given none (it learns the configuration from the log
    /// or a snapshot, and never campaigns while it is not a voter).
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Base election timeout; each timeout is drawn from [t, 2t).
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// AppendEntries in flight per follower in the replicate state.
    pub max_inflight_msgs: usize,
    /// Payload bytes in flight per follower in the replicate state (one
    /// AppendEntries of any size is always let through).
    pub max_inflight_bytes: u64,
    /// Payload bytes per AppendEntries (at least one entry is always sent).
    pub max_msg_bytes: u64,
    /// Payload bytes of committed entries per `Ready` (at least one entry is
    /// always handed out): a caller that applies one `Ready` per step bounds
    /// the step even when the commit index jumps by hundreds of megabytes.
    pub max_apply_bytes: u64,
    /// Whether an acknowledged entry survives its follower's crash (`fsync =
    /// always`). When it may not, a follower that rejects a probe at an index
    /// it acknowledged is taken to have lost its log's tail, and the leader
    /// probes lower; otherwise such a rejection is a stale message and ignored.
    pub acks_are_durable: bool,
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

/// What the outstanding `Ready` handed out, settled by `advance`.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    last_entry: Option<u64>,
    applying: u64,
}

/// One Raft node's consensus state. See the module docs for how to drive it.
pub struct Node {
    id: NodeId,
    config: RaftConfig,
    /// The bootstrap configuration (see [`RaftConfig::voters`]).
    bootstrap: Membership,
    /// Durable: the current term and the vote cast in it.
    term: u64,
    vote: NodeId,
    role: Role,
    leader_id: NodeId,
    log: RaftLog,
    rng: Rng,
    /// Ticks since the last reset: since hearing from the leader (follower),
    /// since campaigning (candidate), since the last check-quorum (leader).
    election_elapsed: u32,
    /// Drawn from [election_ticks, 2 * election_ticks) at every reset.
    randomized_election_ticks: u32,
    heartbeat_elapsed: u32,
    /// (Pre-)candidate: the answers so far, by voter.
    votes: BTreeMap<NodeId, bool>,
    /// Candidate: its own vote is a majority; it leads once that vote is synced.
    elected_on_own_vote: bool,
    /// Leader: every other member's progress; empty otherwise.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: reads waiting for their confirmation round.
    reads: ReadQueue,
    msgs_now: Vec<Message>,
    msgs_after_sync: Vec<Message>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    /// The leadership transfer this node started, until its outcome is known.
    transfer: Option<Transfer>,
    transfer_outcomes: Vec<TransferOutcome>,
    /// What the last `Ready` reported, to report only changes.
    last_soft: SoftState,
    last_hard: HardState,
    outstanding: Option<Outstanding>,
    /// Messages refused because no honest peer sends them in this state.
    refused_messages: u64,
    /// Members dropped by `--force-new-cluster`, whose messages are ignored.
    dropped_peers: Vec<NodeId>,
}

impl Node {
    /// A node restarted from `restored`; `seed` seeds its election jitter.
    ///
    /// The commit and applied indexes start at the snapshot's index (the commit
    /// index is not durable; the leader teaches it again). Membership comes from
    /// the snapshot when it names voters, else from `config`.
    ///
    /// # Panics
    ///
    /// If the config is unusable (zero ticks, election not longer than the
    /// heartbeat, id 0, an empty in-flight window) or the restored entries do
    /// not continue the snapshot.
    pub fn new(config: RaftConfig, restored: Restored, seed: u64) -> Node {
        node::new_node(config, restored, seed)
    }

    /// Advances logical time by one tick: followers and candidates may start an
    /// election, the leader sends heartbeats and checks its quorum.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.tick_transfer();
        self.debug_assert_invariants();
    }

    /// Handles one message from a peer. Messages addressed to another node, or
    /// claiming to come from this node or from [`NO_NODE`], are ignored.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.id || msg.from == self.id || msg.from == NO_NODE {
            return;
        }
        if self.dropped_peers.contains(&msg.from) {
            return;
        }
        if self.step_term(&msg) {
            self.step_role(msg);
        }
        self.resolve_transfer();
        self.debug_assert_invariants();
    }

    /// Whether [`Node::ready`] would return anything.
    pub fn has_ready(&self) -> bool {
        self.has_ready_inner()
    }

    /// Takes the output batch; the caller must handle it (see the module docs)
    /// and call `advance` before calling `ready` again.
    ///
    /// # Panics
    ///
    /// If the previous `Ready` was not advanced.
    pub fn ready(&mut self) -> Ready {
        self.ready_inner()
    }

    /// The last `Ready` was handled: its entries are synced and its committed
    /// entries applied.
    ///
    /// # Panics
    ///
    /// If there is no outstanding `Ready`.
    pub fn advance(&mut self) {
        self.advance_inner(true);
        self.debug_assert_invariants();
    }

    /// Like [`Node::advance`], for a caller that syncs in the background: the
    /// last `Ready` was handled (its hard state is durable, its committed
    /// entries applied, its `send_now` sent) but its entries are only written.
    /// Their `send_after_sync` messages wait with the caller, and the sync is
    /// reported with [`Node::persisted`] when it finishes. Until then the
    /// leader does not count itself toward a majority for those entries.
    pub fn advance_written(&mut self) {
        self.advance_inner(false);
        self.debug_assert_invariants();
    }

    /// Entries up to and including `index`, whose entry had `term` when the
    /// sync began, are on disk. Ignored if that entry was replaced since (a
    /// truncating append), or compacted, or is already known persisted.
    pub fn persisted(&mut self, index: u64, term: u64) {
        self.persisted_inner(index, term);
        self.debug_assert_invariants();
    }
}
