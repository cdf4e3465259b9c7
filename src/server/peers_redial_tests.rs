//! A dead peer is redialed by one chain of growing waits, however often
//! the node dials it outside that chain.

use super::tests::{node_1_knowing, poll_once};
use super::*;
use mio::Poll;
use std::net::TcpListener;

/// Polls until the dial of node 2 has failed (nothing listens there).
fn wait_for_failure(peers: &mut Peers, poll: &mut Poll) {
    let mut events = Vec::new();
    let start = Instant::now();
    while peers.members[&2].outbound.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dial never failed"
        );
        poll_once(peers, poll, &mut events);
    }
}

/// A loopback address nothing listens on (now): dials to it fail.
fn closed_port() -> String {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    closed.local_addr().expect("addr").to_string()
}

/// Each change of leader or membership dials every member not connected
/// (`refresh_membership`). Such a dial that failed while a reconnect was on
/// the timer wheel used to add another, so after a dozen leader changes a
/// dead peer was dialed about twenty times a second, a line each at debug.
#[test]
fn dials_outside_the_timer_add_no_second_reconnect() {
    let dead = closed_port();
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, &dead)]);
    peers.connect(2, poll.registry(), Token(10));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects, vec![(2, BACKOFF_MIN_MS)]);
    // Three refreshes before the timer fires: each dials and fails.
    for token in 11..14 {
        peers.connect(2, poll.registry(), Token(token));
        wait_for_failure(&mut peers, &mut poll);
    }
    assert_eq!(peers.reconnects.len(), 1, "one reconnect on the wheel");
    // The timer fires: its dial fails and schedules the next, waiting longer.
    peers.reconnects.clear();
    peers.redial(2, poll.registry(), Token(20));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects, vec![(2, 2 * BACKOFF_MIN_MS)]);
    // A peer removed and added again while its timer is out keeps that one.
    peers.reconnects.clear();
    peers.remove_member(2, poll.registry());
    peers.add_member(2, &dead, poll.registry());
    peers.connect(2, poll.registry(), Token(21));
    wait_for_failure(&mut peers, &mut poll);
    assert!(
        peers.reconnects.is_empty(),
        "a second timer for a re-added peer"
    );
    peers.redial(2, poll.registry(), Token(22));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects.len(), 1);
}

/// A reconnect timer that fires after its peer was removed dials nothing,
/// and leaves no trace: the peer added again later gets a timer of its own
/// when its dial fails, or it would never be dialed again.
#[test]
fn a_timer_that_fires_for_a_removed_peer_leaves_its_readdition_a_timer() {
    let dead = closed_port();
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, &dead)]);
    peers.connect(2, poll.registry(), Token(10));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects.len(), 1);
    peers.reconnects.clear();
    peers.remove_member(2, poll.registry());
    peers.redial(2, poll.registry(), Token(11));
    assert!(peers.conns.is_empty(), "a removed peer dialed");
    assert!(peers.reconnects.is_empty());
    peers.add_member(2, &dead, poll.registry());
    peers.connect(2, poll.registry(), Token(12));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects, vec![(2, BACKOFF_MIN_MS)]);
}

/// A dial that fails before it starts (TCP to a multicast address is
/// refused by the kernel at once) inside the timer's own redial schedules
/// the next one: the chain goes on, waiting longer each time.
#[test]
fn a_redial_that_fails_at_once_schedules_the_next() {
    let unreachable = "224.0.0.1:9";
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, unreachable)]);
    peers.connect(2, poll.registry(), Token(10));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects, vec![(2, BACKOFF_MIN_MS)]);
    peers.connect(2, poll.registry(), Token(11));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects.len(), 1, "a second timer");
    let mut wait = BACKOFF_MIN_MS;
    for token in 12..16 {
        peers.reconnects.clear();
        peers.redial(2, poll.registry(), Token(token));
        wait_for_failure(&mut peers, &mut poll);
        wait = (wait * 2).min(BACKOFF_MAX_MS);
        assert_eq!(peers.reconnects, vec![(2, wait)], "redial {token}");
    }
}

/// A member whose dial is under way when its timer fires gets no second
/// connection, and the timer is spent: when that dial then fails, the
/// member gets a new one.
#[test]
fn a_timer_that_fires_while_a_dial_is_under_way_keeps_that_dial() {
    let addr = {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        closed.local_addr().expect("addr")
    };
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, &addr.to_string())]);
    peers.connect(2, poll.registry(), Token(10));
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects.len(), 1);
    peers.reconnects.clear();
    // The peer comes up; a refresh dials it before its timer fires.
    let listener = TcpListener::bind(addr).expect("bind again");
    peers.connect(2, poll.registry(), Token(11));
    assert_eq!(peers.members[&2].outbound, Some(Token(11)));
    peers.redial(2, poll.registry(), Token(12));
    assert_eq!(peers.members[&2].outbound, Some(Token(11)));
    assert_eq!(peers.conns.len(), 1);
    // It goes away again: the dial fails and the member is redialed later.
    drop(listener);
    wait_for_failure(&mut peers, &mut poll);
    assert_eq!(peers.reconnects, vec![(2, 2 * BACKOFF_MIN_MS)]);
}

/// A peer that said it is stopping is redialed only after the longest
/// backoff: at the usual 20 ms, a node still exiting could accept the
/// connection and be sent requests it will never read.
#[test]
fn a_stopping_peer_is_redialed_after_the_longest_backoff() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, &addr)]);
    peers.connect(2, poll.registry(), Token(10));
    let mut events = Vec::new();
    let start = Instant::now();
    while !peers.is_connected(2) {
        assert!(start.elapsed() < Duration::from_secs(10), "never connected");
        poll_once(&mut peers, &mut poll, &mut events);
    }
    peers.close_outbound(2, poll.registry(), "it is stopping", &mut events);
    assert!(!peers.is_connected(2));
    assert_eq!(peers.reconnects, vec![(2, BACKOFF_MAX_MS)]);
}
