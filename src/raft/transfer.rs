//! Leadership transfer (Raft thesis §3.10).
//!
//! The leader stops taking proposals (so the target can catch up with a log
//! that no longer grows), sends the target whatever it lacks, and once the
//! target's match index reaches its last index, the reads it took before
//! the transfer are confirmed and the log is applied through their places
//! (so the shell has answered them), sends it TimeoutNow. The
//! target campaigns at once, without pre-vote, and marks its vote requests
//! as a transfer so that voters inside a leader lease (including the old
//! leader) answer them: its log is as up to date as the leader's, so it wins
//! unless it is cut off. A transfer whose outcome is unknown after an
//! election timeout is abandoned and proposals resume.
//!
//! The node that started the transfer reports its outcome in
//! `Ready::transfer_outcomes`, also after it has stepped down: `Finished`
//! when it hears from the target as leader, `Abandoned` when it hears from
//! another leader or the timeout passes first.

use super::election::Campaign;
use super::membership::Suffrage;
use super::message::{MessageBody, NodeId, NO_NODE};
use super::ready::{Role, TransferOutcome};
use super::{ConfChangeError, Node};

/// A transfer this node started.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub target: NodeId,
    /// Ticks since it started, in whatever role.
    elapsed: u32,
    timeout_now_sent: bool,
    /// `ReadQueue::recorded` when it started: the reads recorded before
    /// are confirmed before the target may campaign (see
    /// `maybe_send_timeout_now`).
    reads_before: u64,
    /// The place of the latest of those reads (`ReadQueue::latest_place`).
    reads_place: u64,
}

impl Node {
    pub(super) fn transfer_leader_inner(&mut self, to: NodeId) -> Result<(), ConfChangeError> {
        if self.role != Role::Leader {
            return Err(ConfChangeError::NotLeader {
                leader: self.leader_id,
            });
        }
        if let Some(t) = self.transfer {
            // Asking again for the same target joins the transfer under way.
            return if t.target == to {
                Ok(())
            } else {
                Err(ConfChangeError::TransferInProgress)
            };
        }
        let conf = self.log.conf();
        if !conf.is_member(to) {
            return Err(ConfChangeError::UnknownNode { id: to });
        }
        if !conf.is_voter(to) {
            return Err(ConfChangeError::NotVoter { id: to });
        }
        if to == self.id {
            self.transfer_outcomes
                .push(TransferOutcome::Finished { target: to });
            return Ok(());
        }
        self.transfer = Some(Transfer {
            target: to,
            elapsed: 0,
            timeout_now_sent: false,
            reads_before: self.reads.recorded(),
            reads_place: self.reads.latest_place,
        });
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// Leader: the voter to hand leadership to before this node stops. A
    /// voter it heard from lately and can send to (`reachable`: the caller
    /// knows its connections, the core does not) with the longest matching
    /// log: a caught-up one is sent TimeoutNow at once, a lagging one needs
    /// the fewest entries first.
    pub(super) fn stop_successor_inner(
        &self,
        reachable: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        self.freshest_voter_heard_lately(reachable)
    }

    /// Leader: sends TimeoutNow to the transfer target once it holds our
    /// whole log (and only once: a second one would start a second election),
    /// the reads recorded before the transfer are confirmed, and this node
    /// has applied the log through their places: a read not answered when
    /// this node steps down is dropped, and a connection that sent a write
    /// after it, proposed before the transfer, then has that write applied
    /// while the read can never be answered in its place: it got
    /// `-TRYAGAIN` from a plain transfer.
    pub(super) fn maybe_send_timeout_now(&mut self, id: NodeId) {
        let Some(t) = self.transfer else {
            return;
        };
        if self.role != Role::Leader || t.target != id || t.timeout_now_sent {
            return;
        }
        let caught_up = self
            .progress
            .get(&id)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        let reads_answered =
            !self.reads.waits_for_reads_before(t.reads_before) && self.log.applied >= t.reads_place;
        if caught_up && reads_answered {
            if let Some(t) = self.transfer.as_mut() {
                t.timeout_now_sent = true;
            }
            self.send(id, MessageBody::TimeoutNow);
        }
    }

    pub(super) fn tick_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        t.elapsed += 1;
        let t = *t;
        if t.elapsed >= self.config.election_ticks {
            log::info!(
                "leadership transfer to node {} timed out: {}",
                t.target,
                self.transfer_waits_for(t)
            );
            self.abandon_transfer();
        }
    }

    /// What a transfer that timed out was waiting for, for the log: a
    /// loaded run held a leader's writes for seconds, and the log could not
    /// tell a TimeoutNow held back from a target slow to campaign.
    fn transfer_waits_for(&self, t: Transfer) -> String {
        if t.timeout_now_sent {
            return "TimeoutNow was sent; the target has not taken over".to_string();
        }
        let target_match = self.progress.get(&t.target).map_or(0, |pr| pr.match_index);
        format!(
            "TimeoutNow not sent: target holds through {} of {}; reads taken before unconfirmed: {}; applied {} of {}",
            target_match,
            self.log.last_index(),
            self.reads.waits_for_reads_before(t.reads_before),
            self.log.applied,
            t.reads_place
        )
    }

    pub(super) fn abandon_transfer(&mut self) {
        if let Some(t) = self.transfer.take() {
            self.transfer_outcomes
                .push(TransferOutcome::Abandoned { target: t.target });
        }
    }

    /// After a message: the leader we now know of settles a pending transfer.
    pub(super) fn resolve_transfer(&mut self) {
        let Some(t) = self.transfer else {
            return;
        };
        if self.leader_id == t.target {
            self.transfer = None;
            self.transfer_outcomes
                .push(TransferOutcome::Finished { target: t.target });
        } else if self.leader_id != NO_NODE && self.leader_id != self.id {
            self.abandon_transfer();
        }
    }

    /// Follower: the leader asks this node to campaign now. Leaders send it
    /// only to voters of their configuration; a node that is none in its own
    /// (a learner, a removed node) ignores it.
    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if from != self.leader_id && self.leader_id != NO_NODE {
            return;
        }
        if self.suffrage() == Suffrage::Voter {
            self.campaign(Campaign::Transfer);
        }
    }
}
