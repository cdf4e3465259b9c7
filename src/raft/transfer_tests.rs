//! The voter a stopping leader hands over to (`Node::stop_successor`), and
//! the handover it starts with the transfer machinery.

use super::testnet::Net;
use super::{Role, TransferOutcome};

#[test]
fn a_stopping_leader_picks_the_most_up_to_date_reachable_voter() {
    let mut net = Net::new(3);
    net.campaign(1);
    net.isolate(3);
    net.propose(1, b"x");
    net.heal();
    let last = net.node(1).last_index();
    let status = net.node(1).status();
    assert!(
        status.progress.contains(&(2, last)),
        "{:?}",
        status.progress
    );
    assert!(
        !status.progress.contains(&(3, last)),
        "{:?}",
        status.progress
    );
    let node = net.node(1);
    assert_eq!(node.stop_successor(|_| true), Some(2), "2 is caught up");
    assert_eq!(
        node.stop_successor(|id| id != 2),
        Some(3),
        "3 lags, but is the only one reachable"
    );
    assert_eq!(node.stop_successor(|_| false), None);
}

#[test]
fn a_tie_goes_to_the_lowest_id_and_learners_are_never_picked() {
    let mut net = Net::with(4, |c| {
        c.voters = vec![1, 3, 4];
        c.learners = vec![2];
    });
    net.campaign(1);
    net.propose(1, b"x");
    let node = net.node(1);
    assert_eq!(node.stop_successor(|_| true), Some(3));
    assert_eq!(node.stop_successor(|id| id != 3), Some(4));
    assert_eq!(node.stop_successor(|id| id == 2), None, "2 is a learner");
}

#[test]
fn only_a_leader_with_another_voter_has_a_successor() {
    let mut net = Net::new(3);
    net.campaign(1);
    assert_eq!(net.node(2).stop_successor(|_| true), None, "a follower");
    let mut alone = Net::new(1);
    alone.campaign(1);
    assert_eq!(alone.node(1).role(), Role::Leader);
    assert_eq!(alone.node(1).stop_successor(|_| true), None, "one node");
}

#[test]
fn the_successor_leads_one_term_later_and_commits_the_writes_in_flight() {
    let mut net = Net::new(3);
    net.campaign(1);
    let term = net.node(1).term();
    // Appended but not yet sent: a write in flight when the stop comes.
    let (index, _) = net
        .node_mut(1)
        .propose(b"in flight".to_vec())
        .expect("leads");
    let to = net.node(1).stop_successor(|_| true).expect("a successor");
    net.node_mut(1).transfer_leader(to).expect("starts");
    net.stabilize();
    assert_eq!(net.leader(), Some(to));
    assert_eq!(net.node(to).term(), term + 1, "no election round was lost");
    assert_eq!(net.node(1).leader_id(), to);
    assert_eq!(
        net.transfer_outcomes.get(&1).cloned().unwrap_or_default(),
        vec![TransferOutcome::Finished { target: to }]
    );
    // The old leader learns the entry committed, so it can answer the write.
    for id in [1, to] {
        let applied = net.applied(id);
        assert!(
            applied
                .iter()
                .any(|e| e.index == index && e.term == term && &e.data[..] == b"in flight"),
            "node {id} applied {applied:?}"
        );
    }
}
