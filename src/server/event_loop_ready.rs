//! The core's output, and the background work that finishes it: each Ready
//! batch handled (`process_ready`), the background sync a batch started
//! reported back to the core (`collect_syncs`), the InstallSnapshots the core
//! sent streamed to their followers (`stream_snapshots`), and what the
//! snapshot thread finished taken in (`collect_snapshots`).
//!
//! Separate from `event_loop.rs` because all of it is the loop's side of
//! `Replica`'s batch handling (README.md, "Architecture"): `Replica` decides
//! what is persisted, sent and synced, and in which order; the code here
//! passes on what it hands back (messages to peers, InstallSnapshots to
//! stream, state to free, role changes to log). When each runs is for
//! `iterate` to say, so the loop reads as its order of steps.

use super::Server;
use crate::raft::{Message, MessageBody, Role, SoftState, NO_NODE};
use crate::replica::Transport;
use crate::server::peers::{PeerEvent, Peers};
use crate::server::ServerError;
use log::info;
use mio::Registry;

impl Server {
    pub(super) fn process_ready(&mut self) -> Result<(), ServerError> {
        let mut transport = PeerTransport {
            peers: &mut self.peers,
            registry: self.poll.registry(),
            events: &mut self.peer_events,
            snapshots: &mut self.snapshots.requested,
        };
        let mut outcome = self
            .replica
            .handle_ready(&mut self.disk, &mut transport, &mut self.completions)
            .map_err(|err| ServerError::Fatal(err.to_string()))?;
        self.more_ready = outcome.more_ready;
        if let Some(replaced) = outcome.replaced_state.take() {
            self.snapshots.free(replaced);
        }
        for flushed in outcome.flushed.drain(..) {
            self.snapshots.free(flushed);
        }
        self.route_dropped_reads();
        self.cluster_after_ready(&outcome);
        for id in std::mem::take(&mut self.peers.unreachable) {
            self.replica.report_unreachable(id);
        }
        if let Some(soft) = outcome.soft_state {
            self.forwards_to_check = true;
            self.log_soft_state(soft);
        }
        if std::mem::take(&mut self.forwards_to_check) {
            self.settle_orphaned_forwards();
        }
        Ok(())
    }

    /// One line per change of role (with its term) or of the known leader.
    fn log_soft_state(&mut self, soft: SoftState) {
        let id = self.config.id;
        let role = match soft.role {
            Role::PreCandidate => "pre-candidate",
            other => other.as_str(),
        };
        if (soft.role, soft.term) != self.role_seen {
            match soft.role {
                Role::Leader => info!("node {} became leader in term {}", id, soft.term),
                Role::Follower if soft.leader_id != NO_NODE => info!(
                    "node {} is follower in term {}, leader is node {}",
                    id, soft.term, soft.leader_id
                ),
                _ => info!("node {} is {} in term {}", id, role, soft.term),
            }
        } else if soft.leader_id != self.leader_seen {
            if soft.leader_id == NO_NODE {
                info!("no leader in term {} (role {})", soft.term, role);
            } else {
                info!("leader is node {} in term {}", soft.leader_id, soft.term);
            }
        }
        self.role_seen = (soft.role, soft.term);
        self.leader_seen = soft.leader_id;
    }

    /// Releases what the batches whose background sync finished promised.
    pub(super) fn collect_syncs(&mut self) -> Result<(), ServerError> {
        let Some(result) = self.disk.syncer.as_ref().and_then(|s| s.try_done()) else {
            return Ok(());
        };
        let ticket = result.map_err(|err| ServerError::Fatal(format!("sync failed: {}", err)))?;
        let mut transport = PeerTransport {
            peers: &mut self.peers,
            registry: self.poll.registry(),
            events: &mut self.peer_events,
            snapshots: &mut self.snapshots.requested,
        };
        self.replica.synced(ticket, &mut transport);
        Ok(())
    }

    /// Starts streams for the InstallSnapshots the core sent, queues more
    /// chunks on running ones, and reports finished streams to the core.
    pub(super) fn stream_snapshots(&mut self) {
        // A snapshot the core did not install (it learned the entries
        // another way) is not kept decoded, nor its file.
        if let Some(unused) = self.disk.decoded.take() {
            self.snapshots.free(unused);
        }
        let mut reports = std::mem::take(&mut self.snapshot_reports);
        let leader_term = self.replica.is_leader().then(|| self.replica.node().term());
        let node = self.replica.node();
        let wanted = |to, index| node.snapshot_wanted(to, index);
        self.snapshots
            .start_streams(leader_term, &wanted, &mut reports);
        self.snapshots
            .pump(&mut self.peers, leader_term, &wanted, &mut reports);
        for (to, ok) in reports {
            self.replica.report_snapshot(to, ok);
        }
    }

    /// Results of the snapshot thread; a written snapshot shrinks the log
    /// (the entries and segment files it lets go of are freed by the thread).
    pub(super) fn collect_snapshots(&mut self) -> Result<(), ServerError> {
        let compacted = self
            .snapshots
            .collect(&mut self.replica, &mut self.disk.decoded)?;
        if let Some(compacted) = compacted {
            let before = self.disk.storage.first_index();
            let segments = self.disk.storage.detach_before(compacted.keep_from);
            let after = self.disk.storage.first_index();
            if after > before {
                info!(
                    "log compacted: first index {} -> {} ({} bytes of segments left)",
                    before,
                    after,
                    self.disk.storage.log_bytes()
                );
            }
            self.snapshots.remove_segments(segments);
            self.snapshots.free(compacted.dropped);
        }
        Ok(())
    }
}

/// The replica's view of the peer connections.
struct PeerTransport<'a> {
    peers: &'a mut Peers,
    registry: &'a Registry,
    events: &'a mut Vec<PeerEvent>,
    /// InstallSnapshot messages: streamed with their bytes after the Ready.
    snapshots: &'a mut Vec<Message>,
}

impl Transport for PeerTransport<'_> {
    fn send(&mut self, message: Message) {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            self.snapshots.push(message);
        } else {
            self.peers.send_raft(message);
        }
    }
    fn flush(&mut self) {
        self.peers.flush(self.registry, self.events);
    }
}
