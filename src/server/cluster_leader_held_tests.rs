//! The requests a leader holds (`Held`) while a transfer runs, retried
//! once it ends: on a leader of three voters, which a unit test cannot
//! get from the single-member node of `client_io`'s tests. Apart from
//! `cluster_leader.rs` so that it stays readable in one sitting.

use super::*;
use crate::server::client_io::tests::{connect, expect_replies};
use crate::server::clients::{Kind, Pending};

/// Node 1 of three voters (nodes 2 and 3 never run), made leader by a
/// pre-vote and a vote node 2 is said to have granted.
pub(in crate::server) fn leader_of_three() -> (Server, tempfile::TempDir) {
    use crate::raft::{Message, MessageBody, Role};
    use crate::server::client_io::tests::node;
    let (one, dir) = node();
    let mut config = one.config.clone();
    drop(one);
    config.data_dir = dir.path().join("three");
    config.cluster = vec![
        (1, config.raft_addr.clone()),
        (2, "127.0.0.1:9".to_string()),
        (3, "127.0.0.1:9".to_string()),
    ];
    let (_stop, receiver) = crossbeam_channel::bounded(1);
    let stop_on = crate::server::event_loop::StopOn::Channel(receiver);
    let mut server = crate::server::build(config, stop_on).expect("build");
    for _ in 0..1000 {
        if server.replica.node().role() != Role::Follower {
            break;
        }
        server.replica.node_mut().tick();
        server.iterate().expect("iterate");
    }
    for pre_vote in [true, false] {
        let term = server.replica.node().term() + u64::from(pre_vote);
        let body = MessageBody::RequestVoteResponse {
            pre_vote,
            granted: true,
        };
        server.replica.step(Message {
            from: 2,
            to: 1,
            term,
            body,
        });
        server.iterate().expect("iterate");
    }
    assert_eq!(server.replica.node().role(), Role::Leader);
    (server, dir)
}

/// Node 3's `SET k v` and `GET k`, one connection's, held behind a
/// CLUSTER TRANSFER held before them while another transfer ran, are
/// retried once that one ends: the TRANSFER starts a transfer, so the
/// SET is held again, and the GET must wait behind it. Served at once
/// (as it was), the read took its place before the write, which the
/// next leader then applied: the connection read the key without its
/// own write, sent before.
#[test]
fn a_read_held_behind_a_write_stays_behind_it_when_a_retried_transfer_starts() {
    let (mut server, _dir) = leader_of_three();
    let transfer = ClusterRequest::Transfer { id: 2 };
    let set = Command::Set(b"k".to_vec(), b"v".to_vec());
    let get = Command::Get(b"k".to_vec());
    let held = [
        (Waiter::Peer { from: 2, id: 1 }, Held::Cluster(transfer)),
        (Waiter::Peer { from: 3, id: 1 }, Held::Kv(set)),
        (Waiter::Peer { from: 3, id: 2 }, Held::Kv(get)),
    ];
    server.cluster.held.extend(held);
    server.cluster_tick();
    assert_eq!(server.replica.node().transfer_target(), Some(2));
    let still_held: Vec<Waiter> = server.cluster.held.iter().map(|(w, _)| *w).collect();
    assert_eq!(
        still_held,
        [
            Waiter::Peer { from: 3, id: 1 },
            Waiter::Peer { from: 3, id: 2 }
        ],
        "the GET went ahead of the SET sent before it"
    );
}

/// A CLUSTER TRANSFER 3 forwarded to node 2, which was lost since, is
/// parked for the next leader: this node. Routed in the same pass as
/// another connection's TRANSFER 2, which starts a transfer first, it
/// is held; its deadline, or the node's exit, comes while it is. Node 2
/// may have told node 3 to campaign: abandoned, not `-TRYAGAIN`.
#[test]
fn an_orphaned_transfer_held_here_at_its_deadline_is_answered_abandoned() {
    for at_exit in [false, true] {
        let (mut server, _dir) = leader_of_three();
        let (_a, ta) = connect(&mut server);
        let (mut b, tb) = connect(&mut server);
        let a_client = server.clients.get_mut(&ta).expect("a");
        let a_seq = a_client.open_slot(Pending::Parked, Kind::Change);
        let to_2 = ClusterRequest::Transfer { id: 2 };
        server.cluster.parked.push_back(ta, a_seq, to_2);
        let b_client = server.clients.get_mut(&tb).expect("b");
        let b_seq = b_client.open_slot(Pending::Parked, Kind::Change);
        b_client.set_forwarded(b_seq, false, 7, 2);
        server
            .cluster
            .forwarded(7, tb, b_seq, "CLUSTER TRANSFER 3", 2);
        server.settle_orphaned_forwards();
        server.cluster_tick();
        assert_eq!(server.replica.node().transfer_target(), Some(2));
        assert_eq!(server.cluster.held.len(), 1, "TRANSFER 3 held");
        if at_exit {
            server.answer_own_cluster_commands();
        } else {
            server.expire(tb, b_seq);
        }
        server.flush_clients();
        expect_replies(&mut b, b"-ERR transfer to 3 abandoned\r\n");
    }
}
