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
//!    entries are on my disk"), so they must not leave before the sync.
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
//!   is within `PROMOTE_LAG_ENTRIES` of the leader's, so a caller proposes
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

#[cfg(test)]
mod chaos_tests;
pub mod conf_change;
#[cfg(test)]
mod dropped_peers_tests;
mod election;
mod log;
pub use log::trailing_count;
mod membership;
#[cfg(test)]
mod membership_tests;
pub mod message;
mod node;
mod payload;
mod progress;
mod quorum;
mod read_index;
pub mod ready;
mod replication;
pub mod rng;
#[cfg(test)]
pub(crate) mod testnet;
mod transfer;
#[cfg(test)]
mod transfer_tests;

use std::collections::BTreeMap;

pub use conf_change::{ConfChange, ConfEntry};
pub use message::{
    Entry, EntryKind, HardState, Message, MessageBody, NodeId, Payload, SnapshotMeta,
    MAX_STORED_TERM, MAX_TERM, NO_NODE,
};
pub use payload::{PayloadArena, PayloadBuffer};
pub use ready::{ReadState, Ready, Role, SoftState, TransferOutcome};

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

/// Why a proposal or a read was refused; in every case nothing was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Not the leader; `leader` is the known leader or [`NO_NODE`].
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
    /// Not the leader; `leader` is the known leader or [`NO_NODE`].
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
    /// dropped it (see [`Node::ignore_dropped_peers`]): it could never catch up.
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

    /// Ignores every message from `ids` from now on: members that
    /// `--force-new-cluster` dropped. Such a node may come back with its old
    /// data dir, still counting itself and this node among the voters of the
    /// old configuration. Its log can be longer than ours or of later terms
    /// (it was in the majority this node was cut off from), so neither the
    /// election restriction nor a leader lease keeps it out: a vote request
    /// at a higher term would depose this leader, our vote could make it
    /// leader of the old configuration, and its AppendEntries would then
    /// overwrite our log. Nothing it says can be trusted to agree with our
    /// log, so it is not heard at all (etcd drops a removed member's
    /// messages at its transport for the same reason).
    pub fn ignore_dropped_peers(&mut self, ids: &[NodeId]) {
        self.dropped_peers = ids.iter().copied().filter(|id| *id != self.id).collect();
    }

    /// The members whose messages are ignored (see
    /// [`Node::ignore_dropped_peers`]).
    pub fn dropped_peers(&self) -> &[NodeId] {
        &self.dropped_peers
    }

    /// How many messages this node refused because no honest peer sends them
    /// in its state (another leader of its term, an acknowledgement or commit
    /// index beyond its log): each is logged; any at all means a bug or a
    /// stranger on the raft port.
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

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

    /// The voters of the configuration in force (the latest appended).
    pub fn voters(&self) -> &[NodeId] {
        &self.log.conf().voters
    }

    /// The target of the transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|t| t.target)
    }

    /// The metadata of a snapshot covering `index`: its term and the
    /// configuration in effect at `index` (not a later, possibly uncommitted
    /// one). Use it to write a snapshot before calling [`Node::compact`].
    ///
    /// `None` when this node does not know the configuration at `index`: a
    /// node that joined holds the entries before the one that added it, but
    /// the bootstrap configuration they were written under is in no entry. A
    /// snapshot there would name no members where every other node's names
    /// the founders, so the caller waits until the applied index passes a
    /// ConfChange entry (or a snapshot from the leader told it).
    ///
    /// # Panics
    ///
    /// If `index` is above the applied index or below the first index in memory - 1.
    pub fn snapshot_meta(&self, index: u64) -> Option<SnapshotMeta> {
        let meta = self.snapshot_meta_at(index);
        (!meta.voters.is_empty()).then_some(meta)
    }

    /// Starts a linearizable read; `ctx` comes back in a [`ReadState`] (or in
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

    /// The caller took a snapshot covering `meta.index`; entries up to
    /// `meta.index - trailing` are dropped from memory and returned (freeing
    /// a long prefix is slow enough that the caller may want to do it off its
    /// event loop). Followers that need a dropped entry are sent this snapshot.
    ///
    /// # Panics
    ///
    /// If `meta.index` is above the applied index, or its term or
    /// configuration disagrees with the log (build it with
    /// [`Node::snapshot_meta`]).
    /// How large a trailing margin below a snapshot at `index`, of at most
    /// `max_entries`, keeps at most `max_bytes` of payload in the log.
    pub fn trailing_within(&self, index: u64, max_entries: u64, max_bytes: u64) -> u64 {
        self.log.trailing_within(index, max_entries, max_bytes)
    }

    pub fn compact(&mut self, meta: SnapshotMeta, trailing: u64) -> Vec<Entry> {
        self.check_snapshot_conf(&meta);
        let dropped = self.log.compact(meta, trailing);
        self.debug_assert_invariants();
        dropped
    }

    /// The caller finished (or failed) sending a snapshot to `to`. Every
    /// InstallSnapshot handed out in `send_now` must be reported once: until
    /// then nothing else is sent to that follower.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.on_snapshot_reported(success);
        }
    }

    /// Whether stepping an InstallSnapshot for `meta`, sent in `term`, would
    /// replace this node's state (a `Ready::snapshot` follows). The caller must
    /// have the snapshot's bytes at hand before stepping such a message; one
    /// this returns false for is answered from the log and needs no bytes.
    pub fn would_install_snapshot(&self, term: u64, meta: &SnapshotMeta) -> bool {
        term >= self.term
            && meta.index > self.log.committed
            && !self.log.match_term(meta.index, meta.term)
    }

    /// Whether the snapshot at `index` that an InstallSnapshot for `to` named
    /// is still worth its bytes: this node leads, `to` still waits for that
    /// very snapshot (it did not catch up otherwise meanwhile, nor was it
    /// handed a newer one), and the log still holds the entries right after
    /// it, which `to` needs next once it holds the snapshot. A snapshot the log
    /// has moved past (a newer one compacted it) is useless to `to`: it
    /// would be sent the newest one right after installing it. A removed node
    /// is sent snapshots without a progress; only the log decides for it.
    pub fn snapshot_wanted(&self, to: NodeId, index: u64) -> bool {
        let waits = self
            .progress
            .get(&to)
            .is_none_or(|pr| pr.state == progress::ProgressState::Snapshot { pending: index });
        self.role == Role::Leader && waits && self.log.first_index() <= index.saturating_add(1)
    }

    /// The caller could not deliver to `to` (connection down): stop streaming to
    /// it optimistically and probe instead.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == progress::ProgressState::Replicate {
                pr.become_probe();
            }
        }
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

    /// See [`RaftConfig::max_apply_bytes`].
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
