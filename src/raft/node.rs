//! Term handling, role transitions, ticks, message routing and the
//! `ready`/`advance` cycle. Elections live in `election.rs`, the log traffic in
//! `replication.rs`, reads in `read_index.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::election::Campaign;
use super::log::RaftLog;
use super::membership::Suffrage;
use super::message::{
    Entry, EntryKind, HardState, Message, MessageBody, NodeId, SnapshotMeta, NO_NODE,
};
use super::quorum::Membership;
use super::read_index::ReadQueue;
use super::ready::{Ready, Role, SoftState};
use super::rng::Rng;
use super::{Node, Outstanding, RaftConfig, Restored};

/// Whether a release build checks the core's invariants too (see
/// [`super::check_invariants_in_release`]).
pub(super) static INVARIANTS_IN_RELEASE: AtomicBool = AtomicBool::new(false);

pub(super) fn new_node(config: RaftConfig, restored: Restored, seed: u64) -> Node {
    assert_ne!(config.id, NO_NODE, "node id 0 is reserved for NO_NODE");
    assert!(
        config.heartbeat_ticks > 0 && config.election_ticks > config.heartbeat_ticks,
        "need 0 < heartbeat_ticks ({}) < election_ticks ({})",
        config.heartbeat_ticks,
        config.election_ticks
    );
    assert!(
        config.max_inflight_msgs > 0,
        "max_inflight_msgs must be positive"
    );
    let Restored {
        hard_state,
        snapshot,
        entries,
    } = restored;
    let bootstrap = Membership::new(&config.voters, &config.learners);
    let conf_base = conf_of_snapshot(&snapshot, &bootstrap);
    let log = RaftLog::restore(snapshot, conf_base, entries);
    // An entry of term T on disk with a hard state below T means the hard state
    // write was lost in a crash while the entries' survived. This node never
    // sent a vote in T (votes leave only after the sync that carries the hard
    // state), so taking T with no vote is safe.
    let (term, vote) = if hard_state.term >= log.last_term() {
        (hard_state.term, hard_state.vote)
    } else {
        (log.last_term(), NO_NODE)
    };
    let mut node = Node {
        id: config.id,
        bootstrap,
        term,
        vote,
        role: Role::Follower,
        leader_id: NO_NODE,
        log,
        rng: Rng::new(seed),
        election_elapsed: 0,
        randomized_election_ticks: 0,
        heartbeat_elapsed: 0,
        votes: BTreeMap::new(),
        progress: BTreeMap::new(),
        reads: ReadQueue::default(),
        msgs_now: Vec::new(),
        msgs_after_sync: Vec::new(),
        read_states: Vec::new(),
        dropped_reads: Vec::new(),
        transfer: None,
        transfer_outcomes: Vec::new(),
        elected_on_own_vote: false,
        last_soft: SoftState {
            role: Role::Follower,
            leader_id: NO_NODE,
            term,
        },
        last_hard: hard_state,
        outstanding: None,
        refused_messages: 0,
        dropped_peers: Vec::new(),
        config,
    };
    node.reset_timers();
    node.debug_assert_invariants();
    node
}

/// The configuration a snapshot says was in effect at its index. A snapshot
/// naming no voters was taken before any ConfChange entry (every change
/// leaves at least one voter): the bootstrap configuration was in effect.
pub(super) fn conf_of_snapshot(snapshot: &SnapshotMeta, bootstrap: &Membership) -> Membership {
    if snapshot.voters.is_empty() {
        bootstrap.clone()
    } else {
        Membership::new(&snapshot.voters, &snapshot.learners)
    }
}

impl Node {
    pub(super) fn reset_timers(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = u64::from(self.config.election_ticks);
        // The range fits u32: it is below 2 * election_ticks.
        self.randomized_election_ticks = self.rng.range(base, 2 * base) as u32;
    }

    /// Legal from every role. A higher term forgets the vote of the old one.
    pub(super) fn become_follower(&mut self, term: u64, leader: NodeId) {
        assert!(
            term >= self.term,
            "invalid transition [{:?} -> follower]: term {} below current {}",
            self.role,
            term,
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        if self.role == Role::Leader {
            self.progress.clear();
            // Reads not yet confirmed can no longer be: another leader may have
            // committed writes this node never saw.
            let dropped = self.reads.drain_all();
            self.dropped_reads.extend(dropped);
            self.reads = ReadQueue::default();
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.elected_on_own_vote = false;
        self.reset_timers();
    }

    /// Pre-vote (thesis §9.6): ask whether an election could be won before
    /// disturbing anyone's term.
    pub(super) fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "invalid transition [leader -> pre-candidate] in term {}",
            self.term
        );
        self.role = Role::PreCandidate;
        self.leader_id = NO_NODE;
        self.votes.clear();
        self.elected_on_own_vote = false;
        self.reset_timers();
    }

    pub(super) fn become_candidate(&mut self) {
        assert_ne!(
            self.role,
            Role::Leader,
            "invalid transition [leader -> candidate] in term {}",
            self.term
        );
        self.term += 1;
        self.vote = self.id;
        self.role = Role::Candidate;
        self.leader_id = NO_NODE;
        self.votes.clear();
        self.elected_on_own_vote = false;
        self.reset_timers();
    }

    /// Only a candidate that won its election becomes leader. It appends a Noop
    /// of its term at once: entries of earlier terms are committed only
    /// indirectly, through an entry of the current term (Raft §5.4.2).
    pub(super) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "invalid transition [{:?} -> leader] in term {}",
            self.role,
            self.term
        );
        self.role = Role::Leader;
        self.leader_id = self.id;
        self.votes.clear();
        self.reset_timers();
        let next = self.log.last_index() + 1;
        let fresh = self.new_progress(next);
        self.progress = self
            .replication_targets()
            .into_iter()
            .map(|id| (id, fresh.clone()))
            .collect();
        self.reads = ReadQueue::default();
        // A transfer started in an earlier term of ours is moot now.
        self.abandon_transfer();
        self.log.append(Entry {
            index: next,
            term: self.term,
            kind: EntryKind::Noop,
            data: super::message::Payload::default(),
        });
    }

    /// Applies the term rules common to every role (Raft §5.1). Returns whether
    /// the message should be handled further.
    pub(super) fn step_term(&mut self, msg: &Message) -> bool {
        use MessageBody::*;
        if msg.term > self.term {
            match msg.body {
                RequestVote {
                    pre_vote,
                    transfer,
                    last_index,
                    last_term,
                } => {
                    // Leader lease (thesis §4.2.3): while this node hears from a
                    // leader it ignores candidates, so a node that was partitioned
                    // away and comes back with a high term cannot depose a working
                    // leader. Its term is not bumped either. A campaign the leader
                    // itself started by TimeoutNow is the exception (§3.10).
                    if self.in_leader_lease() && !transfer {
                        // A removed node's pre-vote carries a term above the
                        // leader's, so this is where the leader meets it.
                        if pre_vote && self.role == Role::Leader {
                            self.tell_removed_node(msg.from, last_index, last_term);
                        }
                        return false;
                    }
                    if !pre_vote {
                        self.become_follower(msg.term, NO_NODE);
                    }
                }
                // A granted pre-vote carries the term the candidate asked about,
                // which nobody has entered yet.
                RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                Append { .. } | Heartbeat { .. } | InstallSnapshot { .. } => {
                    self.become_follower(msg.term, msg.from)
                }
                _ => self.become_follower(msg.term, NO_NODE),
            }
            return true;
        }
        if msg.term < self.term {
            self.answer_stale(msg);
            return false;
        }
        true
    }

    /// A message from an older term is ignored, except that a stale leader is
    /// told the current term so it steps down. Without this, a node whose term
    /// grew while it was partitioned could never rejoin when check-quorum keeps
    /// the others from adopting its term through its vote requests, and the old
    /// leader would keep sending in vain. A stale pre-candidate gets an explicit
    /// rejection so it does not wait for a timeout (etcd does both).
    fn answer_stale(&mut self, msg: &Message) {
        match msg.body {
            MessageBody::Append { .. } => self.send(
                msg.from,
                MessageBody::AppendResponse {
                    success: false,
                    index: 0,
                    hint_index: 0,
                    hint_term: 0,
                },
            ),
            MessageBody::Heartbeat { .. } => {
                self.send(msg.from, MessageBody::HeartbeatResponse { read_round: 0 })
            }
            MessageBody::RequestVote { pre_vote: true, .. } => self.send(
                msg.from,
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: false,
                },
            ),
            _ => {}
        }
    }

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader_id != NO_NODE
            && self.election_elapsed < self.config.election_ticks
    }

    /// Dispatches a message of the current term (or a pre-vote message) by role.
    pub(super) fn step_role(&mut self, msg: Message) {
        if let MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            ..
        } = msg.body
        {
            if pre_vote && self.role == Role::Leader {
                self.tell_removed_node(msg.from, last_index, last_term);
            }
            self.handle_vote_request(msg.from, msg.term, pre_vote, last_index, last_term);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(msg),
            Role::Candidate | Role::PreCandidate => self.step_candidate(msg),
            Role::Follower => self.step_follower(msg),
        }
    }

    pub(super) fn step_follower(&mut self, msg: Message) {
        let from = msg.from;
        match msg.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.heard_from_leader(from);
                self.handle_append(from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.heard_from_leader(from);
                self.handle_heartbeat(from, commit, read_round);
            }
            MessageBody::InstallSnapshot { meta } => {
                self.heard_from_leader(from);
                self.handle_snapshot(from, meta);
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            // Responses reach a follower only late, from when it had another role.
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed = 0;
        self.leader_id = from;
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed < self.randomized_election_ticks {
            return;
        }
        match self.suffrage() {
            Suffrage::Voter if !self.config.pre_vote => self.campaign(Campaign::Election),
            Suffrage::Voter | Suffrage::Removing => self.campaign(Campaign::PreVote),
            Suffrage::None => {}
        }
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            // The round ends without check-quorum too: who was heard from
            // lately also decides removals and promotions.
            let quorum_active = self.quorum_recently_active();
            if self.config.check_quorum && !quorum_active {
                // Step down rather than serve stale reads and accept writes that
                // can never commit while partitioned from the majority.
                self.become_follower(self.term, NO_NODE);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.maybe_promote_learner();
    }

    /// Whether a majority of voters (this node included) was heard from since
    /// the last check; starts a new check period.
    fn quorum_recently_active(&mut self) -> bool {
        let active = self
            .log
            .conf()
            .voters
            .iter()
            .filter(|id| **id == self.id || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        for pr in self.progress.values_mut() {
            pr.active_last_round = pr.recent_active;
            pr.recent_active = false;
            pr.round_ended = true;
        }
        active >= self.log.conf().majority()
    }

    /// Queues a message in the current term.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    /// The one routing point between "may leave now" and "only after the sync".
    pub(super) fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        let after_sync = match body {
            // A vote promises not to vote for anyone else in this term; if it left
            // before the hard state was synced, a crash and restart could vote
            // again (thesis §3.8). A vote request implies the candidate's vote for
            // itself, same reason. Pre-votes promise nothing, but take the same
            // path so all election traffic has one rule; a pre-candidate's Ready
            // rarely needs a sync anyway.
            MessageBody::RequestVote { .. } | MessageBody::RequestVoteResponse { .. } => true,
            // "I have these entries": the leader counts it toward a majority, so the
            // entries must be on disk first. Rejections and answers to stale
            // leaders carry no such promise but are rare; one rule is simpler.
            MessageBody::AppendResponse { .. } => true,
            // The leader's traffic describes the leader's log, not a promise about
            // it: the leader counts itself only for entries it has synced, so
            // replication may overlap its own write (thesis §10.2.1). A heartbeat
            // response promises only that no newer term was seen when the
            // heartbeat arrived, a fact that needs no disk.
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow => false,
        };
        let msg = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if after_sync {
            self.msgs_after_sync.push(msg);
        } else {
            self.msgs_now.push(msg);
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader_id: self.leader_id,
            term: self.term,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }

    /// The highest index the caller has applied or is applying.
    fn applying(&self) -> u64 {
        self.outstanding
            .map_or(self.log.applied, |o| o.applying.max(self.log.applied))
    }

    pub(super) fn has_ready_inner(&self) -> bool {
        self.soft_state() != self.last_soft
            || self.hard_state() != self.last_hard
            || self.log.pending_snapshot.is_some()
            || self.log.has_unstable()
            || self.log.committed > self.applying()
            || !self.msgs_now.is_empty()
            || !self.msgs_after_sync.is_empty()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || !self.transfer_outcomes.is_empty()
            || (self.role == Role::Leader && self.leader_wants_to_send())
    }

    pub(super) fn ready_inner(&mut self) -> Ready {
        assert!(
            self.outstanding.is_none(),
            "ready() called twice without advance()"
        );
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let soft = self.soft_state();
        let hard = self.hard_state();
        let entries = self.log.take_unstable();
        let committed = self
            .log
            .committed_unapplied_within(self.config.max_apply_bytes)
            .to_vec();
        let applying = committed.last().map_or(self.log.committed, |e| e.index);
        let rd = Ready {
            soft_state: (soft != self.last_soft).then_some(soft),
            hard_state: (hard != self.last_hard).then_some(hard),
            snapshot: self.log.pending_snapshot.take(),
            committed,
            send_now: std::mem::take(&mut self.msgs_now),
            send_after_sync: std::mem::take(&mut self.msgs_after_sync),
            read_states: std::mem::take(&mut self.read_states),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
            transfer_outcomes: std::mem::take(&mut self.transfer_outcomes),
            entries,
        };
        self.last_soft = soft;
        self.last_hard = hard;
        self.outstanding = Some(Outstanding {
            last_entry: rd.entries.last().map(|e| e.index),
            applying,
        });
        rd
    }

    pub(super) fn advance_inner(&mut self, entries_synced: bool) {
        let Some(done) = self.outstanding.take() else {
            panic!("advance() called without an outstanding ready()");
        };
        if let (Some(last), true) = (done.last_entry, entries_synced) {
            self.log.persisted_through(last);
        }
        self.log.applied = self.log.applied.max(done.applying);
        if self.elected_on_own_vote
            && self.role == Role::Candidate
            && self.last_hard == self.hard_state()
        {
            // The vote this node won on is on disk now (see `campaign`).
            self.elected_on_own_vote = false;
            self.become_leader();
        }
        if self.role == Role::Leader {
            // The leader's own vote toward a majority counts only now.
            self.maybe_commit();
            // A transfer may have waited for this apply.
            if let Some(target) = self.transfer_target() {
                self.maybe_send_timeout_now(target);
            }
        }
    }

    pub(super) fn persisted_inner(&mut self, index: u64, term: u64) {
        if self.log.persisted_to(index, term) && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Checks the invariants documented on the fields (TigerBeetle's
    /// `defer self.invariants()`): in debug builds, in this crate's unit
    /// tests and once [`super::check_invariants_in_release`] was called;
    /// otherwise one relaxed load.
    pub(super) fn debug_assert_invariants(&self) {
        if !cfg!(any(debug_assertions, test)) && !INVARIANTS_IN_RELEASE.load(Ordering::Relaxed) {
            return;
        }
        self.log.check_invariants();
        assert!(
            self.term >= self.log.last_term(),
            "term {} below the last log term {}",
            self.term,
            self.log.last_term()
        );
        if self.role != Role::Follower && self.role != Role::Leader {
            assert!(
                self.suffrage() != Suffrage::None,
                "{:?} {} may not campaign in {:?}",
                self.role,
                self.id,
                self.log.conf()
            );
        }
        match self.role {
            Role::Leader => self.check_leader_invariants(),
            Role::Candidate => assert!(
                self.vote == self.id && self.leader_id == NO_NODE,
                "candidate {} with vote {} and leader {}",
                self.id,
                self.vote,
                self.leader_id
            ),
            Role::PreCandidate | Role::Follower => assert!(
                self.leader_id != self.id,
                "{:?} {} believes itself leader",
                self.role,
                self.id
            ),
        }
        if self.role != Role::Leader {
            assert!(
                self.progress.is_empty() && self.reads.is_empty(),
                "non-leader {} keeps leader state",
                self.id
            );
        }
    }

    fn check_leader_invariants(&self) {
        assert!(
            self.leader_id == self.id && self.vote == self.id,
            "leader {} with leader_id {} and vote {}",
            self.id,
            self.leader_id,
            self.vote
        );
        // A leader that removed itself leads only until the removal commits.
        assert!(
            self.log.conf().is_voter(self.id) || self.log.conf_index() > self.log.committed,
            "leader {} is not a voter in the committed configuration {:?}",
            self.id,
            self.log.conf()
        );
        let targets = self.replication_targets();
        assert!(
            self.progress.keys().copied().eq(targets.iter().copied()),
            "leader {} tracks {:?} but replicates to {:?}",
            self.id,
            self.progress.keys().collect::<Vec<_>>(),
            targets
        );
        let last = self.log.last_index();
        for (id, pr) in &self.progress {
            assert!(
                pr.match_index < pr.next_index && pr.next_index <= last + 1,
                "progress of {id}: match {} next {} with last index {last}",
                pr.match_index,
                pr.next_index
            );
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
