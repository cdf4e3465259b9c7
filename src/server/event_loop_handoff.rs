//! A leader asked to stop (SIGTERM/SIGINT, or an embedding process) hands
//! its leadership to another voter first, as etcd does on a graceful
//! shutdown: otherwise the others elect a successor only after an election
//! timeout, which a rolling restart would pay once per leader.
//!
//! The node stops taking clients (the client listener closes, nothing more
//! is read from connected clients) and starts a leadership transfer
//! (`raft/transfer.rs`) to the voter the core picks: the target is brought
//! up to date, sent TimeoutNow, and campaigns at once. The loop runs on,
//! answering the writes in flight as they commit, until another node leads
//! and those writes are answered, and so are its clients' CLUSTER commands
//! (which go to the new leader), or a bound passes: one election timeout,
//! at most [`MAX_HANDOFF`]. A second stop request ends it at once. A
//! follower, or a leader with no voter to hand over to, stops at once.

use super::Server;
use crate::kv::Reply;
use crate::raft::{NodeId, Role, NO_NODE};
use crate::server::cluster::NOT_THE_LEADER;
use crate::server::requests::NO_LEADER;
use crate::wire::peer_msg::PeerMessage;
use log::{info, warn};
use std::time::{Duration, Instant};

/// The longest a stopping leader spends handing over, whatever the election
/// timeout: SPEC wants a stop to be prompt, and `--local-cluster` kills a
/// child still running 5 s after it asked it to stop.
const MAX_HANDOFF: Duration = Duration::from_secs(2);

/// A handover under way before the node stops.
pub(super) struct Handoff {
    target: NodeId,
    until: Instant,
}

impl Server {
    /// A stop was asked for: hand the leadership over first if this node
    /// leads and has a voter to give it to, else stop after this iteration.
    pub(in crate::server) fn stop_requested(&mut self) {
        if self.handoff.is_some() {
            info!("asked to stop again while handing leadership over; stopping now");
            self.shutdown = true;
            return;
        }
        self.shutdown = !self.start_handoff();
    }

    fn start_handoff(&mut self) -> bool {
        let node = self.replica.node();
        if node.role() != Role::Leader {
            return false;
        }
        // A transfer under way (CLUSTER TRANSFER, a self-removal) already
        // hands over: the stop waits for it rather than start another.
        let target = match node.transfer_target() {
            Some(target) => target,
            None => {
                let peers = &self.peers;
                let Some(target) = node.stop_successor(|id| peers.is_connected(id)) else {
                    info!("no voter to hand leadership to; stopping at once");
                    return false;
                };
                if let Err(err) = self.replica.node_mut().transfer_leader(target) {
                    warn!("cannot hand leadership to node {}: {}", target, err);
                    return false;
                }
                target
            }
        };
        let bound = Duration::from_millis(self.config.election_timeout_ms).min(MAX_HANDOFF);
        info!(
            "handing leadership to node {} before stopping (for at most {} ms)",
            target,
            bound.as_millis()
        );
        self.stop_taking_clients();
        self.handoff = Some(Handoff {
            target,
            until: Instant::now() + bound,
        });
        true
    }

    /// Before the node exits: the requests followers forwarded that it holds
    /// unproposed (for a transfer that did not finish, or for a quorum) are
    /// refused `-TRYAGAIN no leader`, which the follower relays as it is.
    /// Left to the closing connection, a write would be answered `-TIMEOUT
    /// outcome unknown` though it was never appended; sent back to be routed
    /// again (`-TRYAGAIN not the leader`), it could come straight back here,
    /// should the follower read the reply before it sees the connection
    /// close, and be lost with it.
    pub(super) fn refuse_unproposed_forwards(&mut self) {
        let mut refused = self.take_held_forwards();
        refused.extend(self.quorum_waits.drain(..).map(|(from, id, ..)| (from, id)));
        for (from, id) in refused {
            let reply = Reply::error(NO_LEADER);
            self.peers
                .send(from, &PeerMessage::ForwardReply { id, reply });
        }
    }

    /// Last before the node exits, after every reply it sends: tells each
    /// peer which of its forwards this node never read. The connection
    /// closing alone leaves a peer unable to tell a write this node never
    /// saw (sent after its last read: a learner, which hears of the new
    /// leader only from that leader, sends its writes back here when told
    /// `not the leader`) from one it may have appended, and it answers
    /// both `-TIMEOUT outcome unknown`.
    pub(super) fn tell_peers_stopping(&mut self) {
        let ids: Vec<NodeId> = self.peers.members.keys().copied().collect();
        for id in ids {
            let first_unread_forward = self.forwards_read.get(&id).copied().unwrap_or(0);
            self.peers.send(
                id,
                &PeerMessage::Stopping {
                    first_unread_forward,
                },
            );
        }
    }

    /// Node `from` is stopping and never read our forwards from
    /// `first_unread` on: they are routed again, as on `not the leader`,
    /// and our connection to it is closed (it counts as unreachable, so
    /// requests wait for the next leader rather than go to it, until the
    /// redial a second on, which a node that slow to exit may still accept:
    /// what goes to it then ends `-TIMEOUT`, as before this message).
    pub(in crate::server) fn peer_stopping(&mut self, from: NodeId, first_unread: u64) {
        info!("node {} is stopping", from);
        // What it says covers only the forwards sent since our latest
        // connection with it: an earlier one may have reached an earlier run
        // of it (killed, then restarted, while we waited for its reply),
        // which may have appended them, though this run read none.
        let floor = match self.forward_floors.get(&from) {
            Some(&(connection, floor)) if connection == self.peers.last_connection(from) => floor,
            _ => self.next_forward_id,
        };
        let first_unread = first_unread.max(floor);
        let mut unread: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(id, forwarded)| forwarded.leader == from && **id >= first_unread)
            .map(|(id, _)| *id)
            .collect();
        unread.sort_unstable();
        for id in unread {
            self.handle_forward_reply(id, Reply::error(NOT_THE_LEADER));
        }
        for id in self.cluster.forwarded_to_from(from, first_unread) {
            self.handle_forward_reply(id, Reply::error(NOT_THE_LEADER));
        }
        self.peers.close_outbound(
            from,
            self.poll.registry(),
            "it is stopping",
            &mut self.peer_events,
        );
    }

    /// A forward with id `id` goes to `leader` now (see `forward_floors`).
    pub(in crate::server) fn note_forward_sent(&mut self, leader: NodeId, id: u64) {
        let connection = self.peers.last_connection(leader);
        match self.forward_floors.get(&leader) {
            Some(&(since, _)) if since == connection => {}
            _ => {
                self.forward_floors.insert(leader, (connection, id));
            }
        }
    }

    /// Closes the client listener, so that new clients are refused rather
    /// than accepted by a node about to go.
    pub(super) fn stop_taking_clients(&mut self) {
        if let Some(mut listener) = self.client_listener.take() {
            if let Err(err) = self.poll.registry().deregister(&mut listener) {
                warn!("cannot deregister the client listener: {}", err);
            }
        }
    }

    /// Whether a handover is under way: no client request is read meanwhile.
    pub(in crate::server) fn handing_over(&self) -> bool {
        self.handoff.is_some()
    }

    /// Whether the node is on its way out: handing over, or stopping at the
    /// end of this iteration. No client request is read or routed then: one
    /// routed now could get no answer before the node goes, and one still
    /// parked is answered `-TRYAGAIN` at exit (`event_loop_exit.rs`).
    pub(in crate::server) fn stopping(&self) -> bool {
        self.handoff.is_some() || self.exiting()
    }

    /// Whether the node exits at the end of this iteration.
    pub(in crate::server) fn exiting(&self) -> bool {
        self.shutdown
    }

    /// The poll's timeout, cut so that the loop wakes by the handover's bound.
    pub(super) fn handoff_poll_timeout(&self, timeout: Duration) -> Duration {
        match &self.handoff {
            Some(handoff) => timeout.min(handoff.until.saturating_duration_since(Instant::now())),
            None => timeout,
        }
    }

    /// After each iteration of a handover: stop once another node leads and
    /// this node's writes in flight are answered, once the bound has passed,
    /// once the target's connection is gone, or once the transfer was
    /// abandoned while this node still leads.
    pub(super) fn check_handoff(&mut self) {
        let Some(handoff) = &self.handoff else {
            return;
        };
        let node = self.replica.node();
        let leader = node.leader_id();
        let pending = self.replica.pending();
        // CLUSTER commands of this node's clients (a removal of this node
        // among them, routed again once the transfer it started finished)
        // go to the new leader, whose answer is waited for.
        let own_cluster_requests = self.cluster.has_own_requests();
        let stop = if leader != NO_NODE
            && leader != self.config.id
            && pending == 0
            && !own_cluster_requests
        {
            info!("node {} leads now; stopping", leader);
            true
        } else if Instant::now() >= handoff.until {
            info!(
                "leadership not handed to node {} within the bound (leader: {}, {} requests unanswered); stopping anyway",
                handoff.target, leader, pending
            );
            true
        } else if !self.peers.is_connected(handoff.target) && node.leader_id() != handoff.target {
            // Stopped too (all nodes stopped together, as `--local-cluster`
            // does): nobody is left to wait for.
            info!(
                "node {} went away before it took over; stopping",
                handoff.target
            );
            true
        } else if node.role() == Role::Leader && node.transfer_target().is_none() {
            info!(
                "the transfer to node {} was abandoned; stopping as leader",
                handoff.target
            );
            true
        } else {
            false
        };
        self.shutdown |= stop;
    }
}

#[cfg(test)]
mod tests {
    use super::Handoff;
    use crate::server::client_io::tests::{connect, lead, node, send};
    use std::time::{Duration, Instant};

    /// A leader handing over whose transfer is no longer under way (it was
    /// abandoned: `check_handoff` stops the node as leader at the end of
    /// this iteration) keeps a parked CLUSTER ADD parked: appended here, it
    /// could only be answered `-TIMEOUT` at exit; parked, it is refused
    /// `-TRYAGAIN`, unapplied.
    #[test]
    fn a_leader_whose_handover_was_abandoned_routes_no_parked_cluster_command() {
        let (mut server, _dir) = node();
        let (mut c, tc) = connect(&mut server);
        send(&mut c, b"CLUSTER ADD 4 127.0.0.1:9\r\n");
        server.read_client(tc);
        assert!(server.cluster.parked.holds(tc), "no leader is known");
        server.handoff = Some(Handoff {
            target: 2,
            until: Instant::now() + Duration::from_secs(60),
        });
        lead(&mut server);
        assert_eq!(server.replica.node().transfer_target(), None);
        assert_eq!(
            server.replica.status().learners,
            Vec::<u64>::new(),
            "a stopping leader appended a parked CLUSTER ADD"
        );
    }
}
