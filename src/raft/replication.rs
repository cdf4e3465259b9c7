//! Log replication (Raft §5.3) and the commit rule (§5.4.2): the leader's side
//! (sending, acknowledgements, backtracking, commit) and the follower's side
//! (accepting AppendEntries, heartbeats and snapshots).
//!
//! Sending is deferred: proposals and acknowledgements only update state, and
//! `flush_leader` (run by `ready()`) sends what each follower needs. So every
//! proposal of one loop iteration leaves in the same AppendEntries (group
//! commit), bounded by `max_msg_bytes` per message, `max_inflight_bytes` and `max_inflight_msgs`
//! unacknowledged messages per follower.

use super::message::{Entry, Message, MessageBody, NodeId, SnapshotMeta};
use super::node::conf_of_snapshot;
use super::progress::{Progress, ProgressState};
use super::quorum::{self, Membership};
use super::Node;

impl Node {
    pub(super) fn step_leader(&mut self, msg: Message) {
        let from = msg.from;
        match msg.body {
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, success, index, hint_index, hint_term),
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round)
            }
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Raft elects at most one leader per term, so this comes from a
                // bug or from a stranger on the raft port: refused, not obeyed.
                self.refused_messages += 1;
                log::error!(
                    "refused a message no honest peer sends: node {from} acts as leader in term {}, which this node leads: {msg}",
                    self.term
                )
            }
            // Late vote answers and transfer requests mean nothing to a leader.
            _ => {}
        }
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    ) {
        if success && index > self.log.last_index() {
            log::error!(
                "refused a message no honest peer sends: node {from} acknowledged entries up to {index}, beyond this leader's last entry {}",
                self.log.last_index()
            );
            self.refused_messages += 1;
            return;
        }
        // Resolve the hint against our own log before borrowing the progress.
        let probe_hint = if !success && hint_term > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term).0
        } else {
            hint_index
        };
        let compacted_through = self.log.first_index() - 1;
        let Some(pr) = self.progress.get_mut(&from) else {
            let short_of_removal = self.removal_committed(from) && index < self.log.conf_index();
            if success && short_of_removal {
                // Our entries reached it only in part (one message holds at
                // most `max_msg_bytes`): send on from where it acknowledged.
                self.probe_removed_node(from, index);
            } else if success {
                // A node no longer replicated to (its removal committed)
                // acknowledged entries late: tell it how far they are committed,
                // so it learns that it is out and stays quiet.
                let commit = index.min(self.log.committed);
                let read_round = self.reads.round;
                self.send(from, MessageBody::Heartbeat { commit, read_round });
            } else if probe_hint < index && self.removal_committed(from) {
                // A removed node's log differs from ours at `index`: probe
                // further back (each step is lower, so this ends).
                self.probe_removed_node(from, probe_hint);
            }
            return;
        };
        pr.recent_active = true;
        if !success && !self.config.acks_are_durable && pr.rejects_acknowledged(index) {
            // Without fsync a follower's OS crash loses what it acknowledged;
            // probing from `match_index` would be rejected for ever.
            log::warn!(
                "node {from} no longer holds entry {index}, which it acknowledged (lost in a crash without fsync?); probing from {probe_hint}"
            );
            pr.forget_match(index, probe_hint);
        }
        if !success {
            // Jump to where the logs may agree: the follower's hint, pulled
            // further back to the last entry of ours whose term is not above the
            // follower's (etcd `findConflictByTerm`). A whole diverging term is
            // skipped per round trip.
            if pr.maybe_decrease_to(index, probe_hint) && pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            return;
        }
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            // An acknowledgement short of the probe answers an older message:
            // one sent a snapshot, then a newer one because the log moved
            // past the first, acknowledges the first late. Replicating from
            // there would send it the newer snapshot again, whole.
            ProgressState::Probe if index + 1 >= pr.next_index => pr.become_replicate(),
            ProgressState::Probe => {}
            ProgressState::Snapshot { .. } if pr.match_index >= compacted_through => {
                // The follower now holds everything before our first entry.
                pr.become_probe();
                pr.become_replicate();
            }
            _ => {}
        }
        self.maybe_commit();
        self.maybe_send_timeout_now(from);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let latest = self.reads.round;
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.on_heartbeat_response(last_index);
        debug_assert!(
            read_round <= latest,
            "{from} acknowledged read round {read_round} of {latest}"
        );
        let read_round = read_round.min(latest);
        if read_round > pr.read_round_acked {
            pr.read_round_acked = read_round;
            self.confirm_reads();
        }
    }

    /// Raft §5.4.2: commit the highest index stored on a majority of voters,
    /// but only if it is of the current term; earlier terms' entries are then
    /// committed with it (Figure 8). The leader counts only what it has synced.
    pub(super) fn maybe_commit(&mut self) {
        let matches = voter_values(self.log.conf(), self.id, self.log.persisted, |id| {
            self.progress.get(&id).map_or(0, |pr| pr.match_index)
        });
        let index = quorum::majority_value(matches);
        if index > self.log.committed && self.log.term(index) == Some(self.term) {
            self.log.commit_to(index);
            self.on_leader_commit();
            self.on_leader_commit_membership();
        }
    }

    /// Whether `flush_leader` would send anything.
    pub(super) fn leader_wants_to_send(&self) -> bool {
        self.reads.broadcast_needed || self.progress.keys().any(|id| self.wants_append(*id))
    }

    /// Sends what proposals, acknowledgements and commits since the last
    /// `ready()` call for.
    pub(super) fn flush_leader(&mut self) {
        if self.reads.broadcast_needed {
            self.ask_to_confirm_reads();
        }
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            // In Replicate, keep sending until the window is full or the
            // follower has everything; otherwise one message.
            while self.wants_append(id) {
                let streaming = self.send_append(id);
                if !streaming {
                    break;
                }
            }
        }
    }

    /// A follower's progress as a new leader, or a new member's, starts it:
    /// probing from `next_index`.
    pub(super) fn new_progress(&self, next_index: u64) -> Progress {
        Progress::new(
            next_index,
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        )
    }

    /// Whether follower `id` is owed entries or the commit index.
    fn wants_append(&self, id: NodeId) -> bool {
        let pr = &self.progress[&id];
        !pr.is_paused()
            && (pr.next_index <= self.log.last_index()
                || pr.commit_sent < self.log.committed
                || pr.resend)
    }

    /// Sends one AppendEntries (or the snapshot, if the entries are compacted).
    /// Returns whether the follower is streaming and may take another.
    fn send_append(&mut self, id: NodeId) -> bool {
        let next = self.progress[&id].next_index;
        let prev_index = next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot(id);
            return false;
        };
        let entries: Vec<Entry> = if next <= self.log.last_index() {
            self.log.entries_from(next, self.config.max_msg_bytes)
        } else {
            Vec::new()
        };
        let last = entries.last().map(|e| e.index);
        let bytes = entries.iter().map(|e| e.data.len() as u64).sum();
        let commit = self.log.committed;
        let pr = self
            .progress
            .get_mut(&id)
            .expect("progress exists for a peer");
        pr.on_append_sent(last, bytes, commit);
        let streaming = pr.state == ProgressState::Replicate && last.is_some();
        self.send(
            id,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        streaming
    }

    fn send_snapshot(&mut self, id: NodeId) {
        let meta = self.log.snapshot.clone();
        let pr = self
            .progress
            .get_mut(&id)
            .expect("progress exists for a peer");
        assert!(
            meta.index >= pr.next_index,
            "snapshot {} does not cover next index {} of {id}",
            meta.index,
            pr.next_index
        );
        pr.become_snapshot(meta.index);
        self.send(id, MessageBody::InstallSnapshot { meta });
    }

    /// Starts a read round and asks only as many voters as a majority needs
    /// besides this node, those that confirmed the latest rounds first: under
    /// a stream of reads a round goes out every iteration, and each heartbeat
    /// costs the leader a send and a receive and its follower a wakeup. The
    /// regular heartbeat, to every member, carries the same round, so a read
    /// whose chosen voters are slow or gone is confirmed by the others within
    /// a heartbeat interval (and they are chosen from then on).
    fn ask_to_confirm_reads(&mut self) {
        let read_round = self.reads.next_broadcast_round();
        let committed = self.log.committed;
        let conf = self.log.conf();
        let needed = conf.majority() - usize::from(conf.is_voter(self.id));
        // Voters that confirmed the latest rounds first; among equals (a new
        // leader has no rounds yet), those heard from lately, so that a dead
        // old leader with a low id is not asked first.
        let mut voters: Vec<(u64, bool, NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| conf.is_voter(**id))
            .map(|(id, pr)| {
                let commit = pr.match_index.min(committed);
                (pr.read_round_acked, pr.recent_active, *id, commit)
            })
            .collect();
        voters.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        for (_, _, id, commit) in voters.into_iter().take(needed) {
            self.send(id, MessageBody::Heartbeat { commit, read_round });
        }
    }

    /// Heartbeats carry the newest read round, so one lost heartbeat does not
    /// strand a read, and a commit index the follower is known to have (the
    /// follower does no log check on a heartbeat).
    pub(super) fn broadcast_heartbeat(&mut self) {
        let read_round = self.reads.next_broadcast_round();
        let committed = self.log.committed;
        let targets: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .map(|(id, pr)| (*id, pr.match_index.min(committed)))
            .collect();
        for (id, commit) in targets {
            self.send(id, MessageBody::Heartbeat { commit, read_round });
        }
    }

    /// Follower: Raft §5.3 consistency check and append.
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: &[Entry],
        commit: u64,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit index is known to match; say where it
            // ends so the leader resumes from there.
            let index = self.log.committed;
            self.send_append_ack(from, index);
            return;
        }
        if self.log.match_term(prev_index, prev_term) {
            let last_new = self.log.append_from_leader(prev_index, entries);
            // Only entries this message proved are the leader's may be
            // committed; a longer tail of ours may still be wrong.
            self.log.commit_to(commit.min(last_new));
            self.send_append_ack(from, last_new);
            return;
        }
        // Hint: the last entry of ours at or below the probe whose term is not
        // above the leader's term there. If our log is shorter, that is our
        // last entry (or the last one of a lower term).
        let (hint_index, hint_term) = self
            .log
            .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
        self.send(
            from,
            MessageBody::AppendResponse {
                success: false,
                index: prev_index,
                hint_index,
                hint_term,
            },
        );
    }

    fn send_append_ack(&mut self, to: NodeId, index: u64) {
        self.send(
            to,
            MessageBody::AppendResponse {
                success: true,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, commit: u64, read_round: u64) {
        // The leader sends at most what this node acknowledged, so only a bug
        // or a stranger sends more; those entries are not known to match.
        if commit <= self.log.last_index() {
            self.log.commit_to(commit);
        } else {
            self.refused_messages += 1;
            log::error!(
                "refused a message no honest peer sends: node {from} sent commit index {commit}, beyond this node's last entry {} (or this node lost acknowledged entries in a crash with fsync = never)",
                self.log.last_index()
            );
        }
        self.send(from, MessageBody::HeartbeatResponse { read_round });
    }

    /// Follower: install the leader's snapshot unless it adds nothing.
    pub(super) fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        if meta.index <= self.log.committed {
            let index = self.log.committed;
            self.send_append_ack(from, index);
            return;
        }
        if self.log.match_term(meta.index, meta.term) {
            // Our log already holds the snapshot's last entry, hence everything
            // before it: commit up to it and keep the entries after it. Resetting
            // here could drop entries this node already acknowledged to the
            // leader, which the leader may have counted toward a commit.
            self.log.commit_to(meta.index);
            self.send_append_ack(from, meta.index);
            return;
        }
        // The snapshot names the configuration at its index; entries after it
        // come from the leader and may change it again.
        let conf = conf_of_snapshot(&meta, &self.bootstrap);
        let index = meta.index;
        self.log.restore_snapshot(meta, conf);
        self.send_append_ack(from, index);
    }
}

/// Each voter's value, `own` for this node.
pub(super) fn voter_values(
    membership: &Membership,
    me: NodeId,
    own: u64,
    peer: impl Fn(NodeId) -> u64,
) -> Vec<u64> {
    membership
        .voters
        .iter()
        .map(|id| if *id == me { own } else { peer(*id) })
        .collect()
}

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
