//! Membership in the shell: the CLUSTER commands, this node's standing
//! (member, not yet a member, removed), and keeping the peer connections in
//! line with the configuration in force.
//!
//! CLUSTER commands are answered by the leader, like writes: a follower
//! forwards them (tagged [`PAYLOAD_CLUSTER`] in the Forward payload) or parks
//! them until a leader is known. ADD and REMOVE are `+OK` once their entry
//! is applied; TRANSFER once the target leads.
//!
//! Removing the leader itself goes through a transfer first: the leader
//! hands over to the most up-to-date other voter (writes wait meanwhile and
//! then go to the new leader), and the REMOVE is routed again, to the new
//! leader, which commits it. Had the leader committed its own removal, it
//! would step down with writes in flight whose outcome it could no longer
//! tell its clients (`-TIMEOUT`).
//!
//! The peers dialed are the members of the configuration in force, the nodes
//! the leader still replicates to (one being removed, until its removal
//! commits), and the known leader (a joining node hears from it before it
//! has any configuration). A node leaving that set is still dialed for a
//! grace period (three client deadlines), so replies to requests it forwarded
//! reach it and a removed node's pre-vote gets the answer that tells it so.

use super::clients::{Kind, Pending};
use super::event_loop::{Server, Waiter};
use super::LoopMap;
use crate::kv::{Command, Reply};
use crate::raft::{ConfChange, ConfChangeError, Entry, EntryKind, NodeId, Restored, NO_NODE};
use crate::raft::{ProposeError, Role, TransferOutcome};
use crate::replica::{Completion, ReadyOutcome};
use crate::wire::peer_msg::PeerMessage;
use log::info;
use mio::Token;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use super::addresses::{valid_addr, AddressBook};

/// First byte of a Forward payload: an encoded key-value command follows.
pub const PAYLOAD_KV: u8 = 0;
/// First byte of a Forward payload: a CLUSTER command follows, as text.
pub const PAYLOAD_CLUSTER: u8 = 1;

const NOT_THE_LEADER: &str = "TRYAGAIN not the leader";

/// A parsed CLUSTER command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterRequest {
    Members,
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
    Transfer { id: NodeId },
}

impl ClusterRequest {
    /// `CLUSTER <sub> args...` (argv includes CLUSTER itself).
    pub fn parse(argv: &[Vec<u8>]) -> Result<ClusterRequest, Reply> {
        let words: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(sub) = words.get(1).map(|s| s.to_ascii_lowercase()) else {
            return Err(Reply::error(
                "ERR wrong number of arguments for 'cluster' command",
            ));
        };
        let arity = match sub.as_str() {
            "members" => 2,
            "add" => 4,
            "remove" | "transfer" => 3,
            _ => {
                return Err(Reply::Error(format!(
                    "ERR unknown subcommand '{}'. Try CLUSTER MEMBERS, ADD, REMOVE or TRANSFER.",
                    super::connection::shown_subcommand(&argv[1])
                )))
            }
        };
        if words.len() != arity {
            return Err(Reply::Error(format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                sub
            )));
        }
        if sub == "members" {
            return Ok(ClusterRequest::Members);
        }
        let id = match words[2].parse::<NodeId>() {
            Ok(id) if id != NO_NODE => id,
            _ => return Err(Reply::Error(format!("ERR invalid node id '{}'", words[2]))),
        };
        Ok(match sub.as_str() {
            "add" if valid_addr(&words[3]) => ClusterRequest::Add {
                id,
                addr: words[3].clone(),
            },
            "add" => {
                return Err(Reply::Error(format!(
                    "ERR invalid raft address '{}' (expected host:port)",
                    words[3]
                )))
            }
            "remove" => ClusterRequest::Remove { id },
            _ => ClusterRequest::Transfer { id },
        })
    }

    fn to_text(&self) -> String {
        match self {
            ClusterRequest::Members => "CLUSTER MEMBERS".to_string(),
            ClusterRequest::Add { id, addr } => format!("CLUSTER ADD {} {}", id, addr),
            ClusterRequest::Remove { id } => format!("CLUSTER REMOVE {}", id),
            ClusterRequest::Transfer { id } => format!("CLUSTER TRANSFER {}", id),
        }
    }

    fn from_text(text: &[u8]) -> Result<ClusterRequest, Reply> {
        let argv: Vec<Vec<u8>> = text.split(|b| *b == b' ').map(|w| w.to_vec()).collect();
        ClusterRequest::parse(&argv)
    }

    /// Whether a timeout leaves its outcome unknown (a change may commit).
    fn is_change(&self) -> bool {
        matches!(
            self,
            ClusterRequest::Add { .. } | ClusterRequest::Remove { .. }
        )
    }
}

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
    Kv(Command),
    Cluster(ClusterRequest),
}

pub struct ClusterState {
    pub book: AddressBook,
    pub standing: Standing,
    ever_member: bool,
    /// Something the dialed set or the standing depends on changed.
    refresh: bool,
    parked: VecDeque<(Token, u64, ClusterRequest)>,
    /// CLUSTER requests forwarded to the leader: the client's slot, the
    /// request, and the leader it went to.
    forwards: LoopMap<u64, (Token, u64, ClusterRequest, NodeId)>,
    held: Vec<(Waiter, Held)>,
    /// CLUSTER REMOVE of this leader: who waits, and the transfer target.
    self_removal: Option<(Waiter, NodeId)>,
    /// Peers no longer wanted, dialed until the tick given.
    leaving: BTreeMap<NodeId, u64>,
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
            parked: VecDeque::new(),
            forwards: LoopMap::default(),
            held: Vec::new(),
            self_removal: None,
            leaving: BTreeMap::new(),
        }
    }

    /// What the restored state says: the addresses in the AddLearner
    /// entries of the log, and whether this node was ever a member (its
    /// snapshot or a ConfChange entry names it).
    pub fn restored(&mut self, me: NodeId, restored: &Restored) {
        let snap = &restored.snapshot;
        let mut named = snap.voters.contains(&me) || snap.learners.contains(&me);
        for entry in conf_entries(&restored.entries) {
            if let Ok(conf) = crate::raft::conf_change::decode(&entry.data) {
                named |= conf.voters.contains(&me) || conf.learners.contains(&me);
                if let ConfChange::AddLearner { context, .. } = &conf.change {
                    self.book.learn_context(context);
                }
            }
        }
        self.ever_member |= named;
        self.book.save_if_changed();
    }

    pub fn forget_forward(&mut self, id: u64) {
        self.forwards.remove(&id);
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

fn change_error(err: ConfChangeError) -> Reply {
    match err {
        ConfChangeError::NotLeader { .. } => Reply::error(NOT_THE_LEADER),
        ConfChangeError::TransferInProgress | ConfChangeError::ChangeInProgress => {
            Reply::Error(format!("TRYAGAIN {}", err))
        }
        _ => Reply::Error(format!("ERR {}", err)),
    }
}

fn is_not_the_leader(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(text) if text == NOT_THE_LEADER)
}

impl Server {
    /// CLUSTER from a client: `None` when the reply comes later.
    pub(super) fn cluster_command(&mut self, token: Token, argv: &[Vec<u8>]) -> Option<Reply> {
        let request = match ClusterRequest::parse(argv) {
            Ok(request) => request,
            Err(reply) => return Some(reply),
        };
        if let Some(reply) = self.cluster.refusal() {
            return Some(reply);
        }
        let client = self.clients.get_mut(&token)?;
        let kind = match request {
            ClusterRequest::Members => Kind::Other,
            _ => Kind::Barrier,
        };
        let seq = client.open_slot(Pending::Parked, kind);
        // Within the same `election_timeout_ms * 4` as every other request
        // (SPEC): a removal of the leader waits for a transfer, then for a
        // commit, which takes milliseconds when a quorum is up.
        self.schedule_deadline(token, seq);
        self.route_cluster(token, seq, request);
        None
    }

    fn route_cluster(&mut self, token: Token, seq: u64, request: ClusterRequest) {
        let write = request.is_change();
        if self.replica.is_leader() {
            let waiter = Waiter::Client { token, seq };
            self.set_slot(
                token,
                seq,
                Pending::InFlight {
                    write,
                    forward: None,
                },
            );
            if let Some(reply) = self.execute_cluster(request, waiter) {
                self.completions.push(Completion { waiter, reply });
            }
            return;
        }
        let leader = self.replica.node().leader_id();
        if self.peers.is_connected(leader) {
            let id = self.next_forward_id;
            let mut payload = vec![PAYLOAD_CLUSTER];
            payload.extend_from_slice(request.to_text().as_bytes());
            if self
                .peers
                .send(leader, &PeerMessage::Forward { id, payload })
            {
                self.next_forward_id += 1;
                self.cluster
                    .forwards
                    .insert(id, (token, seq, request, leader));
                let forward = Some(id);
                self.set_slot(token, seq, Pending::InFlight { write, forward });
                return;
            }
        }
        self.set_slot(token, seq, Pending::Parked);
        self.cluster.parked.push_back((token, seq, request));
    }

    fn set_slot(&mut self, token: Token, seq: u64, pending: Pending) {
        if let Some(client) = self.clients.get_mut(&token) {
            client.set_pending(seq, pending);
        }
    }

    fn slot_waiting(&self, token: Token, seq: u64) -> bool {
        self.clients
            .get(&token)
            .is_some_and(|c| c.pending(seq).is_some())
    }

    /// A CLUSTER command forwarded to us by a follower.
    pub(super) fn handle_cluster_forward(&mut self, from: NodeId, id: u64, text: &[u8]) {
        let reply = match ClusterRequest::from_text(text) {
            Err(reply) => Some(reply),
            Ok(_) if !self.replica.is_leader() => Some(Reply::error(NOT_THE_LEADER)),
            Ok(request) => self.execute_cluster(request, Waiter::Peer { from, id }),
        };
        if let Some(reply) = reply {
            self.peers
                .send(from, &PeerMessage::ForwardReply { id, reply });
        }
    }

    /// CLUSTER requests forwarded to a node that no longer leads (see
    /// `settle_orphaned_forwards`): MEMBERS is routed again at once; a
    /// TRANSFER, once that node is also unreachable; a change's outcome is
    /// then unknown.
    pub(super) fn settle_orphaned_cluster_forwards(&mut self) {
        let orphaned: Vec<u64> = self
            .cluster
            .forwards
            .iter()
            .filter(|(_, (_, _, request, to))| {
                // A TRANSFER the old leader still works on is not started
                // again elsewhere: it answers for itself, as a write does.
                let read = matches!(request, ClusterRequest::Members);
                self.is_orphaned(*to, !read)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            let Some((token, seq, request, _)) = self.cluster.forwards.remove(&id) else {
                continue;
            };
            if request.is_change() {
                self.completions.push(Completion {
                    waiter: Waiter::Client { token, seq },
                    reply: Reply::error("TIMEOUT outcome unknown"),
                });
            } else if self.slot_waiting(token, seq) {
                self.set_slot(token, seq, Pending::Parked);
                self.cluster.parked.push_back((token, seq, request));
            }
        }
    }

    /// The leader's reply to a CLUSTER command we forwarded: relayed, or the
    /// request routed again when the node asked no longer leads.
    pub(super) fn handle_cluster_forward_reply(&mut self, id: u64, reply: Reply) {
        let Some((token, seq, request, _)) = self.cluster.forwards.remove(&id) else {
            return;
        };
        if is_not_the_leader(&reply) {
            if self.slot_waiting(token, seq) {
                self.set_slot(token, seq, Pending::Parked);
                self.cluster.parked.push_back((token, seq, request));
            }
            return;
        }
        self.completions.push(Completion {
            waiter: Waiter::Client { token, seq },
            reply,
        });
    }

    /// A forwarded write refused because a transfer is under way waits for
    /// its outcome here, not on the follower (which would send it straight back).
    pub(super) fn hold_forwarded(&mut self, waiter: Waiter, command: Command) {
        self.cluster.held.push((waiter, Held::Kv(command)));
    }

    /// Runs a CLUSTER command on the leader; `None` when `waiter` is
    /// answered later through the completions.
    fn execute_cluster(&mut self, request: ClusterRequest, waiter: Waiter) -> Option<Reply> {
        let me = self.config.id;
        let result = match request {
            ClusterRequest::Members => return Some(Reply::Bulk(self.members_text().into_bytes())),
            ClusterRequest::Add { id, ref addr } => {
                let status = self.replica.status();
                let members: Vec<NodeId> = status
                    .voters
                    .iter()
                    .chain(&status.learners)
                    .copied()
                    .collect();
                if let Some(owner) = self.cluster.book.owner_of(addr, id) {
                    if members.contains(&owner) && !members.contains(&id) {
                        return Some(Reply::Error(format!(
                            "ERR address {} is node {}'s",
                            addr, owner
                        )));
                    }
                }
                let context = self.cluster.book.context_for(&members, id, addr);
                let change = ConfChange::AddLearner {
                    id,
                    context: context.clone(),
                };
                let proposed = self.replica.propose_conf_change(change, waiter);
                if proposed.is_ok() {
                    // The core counts the learner from now on: a MEMBERS
                    // pipelined behind this ADD, answered before the append
                    // is handed out, shows its address too.
                    self.cluster.book.learn_context(&context);
                }
                proposed
            }
            ClusterRequest::Remove { id } if id == me => return self.remove_self(waiter),
            ClusterRequest::Remove { id } => self
                .replica
                .propose_conf_change(ConfChange::Remove { id }, waiter),
            ClusterRequest::Transfer { id } => self.replica.transfer_leader(id, waiter),
        };
        match result {
            Ok(()) => None,
            Err((ConfChangeError::ChangeInProgress, waiter)) if self.change_soon_possible() => {
                self.cluster.held.push((waiter, Held::Cluster(request)));
                None
            }
            Err((err, _)) => Some(change_error(err)),
        }
    }

    /// A change refused while the configuration in force is committed was
    /// refused only because this leader has not yet committed an entry of
    /// its term: that takes one round trip, so the request waits for it.
    fn change_soon_possible(&self) -> bool {
        let status = self.replica.status();
        status.conf_index <= status.commit_index
    }

    /// CLUSTER REMOVE of this leader: hand over to the most up-to-date
    /// other voter first (see the module docs).
    fn remove_self(&mut self, waiter: Waiter) -> Option<Reply> {
        let me = self.config.id;
        let status = self.replica.status();
        if !status.voters.contains(&me) && !status.learners.contains(&me) {
            return Some(change_error(ConfChangeError::UnknownNode { id: me }));
        }
        if self.cluster.self_removal.is_some() {
            return Some(change_error(ConfChangeError::TransferInProgress));
        }
        let successor = status
            .progress
            .iter()
            .filter(|(id, _)| *id != me && status.voters.contains(id))
            .max_by_key(|(id, matched)| (*matched, std::cmp::Reverse(*id)))
            .map(|(id, _)| *id);
        let Some(successor) = successor else {
            return Some(change_error(ConfChangeError::LastVoter { id: me }));
        };
        match self.replica.node_mut().transfer_leader(successor) {
            Ok(()) => {
                info!(
                    "removing this node: handing leadership to node {} first",
                    successor
                );
                self.cluster.self_removal = Some((waiter, successor));
                None
            }
            Err(err) => Some(change_error(err)),
        }
    }

    /// MEMBERS: one line per member, sorted by id.
    fn members_text(&self) -> String {
        let status = self.replica.status();
        let mut ids: Vec<(NodeId, &str)> = status.voters.iter().map(|id| (*id, "voter")).collect();
        ids.extend(status.learners.iter().map(|id| (*id, "learner")));
        ids.sort_unstable();
        let mut out = String::new();
        for (id, suffrage) in ids {
            let matched = status
                .progress
                .iter()
                .find(|(p, _)| *p == id)
                .map_or(0, |(_, m)| *m);
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = write!(
                out,
                "id={} raft_addr={} client_addr={} suffrage={} leader={} match_index={}",
                id,
                self.cluster.book.raft_addr(id).unwrap_or(""),
                self.cluster.book.client_addr(id).unwrap_or(""),
                suffrage,
                if id == status.leader_id { "yes" } else { "no" },
                matched
            );
        }
        out
    }

    /// Every iteration, before the core's output is handled: routes parked
    /// CLUSTER commands, retries held requests, and lets go of peers whose
    /// grace period is over.
    pub(super) fn cluster_tick(&mut self) {
        let leader = self.replica.node().leader_id();
        let transferring = self.replica.node().transfer_target().is_some();
        let reachable =
            (self.replica.is_leader() && !transferring) || self.peers.is_connected(leader);
        if reachable && !self.cluster.parked.is_empty() {
            for (token, seq, request) in std::mem::take(&mut self.cluster.parked) {
                if self.slot_waiting(token, seq) {
                    self.route_cluster(token, seq, request);
                }
            }
        }
        if !transferring && !self.cluster.held.is_empty() {
            for (waiter, held) in std::mem::take(&mut self.cluster.held) {
                self.retry_held(waiter, held);
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

    fn retry_held(&mut self, waiter: Waiter, held: Held) {
        if !self.replica.is_leader() {
            match (waiter, held) {
                (Waiter::Client { token, seq }, Held::Cluster(request)) => {
                    self.cluster.parked.push_back((token, seq, request));
                }
                // A follower's request: it routes it again on this reply.
                (waiter, _) => self.completions.push(Completion {
                    waiter,
                    reply: Reply::error(NOT_THE_LEADER),
                }),
            }
            return;
        }
        match held {
            Held::Kv(command) => {
                let result = if command.is_write() {
                    self.replica.propose(command, waiter)
                } else {
                    self.replica.read(command, waiter)
                };
                match result {
                    Ok(()) => {}
                    Err(refused) if refused.error == ProposeError::TransferInProgress => {
                        self.hold_forwarded(refused.waiter, refused.command)
                    }
                    Err(refused) => self.completions.push(Completion {
                        waiter: refused.waiter,
                        reply: Reply::error(NOT_THE_LEADER),
                    }),
                }
            }
            Held::Cluster(request) => {
                if let Some(reply) = self.execute_cluster(request, waiter) {
                    self.completions.push(Completion { waiter, reply });
                }
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
            self.cluster.refresh |= self.cluster.book.learn_handshake(id, &raft, &client);
        }
        // The core answered a node we do not dial (a candidate whose
        // AddLearner we have not appended yet): dial it if we can.
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
        };
        info!(
            "membership change committed at index {}: {} (voters {:?}, learners {:?})",
            index, what, conf.voters, conf.learners
        );
        if conf.change == (ConfChange::Remove { id: me }) {
            info!(
                "this node (id {}) was removed from the cluster; it serves nothing but connection commands and may be stopped and its data dir deleted",
                me
            );
        }
    }

    fn settle_self_removal(&mut self, outcome: TransferOutcome) {
        let Some((waiter, target)) = self.cluster.self_removal else {
            return;
        };
        let (finished, about) = match outcome {
            TransferOutcome::Finished { target } => (true, target),
            TransferOutcome::Abandoned { target } => (false, target),
        };
        if about != target {
            return;
        }
        self.cluster.self_removal = None;
        let me = self.config.id;
        match (finished, waiter) {
            (true, Waiter::Client { token, seq }) => {
                info!("node {} leads now; asking it to remove this node", target);
                self.set_slot(token, seq, Pending::Parked);
                self.cluster
                    .parked
                    .push_back((token, seq, ClusterRequest::Remove { id: me }));
            }
            (true, waiter) => self.completions.push(Completion {
                waiter,
                reply: Reply::error(NOT_THE_LEADER),
            }),
            (false, waiter) => self.completions.push(Completion {
                waiter,
                reply: Reply::Error(format!(
                    "TRYAGAIN transfer to {} abandoned; this node still leads",
                    target
                )),
            }),
        }
    }

    /// Dials the members of the configuration in force (and whoever else
    /// the core talks to), lets go of the others after a grace period, and
    /// works out this node's standing.
    pub(super) fn refresh_membership(&mut self) {
        let status = self.replica.status();
        let me = self.config.id;
        let mut wanted: BTreeSet<NodeId> = status.voters.iter().copied().collect();
        wanted.extend(&status.learners);
        wanted.extend(status.progress.iter().map(|(id, _)| *id));
        wanted.extend(self.peers.unreachable.iter().copied());
        if status.role != Role::Leader {
            wanted.insert(status.leader_id);
        }
        wanted.remove(&me);
        wanted.remove(&NO_NODE);
        for id in &wanted {
            self.cluster.leaving.remove(id);
            let Some(addr) = self.cluster.book.raft_addr(*id).map(str::to_string) else {
                continue;
            };
            self.peers.add_member(*id, &addr, self.poll.registry());
            let token = self.take_token();
            self.peers.connect(*id, self.poll.registry(), token);
        }
        // Long enough for a removed node whose election timer fires late (a
        // loaded machine) to pre-vote and get the leader's answer, which tells
        // it that it was removed (see `Node::tell_removed_node`).
        let grace_until = self.now_ticks() + 3 * self.deadline_ticks;
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
        let in_conf = status.voters.contains(&me) || status.learners.contains(&me);
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
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ClusterRequest, Reply> {
        let argv: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        ClusterRequest::parse(&argv)
    }

    #[test]
    fn requests_parse_and_survive_forwarding() {
        let cases = [
            ("CLUSTER members", ClusterRequest::Members),
            (
                "cluster ADD 4 127.0.0.1:7004",
                ClusterRequest::Add {
                    id: 4,
                    addr: "127.0.0.1:7004".into(),
                },
            ),
            ("CLUSTER Remove 2", ClusterRequest::Remove { id: 2 }),
            ("CLUSTER TRANSFER 3", ClusterRequest::Transfer { id: 3 }),
        ];
        for (line, request) in cases {
            assert_eq!(parse(line), Ok(request.clone()));
            assert_eq!(
                ClusterRequest::from_text(request.to_text().as_bytes()),
                Ok(request)
            );
        }
    }

    #[test]
    fn bad_requests_get_redis_style_errors() {
        let cases = [
            (
                "CLUSTER",
                "ERR wrong number of arguments for 'cluster' command",
            ),
            (
                "CLUSTER NODES",
                "ERR unknown subcommand 'NODES'. Try CLUSTER MEMBERS, ADD, REMOVE or TRANSFER.",
            ),
            (
                "CLUSTER MEMBERS x",
                "ERR wrong number of arguments for 'cluster|members' command",
            ),
            ("CLUSTER REMOVE 0", "ERR invalid node id '0'"),
            ("CLUSTER TRANSFER -1", "ERR invalid node id '-1'"),
            (
                "CLUSTER ADD 4 h:1,5=h:2",
                "ERR invalid raft address 'h:1,5=h:2' (expected host:port)",
            ),
        ];
        for (line, reply) in cases {
            assert_eq!(parse(line), Err(Reply::error(reply)), "{line}");
        }
    }

    #[test]
    fn change_errors_read_as_specified() {
        let cases = [
            (
                ConfChangeError::AlreadyMember { id: 4 },
                "ERR node 4 already a member",
            ),
            (ConfChangeError::UnknownNode { id: 7 }, "ERR unknown node 7"),
            (
                ConfChangeError::ChangeInProgress,
                "TRYAGAIN membership change in progress",
            ),
            (
                ConfChangeError::TransferInProgress,
                "TRYAGAIN leadership transfer in progress",
            ),
            (
                ConfChangeError::NotLeader { leader: 2 },
                "TRYAGAIN not the leader",
            ),
            (
                ConfChangeError::NotVoter { id: 5 },
                "ERR node 5 is a learner",
            ),
            (
                ConfChangeError::LastVoter { id: 1 },
                "ERR node 1 is the last voter",
            ),
        ];
        for (err, reply) in cases {
            assert_eq!(change_error(err), Reply::error(reply));
        }
    }
}
