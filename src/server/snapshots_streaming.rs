//! The leader's side of snapshots: streaming the newest snapshot file to
//! followers that are behind its log, a few chunks per loop iteration, and
//! holding back repeats a follower could not use (`snapshot_resend`).
//! Separate from `snapshots.rs`, which takes snapshots and receives the
//! leader's, so that each reads in one sitting.

use super::{Outgoing, Snapshots, Wanted, CHUNK_BYTES, SEND_WINDOW};
use crate::raft::{Message, MessageBody, NodeId};
use crate::server::peers::Peers;
use crate::server::snapshot_resend::snapshot_of;
use crate::storage::snapshot::{self, RawReader};
use crate::wire::peer_msg::PeerMessage;
use log::{debug, info, warn};
use std::time::Instant;

impl Snapshots {
    /// Starts streaming for every InstallSnapshot the core handed out, and
    /// for held repeats that are due (see `snapshot_resend`); pushes a
    /// failure report for those whose file cannot be opened, and for held
    /// ones of a term this node no longer leads (`leader_term`) or that the
    /// core no longer wants (`wanted`, see [`Wanted`]).
    pub fn start_streams(
        &mut self,
        leader_term: Option<u64>,
        wanted: Wanted<'_>,
        reports: &mut Vec<(NodeId, bool)>,
    ) {
        self.start_streams_at(Instant::now(), leader_term, wanted, reports);
    }

    pub(super) fn start_streams_at(
        &mut self,
        now: Instant,
        leader_term: Option<u64>,
        wanted: Wanted<'_>,
        reports: &mut Vec<(NodeId, bool)>,
    ) {
        // The core's new messages first: one replaces a message held for
        // its node, which then gets no report (it would land on the new one).
        for message in std::mem::take(&mut self.requested) {
            self.start_stream(message, now, reports);
        }
        // A held repeat is not started once this node no longer leads in
        // its term, nor once the core no longer waits for it: it fails, as
        // a stream would (see `pump`). Started, it sent a whole snapshot the
        // follower would not install, or would need the newest one after.
        let stale = self.resend.drop_unless(|message| {
            Some(message.term) == leader_term
                && snapshot_of(message).is_some_and(|(index, _)| wanted(message.to, index))
        });
        for to in stale {
            info!(
                "held snapshot for node {} dropped: no longer needed (not the leader of its term, the node caught up, or the log moved past it)",
                to
            );
            reports.push((to, false));
        }
        for message in self.resend.take_due(now) {
            self.start_stream(message, now, reports);
        }
    }

    /// Starts streaming one InstallSnapshot, unless it is the stream under
    /// way or a repeat that must wait.
    fn start_stream(&mut self, message: Message, now: Instant, reports: &mut Vec<(NodeId, bool)>) {
        let Some((index, term)) = snapshot_of(&message) else {
            return;
        };
        let same_stream = self.outgoing.get(&message.to).is_some_and(|out| {
            out.message.term == message.term && snapshot_of(&out.message) == Some((index, term))
        });
        if same_stream || self.resend.is_held(&message) {
            // A removed node is sent our snapshot at each of its
            // pre-votes; restarting the stream each time could keep it
            // from ever finishing.
            return;
        }
        let to = message.to;
        let message = match self.resend.admit(message, now) {
            Ok(message) => message,
            Err(due) => {
                info!(
                    "node {} asks again for snapshot {}/{}, which it was sent in full (it could not use it, or is still loading it): sending it again in {} ms",
                    to,
                    index,
                    term,
                    due.saturating_duration_since(now).as_millis()
                );
                return;
            }
        };
        let path = self.dir.join(snapshot::file_name(index, term));
        match RawReader::open(&path) {
            Ok(reader) => {
                info!(
                    "sending snapshot {}/{} ({} bytes) to node {}",
                    index,
                    term,
                    reader.len(),
                    to
                );
                let replaced = self.outgoing.insert(
                    to,
                    Outgoing {
                        message,
                        reader,
                        offset: 0,
                    },
                );
                if replaced.is_some() {
                    // Only a new progress (a new term) sends again before the
                    // report; the old report would land on the new one.
                    debug!("snapshot stream to {} restarted", to);
                }
            }
            Err(err) => {
                warn!("cannot send snapshot to node {}: {}", to, err);
                reports.push((to, false));
            }
        }
    }

    /// Queues more chunks on each stream, up to the send window; finishes
    /// streams whose bytes are all queued. `leader_term` is the current term
    /// while this node leads: streams of another term, or when it does not
    /// lead, are abandoned; so are those the core no longer `wanted`, which
    /// also closes their file: kept open by a slow or stopped follower's
    /// stream, a snapshot pruned meanwhile held its disk space for as long.
    pub fn pump(
        &mut self,
        peers: &mut Peers,
        leader_term: Option<u64>,
        wanted: Wanted<'_>,
        reports: &mut Vec<(NodeId, bool)>,
    ) {
        let ids: Vec<NodeId> = self.outgoing.keys().copied().collect();
        for to in ids {
            let Some(out) = self.outgoing.get_mut(&to) else {
                continue;
            };
            let result = if leader_term != Some(out.message.term) {
                Err("no longer the leader of that term".to_string())
            } else if !snapshot_of(&out.message).is_some_and(|(index, _)| wanted(to, index)) {
                Err("no longer needed (the node caught up, or the log moved past it)".to_string())
            } else {
                pump_one(out, peers)
            };
            match result {
                Ok(false) => {}
                Ok(true) => {
                    if let Some(out) = self.outgoing.remove(&to) {
                        self.resend.finished(&out.message, Instant::now());
                    }
                    self.stats.sent += 1;
                    reports.push((to, true));
                }
                Err(why) => {
                    info!("snapshot stream to node {} abandoned: {}", to, why);
                    self.outgoing.remove(&to);
                    reports.push((to, false));
                }
            }
        }
    }

    /// The connection to `to` went down: a stream to it cannot continue.
    pub fn peer_disconnected(&mut self, to: NodeId, reports: &mut Vec<(NodeId, bool)>) {
        if self.outgoing.remove(&to).is_some() {
            info!("snapshot stream to node {} abandoned: disconnected", to);
            reports.push((to, false));
        }
    }
}

/// Queues chunks while the window allows; Ok(true) once the message itself
/// is queued after the last chunk.
fn pump_one(out: &mut Outgoing, peers: &mut Peers) -> Result<bool, String> {
    let to = out.message.to;
    let MessageBody::InstallSnapshot { meta } = &out.message.body else {
        return Err("not an InstallSnapshot".to_string());
    };
    loop {
        let Some(pending) = peers.pending_output(to) else {
            // Reported like a Raft message that could not be queued, so
            // that a node we do not dial gets dialed: a removed node that
            // came back after our grace period for it, past our compaction,
            // is answered with this snapshot, and learned its removal from
            // nothing else (it pre-voted on, `-TRYAGAIN no leader`).
            peers.unreachable.push(to);
            return Err("not connected".to_string());
        };
        if pending >= SEND_WINDOW {
            return Ok(false);
        }
        if out.offset == out.reader.len() {
            if !peers.send(to, &PeerMessage::Raft(out.message.clone())) {
                return Err("cannot queue the message".to_string());
            }
            return Ok(true);
        }
        let data = out
            .reader
            .read_chunk(out.offset, CHUNK_BYTES)
            .map_err(|e| e.to_string())?;
        let n = data.len() as u64;
        let chunk = PeerMessage::SnapshotChunk {
            snapshot_index: meta.index,
            snapshot_term: meta.term,
            offset: out.offset,
            total: out.reader.len(),
            data,
        };
        if !peers.send(to, &chunk) {
            return Err("cannot queue a chunk".to_string());
        }
        out.offset += n;
    }
}
