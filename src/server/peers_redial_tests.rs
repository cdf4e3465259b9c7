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

/// Each change of leader or membership dials every member not connected
/// (`refresh_membership`). Such a dial that failed while a reconnect was on
/// the timer wheel used to add another, so after a dozen leader changes a
/// dead peer was dialed about twenty times a second, a line each at debug.
#[test]
fn dials_outside_the_timer_add_no_second_reconnect() {
    let dead = {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        closed.local_addr().expect("addr").to_string()
    };
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
