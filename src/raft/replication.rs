//! Log replication (Raft §5.3) and the commit rule (§5.4.2): the leader's side
//! (sending, acknowledgements, backtracking, commit) and the follower's side
//! (accepting AppendEntries, heartbeats and snapshots).
//!
//! Sending is deferred: proposals and acknowledgements only update state, and
//! `flush_leader` (run by `ready()`) sends what each follower needs. So every
//! proposal of one loop iteration leaves in the same AppendEntries (group
//! commit), bounded by `max_msg_bytes` per message and `max_inflight_msgs`
//! unacknowledged messages per follower.

use super::message::{Entry, Message, MessageBody, NodeId, SnapshotMeta};
use super::node::conf_of_snapshot;
use super::progress::ProgressState;
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
            ProgressState::Probe => pr.become_replicate(),
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
        let commit = self.log.committed;
        let pr = self
            .progress
            .get_mut(&id)
            .expect("progress exists for a peer");
        pr.on_append_sent(last, commit);
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
mod tests {
    use super::super::testnet::{config, entry, msg, Net};
    use super::super::{HardState, MessageBody, Node, Restored, Role, SnapshotMeta};

    fn appends_to(net: &Net, to: u64) -> Vec<(u64, usize)> {
        net.delivered
            .iter()
            .filter(|m| m.to == to)
            .filter_map(|m| match &m.body {
                MessageBody::Append {
                    prev_index,
                    entries,
                    ..
                } => Some((*prev_index, entries.len())),
                _ => None,
            })
            .collect()
    }

    fn rejections_from(net: &Net, from: u64) -> usize {
        net.delivered
            .iter()
            .filter(|m| m.from == from)
            .filter(|m| matches!(m.body, MessageBody::AppendResponse { success: false, .. }))
            .count()
    }

    fn ack(from: u64, term: u64, index: u64) -> super::Message {
        msg(
            from,
            1,
            term,
            MessageBody::AppendResponse {
                success: true,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        )
    }

    /// Campaigns until `id` wins (a first try may fail in a term where the
    /// voters already voted).
    fn campaign_until_leader(net: &mut Net, id: u64) {
        for _ in 0..5 {
            net.campaign(id);
            if net.node(id).role() == Role::Leader {
                return;
            }
        }
        panic!("node {id} did not win an election");
    }

    /// Node 1 of {1,2,3} restored with `terms`, elected by hand (vote from 2)
    /// and with its Noop persisted; nothing delivered to anyone.
    fn hand_elected_leader(terms: &[u64], term: u64) -> Node {
        let mut node = Net::node_with_log(1, &[1, 2, 3], terms, term);
        while node.role() != Role::Candidate {
            node.tick();
        }
        let term = node.term();
        node.step(msg(
            2,
            1,
            term,
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
        ));
        assert_eq!(node.role(), Role::Leader);
        node.ready();
        node.advance();
        node
    }

    #[test]
    fn entry_commits_once_a_majority_stores_it() {
        // Reference: Raft §5.3 ("a log entry is committed once the leader that
        // created it has replicated it on a majority of the servers").
        let mut net = Net::new(5);
        net.campaign(1);
        net.isolate(4);
        net.isolate(5);
        let index = net.propose(1, b"x");
        assert_eq!(net.node(1).status().commit_index, index);
        assert_eq!(net.applied(2).last().map(|e| e.index), Some(index));
        net.isolate(3);
        let index = net.propose(1, b"y");
        assert_eq!(
            net.node(1).status().commit_index,
            index - 1,
            "two of five is not a majority"
        );
    }

    #[test]
    fn leader_counts_itself_only_after_advance() {
        // Reference: thesis §10.2.1. The leader may replicate before its own sync,
        // but counts toward a majority only entries it has synced.
        let mut net = Net::new(3);
        net.campaign(1);
        net.isolate(3);
        let (index, _) = net.node_mut(1).propose(b"x".to_vec()).expect("leader");
        let rd = net.node_mut(1).ready();
        assert_eq!(rd.entries.last().map(|e| e.index), Some(index));
        let append = rd
            .send_now
            .into_iter()
            .find(|m| m.to == 2)
            .expect("append to 2");
        net.deliver(append);
        net.handle_ready(2);
        for m in net.take_queue() {
            net.node_mut(1).step(m);
        }
        assert_eq!(
            net.node(1).status().commit_index,
            index - 1,
            "follower 2 alone is not a majority while the leader has not synced"
        );
        net.node_mut(1).advance();
        assert_eq!(net.node(1).status().commit_index, index);
        let rd = net.node_mut(1).ready();
        assert_eq!(rd.committed.last().map(|e| e.index), Some(index));
    }

    #[test]
    fn with_a_background_sync_the_leader_counts_itself_once_persisted() {
        // Reference: thesis §10.2.1, as above, for a caller that syncs off its
        // loop: advance_written() does not count the leader; persisted() does.
        let mut net = Net::new(1);
        net.campaign(1);
        let node = net.node_mut(1);
        let (index, term) = node.propose(b"x".to_vec()).expect("leader");
        let rd = node.ready();
        assert_eq!(rd.entries.last().map(|e| e.index), Some(index));
        node.advance_written();
        assert_eq!(
            node.status().commit_index,
            index - 1,
            "written is not synced"
        );
        assert!(node.ready().committed.is_empty());
        node.advance_written();
        node.persisted(index, term);
        assert_eq!(node.status().commit_index, index);
        assert_eq!(node.ready().committed.last().map(|e| e.index), Some(index));
    }

    #[test]
    fn a_sync_of_an_entry_that_was_replaced_does_not_count() {
        // Reference: etcd raft `stableTo`. A follower's background sync covered
        // entry 2 of term 1; before it finished, a new leader replaced entry 2.
        let mut node = Net::node_with_log(2, &[1, 2, 3], &[1, 1], 1);
        let before = node.status().last_index;
        node.step(msg(
            1,
            2,
            2,
            MessageBody::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![crate::raft::Entry {
                    index: 2,
                    term: 2,
                    kind: crate::raft::EntryKind::Normal,
                    data: b"new".to_vec().into(),
                }],
                commit: 0,
            },
        ));
        let rd = node.ready();
        assert_eq!(rd.entries.first().map(|e| (e.index, e.term)), Some((2, 2)));
        node.advance_written();
        assert_eq!(before, 2);
        node.persisted(2, 1);
        assert_eq!(node.log.persisted, 1, "the old entry 2 was replaced");
        node.persisted(2, 2);
        assert_eq!(node.log.persisted, 2);
    }

    #[test]
    fn single_voter_commits_after_advance() {
        let mut net = Net::new(1);
        net.campaign(1);
        let node = net.node_mut(1);
        let (index, _) = node.propose(b"x".to_vec()).expect("leader");
        let rd = node.ready();
        assert_eq!(rd.entries.len(), 1);
        assert!(rd.committed.is_empty(), "not committed before the sync");
        node.advance();
        assert!(node.has_ready());
        let rd = node.ready();
        assert_eq!(
            rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![index]
        );
        node.advance();
    }

    #[test]
    fn proposals_of_one_iteration_leave_in_one_append_per_follower() {
        // Group commit: proposals only append; the messages are built at ready().
        let mut net = Net::new(3);
        net.campaign(1);
        let node = net.node_mut(1);
        for i in 0..10u8 {
            node.propose(vec![i]).expect("leader");
        }
        let rd = node.ready();
        node.advance();
        let appends: Vec<(u64, usize)> = rd
            .send_now
            .iter()
            .filter_map(|m| match &m.body {
                MessageBody::Append { entries, .. } => Some((m.to, entries.len())),
                _ => None,
            })
            .collect();
        assert_eq!(appends, vec![(2, 10), (3, 10)]);
    }

    #[test]
    fn appends_respect_the_byte_limit_but_always_carry_one_entry() {
        let mut net = Net::with(2, |c| c.max_msg_bytes = 100);
        net.campaign(1);
        net.delivered.clear();
        let node = net.node_mut(1);
        for _ in 0..5 {
            node.propose(vec![0; 40]).expect("leader");
        }
        node.propose(vec![0; 500]).expect("leader");
        net.stabilize();
        let sizes: Vec<usize> = appends_to(&net, 2)
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| *n > 0)
            .collect();
        assert_eq!(sizes, vec![2, 2, 1, 1], "40+40, 40+40, 40, then 500 alone");
        assert_eq!(net.applied(2).len(), 7);
    }

    #[test]
    fn unacknowledged_appends_are_bounded_by_the_window() {
        let mut net = Net::with(2, |c| {
            c.max_inflight_msgs = 2;
            c.max_msg_bytes = 1;
        });
        net.campaign(1);
        net.delivered.clear();
        net.drop_if = Some(Box::new(|m| {
            matches!(m.body, MessageBody::AppendResponse { .. })
        }));
        for i in 0..6u8 {
            net.node_mut(1).propose(vec![i]).expect("leader");
        }
        net.stabilize();
        assert_eq!(appends_to(&net, 2).len(), 2, "two in flight, the rest wait");
        net.drop_if = None;
        net.tick_all();
        assert_eq!(
            net.applied(2).len(),
            7,
            "acks and heartbeats drain the rest"
        );
    }

    #[test]
    fn follower_truncates_a_conflicting_suffix() {
        // Reference: Raft §5.3 ("if an existing entry conflicts with a new one
        // (same index but different terms), delete the existing entry and all
        // that follow it").
        let mut node = Net::node_with_log(1, &[1, 2], &[1, 1, 1], 1);
        node.step(msg(
            2,
            1,
            2,
            MessageBody::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![entry(2, 2)],
                commit: 0,
            },
        ));
        assert_eq!(node.status().last_index, 2);
        let rd = node.ready();
        assert_eq!(
            rd.entries,
            vec![entry(2, 2)],
            "the caller rewrites from the conflict"
        );
        assert_eq!(rd.hard_state, Some(HardState { term: 2, vote: 0 }));
        node.advance();
    }

    #[test]
    fn follower_commits_only_what_the_append_proved() {
        // Reference: Raft Figure 2 ("commitIndex = min(leaderCommit, index of
        // last new entry)"): a longer tail of the follower may still be wrong.
        let mut node = Net::node_with_log(1, &[1, 2], &[1, 1, 1, 1], 1);
        let append = |prev_index, entries| {
            msg(
                2,
                1,
                1,
                MessageBody::Append {
                    prev_index,
                    prev_term: 1,
                    entries,
                    commit: 4,
                },
            )
        };
        node.step(append(1, vec![]));
        assert_eq!(node.status().commit_index, 1);
        node.step(append(2, vec![entry(3, 1)]));
        assert_eq!(node.status().commit_index, 3);
    }

    #[test]
    fn leader_commits_only_entries_of_its_own_term() {
        // Reference: Raft §5.4.2. An entry of an earlier term on a majority is
        // not committed by counting replicas; the new leader's Noop commits it.
        let mut node = hand_elected_leader(&[1, 2], 2);
        assert_eq!(node.term(), 3);
        node.step(ack(2, 3, 2));
        assert_eq!(
            node.status().commit_index,
            0,
            "index 2 (term 2) is on a majority"
        );
        node.step(ack(2, 3, 3));
        assert_eq!(node.status().commit_index, 3);
    }

    #[test]
    fn figure_8_an_old_term_entry_on_a_majority_can_still_be_overwritten() {
        // Reference: Raft §5.4.2, Figure 8, with terms shifted down by one.
        let mut net = Net::with(5, |c| c.max_msg_bytes = 1);
        net.campaign(1);
        // (a) S1 (term 1) replicates index 2 to S2 only.
        for peer in 3..=5 {
            net.cut(1, peer);
        }
        net.propose(1, b"ab");
        // (b) S1 is gone; S5 wins term 2 with S3 and S4 and appends index 2 alone.
        net.isolate(1);
        net.drop_if = Some(Box::new(|m| {
            m.from == 5 && matches!(m.body, MessageBody::Append { .. })
        }));
        net.campaign(5);
        assert_eq!(net.node(5).role(), Role::Leader);
        // (c) S5 is gone; S1 wins term 3 and spreads index 2 (term 1) to a
        // majority, but its own Noop (index 3) is held back.
        net.isolate(5);
        net.heal_pair(1, 2);
        net.heal_pair(1, 3);
        net.heal_pair(1, 4);
        // S2 has index 2, so any message with index 3 would be taken. S3 and S4
        // lack index 2: their first such message is a probe they reject, which
        // leads S1 to send index 2 alone; drop the ones after that.
        let probed = std::cell::RefCell::new(std::collections::BTreeSet::new());
        net.drop_if = Some(Box::new(move |m| match &m.body {
            MessageBody::Append { entries, .. } if entries.iter().any(|e| e.index == 3) => {
                m.to == 2 || !probed.borrow_mut().insert(m.to)
            }
            _ => false,
        }));
        campaign_until_leader(&mut net, 1);
        for id in 1..=4 {
            assert_eq!(
                net.disks[&id].entries[1].term, 1,
                "S{id} has index 2 of term 1"
            );
        }
        assert_eq!(
            net.node(1).status().commit_index,
            1,
            "S1 must not commit index 2"
        );
        // (d) S1 is gone; S5 can win again and overwrite index 2 everywhere,
        // which would have lost a committed entry had S1 committed it.
        net.isolate(1);
        net.heal_pair(5, 2);
        net.heal_pair(5, 3);
        net.heal_pair(5, 4);
        net.drop_if = None;
        campaign_until_leader(&mut net, 5);
        for id in 2..=5 {
            assert_eq!(
                net.disks[&id].entries[1].term, 2,
                "S{id} index 2 overwritten"
            );
        }
    }

    #[test]
    fn diverging_follower_is_found_in_a_few_round_trips() {
        // Reference: Raft §5.3 (the optimization in the paragraph after Figure 7),
        // etcd findConflictByTerm. Naive decrement would take 2000 round trips.
        let leader_log: Vec<u64> = [vec![1; 1000], vec![4; 1000]].concat();
        let diverged: Vec<u64> = [vec![1; 1000], vec![2; 1000], vec![3; 1000]].concat();
        let mut net = Net::new(3);
        net.set_log(1, &leader_log, 4);
        net.set_log(2, &diverged, 4);
        net.set_log(3, &leader_log, 4);
        net.campaign(1);
        assert_eq!(net.node(1).role(), Role::Leader);
        assert!(
            rejections_from(&net, 2) <= 2,
            "{} rejections",
            rejections_from(&net, 2)
        );
        assert_eq!(net.node(2).status().last_index, 2001);
        assert_eq!(net.disks[&2].entries[1500].term, 4);
    }

    #[test]
    fn follower_that_lost_acknowledged_entries_catches_up_without_fsync() {
        // With `fsync = never` an OS crash can take entries a follower
        // acknowledged. It rejects the probe at its match index, which the
        // leader must take for a lost tail rather than a stale message.
        let mut net = Net::with(3, |c| c.acks_are_durable = false);
        net.campaign(1);
        for i in 0..5u8 {
            net.propose(1, &[i]);
        }
        let last = net.node(1).status().last_index;
        assert_eq!(net.node(3).status().last_index, last);
        let term = net.node(1).term();
        let kept: Vec<u64> = net.disks[&3].entries[..2].iter().map(|e| e.term).collect();
        net.set_log(3, &kept, term);
        net.propose(1, b"after");
        net.tick_all_until(|n| n.node(3).status().last_index == last + 1, 50);
        assert_eq!(net.node(3).status().last_index, last + 1);
        assert_eq!(net.disks[&3].entries.len() as u64, last + 1);
    }

    #[test]
    fn short_follower_is_found_in_one_round_trip() {
        let mut net = Net::new(3);
        net.set_log(1, &[1; 3000], 1);
        net.set_log(2, &[1; 10], 1);
        net.set_log(3, &[1; 3000], 1);
        net.campaign(1);
        assert_eq!(rejections_from(&net, 2), 1);
        assert_eq!(net.node(2).status().last_index, 3001);
    }

    #[test]
    fn follower_behind_the_compaction_point_gets_the_snapshot() {
        let mut net = Net::new(3);
        net.campaign(1);
        net.isolate(3);
        for i in 0..20u8 {
            net.propose(1, &[i]);
        }
        let applied = net.node(1).status().applied_index;
        let meta = SnapshotMeta {
            index: applied,
            term: 1,
            voters: vec![1, 2, 3],
            learners: vec![],
        };
        net.node_mut(1).compact(meta.clone(), 5);
        assert_eq!(net.node(1).status().first_index, applied - 4);
        net.heal();
        net.tick_all();
        let snapshots: Vec<&SnapshotMeta> = net
            .delivered
            .iter()
            .filter_map(|m| match &m.body {
                MessageBody::InstallSnapshot { meta } if m.to == 3 => Some(meta),
                _ => None,
            })
            .collect();
        assert_eq!(snapshots, vec![&meta]);
        net.node_mut(1).report_snapshot(3, true);
        assert_eq!(net.disks[&3].snapshot, meta);
        let status = net.node(3).status();
        assert_eq!(status.commit_index, applied);
        assert_eq!(status.first_index, applied + 1);
        let index = net.propose(1, b"after");
        assert_eq!(net.applied(3).last().map(|e| e.index), Some(index));
    }

    #[test]
    fn follower_with_the_snapshot_entry_keeps_its_log() {
        let mut node = Net::node_with_log(1, &[1, 2], &[1, 1, 1, 1], 1);
        node.step(msg(
            2,
            1,
            1,
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 3,
                    term: 1,
                    ..Default::default()
                },
            },
        ));
        let status = node.status();
        assert_eq!((status.commit_index, status.last_index), (3, 4));
        let rd = node.ready();
        assert!(rd.snapshot.is_none());
        assert_eq!(rd.committed.len(), 3, "applied from the log instead");
        node.advance();
    }

    #[test]
    fn unreachable_follower_is_probed_instead_of_streamed() {
        let mut net = Net::new(2);
        net.campaign(1);
        net.isolate(2);
        net.node_mut(1).report_unreachable(2);
        let mut appends = 0;
        for i in 0..3u8 {
            net.node_mut(1).propose(vec![i]).expect("leader");
            net.handle_ready(1);
            let sent = net.take_queue();
            appends += sent
                .iter()
                .filter(|m| matches!(m.body, MessageBody::Append { .. }))
                .count();
        }
        assert_eq!(appends, 1, "one probe, then wait for its answer");
        net.heal();
        net.tick_all();
        assert_eq!(net.applied(2).len(), 4);
    }

    #[test]
    fn learner_receives_the_log_but_does_not_count() {
        let mut net = Net::with(3, |c| {
            c.voters = vec![1, 2];
            c.learners = vec![3];
        });
        net.campaign(1);
        let index = net.propose(1, b"x");
        assert_eq!(net.applied(3).last().map(|e| e.index), Some(index));
        net.isolate(2);
        let index = net.propose(1, b"y");
        assert_eq!(
            net.node(1).status().commit_index,
            index - 1,
            "the learner's ack does not count"
        );
        for _ in 0..50 {
            net.tick_node(3);
        }
        assert_eq!(
            net.node(3).role(),
            Role::Follower,
            "a learner never campaigns"
        );
        let _ = Node::new(config(3, &[1, 2]), Restored::default(), 0);
    }

    #[test]
    fn messages_no_honest_peer_sends_are_ignored_not_obeyed() {
        let mut net = Net::new(3);
        net.campaign(1);
        let index = net.propose(1, b"x");
        let term = net.node(1).term();
        let leader = net.node_mut(1);
        // A second leader of the same term.
        for body in [
            MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
            },
            MessageBody::Append {
                prev_index: index,
                prev_term: term,
                entries: vec![],
                commit: index,
            },
        ] {
            leader.step(msg(2, 1, term, body));
            assert_eq!(leader.role(), Role::Leader);
        }
        assert_eq!(leader.refused_messages(), 2);
        // An acknowledgement of entries the leader never had.
        leader.step(ack(2, term, index + 1000));
        assert_eq!(leader.status().commit_index, index);
        leader.propose(b"y".to_vec()).expect("still leads");
        // A commit index past the follower's log.
        let follower = net.node_mut(2);
        follower.step(msg(
            1,
            2,
            term,
            MessageBody::Heartbeat {
                commit: index + 1000,
                read_round: 0,
            },
        ));
        assert_eq!(follower.status().commit_index, index);
        assert_eq!(follower.refused_messages(), 1);
        assert_eq!(net.node(1).refused_messages(), 3);
    }
}
