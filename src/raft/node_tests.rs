use super::super::testnet::{config, entry, msg, Net};
use super::super::{
    HardState, MessageBody, Node, Restored, Role, SnapshotMeta, SoftState, NO_NODE,
};

fn append(from: u64, term: u64, prev: (u64, u64), entries: Vec<super::Entry>) -> super::Message {
    msg(
        from,
        1,
        term,
        MessageBody::Append {
            prev_index: prev.0,
            prev_term: prev.1,
            entries,
            commit: 0,
        },
    )
}

#[test]
fn candidate_vote_requests_wait_for_the_sync_of_its_own_vote() {
    // Reference: thesis §3.8 / etcd raft.go send(): a vote request implies
    // the candidate's vote for itself, which must be durable first.
    let mut node = Node::new(config(1, &[1, 2, 3]), Restored::default(), 9);
    while node.role() != Role::Candidate {
        node.tick();
    }
    let rd = node.ready();
    assert_eq!(rd.hard_state, Some(HardState { term: 1, vote: 1 }));
    assert!(rd.must_sync());
    assert!(rd.send_now.is_empty());
    assert_eq!(
        rd.send_after_sync.iter().map(|m| m.to).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(
        rd.soft_state,
        Some(SoftState {
            role: Role::Candidate,
            leader_id: NO_NODE,
            term: 1
        })
    );
    node.advance();
    assert!(!node.has_ready(), "nothing changed since");
}

#[test]
fn leader_appends_leave_before_the_sync_and_follower_acks_after() {
    // Reference: thesis §10.2.1.
    let mut net = Net::new(2);
    net.campaign(1);
    net.node_mut(1).propose(b"x".to_vec()).expect("leader");
    let rd = net.node_mut(1).ready();
    assert!(matches!(rd.send_now[0].body, MessageBody::Append { .. }));
    assert!(rd.send_after_sync.is_empty());
    let append = rd.send_now[0].clone();
    net.node_mut(1).advance();
    let follower = net.node_mut(2);
    follower.step(append);
    let rd = follower.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.send_now.is_empty());
    assert!(matches!(
        rd.send_after_sync[0].body,
        MessageBody::AppendResponse {
            success: true,
            index: 2,
            ..
        }
    ));
    follower.advance();
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 2,
            read_round: 4,
        },
    ));
    let rd = follower.ready();
    assert_eq!(
        rd.send_now[0].body,
        MessageBody::HeartbeatResponse { read_round: 4 }
    );
    assert_eq!(rd.committed.len(), 1);
    follower.advance();
}

#[test]
#[should_panic(expected = "ready() called twice without advance()")]
fn ready_twice_without_advance_panics() {
    let mut node = Node::new(config(1, &[1]), Restored::default(), 1);
    node.ready();
    node.ready();
}

#[test]
#[should_panic(expected = "advance() called without an outstanding ready()")]
fn advance_without_ready_panics() {
    let mut node = Node::new(config(1, &[1]), Restored::default(), 1);
    node.advance();
}

#[test]
fn messages_for_another_node_are_ignored() {
    let mut node = Node::new(config(1, &[1, 2, 3]), Restored::default(), 1);
    let mut m = append(2, 5, (0, 0), vec![entry(1, 5)]);
    m.to = 3;
    node.step(m);
    assert_eq!(node.term(), 0);
    assert!(!node.has_ready());
}

#[test]
fn truncation_between_ready_and_advance_is_handed_out_again() {
    // Entries 2..=4 of term 1 are handed out; before advance, a leader of
    // term 2 replaces 3.. . The next Ready must rewrite from index 3.
    let mut node = Net::node_with_log(1, &[1, 2], &[1], 1);
    node.step(append(
        2,
        1,
        (1, 1),
        vec![entry(2, 1), entry(3, 1), entry(4, 1)],
    ));
    let rd = node.ready();
    assert_eq!(rd.entries.len(), 3);
    node.step(append(3, 2, (2, 1), vec![entry(3, 2)]));
    node.advance();
    let rd = node.ready();
    assert_eq!(rd.entries, vec![entry(3, 2)]);
    node.advance();
    assert_eq!(node.status().last_index, 3);
}

#[test]
fn restart_takes_membership_and_indexes_from_the_snapshot() {
    let snapshot = SnapshotMeta {
        index: 5,
        term: 2,
        voters: vec![1, 2, 3],
        learners: vec![4],
    };
    let restored = Restored {
        hard_state: HardState { term: 3, vote: 2 },
        snapshot,
        entries: vec![entry(6, 2), entry(7, 3)],
    };
    let node = Node::new(config(1, &[1]), restored, 1);
    let status = node.status();
    assert_eq!((status.term, status.vote), (3, 2));
    assert_eq!((status.commit_index, status.applied_index), (5, 5));
    assert_eq!(
        (status.first_index, status.last_index, status.snapshot_index),
        (6, 7, 5)
    );
    assert_eq!((status.voters, status.learners), (vec![1, 2, 3], vec![4]));
    assert_eq!(status.role, Role::Follower);
}

#[test]
fn restart_after_a_lost_hard_state_write_adopts_the_log_term() {
    let node = Net::node_with_log(1, &[1, 2], &[1, 4], 2);
    assert_eq!((node.term(), node.status().vote), (4, NO_NODE));
}

#[test]
fn restarted_single_voter_commits_its_old_entries_through_a_new_noop() {
    let mut net = Net::new(1);
    net.campaign(1);
    net.propose(1, b"a");
    net.propose(1, b"b");
    net.restart(1);
    assert_eq!(
        net.node(1).status().commit_index,
        0,
        "commit is not durable"
    );
    net.campaign(1);
    let status = net.node(1).status();
    assert_eq!(
        (status.role, status.term, status.commit_index),
        (Role::Leader, 2, 4)
    );
}

#[test]
fn restarted_follower_catches_up() {
    let mut net = Net::new(3);
    net.campaign(1);
    net.propose(1, b"a");
    net.isolate(3);
    net.restart(3);
    let index = net.propose(1, b"b");
    net.heal();
    net.tick_all();
    let status = net.node(3).status();
    assert_eq!(
        (status.term, status.leader_id, status.commit_index),
        (1, 1, index)
    );
}

#[test]
fn committed_entries_are_handed_out_a_byte_budget_at_a_time() {
    let config = super::super::RaftConfig {
        max_apply_bytes: 25,
        ..config(1, &[1])
    };
    let mut node = Node::new(config, Restored::default(), 9);
    let mut handed = Vec::new();
    let mut chunks = Vec::new();
    let mut proposed = 0;
    for round in 0..1000 {
        assert!(round < 999, "the proposals were never all applied");
        // Proposed a few at a time, so that several commit together.
        if node.role() == Role::Leader && round % 7 == 0 && proposed < 12 {
            for _ in 0..3 {
                let size = if proposed == 4 { 100 } else { 10 };
                node.propose(vec![b'x'; size]).expect("leader");
                proposed += 1;
            }
        }
        if node.has_ready() {
            let rd = node.ready();
            if !rd.committed.is_empty() {
                let bytes: usize = rd.committed.iter().map(|e| e.data.len()).sum();
                chunks.push((rd.committed.len(), bytes));
                handed.extend(rd.committed.iter().map(|e| e.index));
            }
            node.advance();
        } else {
            node.tick();
        }
        // The leader's own Noop, then the proposals.
        if handed.len() == 13 && !node.has_ready() {
            break;
        }
    }
    let expected: Vec<u64> = (1..=handed.len() as u64).collect();
    assert_eq!(handed, expected, "each committed entry once, in order");
    for (count, bytes) in &chunks {
        assert!(
            *count == 1 || *bytes <= 25,
            "{count} entries of {bytes} bytes"
        );
    }
    assert!(
        chunks.iter().any(|(_, bytes)| *bytes > 25),
        "one over budget alone"
    );
    assert!(
        chunks.iter().any(|(count, _)| *count > 1),
        "several within it"
    );
    assert_eq!(node.status().applied_index, node.status().commit_index);
}
