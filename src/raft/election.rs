//! Leader election (Raft §5.2, §5.4.1) and pre-vote (thesis §9.6).

use super::membership::Suffrage;
use super::message::{Message, MessageBody, NodeId, NO_NODE};
use super::quorum::{self, VoteResult};
use super::ready::Role;
use super::Node;

/// How an election starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Campaign {
    /// A pre-vote round first (thesis §9.6).
    PreVote,
    /// A real election in the next term.
    Election,
    /// A real election asked for by the leader's TimeoutNow (thesis §3.10):
    /// no pre-vote, and voters in a leader lease answer it.
    Transfer,
}

impl Node {
    /// Starts an election of the given kind. Only voters campaign: a learner,
    /// a joining node with no configuration yet, and a removed node never do
    /// (but see `Suffrage::Removing`: such a node is counted by nobody).
    pub(super) fn campaign(&mut self, kind: Campaign) {
        if self.suffrage() == Suffrage::None {
            return;
        }
        let pre_vote = kind == Campaign::PreVote;
        let transfer = kind == Campaign::Transfer;
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            // Ask about the term this node would campaign in, without entering it.
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        self.votes.insert(self.id, true);
        if self.tally() == VoteResult::Won {
            // A single voter wins on its own vote, but a real vote counts only
            // once it is on disk (etcd delivers the self-vote after the append
            // too): leading first, it could send AppendEntries of this term (to
            // learners, or a node being removed) and, after a crash that lost
            // the vote, vote for another candidate in the same term. `advance`
            // completes the election.
            if pre_vote {
                self.on_election_won();
            } else {
                self.elected_on_own_vote = true;
            }
            return;
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        for voter in self.log.conf().voters.clone() {
            if voter == self.id {
                continue;
            }
            self.send_with_term(
                voter,
                vote_term,
                MessageBody::RequestVote {
                    pre_vote,
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    fn tally(&self) -> VoteResult {
        let voters = &self.log.conf().voters;
        let counted = self.votes.iter().filter(|(id, _)| voters.contains(id));
        let granted = counted.clone().filter(|(_, granted)| **granted).count();
        let rejected = counted.filter(|(_, granted)| !**granted).count();
        quorum::vote_result(voters.len(), granted, rejected)
    }

    fn on_election_won(&mut self) {
        if self.role == Role::PreCandidate {
            self.campaign(Campaign::Election);
        } else {
            self.become_leader();
        }
    }

    /// Decides a (pre-)vote. `term` is the message term: for a real vote it
    /// equals ours by now (`step_term` adopted a higher one); for a pre-vote it
    /// is the term the candidate would campaign in.
    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        last_index: u64,
        last_term: u64,
    ) {
        // One vote per term (§5.2): repeat it to the same candidate (its request
        // or our answer may have been lost), or cast it if nobody has it and no
        // leader is known. A pre-vote for a later term binds nothing.
        let can_vote = self.vote == from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            || (pre_vote && term > self.term);
        // Election restriction (§5.4.1): only a candidate whose log holds every
        // committed entry can win, and each voter checks against its own log.
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted && !pre_vote {
            self.vote = from;
            // Granting a vote is hearing from a would-be leader: do not start a
            // competing election right away.
            self.election_elapsed = 0;
        }
        // A grant carries the term asked about, so a pre-candidate can tell it
        // from stale answers; a rejection carries ours, so a candidate behind us
        // learns the newer term.
        let reply_term = if granted { term } else { self.term };
        self.send_with_term(
            from,
            reply_term,
            MessageBody::RequestVoteResponse { pre_vote, granted },
        );
    }

    pub(super) fn step_candidate(&mut self, msg: Message) {
        match msg.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term (§5.2): follow it.
                self.become_follower(self.term, msg.from);
                self.step_follower(msg);
            }
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                let expected_term = if self.role == Role::PreCandidate && granted {
                    self.term + 1
                } else {
                    self.term
                };
                let ours = pre_vote == (self.role == Role::PreCandidate);
                if !ours || msg.term != expected_term || !self.log.conf().is_voter(msg.from) {
                    return;
                }
                self.votes.entry(msg.from).or_insert(granted);
                match self.tally() {
                    VoteResult::Won => self.on_election_won(),
                    VoteResult::Lost => self.become_follower(self.term, NO_NODE),
                    VoteResult::Pending => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testnet::{config, msg, Net};
    use super::super::{MessageBody, Node, Restored, Role, NO_NODE};

    fn vote_req(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> super::Message {
        msg(
            from,
            to,
            term,
            MessageBody::RequestVote {
                pre_vote: false,
                last_index,
                last_term,
                transfer: false,
            },
        )
    }

    fn vote_answers(node: &mut Node) -> Vec<(u64, u64, bool)> {
        let rd = node.ready();
        node.advance();
        assert!(
            rd.send_now.is_empty(),
            "votes wait for the sync: {:?}",
            rd.send_now
        );
        rd.send_after_sync
            .iter()
            .filter_map(|m| match m.body {
                MessageBody::RequestVoteResponse { granted, .. } => Some((m.to, m.term, granted)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_vote_in_the_current_term_is_persisted_before_it_is_sent() {
        // Reference: Raft Figure 2 (votedFor is persistent state, "updated on
        // stable storage before responding to RPCs"). The term does not change
        // here, only the vote: the Ready must still carry the hard state.
        let restored = Restored {
            hard_state: super::super::HardState { term: 5, vote: 0 },
            ..Restored::default()
        };
        let mut node = Node::new(config(2, &[1, 2, 3]), restored, 1);
        if node.has_ready() {
            node.ready();
            node.advance();
        }
        node.step(vote_req(1, 2, 5, 0, 0));
        let rd = node.ready();
        assert_eq!(
            rd.hard_state,
            Some(super::super::HardState { term: 5, vote: 1 })
        );
        node.advance();
    }

    #[test]
    fn a_pre_vote_request_never_changes_the_receivers_term() {
        // Reference: thesis §9.6 (pre-vote): a pre-candidate asks whether it
        // could win before it bumps anyone's term.
        let mut node = Node::new(config(2, &[1, 2, 3]), Restored::default(), 1);
        let pre_vote = msg(
            1,
            2,
            7,
            MessageBody::RequestVote {
                pre_vote: true,
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        );
        node.step(pre_vote);
        assert_eq!(node.term(), 0);
        let rd = node.ready();
        assert!(
            rd.hard_state.is_none_or(|hs| hs.term == 0),
            "{:?}",
            rd.hard_state
        );
        node.advance();
    }

    #[test]
    fn election_timeout_is_drawn_from_t_to_2t_and_redrawn() {
        // Reference: Raft §5.2 (randomized election timeouts).
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut node = Node::new(config(1, &[1, 2, 3]), Restored::default(), seed);
            for _ in 0..3 {
                let start_term = node.term();
                let mut ticks = 0;
                while node.term() == start_term {
                    node.tick();
                    ticks += 1;
                    assert!(ticks < 20, "no election within 2 * election_ticks");
                }
                assert!(
                    (10..20).contains(&ticks),
                    "timeout {ticks} outside [10, 20)"
                );
                seen.insert(ticks);
            }
        }
        assert!(seen.len() > 5, "timeouts are not spread out: {seen:?}");
    }

    #[test]
    fn follower_votes_at_most_once_per_term() {
        // Reference: Raft §5.2 ("each server will vote for at most one candidate
        // in a given term, on a first-come-first-served basis").
        let mut node = Node::new(config(1, &[1, 2, 3]), Restored::default(), 1);
        node.step(vote_req(2, 1, 1, 0, 0));
        assert_eq!(vote_answers(&mut node), vec![(2, 1, true)]);
        node.step(vote_req(3, 1, 1, 0, 0));
        assert_eq!(vote_answers(&mut node), vec![(3, 1, false)]);
        node.step(vote_req(2, 1, 1, 0, 0));
        assert_eq!(
            vote_answers(&mut node),
            vec![(2, 1, true)],
            "a repeated request is re-granted"
        );
        assert_eq!(node.status().vote, 2);
    }

    #[test]
    fn vote_is_granted_only_to_an_up_to_date_log() {
        // Reference: Raft §5.4.1. The voter's log ends at index 2, term 2.
        let mut node = Net::node_with_log(1, &[1, 2, 3], &[1, 2], 3);
        node.step(vote_req(2, 1, 4, 5, 1));
        assert_eq!(
            vote_answers(&mut node),
            vec![(2, 4, false)],
            "lower last term, longer log"
        );
        node.step(vote_req(3, 1, 5, 1, 2));
        assert_eq!(
            vote_answers(&mut node),
            vec![(3, 5, false)],
            "same last term, shorter"
        );
        node.step(vote_req(3, 1, 6, 2, 2));
        assert_eq!(
            vote_answers(&mut node),
            vec![(3, 6, true)],
            "same last term, same length"
        );
    }

    #[test]
    fn candidate_with_a_majority_becomes_leader_and_appends_a_noop() {
        // Reference: Raft §5.2, §5.4.2 (a new leader commits an entry of its term).
        let mut net = Net::new(3);
        net.campaign(1);
        assert_eq!(net.node(1).role(), Role::Leader);
        assert_eq!(net.node(1).term(), 1);
        for id in 1..=3 {
            assert_eq!(net.node(id).status().commit_index, 1, "node {id}");
            assert_eq!(net.node(id).leader_id(), 1);
        }
        assert_eq!(net.applied(1)[0].kind, super::super::EntryKind::Noop);
    }

    #[test]
    fn candidate_that_loses_becomes_follower() {
        // Reference: Raft §5.2. Two voters of three refuse: a lost election.
        let mut node = Node::new(config(1, &[1, 2, 3]), Restored::default(), 3);
        while node.role() != Role::Candidate {
            node.tick();
        }
        let term = node.term();
        for from in [2, 3] {
            node.step(msg(
                from,
                1,
                term,
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    granted: false,
                },
            ));
        }
        assert_eq!(node.role(), Role::Follower);
        assert_eq!(node.term(), term);
    }

    #[test]
    fn split_vote_is_resolved_by_a_later_election() {
        // Reference: Raft §5.2 (split votes). Four voters: 1 and 2 campaign in the
        // same term, 3 votes for 1 and 4 for 2, so neither has three votes.
        let mut net = Net::new(4);
        net.cut(1, 4);
        net.cut(2, 3);
        net.cut(1, 2);
        net.tick_until_role(1, Role::Candidate);
        net.tick_until_role(2, Role::Candidate);
        net.stabilize();
        assert_eq!(net.node(1).role(), Role::Candidate);
        assert_eq!(net.node(2).role(), Role::Candidate);
        assert_eq!(net.node(1).term(), net.node(2).term());
        net.heal();
        net.tick_all_until(|net| net.leader().is_some(), 100);
        let leader = net.leader().unwrap_or(NO_NODE);
        assert!(
            net.node(leader).term() > 1,
            "the split term produced no leader"
        );
    }

    #[test]
    fn pre_vote_keeps_a_partitioned_node_from_raising_its_term() {
        // Reference: thesis §9.6. A node cut off from the others keeps failing
        // its pre-vote; its term stays put, and on return it rejoins the leader
        // instead of deposing it.
        let mut net = Net::with(3, |c| {
            c.pre_vote = true;
            c.check_quorum = true;
        });
        net.campaign(1);
        let term = net.node(1).term();
        net.isolate(3);
        for _ in 0..100 {
            net.tick_all();
        }
        assert_eq!(net.node(3).term(), term);
        assert_eq!(net.node(3).role(), Role::PreCandidate);
        net.heal();
        for _ in 0..5 {
            net.tick_all();
        }
        assert_eq!(net.node(1).role(), Role::Leader);
        assert_eq!(net.node(1).term(), term);
        assert_eq!(net.node(3).role(), Role::Follower);
        assert_eq!(net.node(3).leader_id(), 1);
    }

    #[test]
    fn without_pre_vote_a_returning_node_disrupts_the_leader() {
        // The counterpart of the test above, showing what pre-vote prevents.
        let mut net = Net::new(3);
        net.campaign(1);
        net.isolate(3);
        for _ in 0..60 {
            net.tick_all();
        }
        assert!(net.node(3).term() > 2);
        net.heal();
        net.tick_all();
        assert!(net.node(1).term() > 2, "the leader adopted the higher term");
        assert_ne!(net.node(1).role(), Role::Leader, "and was deposed");
    }

    #[test]
    fn leader_without_a_quorum_steps_down() {
        // Reference: thesis §6.2 (check-quorum): a leader that has not heard
        // from a majority within an election timeout steps down.
        let mut net = Net::with(3, |c| c.check_quorum = true);
        net.campaign(1);
        net.isolate(1);
        for _ in 0..(2 * 10) {
            net.tick_node(1);
        }
        assert_eq!(net.node(1).role(), Role::Follower);
        assert_eq!(net.node(1).leader_id(), NO_NODE);
    }

    #[test]
    fn follower_in_lease_ignores_vote_requests_for_a_higher_term() {
        // Reference: thesis §4.2.3. A follower that heard from its leader within
        // the minimum election timeout ignores candidates and keeps its term.
        let mut net = Net::with(3, |c| c.check_quorum = true);
        net.campaign(1);
        let node = net.node_mut(2);
        node.step(vote_req(3, 2, 5, 100, 100));
        assert_eq!(node.term(), 1);
        assert!(!node.has_ready(), "no answer at all");
        for _ in 0..10 {
            node.tick();
        }
        node.step(vote_req(3, 2, 5, 100, 100));
        assert_eq!(node.term(), 5, "lease expired: the candidate is heard");
    }

    #[test]
    fn stale_leader_is_told_the_new_term() {
        // A leader from term 1 sends to a node already in term 3; the reply
        // makes the old leader step down.
        let mut net = Net::new(3);
        net.campaign(1);
        let mut old = net.take_node(1);
        net.campaign(2);
        net.campaign(3);
        assert!(net.node(3).term() >= 3);
        old.propose(b"x".to_vec()).expect("still believes it leads");
        let rd = old.ready();
        old.advance();
        let append = rd
            .send_now
            .into_iter()
            .find(|m| m.to == 2)
            .expect("an append to 2");
        let node2 = net.node_mut(2);
        node2.step(append);
        let rd2 = node2.ready();
        node2.advance();
        let reply = rd2
            .send_after_sync
            .into_iter()
            .next()
            .expect("a reply to the stale leader");
        old.step(reply);
        assert_eq!(old.role(), Role::Follower);
        assert!(old.term() >= 3);
    }

    #[test]
    #[should_panic(expected = "invalid transition [Follower -> leader]")]
    fn becoming_leader_from_follower_panics() {
        let mut node = Node::new(config(1, &[1, 2, 3]), Restored::default(), 1);
        node.become_leader();
    }
}
