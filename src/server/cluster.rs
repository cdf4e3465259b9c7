//! Membership in the shell: the CLUSTER commands, this node's standing
//! (member, not yet a member, removed), and keeping the peer connections in
//! line with the configuration in force.
//!
//! The peers dialed are the members of the configuration in force, the nodes
//! the leader still replicates to (one being removed, until its removal
//! commits), and the known leader (a joining node hears from it before it
//! has any configuration). A node leaving that set is still dialed for a
//! grace period (three client deadlines), so replies to requests it forwarded
//! reach it and a removed node's pre-vote gets the answer that tells it so;
//! so is a node outside it that the core sent a message to in vain.
//!
//! This file holds the membership state, this node's standing, the peers
//! dialed, and the two hooks the loop calls (`cluster_tick`,
//! `cluster_after_ready`). The CLUSTER commands live in child modules, each
//! readable without the rest, and children so that they can reach the
//! state's queues without making them more visible: parsing a command and
//! getting it to the leader (`cluster_commands.rs`), and what the leader
//! does with it, a removal of itself included (`cluster_leader.rs`).

#[path = "cluster_commands.rs"]
mod commands;
#[path = "cluster_held.rs"]
mod held;
#[path = "cluster_leader.rs"]
mod leader;

use super::addresses::AddressBook;
use super::event_loop::{Server, Waiter};
use super::parked::ParkedRequests;
use super::LoopMap;
use crate::kv::{Command, Reply};
use crate::raft::{ConfChange, ConfEntry, Entry, EntryKind, NodeId, Restored, Role, NO_NODE};
use crate::replica::ReadyOutcome;
use commands::ClusterRequest;
use held::HeldRequests;
use log::{info, warn};
use mio::Token;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// First byte of a Forward payload: an encoded key-value command follows.
pub const PAYLOAD_KV: u8 = 0;
/// First byte of a Forward payload: a CLUSTER command follows, as text.
pub const PAYLOAD_CLUSTER: u8 = 1;

pub(in crate::server) const NOT_THE_LEADER: &str = "TRYAGAIN not the leader";

/// This node's place in the configuration in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Member,
    /// Never in a configuration: a node started with `join = yes`.
    NotYet,
    /// It was a member and the configuration in force leaves it out.
    Removed,
}

/// A request the leader could not take yet but will soon: a forwarded write
/// during a leadership transfer, or a membership change while this leader
/// has not committed an entry of its term.
enum Held {
    /// A key-value request a follower forwarded. `by`: the tick by which
    /// it is answered `-TRYAGAIN no leader`, never carried out, should it
    /// still be held (transfers following one another) or wait for a
    /// connected quorum once the transfer is over (as `handle_forward`
    /// counts it, from its arrival), so that the follower hears before
    /// its own deadline would make it `-TIMEOUT`.
    Kv { command: Command, by: u64 },
    /// A CLUSTER command. `by`: as for `Held::Kv`, for one a follower
    /// forwarded, answered then only if still held (`-TRYAGAIN no leader`);
    /// a slot's deadline answers the leader's own client's.
    Cluster { request: ClusterRequest, by: u64 },
}

pub struct ClusterState {
    pub book: AddressBook,
    pub standing: Standing,
    ever_member: bool,
    /// Something the dialed set or the standing depends on changed.
    refresh: bool,
    /// CLUSTER commands waiting for a leader (see `parked.rs`).
    pub(super) parked: ParkedRequests<ClusterRequest>,
    /// CLUSTER requests forwarded to the leader: the client's slot, the
    /// request, and the leader it went to.
    forwards: LoopMap<u64, (Token, u64, ClusterRequest, NodeId)>,
    /// The targets of CLUSTER TRANSFERs parked again, by slot, after the
    /// node they were forwarded to stopped leading and could not be
    /// reached: it may have told the target to campaign, so they are
    /// answered as abandoned rather than `-TRYAGAIN` if they are still
    /// parked at their deadline or at exit. Each leaves at its deadline.
    orphaned_transfers: HashMap<(Token, u64), NodeId>,
    /// Requests waiting for a transfer or a change under way to end.
    held: HeldRequests,
    /// CLUSTER REMOVE of this leader: who waits, and the transfer target.
    self_removal: Option<(Waiter, NodeId)>,
    /// Peers no longer wanted, dialed until the tick given.
    leaving: BTreeMap<NodeId, u64>,
    /// Members dropped by `--force-new-cluster` that dialed this node, and
    /// were told about in the log (once each).
    dropped_seen: BTreeSet<NodeId>,
    /// The membership changes in this node's log when it started, by
    /// index: every start applies them again, and logs them as replayed, so
    /// that an operator reading the log does not take a removal made long
    /// ago for one made now. One a new leader replaced is not among them.
    confs_at_start: BTreeMap<u64, ConfEntry>,
}

impl ClusterState {
    /// `was_member`: this node was in a configuration before this start.
    pub fn new(book: AddressBook, founder: bool, was_member: bool) -> ClusterState {
        ClusterState {
            book,
            standing: if founder {
                Standing::Member
            } else {
                Standing::NotYet
            },
            ever_member: was_member,
            refresh: true,
            parked: ParkedRequests::default(),
            forwards: LoopMap::default(),
            orphaned_transfers: HashMap::new(),
            held: HeldRequests::default(),
            self_removal: None,
            leaving: BTreeMap::new(),
            dropped_seen: BTreeSet::new(),
            confs_at_start: BTreeMap::new(),
        }
    }

    /// What the restored state says: the addresses in the AddLearner
    /// entries of the log, and whether this node was ever a member (its
    /// snapshot or a ConfChange entry names it). The changes up to
    /// `log_end_before_start` were made before this start.
    pub fn restored(&mut self, me: NodeId, restored: &Restored, log_end_before_start: u64) {
        let snap = &restored.snapshot;
        let mut named = snap.voters.contains(&me) || snap.learners.contains(&me);
        for entry in conf_entries(&restored.entries) {
            if let Ok(conf) = crate::raft::conf_change::decode(&entry.data) {
                named |= conf.voters.contains(&me) || conf.learners.contains(&me);
                if let ConfChange::AddLearner { context, .. } = &conf.change {
                    self.book.learn_context(context);
                }
                if entry.index <= log_end_before_start {
                    self.confs_at_start.insert(entry.index, conf);
                }
            }
        }
        self.ever_member |= named;
        self.book.save_if_changed();
    }

    /// Whether CLUSTER commands of this node's own clients wait for a
    /// leader or for its answer (a stopping node waits for them).
    pub fn has_own_requests(&self) -> bool {
        !self.parked.is_empty() || !self.forwards.is_empty()
    }

    /// CLUSTER requests forwarded to the leader and not answered yet.
    pub fn forwarded_count(&self) -> usize {
        self.forwards.len()
    }

    /// The target of slot `seq`'s TRANSFER if it was parked again after
    /// its leader was lost (see `orphaned_transfers`), which is forgotten.
    pub fn take_orphaned_transfer(&mut self, token: Token, seq: u64) -> Option<NodeId> {
        if self.orphaned_transfers.is_empty() {
            return None;
        }
        self.orphaned_transfers.remove(&(token, seq))
    }

    pub fn forget_forward(&mut self, id: u64) -> Option<NodeId> {
        match self.forwards.remove(&id) {
            Some((.., ClusterRequest::Transfer { id: target }, _)) => Some(target),
            _ => None,
        }
    }

    /// The ids of the CLUSTER requests forwarded to `to` from id `first` on.
    pub fn forwarded_to_from(&self, to: NodeId, first: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(id, (.., leader))| *leader == to && **id >= first)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Records the CLUSTER command `line` of slot `seq` of `token` as
    /// forwarded to `leader` with forwarding id `id`.
    #[cfg(test)]
    pub(super) fn forwarded(
        &mut self,
        id: u64,
        token: Token,
        seq: u64,
        line: &str,
        leader: NodeId,
    ) {
        let argv: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        let request = ClusterRequest::parse(&argv).expect("a CLUSTER command");
        self.forwards.insert(id, (token, seq, request, leader));
    }

    /// Holds the CLUSTER command `line` of slot `seq` of `token`, as the
    /// leader does while a change or a transfer is under way.
    #[cfg(test)]
    pub(super) fn hold(&mut self, token: Token, seq: u64, line: &str) {
        let argv: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        let request = ClusterRequest::parse(&argv).expect("a CLUSTER command");
        let waiter = Waiter::Client { token, seq };
        self.held.push((waiter, Held::Cluster { request, by: 0 }));
    }

    /// The reply for a request this node will not serve, if it is not a member.
    pub fn refusal(&self) -> Option<Reply> {
        match self.standing {
            Standing::Member => None,
            Standing::NotYet => Some(Reply::error("TRYAGAIN not a member yet")),
            Standing::Removed => Some(Reply::error("TRYAGAIN not a member")),
        }
    }
}

/// The ConfChange entries among `entries`.
pub fn conf_entries(entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries.iter().filter(|e| e.kind == EntryKind::ConfChange)
}

impl Server {
    /// Whether parked CLUSTER commands can go on now: to this node leading
    /// and not handing over, or to a leader it is connected to. The loop then
    /// does not wait for its next tick.
    pub(super) fn cluster_parked_routable(&self) -> bool {
        // Not in the iteration after which the node exits: sent on now, a
        // change could only be answered `-TIMEOUT` at exit; still parked,
        // it is refused `-TRYAGAIN`, unapplied. (A handover routes them:
        // the new leader carries them out, and the node waits for it.)
        if self.cluster.parked.is_empty() || self.exiting() {
            return false;
        }
        let leader = self.replica.node().leader_id();
        let transferring = self.replica.node().transfer_target().is_some();
        // A stopping leader carries out no change itself: its handover's
        // transfer was abandoned, so it exits at the end of this iteration.
        let leads_on = self.replica.is_leader() && !transferring && !self.handing_over();
        let reachable = leads_on || self.peers.is_connected(leader);
        reachable
            && self
                .cluster
                .parked
                .connections()
                .any(|token| !self.waits_for_forwards(token))
    }

    /// Every iteration, before the core's output is handled: routes parked
    /// CLUSTER commands, retries held requests, and lets go of peers whose
    /// grace period is over.
    pub(super) fn cluster_tick(&mut self) {
        let transferring = self.replica.node().transfer_target().is_some();
        if self.cluster_parked_routable() {
            for token in self.cluster.parked.start_dispatch() {
                for parked in self.cluster.parked.take(token) {
                    if self.slot_waiting(token, parked.seq) {
                        self.route_cluster(token, parked.seq, parked.command);
                    }
                }
            }
            self.cluster.parked.finish_dispatch();
        }
        // A node exiting at the end of this iteration, or a stopping leader
        // whose transfer was abandoned (it stops as leader): what it held
        // stays unproposed, and is refused as such at exit
        // (`refuse_unproposed_forwards`, `answer_own_cluster_commands`),
        // rather than appended now to be left with its outcome unknown.
        let stopping_as_leader = self.handing_over() && self.replica.is_leader();
        if !self.cluster.held.is_empty() {
            if !transferring && !stopping_as_leader && !self.exiting() {
                self.retry_held_requests();
            } else {
                self.refuse_held_forwards_due();
            }
        }
        if !self.cluster.leaving.is_empty() {
            let now = self.now_ticks();
            let gone: Vec<NodeId> = self
                .cluster
                .leaving
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                self.cluster.leaving.remove(&id);
                self.peers.remove_member(id, self.poll.registry());
            }
        }
    }

    /// After each `Ready`: learns addresses from new configurations and
    /// handshakes, settles a self-removal's transfer, and refreshes the
    /// dialed peers and this node's standing when anything they rest on changed.
    pub(super) fn cluster_after_ready(&mut self, outcome: &ReadyOutcome) {
        for (_, conf) in &outcome.conf_appended {
            if let ConfChange::AddLearner { context, .. } = &conf.change {
                self.cluster.book.learn_context(context);
            }
            self.cluster.refresh = true;
        }
        for (index, conf) in &outcome.conf_applied {
            self.log_applied_change(*index, conf);
            self.cluster.refresh = true;
        }
        if outcome.soft_state.is_some() || outcome.snapshot_installed.is_some() {
            self.cluster.refresh = true;
        }
        for (id, raft, client) in std::mem::take(&mut self.peers.learned) {
            if self.replica.node().dropped_peers().contains(&id) {
                // It still takes this node for a member of the old cluster.
                if self.cluster.dropped_seen.insert(id) {
                    warn!(
                        "node {} (raft address {}) dialed this node, but --force-new-cluster dropped it: everything it sends is ignored; stop it and delete its data dir",
                        id, raft
                    );
                }
                continue;
            }
            self.cluster.refresh |= self.cluster.book.learn_handshake(id, &raft, &client);
            // A member that dialed us is up: dial it back now (a no-op if
            // connected), not when its redial wait, up to a second, is over.
            // A follower that restarted hears its leader only on the
            // leader's connection, and campaigned meanwhile.
            if self.peers.members.contains_key(&id) {
                let token = self.take_token();
                self.peers.connect(id, self.poll.registry(), token);
            }
        }
        // The core answered a node we do not dial (a candidate whose
        // AddLearner we have not appended yet, a removed node back after
        // its grace period): dial it if we can.
        self.cluster.refresh |= self
            .peers
            .unreachable
            .iter()
            .any(|id| !self.peers.members.contains_key(id));
        for transfer in &outcome.transfer_outcomes {
            self.settle_self_removal(*transfer);
        }
        if std::mem::take(&mut self.cluster.refresh) {
            self.refresh_membership();
        }
        self.cluster.book.save_if_changed();
    }

    fn log_applied_change(&self, index: u64, conf: &crate::raft::ConfEntry) {
        let me = self.config.id;
        let what = match conf.change {
            ConfChange::AddLearner { id, .. } => format!("node {} added as a learner", id),
            ConfChange::Promote { id } => format!("node {} promoted to voter", id),
            ConfChange::Remove { id } => format!("node {} removed", id),
            ConfChange::ForceNewCluster { id } => {
                format!("node {} made the only member by --force-new-cluster", id)
            }
        };
        let replayed = if self.cluster.confs_at_start.get(&index) == Some(conf) {
            " (replayed from the log this node started with: made before it started)"
        } else {
            ""
        };
        info!(
            "membership change committed at index {}{}: {} (voters {:?}, learners {:?})",
            index, replayed, what, conf.voters, conf.learners
        );
        if conf.change == (ConfChange::Remove { id: me }) {
            info!(
                "this node (id {}) was removed from the cluster; it serves nothing but connection commands and may be stopped and its data dir deleted",
                me
            );
        }
    }

    /// Dials the members of the configuration in force (and, for a grace
    /// period, whoever else the core sent to in vain), lets go of the
    /// others after a grace period, and
    /// works out this node's standing.
    pub(super) fn refresh_membership(&mut self) {
        let status = self.replica.status();
        let me = self.config.id;
        let in_conf = status.voters.contains(&me) || status.learners.contains(&me);
        let mut wanted: BTreeSet<NodeId> = BTreeSet::new();
        // A node that knows its removal committed never campaigns, nor is
        // sent anything by the members: it dials them no longer (it did
        // until stopped). One whose removal it does not know to be
        // committed still dials them, to pre-vote and be told (see
        // `Node::tell_removed_node`); one that is added again hears from the
        // leader and dials it back as anyone the core answers.
        let removal_committed = !in_conf
            && self.cluster.ever_member
            && !status.voters.is_empty()
            && status.conf_index <= status.commit_index;
        if !removal_committed {
            wanted.extend(&status.voters);
            wanted.extend(&status.learners);
            wanted.extend(status.progress.iter().map(|(id, _)| *id));
            if status.role != Role::Leader {
                wanted.insert(status.leader_id);
            }
        }
        wanted.remove(&me);
        wanted.remove(&NO_NODE);
        // Long enough for a removed node whose election timer fires late (a
        // loaded machine) to pre-vote and get the leader's answer, which tells
        // it that it was removed (see `Node::tell_removed_node`).
        let grace_until = self.now_ticks() + 3 * self.deadline_ticks;
        // Nodes outside that set the core sent to in vain (an answer to a
        // removed node's pre-vote, the farewell heartbeat to one that is
        // down) are dialed for a grace period only: kept for good, a dead
        // removed node was dialed once a second until membership or the
        // leader changed. One that is up and pre-votes again is answered,
        // and dialed again, then.
        let answered: Vec<NodeId> = self
            .peers
            .unreachable
            .iter()
            .copied()
            .filter(|id| !wanted.contains(id) && *id != me && *id != NO_NODE)
            .collect();
        for id in &answered {
            let until = self.cluster.leaving.entry(*id).or_insert(grace_until);
            *until = (*until).max(grace_until);
        }
        for id in &wanted {
            self.cluster.leaving.remove(id);
        }
        for id in wanted.iter().chain(&answered) {
            let Some(addr) = self.cluster.book.raft_addr(*id).map(str::to_string) else {
                continue;
            };
            self.peers.add_member(*id, &addr, self.poll.registry());
            let token = self.take_token();
            self.peers.connect(*id, self.poll.registry(), token);
        }
        let unwanted: Vec<NodeId> = self
            .peers
            .members
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in unwanted {
            self.cluster.leaving.entry(id).or_insert(grace_until);
        }
        let standing = if in_conf {
            self.cluster.ever_member = true;
            Standing::Member
        } else if self.cluster.ever_member && !status.voters.is_empty() {
            Standing::Removed
        } else {
            Standing::NotYet
        };
        if standing != self.cluster.standing {
            info!(
                "this node is {} (voters {:?}, learners {:?})",
                match standing {
                    Standing::Member => "a member",
                    Standing::NotYet => "not a member yet",
                    Standing::Removed => "not a member any more (it was removed from the cluster)",
                },
                status.voters,
                status.learners
            );
            self.cluster.standing = standing;
        }
    }
}

#[cfg(test)]
#[path = "cluster_leaving_tests.rs"]
mod leaving_tests;
