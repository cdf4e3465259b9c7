//! Removing members, one rule per test (Raft thesis §4.2.2–4.2.3): a
//! leader that removes itself, removals the leader refuses or must wait
//! on, and how a removed node learns its removal and then stays quiet.
//! Apart from `membership_tests.rs` so that each reads in one sitting.

use super::membership_tests::conf;
use super::testnet::{msg, Net};
use super::{ConfChange, ConfChangeError, MessageBody, Role};

#[test]
fn leader_that_removes_itself_leads_without_counting_itself_then_steps_down() {
    // Reference: thesis §4.2.2. The leader manages a configuration without
    // itself until the removal commits, then steps down; its TimeoutNow lets a
    // successor win without waiting for an election timeout.
    let mut net = Net::new(3);
    net.campaign(1);
    net.isolate(3);
    let index = net.conf_change(1, ConfChange::Remove { id: 1 });
    assert_eq!(net.node(1).role(), Role::Leader);
    assert!(
        net.node(1).status().commit_index < index,
        "1 and 2 are not a majority of {{2, 3}}"
    );
    net.heal();
    net.tick_node(1);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(conf(&net, 1), (vec![2, 3], vec![]));
    let leader = net.leader().expect("a successor, with no timeout");
    assert!(leader == 2 || leader == 3, "leader {leader}");
    assert!(net.node(leader).status().commit_index >= index);
}

#[test]
fn a_leader_removing_itself_confirms_reads_by_a_majority_of_the_voters_left() {
    // Reference: thesis §4.2.2 and §6.4. Once its removal is appended the
    // leader is no voter: its own acknowledgement of a read round counts for
    // nothing, so 1 and 2 do not confirm a read under {2, 3}.
    let mut net = Net::new(3);
    net.campaign(1);
    net.isolate(3);
    let index = net.conf_change(1, ConfChange::Remove { id: 1 });
    assert!(net.node(1).status().commit_index < index);
    net.node_mut(1).read_index(7).expect("still the leader");
    net.stabilize();
    for _ in 0..3 {
        net.tick_node(1);
    }
    assert!(net.read_states[&1].is_empty(), "confirmed by 1 and 2 alone");
    // With 3 back (its acknowledgements of the log held back, so that the
    // removal stays uncommitted and 1 keeps leading), 2 and 3 confirm it.
    net.drop_if = Some(Box::new(|m| {
        m.from == 3 && matches!(m.body, MessageBody::AppendResponse { .. })
    }));
    net.heal();
    net.tick_node(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.read_states[&1].len(), 1);
    assert_eq!(net.read_states[&1][0].ctx, 7);
}

#[test]
fn removed_node_never_campaigns_and_is_no_longer_replicated_to() {
    // Reference: thesis §4.2.3 (removed servers); only voters campaign.
    let mut net = Net::new(3);
    net.campaign(1);
    let index = net.conf_change(1, ConfChange::Remove { id: 3 });
    assert!(net.node(1).status().commit_index >= index);
    assert_eq!(conf(&net, 3), (vec![1, 2], vec![]), "3 got its removal");
    let term = net.node(3).term();
    let seen = net.delivered.len();
    for _ in 0..60 {
        net.tick_all();
    }
    assert_eq!(
        (net.node(3).role(), net.node(3).term()),
        (Role::Follower, term)
    );
    assert!(
        net.delivered[seen..]
            .iter()
            .all(|m| m.to != 3 && m.from != 3),
        "nothing goes to or comes from the removed node"
    );
    assert_eq!(net.node(1).role(), Role::Leader);
}

/// After 60 ticks, nothing has come from `id` (a node that knows it was removed).
fn assert_stays_quiet(net: &mut Net, id: u64) {
    let quiet_from = net.delivered.len();
    for _ in 0..60 {
        net.tick_all();
    }
    assert!(
        net.delivered[quiet_from..].iter().all(|m| m.from != id),
        "a node that knows it was removed stays quiet"
    );
}

/// Thesis §4.2.2. A removed node whose acknowledgement of its own removal
/// never reached the leader (and that missed the farewell heartbeat) learns
/// the removal committed from the leader's answer to its pre-vote, and stays
/// quiet after that. Found by the membership process test: such a node kept
/// answering `-TRYAGAIN no leader` instead of `-TRYAGAIN not a member`.
#[test]
fn removed_node_that_missed_the_commit_learns_it_from_its_pre_vote() {
    with_and_without_check_quorum(removed_node_that_missed_the_commit);
}

fn with_and_without_check_quorum(test: fn(bool)) {
    test(false);
    test(true);
}

/// With check-quorum the leader holds a lease and drops pre-votes of a
/// higher term, as a removed node's are: it must still answer them.
fn pre_vote_net(check_quorum: bool) -> Net {
    Net::with(3, move |c| {
        c.pre_vote = true;
        c.check_quorum = check_quorum;
    })
}

/// A pre-vote cluster of three where node 1 leads and has proposed removing
/// `id`, its messages delivered once; with the proposal's index.
fn removal_proposed(check_quorum: bool, id: u64) -> (Net, u64) {
    let mut net = pre_vote_net(check_quorum);
    net.campaign(1);
    let (index, _) = net
        .node_mut(1)
        .propose_conf_change(ConfChange::Remove { id })
        .expect("leader");
    net.handle_ready(1);
    for m in net.take_queue() {
        net.deliver(m);
    }
    (net, index)
}

fn removed_node_that_missed_the_commit(check_quorum: bool) {
    let (mut net, index) = removal_proposed(check_quorum, 3);
    net.handle_ready(3);
    net.isolate(3);
    net.stabilize();
    assert!(net.node(1).status().commit_index >= index);
    assert!(
        net.node(3).status().commit_index < index,
        "3 missed the commit"
    );
    net.heal();
    let term = net.node(1).term();
    net.tick_all_until(|net| net.node(3).status().commit_index >= index, 40);
    assert_eq!(
        (net.node(1).role(), net.node(1).term()),
        (Role::Leader, term)
    );
    assert_stays_quiet(&mut net, 3);
}

/// The same, for a removed node that never received the entry removing it:
/// the majority committed without it (found by the membership process test
/// with five voters). The leader's answer to its pre-vote brings the entries.
#[test]
fn removed_node_that_never_got_its_removal_learns_it_from_its_pre_vote() {
    with_and_without_check_quorum(removed_node_that_never_got_its_removal);
}

fn removed_node_that_never_got_its_removal(check_quorum: bool) {
    let mut net = pre_vote_net(check_quorum);
    net.campaign(1);
    net.propose(1, b"before");
    net.isolate(3);
    let index = net.conf_change(1, ConfChange::Remove { id: 3 });
    assert!(net.node(1).status().commit_index >= index);
    assert!(
        net.node(3).status().last_index < index,
        "3 never got its removal"
    );
    net.heal();
    let term = net.node(1).term();
    net.tick_all_until(|net| net.node(3).status().commit_index >= index, 40);
    assert_eq!(conf(&net, 3), (vec![1, 2], vec![]));
    assert_eq!(
        (net.node(1).role(), net.node(1).term()),
        (Role::Leader, term)
    );
    assert_stays_quiet(&mut net, 3);
}

#[test]
fn node_removed_by_an_uncommitted_change_still_stands_for_election() {
    // Reference: thesis §4.2.2 ("a server that is not part of its own latest
    // configuration should still start new elections, as it might still be
    // needed until the Cnew entry is committed"). Found by the chaos test:
    // leader 1 of {1, 2} removes itself while cut off from 2, writes on, and
    // restarts. 2 (still under {1, 2}) needs 1's vote, which 1 refuses since
    // its log is longer; only 1 can end this, by leading {2} to the commit.
    let mut net = Net::new(2);
    net.campaign(1);
    net.isolate(1);
    net.conf_change(1, ConfChange::Remove { id: 1 });
    let _ = net.node_mut(1).propose(b"x".to_vec());
    net.stabilize();
    net.restart(1);
    net.heal();
    assert_eq!(conf(&net, 1), (vec![2], vec![]));
    assert_eq!(conf(&net, 2), (vec![1, 2], vec![]));
    net.tick_all_until(|net| net.node(2).role() == Role::Leader, 100);
    assert_eq!(conf(&net, 2), (vec![2], vec![]));
    assert!(net.node(2).status().conf_index <= net.node(2).status().commit_index);
    for _ in 0..50 {
        net.tick_all();
    }
    assert_eq!(net.node(1).role(), Role::Follower, "quiet once it knows");
    assert_eq!(net.node(2).role(), Role::Leader);
}

#[test]
fn a_node_removed_by_an_uncommitted_change_does_not_count_its_own_vote() {
    // Reference: thesis §4.2.2. Node 1 holds its own removal from {1, 2, 3,
    // 4}, uncommitted: it stands for election under {2, 3, 4}, where its
    // own vote is nobody's. Counted, it would win on 2's vote alone, while
    // 3 and 4 could elect 3 under {2, 3, 4} in the same term.
    let mut net = Net::with(4, |c| c.pre_vote = true);
    net.campaign(1);
    net.isolate(1);
    net.conf_change(1, ConfChange::Remove { id: 1 });
    net.restart(1);
    assert_eq!(conf(&net, 1), (vec![2, 3, 4], vec![]));
    net.tick_until_role(1, Role::PreCandidate);
    let asked = net.node(1).term() + 1;
    let grant = |from, pre_vote| {
        msg(
            from,
            1,
            asked,
            MessageBody::RequestVoteResponse {
                pre_vote,
                granted: true,
            },
        )
    };
    net.node_mut(1).step(grant(2, true));
    assert_eq!(
        net.node(1).role(),
        Role::PreCandidate,
        "1 and 2 of {{2, 3, 4}}"
    );
    net.node_mut(1).step(grant(3, true));
    assert_eq!(net.node(1).role(), Role::Candidate);
    assert_eq!(net.node(1).term(), asked);
    net.node_mut(1).step(grant(2, false));
    assert_eq!(
        net.node(1).role(),
        Role::Candidate,
        "1 and 2 of {{2, 3, 4}}"
    );
    net.node_mut(1).step(grant(3, false));
    assert_eq!(net.node(1).role(), Role::Leader);
}

/// A leader that removes itself and appends more entries, then is cut off
/// before it learns that its removal committed: its successor commits the
/// removal, and the old leader's last entries are ones the successor never
/// had. Its pre-vote then names a last entry the leader cannot match.
#[test]
fn removed_leader_with_entries_the_cluster_never_had_learns_its_removal() {
    with_and_without_check_quorum(removed_leader_with_entries_the_cluster_never_had);
}

fn removed_leader_with_entries_the_cluster_never_had(check_quorum: bool) {
    let (mut net, index) = removal_proposed(check_quorum, 1);
    for id in [2, 3] {
        net.handle_ready(id);
    }
    net.take_queue();
    net.node_mut(1)
        .propose(b"lost".to_vec())
        .expect("still leader");
    net.handle_ready(1);
    net.take_queue();
    net.isolate(1);
    net.tick_all_until(|net| matches!(net.leader(), Some(2 | 3)), 100);
    let leader = net.leader().expect("a successor");
    net.propose(leader, b"after");
    assert!(net.node(leader).status().commit_index >= index);
    assert!(
        net.node(1).status().commit_index < index,
        "1 missed the commit"
    );
    net.heal();
    net.tick_all_until(|net| net.node(1).status().commit_index >= index, 100);
    assert_eq!(conf(&net, 1), (vec![2, 3], vec![]));
    assert_stays_quiet(&mut net, 1);
}

/// A removed node far behind gets the entries up to its removal in several
/// messages (each holds at most `max_msg_bytes`): every acknowledgement is
/// answered with the next part, not just with the commit index.
#[test]
fn removed_node_far_behind_gets_the_entries_up_to_its_removal_in_parts() {
    let mut net = Net::with(3, |c| {
        c.pre_vote = true;
        c.check_quorum = true;
        c.max_msg_bytes = 1;
    });
    net.campaign(1);
    net.isolate(3);
    for k in 0..30u8 {
        net.propose(1, &[k]);
    }
    let index = net.conf_change(1, ConfChange::Remove { id: 3 });
    assert!(net.node(3).status().last_index + 30 < index);
    net.heal();
    // One pre-vote (about an election timeout) must be enough.
    net.tick_all_until(|net| net.node(3).status().commit_index >= index, 25);
    assert_eq!(conf(&net, 3), (vec![1, 2], vec![]));
    assert_stays_quiet(&mut net, 3);
}

#[test]
fn a_removal_that_would_leave_too_few_reachable_voters_is_refused() {
    // The configuration is in force once appended: removing node 2 from
    // {1, 2, 3} while 3 is unreachable leaves {1, 3}, which can neither
    // commit the removal nor elect a leader until 3 returns.
    let mut net = Net::with(3, |c| c.check_quorum = true);
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.isolate(3);
    for _ in 0..25 {
        net.tick_node(1);
    }
    assert_eq!(net.node(1).role(), Role::Leader, "1 and 2 are a quorum");
    let no_quorum = |id| ConfChangeError::NoQuorumAfterRemoval {
        id,
        voters: 2,
        reachable: 1,
    };
    assert_eq!(
        net.node_mut(1)
            .propose_conf_change(ConfChange::Remove { id: 2 }),
        Err(no_quorum(2))
    );
    assert_eq!(net.node(1).check_remove(1), Err(no_quorum(1)));
    assert_eq!(net.node(1).status().last_index, 1, "nothing appended");
    net.node(1)
        .check_remove(3)
        .expect("removing the unreachable node leaves two reachable voters");
    net.heal();
    net.tick_node(1);
    net.conf_change(1, ConfChange::Remove { id: 2 });
    assert_eq!(conf(&net, 1), (vec![1, 3], vec![]));
}

/// Three voters with check-quorum, led by node 2 (a transfer from 1), which
/// does not hear node 3's messages.
fn leader_2_not_hearing_from_3() -> Net {
    let mut net = Net::with(3, |c| c.check_quorum = true);
    net.campaign(1);
    net.drop_if = Some(Box::new(|m| m.from == 3 && m.to == 2));
    net.node_mut(1).transfer_leader(2).expect("transfer");
    net.stabilize();
    net
}

#[test]
fn a_new_leader_waits_for_a_whole_round_before_it_counts_a_silent_voter_as_down() {
    // A new leader commits its Noop on the first acknowledgement, and a
    // removal waiting for that commit is tried at once: a voter that is up
    // but answers a moment later has not been heard from yet, which says
    // nothing about it before a whole check-quorum round has passed.
    let mut net = leader_2_not_hearing_from_3();
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(
        net.node_mut(2)
            .propose_conf_change(ConfChange::Remove { id: 1 }),
        Err(ConfChangeError::ChangeInProgress),
        "3 is undecided: wait, not refuse"
    );
    assert_eq!(
        net.node(2).check_remove(1),
        Err(ConfChangeError::ChangeInProgress)
    );
    net.drop_if = None;
    net.tick_all_until(|net| net.node(2).check_remove(1).is_ok(), 5);
    net.conf_change(2, ConfChange::Remove { id: 1 });
    assert_eq!(conf(&net, 2), (vec![2, 3], vec![]));

    // Silent for a whole round, it counts as down.
    let mut net = leader_2_not_hearing_from_3();
    let election_ticks = net.node(2).config.election_ticks;
    for _ in 0..election_ticks {
        net.tick_node(2);
    }
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(
        net.node(2).check_remove(1),
        Err(ConfChangeError::NoQuorumAfterRemoval {
            id: 1,
            voters: 2,
            reachable: 1
        })
    );
}
