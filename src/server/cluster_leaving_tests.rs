//! Peers leaving the dialed set: a node is let go of after its grace
//! period, also one the core last sent to in vain.

use super::*;
use crate::raft::{Message, MessageBody};

/// Node `from`'s acknowledgement of the leader's whole log.
fn acknowledge_all(server: &mut Server, from: NodeId) {
    let node = server.replica.node();
    let (term, index) = (node.term(), node.last_index());
    server.replica.step(Message {
        from,
        to: 1,
        term,
        body: MessageBody::AppendResponse {
            success: true,
            index,
            hint_index: 0,
            hint_term: 0,
        },
    });
    server.iterate().expect("iterate");
}

/// The leader commits the removal of node 3, which is down: its farewell
/// heartbeat cannot be queued, which reports 3 unreachable, and that put
/// it back among the peers dialed, with no grace period to end it. It was
/// dialed once a second until the membership or the leader changed.
#[test]
fn a_removed_node_that_is_down_is_let_go_of_after_its_grace_period() {
    let (mut server, _dir) = super::leader::held_tests::leader_of_three();
    acknowledge_all(&mut server, 2);
    server
        .replica
        .node_mut()
        .propose_conf_change(ConfChange::Remove { id: 3 })
        .expect("node 2 acknowledged lately");
    server.iterate().expect("iterate");
    acknowledge_all(&mut server, 2);
    let status = server.replica.status();
    assert_eq!(status.voters, vec![1, 2]);
    assert!(
        status.conf_index <= status.commit_index,
        "removal committed"
    );
    assert!(
        server.peers.members.contains_key(&3),
        "still dialed: its grace period has only begun"
    );
    // The grace period is over.
    for until in server.cluster.leaving.values_mut() {
        *until = 0;
    }
    for _ in 0..5 {
        server.replica.node_mut().tick();
        server.iterate().expect("iterate");
    }
    assert!(
        !server.peers.members.contains_key(&3),
        "node 3, removed, still dialed after its grace period"
    );
    assert!(server.peers.members.contains_key(&2));
}
