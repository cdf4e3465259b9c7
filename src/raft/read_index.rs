//! ReadIndex (Raft thesis §6.4): linearizable reads without writing to the log.
//!
//! A read records the leader's commit index, then waits until a majority of
//! voters confirms, after the read was recorded, that this node is still the
//! leader. Reads are batched: every read recorded before the next broadcast gets
//! the same confirmation round, and one `Heartbeat{read_round}` per follower
//! confirms all of them. Because a heartbeat always carries the latest round, a
//! lost read heartbeat is retried by the next regular one.
//!
//! Until the leader has committed an entry of its own term its commit index may
//! be behind entries committed by earlier leaders, so reads wait in `unready`
//! until that first commit (thesis §6.4 step 1), then join the next round.

use std::collections::VecDeque;

use super::quorum;
use super::ready::ReadState;
use super::replication::voter_values;
use super::Node;

impl Node {
    /// Leader: records a read (see the module docs).
    pub(super) fn start_read(&mut self, ctx: u64) {
        // The shell answers the read once this index is applied (its place
        // in the apply order); a transfer waits for that (`transfer.rs`).
        self.reads.latest_place = self.log.last_index();
        if !self.committed_in_current_term() {
            self.reads.add_unready(ctx);
            return;
        }
        self.reads.add(ctx, self.log.committed);
        self.confirm_reads_if_alone();
    }

    /// The latest confirmation round broadcast, for tests that answer
    /// for followers that never run.
    #[cfg(test)]
    pub fn read_round(&self) -> u64 {
        self.reads.round
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    /// Called when the leader's commit index advanced.
    pub(super) fn on_leader_commit(&mut self) {
        if self.committed_in_current_term() {
            self.reads.release_unready(self.log.committed);
            self.confirm_reads_if_alone();
        }
    }

    /// A single voter is its own majority: no round trip confirms anything more.
    fn confirm_reads_if_alone(&mut self) {
        if self.log.conf().voters == [self.id] {
            self.reads.next_broadcast_round();
            self.confirm_reads();
        }
    }

    /// Confirms every read whose round a majority of voters has acknowledged;
    /// this node acknowledges every round it broadcast.
    pub(super) fn confirm_reads(&mut self) {
        let rounds = voter_values(self.log.conf(), self.id, self.reads.round, |id| {
            self.progress.get(&id).map_or(0, |pr| pr.read_round_acked)
        });
        let confirmed = quorum::majority_value(rounds);
        self.reads.confirm(confirmed, &mut self.read_states);
        // A transfer may have waited for these reads (`maybe_send_timeout_now`).
        if let Some(target) = self.transfer_target() {
            self.maybe_send_timeout_now(target);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingRead {
    ctx: u64,
    index: u64,
    round: u64,
    /// Its place among the reads this leader recorded (`ReadQueue::recorded`).
    seq: u64,
}

#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    /// The latest confirmation round broadcast by this leader.
    pub round: u64,
    /// Reads were recorded for round `round + 1`, which is not broadcast yet.
    pub broadcast_needed: bool,
    /// Waiting for confirmation, in arrival order (so rounds ascend).
    pending: VecDeque<PendingRead>,
    /// Waiting for the first commit of the leader's term: (ctx, seq).
    unready: Vec<(u64, u64)>,
    /// Reads recorded so far; each read's `seq` is the count before it.
    recorded: u64,
    /// The last log index when the latest read was recorded.
    pub latest_place: u64,
}

impl ReadQueue {
    /// Records a read at `commit_index`, to be confirmed by the next round.
    pub fn add(&mut self, ctx: u64, commit_index: u64) {
        let seq = self.next_seq();
        self.add_numbered(ctx, commit_index, seq);
    }

    fn add_numbered(&mut self, ctx: u64, commit_index: u64, seq: u64) {
        self.pending.push_back(PendingRead {
            ctx,
            index: commit_index,
            round: self.round + 1,
            seq,
        });
        self.broadcast_needed = true;
    }

    fn next_seq(&mut self) -> u64 {
        self.recorded += 1;
        self.recorded - 1
    }

    /// Parks a read until the leader commits an entry of its term.
    pub fn add_unready(&mut self, ctx: u64) {
        let seq = self.next_seq();
        self.unready.push((ctx, seq));
    }

    /// The leader committed in its term: parked reads get `commit_index`.
    pub fn release_unready(&mut self, commit_index: u64) {
        for (ctx, seq) in std::mem::take(&mut self.unready) {
            self.add_numbered(ctx, commit_index, seq);
        }
    }

    /// How many reads this leader has recorded: a mark for
    /// [`Self::waits_for_reads_before`].
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Whether a read recorded before `mark` (a past [`Self::recorded`])
    /// still waits.
    pub fn waits_for_reads_before(&self, mark: u64) -> bool {
        self.pending.iter().any(|read| read.seq < mark)
            || self.unready.iter().any(|&(_, seq)| seq < mark)
    }

    /// Starts the next round if reads wait for one; returns the round that
    /// heartbeats should carry from now on.
    pub fn next_broadcast_round(&mut self) -> u64 {
        if self.broadcast_needed {
            self.round += 1;
            self.broadcast_needed = false;
        }
        self.round
    }

    /// A majority acknowledged `round`: every read of that round or earlier is
    /// confirmed.
    pub fn confirm(&mut self, round: u64, out: &mut Vec<ReadState>) {
        assert!(
            round <= self.round,
            "round {round} confirmed but only {} broadcast",
            self.round
        );
        while let Some(read) = self.pending.front() {
            if read.round > round {
                break;
            }
            out.push(ReadState {
                ctx: read.ctx,
                index: read.index,
            });
            self.pending.pop_front();
        }
    }

    /// Every read still waiting: it will never be confirmed by this leader.
    pub fn drain_all(&mut self) -> Vec<u64> {
        let mut ctxs: Vec<u64> = self.unready.drain(..).map(|(ctx, _)| ctx).collect();
        ctxs.extend(self.pending.drain(..).map(|r| r.ctx));
        ctxs
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.unready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testnet::{msg, Net};
    use super::super::{MessageBody, ProposeError, Role, TransferOutcome};
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn heartbeat_rounds(msgs: &[super::super::Message]) -> Vec<(u64, u64)> {
        msgs.iter()
            .filter_map(|m| match m.body {
                MessageBody::Heartbeat { read_round, .. } => Some((m.to, read_round)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reads_of_one_iteration_share_one_confirmation_round() {
        // Reference: thesis §6.4 (batching reads over one heartbeat round).
        let mut net = Net::new(3);
        net.campaign(1);
        let commit = net.node(1).status().commit_index;
        let node = net.node_mut(1);
        for ctx in [10, 11, 12] {
            node.read_index(ctx).expect("leader");
        }
        let rd = node.ready();
        assert!(rd.read_states.is_empty(), "not before a majority confirms");
        assert_eq!(
            heartbeat_rounds(&rd.send_now),
            vec![(2, 1)],
            "one follower is enough for a majority of three"
        );
        net.queue_from_ready(rd);
        net.node_mut(1).advance();
        net.stabilize();
        let expected: Vec<ReadState> = [10, 11, 12]
            .iter()
            .map(|ctx| ReadState {
                ctx: *ctx,
                index: commit,
            })
            .collect();
        assert_eq!(net.read_states[&1], expected);
    }

    #[test]
    fn a_round_goes_to_the_voters_that_confirmed_the_latest_ones() {
        let mut net = Net::new(5);
        net.campaign(1);
        net.isolate(2);
        net.node_mut(1).read_index(7).expect("leader");
        let rd = net.node_mut(1).ready();
        assert_eq!(heartbeat_rounds(&rd.send_now), vec![(2, 1), (3, 1)]);
        net.queue_from_ready(rd);
        net.node_mut(1).advance();
        net.stabilize();
        assert!(net.read_states[&1].is_empty(), "2 did not answer");
        // The regular heartbeat asks everyone, with the same round.
        for _ in 0..100 {
            if !net.read_states[&1].is_empty() {
                break;
            }
            net.tick_node(1);
            net.stabilize();
        }
        assert_eq!(net.read_states[&1].len(), 1, "confirmed by 3 and 4");
        net.node_mut(1).read_index(8).expect("leader");
        let rd = net.node_mut(1).ready();
        let asked = heartbeat_rounds(&rd.send_now);
        assert_eq!(asked.len(), 2);
        assert!(
            asked.iter().all(|(to, round)| *to != 2 && *round == 2),
            "{asked:?}"
        );
    }

    #[test]
    fn a_new_leaders_first_round_skips_a_voter_it_has_not_heard_from() {
        let mut net = Net::new(3);
        net.isolate(1);
        net.campaign(3);
        assert_eq!(net.leader(), Some(3));
        net.node_mut(3).read_index(7).expect("leader");
        let rd = net.node_mut(3).ready();
        assert_eq!(
            heartbeat_rounds(&rd.send_now),
            vec![(2, 1)],
            "2 answered the leader's first entry, 1 did not"
        );
        net.queue_from_ready(rd);
        net.node_mut(3).advance();
        net.stabilize();
        assert_eq!(net.read_states[&3].len(), 1, "confirmed without a tick");
    }

    #[test]
    fn one_follower_confirms_a_round_in_a_three_node_cluster() {
        let mut net = Net::new(3);
        net.campaign(1);
        net.isolate(3);
        net.node_mut(1).read_index(7).expect("leader");
        net.stabilize();
        assert_eq!(net.read_states[&1].len(), 1, "leader and 2 are a majority");
        net.isolate(2);
        net.node_mut(1).read_index(8).expect("leader");
        net.stabilize();
        assert_eq!(
            net.read_states[&1].len(),
            1,
            "the leader alone confirms nothing"
        );
    }

    #[test]
    fn lost_read_heartbeat_is_retried_by_the_next_heartbeat() {
        let mut net = Net::new(3);
        net.campaign(1);
        net.drop_if = Some(Box::new(|m| {
            matches!(m.body, MessageBody::Heartbeat { .. })
        }));
        net.node_mut(1).read_index(7).expect("leader");
        net.stabilize();
        assert!(net.read_states[&1].is_empty());
        net.drop_if = None;
        net.tick_node(1);
        assert_eq!(net.read_states[&1], vec![ReadState { ctx: 7, index: 1 }]);
    }

    #[test]
    fn read_waits_for_the_first_commit_of_the_leaders_term() {
        // Reference: thesis §6.4 step 1. Until its Noop commits, the leader's
        // commit index may lag entries committed by its predecessors.
        let mut net = Net::new(3);
        net.drop_if = Some(Box::new(|m| {
            matches!(m.body, MessageBody::AppendResponse { .. })
        }));
        net.campaign(1);
        assert_eq!(net.node(1).role(), Role::Leader);
        assert_eq!(net.node(1).status().commit_index, 0);
        net.node_mut(1).read_index(5).expect("queued, not refused");
        net.stabilize();
        assert!(net.read_states[&1].is_empty());
        net.drop_if = None;
        net.tick_all();
        assert_eq!(net.read_states[&1], vec![ReadState { ctx: 5, index: 1 }]);
    }

    #[test]
    fn single_voter_confirms_reads_at_once_after_its_first_commit() {
        let mut net = Net::new(1);
        let node = net.node_mut(1);
        node.tick_until_role_for_test(Role::Candidate);
        node.ready();
        node.advance();
        assert_eq!(node.role(), Role::Leader, "once its vote is on disk");
        node.read_index(1).expect("leader");
        let rd = node.ready();
        assert!(rd.read_states.is_empty(), "the Noop is not committed yet");
        node.advance();
        let rd = node.ready();
        assert_eq!(rd.read_states, vec![ReadState { ctx: 1, index: 1 }]);
        node.advance();
        node.read_index(2).expect("leader");
        let rd = node.ready();
        assert_eq!(rd.read_states, vec![ReadState { ctx: 2, index: 1 }]);
        assert!(rd.send_now.is_empty());
        node.advance();
    }

    #[test]
    fn pending_reads_are_dropped_when_the_leader_steps_down() {
        let mut net = Net::new(3);
        net.campaign(1);
        net.isolate(1);
        let node = net.node_mut(1);
        node.read_index(3).expect("leader");
        node.read_index(4).expect("leader");
        let term = node.term();
        node.step(msg(
            2,
            1,
            term + 1,
            MessageBody::Heartbeat {
                commit: 0,
                read_round: 0,
            },
        ));
        assert_eq!(node.role(), Role::Follower);
        let rd = node.ready();
        assert_eq!(rd.dropped_reads, vec![3, 4]);
        assert!(rd.read_states.is_empty());
        node.advance();
    }

    #[test]
    fn follower_refuses_reads_and_names_the_leader() {
        let mut net = Net::new(3);
        net.campaign(1);
        assert_eq!(
            net.node_mut(2).read_index(1),
            Err(ProposeError::NotLeader { leader: 1 })
        );
        assert_eq!(
            net.node_mut(2).propose(vec![]),
            Err(ProposeError::NotLeader { leader: 1 })
        );
    }

    #[test]
    fn reads_between_broadcasts_share_one_round() {
        let mut q = ReadQueue::default();
        q.add(1, 10);
        q.add(2, 11);
        assert_eq!(q.next_broadcast_round(), 1);
        q.add(3, 12);
        let mut out = vec![];
        q.confirm(1, &mut out);
        assert_eq!(
            out,
            vec![
                ReadState { ctx: 1, index: 10 },
                ReadState { ctx: 2, index: 11 }
            ]
        );
        assert_eq!(q.next_broadcast_round(), 2);
        assert_eq!(q.next_broadcast_round(), 2, "no new reads, no new round");
        q.confirm(2, &mut out);
        assert_eq!(out.len(), 3);
        assert!(q.is_empty());
    }

    #[test]
    fn a_transfer_waits_for_the_reads_recorded_before_it() {
        // Dropped at the step-down, the read could never be answered in its
        // place: the write its connection sent after it was proposed before
        // the transfer, and the next leader commits it.
        let mut net = Net::new(3);
        net.campaign(1);
        let acks_lost = Rc::new(Cell::new(true));
        let lost = Rc::clone(&acks_lost);
        net.drop_if = Some(Box::new(move |m| {
            lost.get() && matches!(m.body, MessageBody::HeartbeatResponse { .. })
        }));
        let node = net.node_mut(1);
        node.read_index(7).expect("leader");
        node.propose(b"sent after the read".to_vec())
            .expect("leader");
        node.transfer_leader(2).expect("leader");
        net.stabilize();
        assert_eq!(
            net.node(2).status().last_index,
            net.node(1).status().last_index
        );
        assert_eq!(
            net.node(1).role(),
            Role::Leader,
            "2 holds the whole log, but the read is not confirmed yet"
        );
        acks_lost.set(false);
        for _ in 0..5 {
            if net.leader() == Some(2) {
                break;
            }
            net.tick_node(1);
            net.stabilize();
        }
        assert_eq!(net.leader(), Some(2));
        let confirmed: Vec<u64> = net.read_states[&1].iter().map(|r| r.ctx).collect();
        assert_eq!(confirmed, vec![7]);
        assert!(net.dropped_reads[&1].is_empty());
        assert_eq!(
            net.transfer_outcomes[&1],
            vec![TransferOutcome::Finished { target: 2 }]
        );
    }

    #[test]
    fn a_transfer_waits_until_the_leader_has_applied_its_reads_places() {
        // The read's place is the write before it: the shell answers it
        // once that is applied, which this leader, its own sync slow, had
        // not yet done when the target held the whole log.
        let mut net = Net::new(3);
        net.campaign(1);
        net.isolate(3);
        let node = net.node_mut(1);
        node.propose(b"sent before the read".to_vec())
            .expect("leader");
        node.read_index(7).expect("leader");
        node.propose(b"sent after the read".to_vec())
            .expect("leader");
        node.transfer_leader(2).expect("leader");
        let rd = node.ready();
        let disk = net.disks.get_mut(&1).expect("1's disk");
        disk.entries.extend_from_slice(&rd.entries);
        net.queue_from_ready(rd);
        net.node_mut(1).advance_written();
        net.stabilize();
        let status = net.node(1).status();
        assert_eq!(net.read_states[&1].len(), 1, "2 confirmed the read");
        assert!(status.applied_index < status.last_index);
        assert_eq!(
            status.role,
            Role::Leader,
            "2 holds the whole log, but 1 has not applied it"
        );
        net.node_mut(1).persisted(status.last_index, status.term);
        net.stabilize();
        assert_eq!(net.leader(), Some(2));
        assert_eq!(
            net.transfer_outcomes[&1],
            vec![TransferOutcome::Finished { target: 2 }]
        );
    }

    #[test]
    fn unready_reads_join_the_round_after_the_first_commit() {
        let mut q = ReadQueue::default();
        q.add_unready(7);
        assert!(!q.broadcast_needed);
        q.release_unready(42);
        assert_eq!(q.next_broadcast_round(), 1);
        let mut out = vec![];
        q.confirm(1, &mut out);
        assert_eq!(out, vec![ReadState { ctx: 7, index: 42 }]);
    }

    #[test]
    fn drain_returns_every_waiting_read() {
        let mut q = ReadQueue::default();
        q.add_unready(1);
        q.add(2, 5);
        assert_eq!(q.drain_all(), vec![1, 2]);
        assert!(q.is_empty());
    }
}
