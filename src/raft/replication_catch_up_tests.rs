//! Bringing a lagging or diverging follower up to date: finding where its
//! log parts from the leader's in a few round trips, and sending the
//! snapshot to one behind the compaction point only while it is of use.
//! Apart from `replication_tests.rs` so that each reads in one sitting.

use super::*;

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

/// The snapshot node 1 would take now, of everything it applied.
fn leader_snapshot(net: &Net) -> SnapshotMeta {
    SnapshotMeta {
        index: net.node(1).status().applied_index,
        term: 1,
        voters: vec![1, 2, 3],
        learners: vec![],
    }
}

/// Node 1 leads three, compacted past what node 3 (cut off meanwhile)
/// holds, and has handed node 3 a snapshot to stream; this network drops
/// InstallSnapshot, so node 3 never gets it. Returns the snapshot.
fn snapshot_handed_out_to_node_3() -> (Net, SnapshotMeta) {
    let mut net = Net::new(3);
    net.campaign(1);
    net.isolate(3);
    for i in 0..20u8 {
        net.propose(1, &[i]);
    }
    let sent = leader_snapshot(&net);
    net.node_mut(1).compact(sent.clone(), 5);
    net.heal();
    net.drop_if = Some(Box::new(|m| {
        matches!(m.body, MessageBody::InstallSnapshot { .. })
    }));
    net.tick_all_until(|net| net.node(1).snapshot_wanted(3, sent.index), 50);
    (net, sent)
}

/// Node 3 tells leader 1, in its term, that it holds everything up to `index`.
fn acknowledge_from_node_3(net: &mut Net, index: u64) {
    let term = net.node(1).term();
    net.node_mut(1).step(ack(3, term, index));
}

/// The transport asks, before and while it streams a snapshot's bytes,
/// whether they are still of use; each case that says no would otherwise
/// have had a whole snapshot streamed for nothing.
#[test]
fn a_snapshot_is_wanted_while_its_follower_waits_for_it_and_the_log_continues_after_it() {
    // Handed out, its bytes still on their way.
    let (mut net, sent) = snapshot_handed_out_to_node_3();
    assert!(
        !net.node(1).snapshot_wanted(3, sent.index - 1),
        "another snapshot"
    );
    assert!(
        !net.node(1).snapshot_wanted(2, sent.index),
        "node 2 replicates"
    );
    assert!(
        !net.node(2).snapshot_wanted(3, sent.index),
        "node 2 does not lead"
    );

    // A newer snapshot whose log still holds the entry after the one sent:
    // node 3 continues from the log once it holds the one sent.
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    let newer = leader_snapshot(&net);
    net.node_mut(1)
        .compact(newer.clone(), newer.index - sent.index);
    assert_eq!(net.node(1).status().first_index, sent.index + 1);
    assert!(net.node(1).snapshot_wanted(3, sent.index));
    // One that compacts past it: node 3 would need the newest after it.
    net.propose(1, b"past");
    let newest = leader_snapshot(&net);
    net.node_mut(1).compact(newest, 0);
    assert!(
        !net.node(1).snapshot_wanted(3, sent.index),
        "the log moved past it"
    );

    // Node 3 caught up otherwise (here: acknowledged the snapshot before its
    // stream was reported): no longer waiting for it.
    let (mut net, sent) = snapshot_handed_out_to_node_3();
    acknowledge_from_node_3(&mut net, sent.index);
    assert!(
        !net.node(1).snapshot_wanted(3, sent.index),
        "node 3 holds it"
    );
}

/// A follower sent one snapshot, then a newer one (the log moved past the
/// first while it was on its way), acknowledges the first only after the
/// newer one went out. That late acknowledgement answers no probe of the
/// leader's: taking it as one put the follower back below the newer
/// snapshot, and the leader streamed that whole snapshot to it again (seen
/// with the real binary under load: 7.9 MB sent twice within a second).
#[test]
fn a_late_acknowledgement_of_an_older_snapshot_does_not_send_the_newer_one_again() {
    // Streamed by the caller, not by this network: node 3 has not got them.
    let (mut net, older) = snapshot_handed_out_to_node_3();
    net.node_mut(1).report_snapshot(3, true);
    for i in 0..5u8 {
        net.propose(1, &[i]);
    }
    let newer = leader_snapshot(&net);
    net.node_mut(1).compact(newer.clone(), 0);
    net.tick_all_until(|net| net.node(1).snapshot_wanted(3, newer.index), 50);
    net.node_mut(1).report_snapshot(3, true);
    net.take_queue();

    acknowledge_from_node_3(&mut net, older.index);
    net.handle_ready(1);
    let to_3: Vec<MessageBody> = net
        .take_queue()
        .into_iter()
        .filter(|m| m.to == 3)
        .map(|m| m.body)
        .collect();
    assert!(
        !to_3
            .iter()
            .any(|body| matches!(body, MessageBody::InstallSnapshot { .. })),
        "the newer snapshot was sent again: {to_3:?}"
    );
    assert!(
        net.node(1).progress[&3].next_index > newer.index,
        "{}",
        net.node(1).debug_progress()
    );
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
