//! Log replication, one rule per test: when an entry commits, how appends
//! are batched and bounded, how followers truncate and commit, learners,
//! and messages no honest peer sends. Catching up a lagging follower is
//! tested in `replication_catch_up_tests.rs`.

use super::super::testnet::{entry, msg, Net};
use super::super::{HardState, MessageBody, Node, Role, SnapshotMeta};

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

#[path = "replication_catch_up_tests.rs"]
mod catch_up_tests;
