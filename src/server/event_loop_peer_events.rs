//! What peers send, on the loop's side: connections accepted on the raft
//! port, the messages and disconnections `Peers` reports (stepped into the
//! core, or handed to forwarding and snapshots), and the peer host names
//! whose lookups have finished, dialed.
//!
//! Separate from `event_loop.rs` so that the loop reads as its order of
//! steps; and not in `peers.rs`, because `Peers` knows connections and frames
//! but not the core or the snapshots. This is where a peer's message meets
//! them, and the rule that holds back appends while a snapshot is being
//! finished reads best next to the dispatch of every other peer message.

use super::timers::{after_accept_error, AfterAcceptError};
use super::Server;
use crate::raft::{Message, MessageBody, Role};
use crate::server::peers::PeerEvent;
use crate::server::snapshots::Chunk;
use crate::wire::peer_msg::PeerMessage;
use log::{debug, info};

impl Server {
    /// Starts the lookups of peer host names that dials asked for, and dials
    /// those that were answered (see `lookups`).
    pub(super) fn look_up_peers(&mut self) {
        for (peer, raft_addr) in std::mem::take(&mut self.peers.lookups) {
            self.lookups.start(peer, raft_addr);
        }
        let answers: Vec<_> = self.lookups.answers().collect();
        for answer in answers {
            let token = self.take_token();
            self.peers.looked_up(
                answer.peer,
                &answer.raft_addr,
                answer.result,
                self.poll.registry(),
                token,
            );
        }
    }

    pub(super) fn accept_peers(&mut self) {
        loop {
            // Closed before the node exits; a retry timer may still fire.
            let Some(listener) = self.raft_listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    self.accept_failures[1] = 0;
                    let token = self.take_token();
                    self.peers.accept(stream, self.poll.registry(), token);
                }
                Err(err) => match after_accept_error(&err) {
                    AfterAcceptError::Stop => return,
                    AfterAcceptError::Next => debug!("accept on the raft port: {}", err),
                    AfterAcceptError::Retry => return self.accept_failed(true, &err),
                },
            }
        }
    }

    pub(super) fn handle_peer_events(&mut self) {
        let events = std::mem::take(&mut self.peer_events);
        for event in events {
            match event {
                PeerEvent::Message { from, message } => match message {
                    PeerMessage::Raft(message) => self.step_peer_message(message),
                    PeerMessage::Forward { id, payload } => self.handle_forward(from, id, &payload),
                    PeerMessage::ForwardReply { id, reply } => self.handle_forward_reply(id, reply),
                    PeerMessage::Stopping {
                        first_unread_forward,
                    } => self.peer_stopping(from, first_unread_forward),
                    PeerMessage::SnapshotChunk {
                        snapshot_index,
                        snapshot_term,
                        offset,
                        total,
                        data,
                    } => self.snapshots.on_chunk(
                        Chunk {
                            from,
                            index: snapshot_index,
                            term: snapshot_term,
                            offset,
                            total,
                            data: &data,
                        },
                        self.replica.node().leader_id(),
                    ),
                },
                PeerEvent::Disconnected(id) => {
                    self.forwards_to_check = true;
                    self.replica.report_unreachable(id);
                    self.snapshots
                        .peer_disconnected(id, &mut self.snapshot_reports);
                }
            }
        }
    }

    /// An InstallSnapshot that would replace our state waits until the
    /// snapshot thread has checked and decoded the file streamed before it.
    fn step_peer_message(&mut self, message: Message) {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            if let Some(message) = self.snapshots.on_install_message(message, &self.replica) {
                self.replica.step(message);
            }
        } else if self.snapshots.is_finishing()
            && matches!(message.body, MessageBody::Append { .. })
        {
            // Our log is still the one before the snapshot, so the core would
            // reject this, and the leader, whose log no longer holds what we
            // lack, would stream the whole snapshot again. Dropped instead:
            // the leader probes again after its next heartbeat, answered once
            // the snapshot is in.
            debug!(
                "append from node {} dropped: a snapshot is being finished",
                message.from
            );
        } else if message.body == MessageBody::TimeoutNow {
            let from = message.from;
            self.replica.step(message);
            // Says why this node campaigns without an election timeout: a
            // leader handing over (CLUSTER TRANSFER, a stop) asked it to.
            let node = self.replica.node();
            if node.role() == Role::Candidate {
                info!(
                    "campaigning in term {} at the request of leader node {} (leadership transfer)",
                    node.term(),
                    from
                );
            }
        } else {
            self.replica.step(message);
        }
    }
}
