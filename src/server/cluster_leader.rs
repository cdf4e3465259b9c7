//! What the leader does with a CLUSTER command: runs it, answers MEMBERS,
//! or holds it while it cannot be taken yet but soon can (`Held`, which
//! also keeps forwarded writes during a transfer). ADD and REMOVE are `+OK`
//! once their entry is applied; TRANSFER once the target leads.
//!
//! Removing the leader itself goes through a transfer first: the leader
//! hands over to the most up-to-date other voter (writes wait meanwhile and
//! then go to the new leader), and the REMOVE is routed again, to the new
//! leader, which commits it. Had the leader committed its own removal, it
//! would step down with writes in flight whose outcome it could no longer
//! tell its clients (`-TIMEOUT`).
//!
//! Separate from `cluster_commands.rs` because this is where a change is
//! proposed or refused, and with what error: the refusals, the waits and
//! the detour of a self-removal read best next to each other, apart from
//! the routing that brings a command here.

use super::commands::ClusterRequest;
use super::{Held, NOT_THE_LEADER};
use crate::kv::{Command, Reply};
use crate::raft::{ConfChange, ConfChangeError, NodeId, ProposeError, TransferOutcome};
use crate::replica::Completion;
use crate::server::event_loop::{Server, Waiter};
use crate::server::requests::NO_LEADER;
use crate::wire::peer_msg::PeerMessage;
use log::info;
use mio::Token;
use std::collections::HashSet;
use std::fmt::Write as _;

/// The held forwards a pass of `retry_held_requests` put to wait for a
/// connected quorum, in order, and their followers, whose later held
/// requests of the pass join them rather than go ahead of them.
#[derive(Default)]
struct QuorumWaitsAhead {
    requests: Vec<(NodeId, u64, Command, u64)>,
    followers: HashSet<NodeId>,
}

fn change_error(err: ConfChangeError) -> Reply {
    match err {
        ConfChangeError::NotLeader { .. } => Reply::error(NOT_THE_LEADER),
        ConfChangeError::TransferInProgress
        | ConfChangeError::ChangeInProgress
        | ConfChangeError::NoQuorumAfterRemoval { .. } => Reply::Error(format!("TRYAGAIN {}", err)),
        _ => Reply::Error(format!("ERR {}", err)),
    }
}

impl Server {
    /// A forwarded write refused because a transfer is under way waits for
    /// its outcome here, not on the follower (which would send it straight back).
    /// `by`: see `Held::Kv`.
    pub(in crate::server) fn hold_forwarded(&mut self, waiter: Waiter, command: Command, by: u64) {
        self.cluster.held.push((waiter, Held::Kv { command, by }));
    }

    /// While held requests are not retried (a transfer runs, or this
    /// leader is stopping): a follower's held request (a CLUSTER command
    /// too: held, it never started) whose `by` has come is answered
    /// `-TRYAGAIN no leader` and dropped. Held on, it could outlast its
    /// follower's deadline (transfers following one another), whose
    /// `-TIMEOUT outcome unknown` would leave its client guessing, and be
    /// carried out later. Never appended, it is truthfully not and never
    /// applied, and the follower passes that answer on rather than route
    /// the request again (`handle_forward_reply`).
    pub(super) fn refuse_held_forwards_due(&mut self) {
        if !self.cluster.held.may_be_due() {
            return;
        }
        let now = self.now_ticks();
        for (from, id) in self.cluster.held.take_due(now) {
            let reply = Reply::error(NO_LEADER);
            self.peers
                .send(from, &PeerMessage::ForwardReply { id, reply });
        }
    }

    /// The requests followers forwarded that are held here, unproposed:
    /// (follower, forward id), for a node about to stop to refuse.
    pub(in crate::server) fn take_held_forwards(&mut self) -> Vec<(NodeId, u64)> {
        self.cluster.held.take_forwards()
    }

    /// Whether requests forwarded by `from` are held for a transfer.
    pub(in crate::server) fn holds_forwarded_from(&self, from: NodeId) -> bool {
        self.cluster.held.holds_forwarded_from(from)
    }

    /// Holds a CLUSTER command. `held_by`: its `by` if it was held
    /// before, kept; `None` for one that comes now.
    fn hold_cluster(&mut self, waiter: Waiter, request: ClusterRequest, held_by: Option<u64>) {
        let by = match (held_by, waiter) {
            (Some(by), _) => by,
            (None, Waiter::Peer { .. }) => self.quorum_wait_until(),
            // Its slot's deadline answers it.
            (None, _) => 0,
        };
        self.cluster
            .held
            .push((waiter, Held::Cluster { request, by }));
    }

    /// Runs a CLUSTER command on the leader; `None` when `waiter` is
    /// answered later through the completions. `held_by`: see
    /// `hold_cluster`.
    pub(super) fn execute_cluster(
        &mut self,
        request: ClusterRequest,
        waiter: Waiter,
        held_by: Option<u64>,
    ) -> Option<Reply> {
        let me = self.config.id;
        if request.is_change() && !self.change_has_connected_quorum(&request) {
            // As for a write (`Server::takes_writes`): appended now, the
            // change could not commit, yet could once the voters return
            // and this node is elected again with it in its log, after its
            // client was told `-TIMEOUT`. Refused unappended, it keeps
            // SPEC's promise for no quorum.
            return Some(Reply::error(NO_LEADER));
        }
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
                if !members.contains(&id) {
                    if let Some(owner) = self.cluster.book.owner_of(addr, &members) {
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
            ClusterRequest::Remove { id } if id == me => return self.remove_self(waiter, held_by),
            ClusterRequest::Remove { id } => self
                .replica
                .propose_conf_change(ConfChange::Remove { id }, waiter),
            ClusterRequest::Transfer { id } => self.replica.transfer_leader(id, waiter),
        };
        match result {
            Ok(()) => None,
            Err((ConfChangeError::ChangeInProgress, waiter)) if self.change_soon_possible() => {
                self.hold_cluster(waiter, request, held_by);
                None
            }
            // A transfer under way (CLUSTER TRANSFER, or a stopping
            // leader's handover): held, as a write is, the command goes to
            // the new leader once it leads (sent back `not the leader`), is
            // carried out here if the transfer is abandoned, or is refused
            // `-TRYAGAIN no leader` if this node stops without handing
            // over. Refused now, its client would have to retry what the
            // next leader, or this one a moment later, can do.
            Err((ConfChangeError::TransferInProgress, waiter)) => {
                self.hold_cluster(waiter, request, held_by);
                None
            }
            Err((err, _)) => Some(change_error(err)),
        }
    }

    /// Whether a change appended now could commit over this leader's open
    /// connections. A configuration is in force once appended
    /// (`raft/membership.rs`), so a removal of a voter commits under the
    /// voters that remain: with one of two voters dead, removing it (what
    /// README advises) leaves this node a majority of its own, and commits
    /// at once, though the voters of today have no connected majority.
    fn change_has_connected_quorum(&self, request: &ClusterRequest) -> bool {
        if self.quorum_connected {
            return true;
        }
        let ClusterRequest::Remove { id } = *request else {
            return false;
        };
        let me = self.config.id;
        let voters = self.replica.node().voters();
        if !voters.contains(&id) {
            return false;
        }
        let remaining = voters.iter().filter(|&&voter| voter != id);
        let connected = remaining
            .clone()
            .filter(|&&voter| voter == me || self.peers.is_connected(voter))
            .count();
        connected > remaining.count() / 2
    }

    /// A change refused while the configuration in force is committed was
    /// refused only because this leader has not yet committed an entry of
    /// its term: that takes one round trip, so the request waits for it.
    fn change_soon_possible(&self) -> bool {
        let status = self.replica.status();
        status.conf_index <= status.commit_index
    }

    /// CLUSTER REMOVE of this leader: hand over first (see the module docs)
    /// to the most up-to-date other voter heard from lately.
    fn remove_self(&mut self, waiter: Waiter, held_by: Option<u64>) -> Option<Reply> {
        let me = self.config.id;
        let status = self.replica.status();
        if !status.voters.contains(&me) && !status.learners.contains(&me) {
            return Some(change_error(ConfChangeError::UnknownNode { id: me }));
        }
        if self.cluster.self_removal.is_some() {
            return Some(change_error(ConfChangeError::TransferInProgress));
        }
        // Refused before leadership moves, not by the successor after it.
        match self.replica.node().check_remove(me) {
            Ok(()) => {}
            // A new leader that has not heard from the voters yet: it knows
            // within a check-quorum round, and the held request is tried
            // again every iteration meanwhile.
            Err(ConfChangeError::ChangeInProgress) => {
                let request = ClusterRequest::Remove { id: me };
                self.hold_cluster(waiter, request, held_by);
                return None;
            }
            Err(err) => return Some(change_error(err)),
        }
        let Some(successor) = self.replica.node().removal_successor() else {
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

    /// Once no transfer runs: each held request is carried out, held
    /// again (a TRANSFER among them started another), or, for a forward
    /// that would write with no connected quorum, put in `quorum_waits`,
    /// as it would be had it arrived now. Proposed then, it could not
    /// commit until the quorum returned, so its follower could only be
    /// told `-TIMEOUT outcome unknown`; waiting there, it is proposed
    /// once the quorum is back or answered `-TRYAGAIN no leader` at its
    /// `by`, never written.
    pub(super) fn retry_held_requests(&mut self) {
        let mut ahead = QuorumWaitsAhead::default();
        for (waiter, held) in std::mem::take(&mut self.cluster.held) {
            self.retry_held(waiter, held, &mut ahead);
        }
        self.wait_for_quorum_ahead(ahead.requests);
    }

    fn retry_held(&mut self, waiter: Waiter, held: Held, ahead: &mut QuorumWaitsAhead) {
        if let Waiter::Client { token, seq } = waiter {
            // Answered at its deadline while held (a TRANSFER `-TRYAGAIN
            // no leader`): carried out now, it would break that answer.
            if !self.slot_waiting(token, seq) {
                return;
            }
        }
        if !self.replica.is_leader() {
            match (waiter, held) {
                (Waiter::Client { token, seq }, Held::Cluster { request, .. }) => {
                    // Never proposed: parked, its deadline answers -TRYAGAIN.
                    self.park_cluster_again(token, seq, request);
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
            Held::Kv { command, by } => {
                if let Waiter::Peer { from, id } = waiter {
                    if self.holds_forwarded_from(from) {
                        // Behind that follower's request held again in
                        // this pass (a TRANSFER retried before it started
                        // a transfer), in order, as `propose_forwarded`
                        // keeps them: a read served now would miss the
                        // write its connection sent before it.
                        return self.hold_forwarded(waiter, command, by);
                    }
                    // Not while a transfer runs again (a TRANSFER earlier
                    // in this pass started one): held again below, it
                    // waits for that transfer's end first.
                    let no_quorum = command.is_write()
                        && !self.quorum_connected
                        && self.replica.node().transfer_target().is_none();
                    if no_quorum || ahead.followers.contains(&from) {
                        // Reads too, behind that follower's writes waiting
                        // for the quorum, for the same reason.
                        ahead.followers.insert(from);
                        ahead.requests.push((from, id, command, by));
                        return;
                    }
                }
                let result = if command.is_write() {
                    self.replica.propose(command, waiter)
                } else {
                    self.replica.read(command, waiter)
                };
                match result {
                    Ok(()) => {}
                    Err(refused) if refused.error == ProposeError::TransferInProgress => {
                        self.hold_forwarded(refused.waiter, refused.command, by)
                    }
                    Err(refused) => self.completions.push(Completion {
                        waiter: refused.waiter,
                        reply: Reply::error(NOT_THE_LEADER),
                    }),
                }
            }
            Held::Cluster { request, by } => {
                if let Some(reply) = self.execute_cluster(request, waiter, Some(by)) {
                    self.completions.push(Completion { waiter, reply });
                }
            }
        }
    }

    /// Before a node exits: the CLUSTER commands of its own clients that
    /// are still here are answered, so that none is left to a closed
    /// connection. One parked or held, or a removal of this node still
    /// handing over, was never proposed: `-TRYAGAIN no leader` (but a
    /// TRANSFER parked again after its leader was lost, which that leader
    /// may have acted on: abandoned). One
    /// forwarded to the new leader and not answered yet may still be
    /// carried out there: `-TIMEOUT outcome unknown` for a change.
    pub(in crate::server) fn answer_own_cluster_commands(&mut self) {
        let refused = Reply::error(NO_LEADER);
        for token in self.cluster.parked.start_dispatch() {
            for parked in self.cluster.parked.take(token) {
                let waiter = Waiter::Client {
                    token,
                    seq: parked.seq,
                };
                let reply = self.refused_unless_orphaned(token, parked.seq, &refused);
                self.completions.push(Completion { waiter, reply });
            }
        }
        self.cluster.parked.finish_dispatch();
        let held = std::mem::take(&mut self.cluster.held);
        let removal = self.cluster.self_removal.take().map(|(waiter, _)| waiter);
        for waiter in held.into_iter().map(|(waiter, _)| waiter).chain(removal) {
            let reply = match waiter {
                Waiter::Client { token, seq } => self.refused_unless_orphaned(token, seq, &refused),
                _ => refused.clone(),
            };
            self.completions.push(Completion { waiter, reply });
        }
        for (_, (token, seq, request, _)) in std::mem::take(&mut self.cluster.forwards) {
            let reply = match request {
                ClusterRequest::Members => refused.clone(),
                ClusterRequest::Transfer { id } => crate::replica::reply_transfer_abandoned(id),
                _ => Reply::error("TIMEOUT outcome unknown"),
            };
            self.completions.push(Completion {
                waiter: Waiter::Client { token, seq },
                reply,
            });
        }
        self.deliver_completions();
    }

    /// `refused` for a CLUSTER command of slot `seq` answered at exit,
    /// unless it is a TRANSFER parked again after its leader was lost: that
    /// leader may have acted on it, so it is abandoned.
    fn refused_unless_orphaned(&mut self, token: Token, seq: u64, refused: &Reply) -> Reply {
        match self.cluster.take_orphaned_transfer(token, seq) {
            Some(target) => crate::replica::reply_transfer_abandoned(target),
            None => refused.clone(),
        }
    }

    pub(super) fn settle_self_removal(&mut self, outcome: TransferOutcome) {
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
                self.park_cluster_again(token, seq, ClusterRequest::Remove { id: me });
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
}

#[cfg(test)]
#[path = "cluster_leader_held_tests.rs"]
pub(in crate::server) mod held_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A CLUSTER command held by a transfer under way whose deadline
    /// answers it (a TRANSFER `-TRYAGAIN no leader`, an ADD `-TIMEOUT`) is
    /// dropped when the held commands are retried, not carried out after
    /// its client was told it was not, or may not be.
    #[test]
    fn a_held_cluster_command_answered_at_its_deadline_is_never_carried_out() {
        use crate::server::client_io::tests::{connect, expect_replies, lead, node};
        use crate::server::clients::{Kind, Pending};
        let (mut server, _dir) = node();
        lead(&mut server);
        let (mut c, tc) = connect(&mut server);
        let requests = [
            (false, ClusterRequest::Transfer { id: 2 }),
            (
                true,
                ClusterRequest::Add {
                    id: 4,
                    addr: "127.0.0.1:9".to_string(),
                },
            ),
        ];
        for (write, request) in requests {
            let client = server.clients.get_mut(&tc).expect("client");
            let pending = Pending::InFlight {
                write,
                forward: None,
            };
            let seq = client.open_slot(pending, Kind::Change);
            let waiter = Waiter::Client { token: tc, seq };
            let held = Held::Cluster { request, by: 0 };
            server.cluster.held.push((waiter, held));
            server.expire(tc, seq);
        }
        server.flush_clients();
        expect_replies(
            &mut c,
            b"-TRYAGAIN no leader\r\n-TIMEOUT outcome unknown\r\n",
        );
        assert_eq!(server.replica.node().transfer_target(), None);
        server.cluster_tick();
        assert!(server.cluster.held.is_empty());
        assert_eq!(server.replica.pending(), 0, "the ADD was appended");
        assert_eq!(server.replica.status().learners, Vec::<NodeId>::new());
    }

    /// A TRANSFER under way when its deadline comes may still finish: it is
    /// answered as abandoned, not `-TRYAGAIN` (nothing happened), and its
    /// waiter is let go, so that the outcome does not answer it again.
    #[test]
    fn a_transfer_under_way_at_its_deadline_is_answered_abandoned() {
        use crate::server::client_io::tests::{connect, expect_replies, lead, node};
        use crate::server::clients::{Kind, Pending};
        let (mut server, _dir) = node();
        lead(&mut server);
        let (mut c, tc) = connect(&mut server);
        let client = server.clients.get_mut(&tc).expect("client");
        let pending = Pending::InFlight {
            write: false,
            forward: None,
        };
        let seq = client.open_slot(pending, Kind::Change);
        // To itself, the only voter: its outcome comes with the next `Ready`.
        let waiter = Waiter::Client { token: tc, seq };
        assert!(server.replica.transfer_leader(1, waiter).is_ok());
        server.expire(tc, seq);
        server.flush_clients();
        expect_replies(&mut c, b"-ERR transfer to 1 abandoned\r\n");
        assert!(server.replica.take_transfer_waiters().is_empty());
    }

    /// Two clients wait on one transfer; the first's deadline lets it go
    /// ("abandoned"), the second still gets the outcome, and the first gets
    /// nothing more.
    #[test]
    fn other_waiters_of_a_forgotten_transfer_still_get_its_outcome() {
        use crate::server::client_io::tests::{connect, expect_replies, lead, node};
        use crate::server::clients::{Kind, Pending};
        let (mut server, _dir) = node();
        lead(&mut server);
        let (mut a, ta) = connect(&mut server);
        let (mut b, tb) = connect(&mut server);
        let mut seqs = Vec::new();
        for t in [ta, tb] {
            let client = server.clients.get_mut(&t).expect("client");
            let pending = Pending::InFlight {
                write: false,
                forward: None,
            };
            let seq = client.open_slot(pending, Kind::Change);
            assert!(server
                .replica
                .transfer_leader(1, Waiter::Client { token: t, seq })
                .is_ok());
            seqs.push(seq);
        }
        server.expire(ta, seqs[0]);
        server.flush_clients();
        expect_replies(&mut a, b"-ERR transfer to 1 abandoned\r\n");
        for _ in 0..5 {
            server.iterate().expect("iterate");
        }
        expect_replies(&mut b, b"+OK\r\n");
        assert!(server.replica.take_transfer_waiters().is_empty());
        a.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("set the read timeout");
        let mut extra = [0u8; 64];
        use std::io::Read;
        assert!(a.read(&mut extra).is_err(), "a second reply to A");
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
            (
                ConfChangeError::NoQuorumAfterRemoval {
                    id: 2,
                    voters: 2,
                    reachable: 1,
                },
                "TRYAGAIN removing node 2 would leave 2 voters of which only 1 are reachable, no quorum",
            ),
        ];
        for (err, reply) in cases {
            assert_eq!(change_error(err), Reply::error(reply));
        }
    }
}
