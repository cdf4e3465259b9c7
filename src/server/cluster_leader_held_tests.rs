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

/// A leader of three, connected to both followers, transferring its
/// leadership to node 3, so that it holds what followers forward.
fn leader_transferring_to_3() -> (Server, tempfile::TempDir) {
    let (mut server, dir) = leader_of_three();
    server.quorum_connected = true;
    assert!(server.replica.node_mut().transfer_leader(3).is_ok());
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
        (
            Waiter::Peer { from: 2, id: 1 },
            Held::Cluster {
                request: transfer,
                by: u64::MAX,
            },
        ),
        (
            Waiter::Peer { from: 3, id: 1 },
            Held::Kv {
                command: set,
                by: 0,
            },
        ),
        (
            Waiter::Peer { from: 3, id: 2 },
            Held::Kv {
                command: get,
                by: 0,
            },
        ),
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

/// Node `from`'s acknowledgement of the leader's whole log, which keeps
/// the leader's quorum active while it ticks.
/// Ticks the leader until its transfer is abandoned (the target never
/// answers), node 2 acknowledging everything meanwhile.
fn abandon_transfer(server: &mut Server) {
    for _ in 0..1000 {
        if server.replica.node().transfer_target().is_none() {
            break;
        }
        acknowledge_all(server, 2);
        server.replica.node_mut().tick();
    }
    assert_eq!(server.replica.node().transfer_target(), None);
}

fn acknowledge_all(server: &mut Server, from: NodeId) {
    use crate::raft::{Message, MessageBody};
    let node = server.replica.node();
    let (term, index) = (node.term(), node.last_index());
    let body = MessageBody::AppendResponse {
        success: true,
        index,
        hint_index: 0,
        hint_term: 0,
    };
    server.replica.step(Message {
        from,
        to: 1,
        term,
        body,
    });
}

/// Node `from`'s answer to the leader's latest heartbeat, which confirms
/// the reads recorded before it.
fn confirm_reads(server: &mut Server, from: NodeId) {
    use crate::raft::{Message, MessageBody};
    let node = server.replica.node();
    let (term, read_round) = (node.term(), node.read_round());
    server.replica.step(Message {
        from,
        to: 1,
        term,
        body: MessageBody::HeartbeatResponse { read_round },
    });
}

fn forward_set(server: &mut Server, from: NodeId, id: u64) {
    use crate::server::cluster::PAYLOAD_KV;
    let mut payload = vec![PAYLOAD_KV];
    Command::Set(b"k".to_vec(), id.to_string().into_bytes()).encode(&mut payload);
    server.handle_forward(from, id, &payload);
}

/// What holds a follower's next forward back is kept beside the held
/// requests (`cluster_held.rs`), not read off them: it must follow them
/// as they are held, taken at exit, retried and held again, and
/// released. A follower's held CLUSTER command does not hold back its
/// key-value requests, as it never did.
#[test]
fn a_followers_forward_waits_only_while_one_of_its_forwards_is_held() {
    let (mut server, _dir) = leader_transferring_to_3();
    let change = Held::Cluster {
        request: ClusterRequest::Transfer { id: 2 },
        by: u64::MAX,
    };
    server
        .cluster
        .held
        .push((Waiter::Peer { from: 2, id: 1 }, change));
    assert!(!server.holds_forwarded_from(2), "held by a CLUSTER command");
    forward_set(&mut server, 3, 1);
    assert!(server.holds_forwarded_from(3));
    assert!(!server.holds_forwarded_from(2));
    assert_eq!(server.take_held_forwards(), [(2, 1), (3, 1)]);
    assert!(
        !server.holds_forwarded_from(3),
        "none left after the exit's"
    );
    forward_set(&mut server, 3, 2);
    assert!(server.holds_forwarded_from(3));
    // A pass while the transfer runs: held again, and still holding back.
    server.retry_held_requests();
    assert!(server.holds_forwarded_from(3), "held again");
    assert_eq!(server.cluster.held.len(), 1);
    abandon_transfer(&mut server);
    let last = server.replica.node().last_index();
    server.cluster_tick();
    assert!(server.cluster.held.is_empty());
    assert!(
        !server.holds_forwarded_from(3),
        "its one request was proposed"
    );
    assert_eq!(server.replica.node().last_index(), last + 1);
    forward_set(&mut server, 3, 3);
    assert!(server.cluster.held.is_empty(), "held behind nothing");
    assert_eq!(server.replica.node().last_index(), last + 2);
}

/// Not a check (nothing is timed against a bound): prints what the
/// leader's loop spends holding `n` requests forwarded during a transfer,
/// and retrying them in a pass that finds a transfer under way again (a
/// held TRANSFER ahead of them started one). Node 2's requests come
/// first, then node 3's, as two followers' peer frames would: each of node
/// 3's looks for node 3's held requests behind node 2's. Run with
/// `cargo test --release --lib held_forwards_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn held_forwards_cost() {
    use crate::server::cluster::PAYLOAD_KV;
    use std::time::Instant;
    for n in [100u64, 1000, 10_000, 100_000] {
        // Connected or not, the leader holds forwards only during a transfer.
        let (mut server, _dir) = leader_transferring_to_3();
        let forwards: Vec<(NodeId, u64, Vec<u8>)> = (0..n)
            .map(|i| {
                let from = if i < n / 2 { 2 } else { 3 };
                let mut payload = vec![PAYLOAD_KV];
                Command::Set(format!("k{}", i).into_bytes(), b"v".to_vec()).encode(&mut payload);
                (from, i, payload)
            })
            .collect();
        let started = Instant::now();
        for (from, id, payload) in &forwards {
            server.handle_forward(*from, *id, payload);
        }
        let holding = started.elapsed();
        assert_eq!(server.cluster.held.len(), forwards.len());
        let started = Instant::now();
        server.retry_held_requests();
        let retrying = started.elapsed();
        assert_eq!(server.cluster.held.len(), forwards.len());
        println!(
            "{} forwards held: holding {:?} ({:?} each), retrying {:?}",
            n,
            holding,
            holding / n as u32,
            retrying
        );
    }
}

/// Node 3's `SET k 1` and `GET k`, held while a transfer runs, then its
/// `SET k 3` and node 2's `SET k 1`, which find no connected quorum, then
/// the transfer abandoned while the quorum is still away. Proposed then
/// (as it was), node 3's first write could not commit, and its client got
/// `-TIMEOUT outcome unknown` where nothing need have been written: it
/// waits for the quorum, ahead of node 3's later requests, with the read
/// behind it, and is answered `-TRYAGAIN no leader` at its time if the
/// quorum does not come back, or proposed in its place if it does.
#[test]
fn a_held_forward_waits_for_the_quorum_when_the_transfer_is_abandoned_without_one() {
    use crate::server::cluster::PAYLOAD_KV;
    use crate::server::requests::NO_LEADER;
    for quorum_returns in [false, true] {
        let (mut server, _dir) = leader_of_three();
        if !quorum_returns {
            // Every request's time to wait for the quorum is up at once.
            server.deadline_ticks = 0;
        }
        server.quorum_connected = true;
        assert!(server.replica.node_mut().transfer_leader(3).is_ok());
        forward_set(&mut server, 3, 1);
        let mut get = vec![PAYLOAD_KV];
        Command::Get(b"k".to_vec()).encode(&mut get);
        server.handle_forward(3, 2, &get);
        assert_eq!(server.cluster.held.len(), 2);
        // Nodes 2 and 3 closed their connections (`refresh_quorum_connected`).
        server.quorum_connected = false;
        forward_set(&mut server, 3, 3);
        forward_set(&mut server, 2, 1);
        abandon_transfer(&mut server);
        let last = server.replica.node().last_index();
        server.cluster_tick();
        assert_eq!(
            server.replica.node().last_index(),
            last,
            "the held write was appended with no connected quorum"
        );
        assert!(server.cluster.held.is_empty());
        forward_set(&mut server, 3, 4);
        let waiting: Vec<(NodeId, u64)> = server
            .quorum_waits
            .iter()
            .map(|(from, id, ..)| (*from, *id))
            .collect();
        let in_order = [(3, 1), (3, 2), (3, 3), (2, 1), (3, 4)];
        assert_eq!(waiting, in_order);
        if quorum_returns {
            server.quorum_connected = true;
        }
        server.dispatch_quorum_waits();
        if !quorum_returns {
            assert_eq!(server.replica.node().last_index(), last);
            let refused: Vec<(NodeId, u64, Reply)> = in_order
                .iter()
                .map(|(from, id)| (*from, *id, Reply::error(NO_LEADER)))
                .collect();
            assert_eq!(server.peers.forward_replies, refused);
            continue;
        }
        assert_eq!(server.replica.node().last_index(), last + 4);
        for _ in 0..1000 {
            if server.peers.forward_replies.len() == in_order.len() {
                break;
            }
            acknowledge_all(&mut server, 2);
            confirm_reads(&mut server, 2);
            server.iterate().expect("iterate");
        }
        // The read is answered once confirmed, maybe after later writes:
        // what it saw tells its place, between node 3's two writes.
        let (read, writes): (Vec<_>, Vec<_>) = std::mem::take(&mut server.peers.forward_replies)
            .into_iter()
            .partition(|(from, id, _)| (*from, *id) == (3, 2));
        assert_eq!(read, [(3, 2, Reply::Bulk(b"1".to_vec()))]);
        let written: Vec<(NodeId, u64, Reply)> = in_order
            .iter()
            .filter(|&&waiter| waiter != (3, 2))
            .map(|&(from, id)| (from, id, Reply::Ok))
            .collect();
        assert_eq!(writes, written, "applied in another order");
        assert_eq!(server.replica.kv().get(b"k"), Some(&b"4"[..]));
    }
}

/// The leader's own client's `SET`, sent while a transfer runs, is parked
/// (not held: `route` parks what the core refuses), and parked writes go
/// only while the leader takes writes, a connected quorum included. So a
/// transfer abandoned without one leaves it unwritten, and its deadline
/// answers `-TRYAGAIN no leader`, as for a forwarded write held then.
#[test]
fn an_own_write_parked_for_a_transfer_abandoned_without_a_quorum_is_never_appended() {
    let (mut server, _dir) = leader_of_three();
    let (mut client, token) = connect(&mut server);
    server.quorum_connected = true;
    assert!(server.replica.node_mut().transfer_leader(3).is_ok());
    let last = server.replica.node().last_index();
    server.handle_request(token, &[b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
    let seq = server.clients.get(&token).expect("client").first_seq();
    assert!(server.parked.holds(token));
    server.quorum_connected = false;
    abandon_transfer(&mut server);
    server.dispatch_parked();
    server.cluster_tick();
    assert_eq!(server.replica.node().last_index(), last, "appended");
    server.expire(token, seq);
    server.flush_clients();
    expect_replies(&mut client, b"-TRYAGAIN no leader\r\n");
}

/// Node 3's `SET k 1`, held while a transfer runs, reaches its `by` before
/// the transfer ends (transfers following one another): held on, it would
/// outlast node 3's deadline, whose `-TIMEOUT outcome unknown` could then
/// be followed by its write. It is answered `-TRYAGAIN no leader` at its
/// `by` and dropped, never appended, while node 3's later `SET k 2`, not
/// due yet, stays held and is carried out when the transfer ends. Node 2's
/// `SET k 21` is held with a later `by` than its `SET k 22` after it (as
/// no arrival gives, but nothing counts on that): neither is answered
/// while the earlier one is not due, so the later never goes first.
#[test]
fn a_held_forward_is_refused_at_its_time_while_the_transfer_runs() {
    use crate::server::requests::NO_LEADER;
    let (mut server, _dir) = leader_transferring_to_3();
    let deadline_ticks = server.deadline_ticks;
    // Its time to be answered has come as it is held.
    server.deadline_ticks = 0;
    forward_set(&mut server, 3, 1);
    server.deadline_ticks = deadline_ticks;
    forward_set(&mut server, 3, 2);
    let set = |value: &str| Command::Set(b"k".to_vec(), value.as_bytes().to_vec());
    server.hold_forwarded(Waiter::Peer { from: 2, id: 21 }, set("21"), u64::MAX);
    server.hold_forwarded(Waiter::Peer { from: 2, id: 22 }, set("22"), 0);
    let last = server.replica.node().last_index();
    server.cluster_tick();
    assert_eq!(server.replica.node().transfer_target(), Some(3));
    assert_eq!(
        std::mem::take(&mut server.peers.forward_replies),
        [(3, 1, Reply::error(NO_LEADER))],
        "answered otherwise at its time while the transfer runs"
    );
    let still_held: Vec<Waiter> = server.cluster.held.iter().map(|(w, _)| *w).collect();
    assert_eq!(
        still_held,
        [
            Waiter::Peer { from: 3, id: 2 },
            Waiter::Peer { from: 2, id: 21 },
            Waiter::Peer { from: 2, id: 22 },
        ]
    );
    assert!(server.holds_forwarded_from(3), "node 3's later one is held");
    abandon_transfer(&mut server);
    server.cluster_tick();
    assert!(server.cluster.held.is_empty());
    assert_eq!(
        server.replica.node().last_index(),
        last + 3,
        "the refused write was appended too"
    );
    let carried_out = [(3, 2), (2, 21), (2, 22)];
    for _ in 0..1000 {
        if server.peers.forward_replies.len() == carried_out.len() {
            break;
        }
        acknowledge_all(&mut server, 2);
        server.iterate().expect("iterate");
    }
    let written: Vec<(NodeId, u64, Reply)> = carried_out
        .iter()
        .map(|&(from, id)| (from, id, Reply::Ok))
        .collect();
    assert_eq!(
        server.peers.forward_replies, written,
        "applied in another order"
    );
    assert_eq!(server.replica.kv().get(b"k"), Some(&b"22"[..]));
}

/// Node 2's `CLUSTER TRANSFER 2`, held while a transfer to node 3 runs,
/// reaches its `by` before that transfer ends: held on, node 2 would
/// answer its client at its deadline while this leader could still start
/// the transfer. It is answered `-TRYAGAIN no leader` at its `by` and
/// dropped, so the abandoned transfer to node 3 starts none; node 2's
/// later `CLUSTER ADD 4`, not due yet, stays held and is carried out.
#[test]
fn a_held_cluster_forward_is_refused_at_its_time_while_the_transfer_runs() {
    use crate::server::requests::NO_LEADER;
    let (mut server, _dir) = leader_transferring_to_3();
    let deadline_ticks = server.deadline_ticks;
    // Its time to be answered has come as it is held.
    server.deadline_ticks = 0;
    server.handle_cluster_forward(2, 1, b"CLUSTER TRANSFER 2");
    server.deadline_ticks = deadline_ticks;
    server.handle_cluster_forward(2, 2, b"CLUSTER ADD 4 127.0.0.1:4");
    assert_eq!(server.peers.forward_replies, []);
    assert_eq!(server.cluster.held.len(), 2);
    server.cluster_tick();
    assert_eq!(
        std::mem::take(&mut server.peers.forward_replies),
        [(2, 1, Reply::error(NO_LEADER))],
        "answered otherwise at its time while the transfer runs"
    );
    let still_held: Vec<Waiter> = server.cluster.held.iter().map(|(w, _)| *w).collect();
    assert_eq!(still_held, [Waiter::Peer { from: 2, id: 2 }]);
    abandon_transfer(&mut server);
    server.cluster_tick();
    assert_eq!(
        server.replica.node().transfer_target(),
        None,
        "the refused TRANSFER was started"
    );
    assert!(server.cluster.held.is_empty(), "the ADD was held again");
    assert_eq!(server.replica.status().learners, [4]);
}

/// The follower's side of a held forward refused at its time: the
/// leader's `-TRYAGAIN no leader` for the first of a connection's two
/// writes is its final answer, passed on to the client rather than routed
/// again (which would only be held again, then outlast its deadline),
/// and the second write's `+OK` comes after it on the connection.
#[test]
fn a_follower_passes_a_held_forwards_refusal_on_in_its_place() {
    use crate::server::client_io::tests::{forwarded_to, node};
    use crate::server::requests::NO_LEADER;
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let set = |value: &[u8]| Command::Set(b"k".to_vec(), value.to_vec());
    forwarded_to(&mut server, tc, 7, 2, set(b"1"));
    forwarded_to(&mut server, tc, 8, 2, set(b"2"));
    server.handle_forward_reply(7, Reply::error(NO_LEADER));
    assert!(!server.parked.holds(tc), "routed again");
    server.handle_forward_reply(8, Reply::Ok);
    for _ in 0..10 {
        server.iterate().expect("iterate");
    }
    expect_replies(&mut c, b"-TRYAGAIN no leader\r\n+OK\r\n");
}

/// The held list is not in the order of `by` once a transfer follows an
/// abandoned one: node 2's write, put to wait for the quorum when the
/// first transfer was abandoned, went back into the held list (the quorum
/// returned while the second ran) behind node 3's write, held again in
/// that pass, and so arrived later. When the second transfer is abandoned
/// without a quorum too, both wait for it: queued in the held list's
/// order, node 2's write, which the expiry takes only from the front,
/// waited behind node 3's for its `by`, up to that span late, past its
/// follower's own deadline (`-TIMEOUT`) and into the quorum's return.
#[test]
fn held_forwards_wait_for_the_quorum_in_the_order_of_their_time() {
    use crate::server::requests::NO_LEADER;
    let (mut server, _dir) = leader_of_three();
    server.quorum_connected = false;
    for (from, by) in [(3, u64::MAX / 2), (2, 0)] {
        let waiter = Waiter::Peer { from, id: 1 };
        let command = Command::Set(b"k".to_vec(), b"v".to_vec());
        server.hold_forwarded(waiter, command, by);
    }
    let last = server.replica.node().last_index();
    server.cluster_tick();
    server.dispatch_quorum_waits();
    assert_eq!(server.replica.node().last_index(), last);
    assert_eq!(
        server.peers.forward_replies,
        [(2, 1, Reply::error(NO_LEADER))],
        "node 2's write was not answered at its time"
    );
    let waiting: Vec<(NodeId, u64)> = server
        .quorum_waits
        .iter()
        .map(|(from, id, ..)| (*from, *id))
        .collect();
    assert_eq!(waiting, [(3, 1)]);
}
