//! Tests of `peers.rs`: dialing, host names, addresses chosen.

use super::*;
use mio::Poll;
use std::net::TcpListener;

pub(super) fn node_1_knowing(members: &[(NodeId, &str)]) -> Peers {
    let me = LocalIdentity {
        id: 1,
        cluster_name: "test".to_string(),
        raft_addr: "127.0.0.1:1".to_string(),
        client_addr: "127.0.0.1:2".to_string(),
    };
    let members: Vec<(NodeId, String)> =
        members.iter().map(|(id, a)| (*id, a.to_string())).collect();
    Peers::new(me, &members)
}

/// Polls once for up to 10 ms and hands every event to `peers`.
pub(super) fn poll_once(peers: &mut Peers, poll: &mut Poll, events: &mut Vec<PeerEvent>) {
    let mut ready = mio::Events::with_capacity(8);
    poll.poll(&mut ready, Some(Duration::from_millis(10)))
        .expect("poll");
    for event in ready.iter() {
        let (readable, writable) = (event.is_readable(), event.is_writable());
        peers.ready(event.token(), readable, writable, poll.registry(), events);
    }
}

#[test]
fn a_host_name_is_looked_up_off_the_loop_once_at_a_time_then_dialed() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    // A free port, nobody's: node 3 is dialed, never answered.
    let three = {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        closed.local_addr().expect("addr").to_string()
    };
    let poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, "peer-two.invalid:7002"), (3, &three)]);
    peers.connect(2, poll.registry(), Token(20));
    assert!(!peers.owns(Token(20)), "dialed before the lookup");
    assert_eq!(
        peers.lookups,
        vec![(2, "peer-two.invalid:7002".to_string())]
    );
    peers.connect(2, poll.registry(), Token(21));
    assert_eq!(peers.lookups.len(), 1, "a second lookup while one runs");
    // An IP address is dialed at once.
    peers.connect(3, poll.registry(), Token(22));
    assert!(peers.owns(Token(22)));
    // An answer for an address the peer no longer has changes nothing.
    peers.looked_up(
        2,
        "old-name:7002",
        Err(io::Error::other("x")),
        poll.registry(),
        Token(23),
    );
    assert!(peers.reconnects.is_empty() && !peers.owns(Token(23)));
    // A failed lookup is retried like a failed dial.
    peers.looked_up(
        2,
        "peer-two.invalid:7002",
        Err(io::Error::other("no such host")),
        poll.registry(),
        Token(24),
    );
    assert_eq!(peers.reconnects, vec![(2, BACKOFF_MIN_MS)]);
    assert!(!peers.owns(Token(24)));
    // The next dial looks it up again, and its answer is dialed.
    peers.lookups.clear();
    peers.connect(2, poll.registry(), Token(25));
    assert_eq!(peers.lookups.len(), 1);
    let addr = listener.local_addr().expect("addr");
    peers.looked_up(
        2,
        "peer-two.invalid:7002",
        Ok(vec![addr]),
        poll.registry(),
        Token(26),
    );
    assert!(peers.owns(Token(26)));
}

/// A name that resolves to an address where nothing listens and one where
/// a peer does, in an order the resolver rotates at each lookup: after
/// the first connect fails, the next goes to the live address.
#[test]
fn each_address_of_a_name_is_tried_in_turn() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let live = listener.local_addr().expect("addr");
    let dead = {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        closed.local_addr().expect("addr")
    };
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, "two-addresses.invalid:7002")]);
    let mut events = Vec::new();
    let mut token = 40;
    let start = Instant::now();
    while !peers.is_connected(2) {
        assert!(start.elapsed() < Duration::from_secs(10), "never connected");
        if peers.members[&2].outbound.is_none() && !peers.members[&2].looking_up {
            peers.connect(2, poll.registry(), Token(token));
            let (id, name) = peers.lookups.pop().expect("a lookup");
            let answer = if token % 2 == 0 {
                vec![dead, live]
            } else {
                vec![live, dead]
            };
            peers.looked_up(id, &name, Ok(answer), poll.registry(), Token(token));
            token += 1;
        }
        poll_once(&mut peers, &mut poll, &mut events);
    }
    assert_eq!(token, 42, "the dead address once, then the live one");
    assert_eq!(peers.members[&2].address_choice.failed_addrs(), vec![dead]);
}

/// A node that refuses our handshake with our later bytes unread resets
/// the connection, and a write to it then fails; its reason arrived
/// before the reset and is still to be read, and is what the dialer
/// must report, not the failed write.
#[test]
fn a_refusal_ahead_of_a_reset_is_read_before_a_write_fails() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, &addr)]);
    let token = Token(30);
    peers.connect(2, poll.registry(), token);
    let mut events = Vec::new();
    let start = Instant::now();
    while !peers.is_connected(2) {
        assert!(start.elapsed() < Duration::from_secs(10), "never connected");
        poll_once(&mut peers, &mut poll, &mut events);
    }
    // More queued than the sockets hold, so some stays unsent.
    let pc = peers.conns.get_mut(&token).expect("the connection");
    pc.conn.output().extend_from_slice(&vec![0u8; 32 << 20]);
    let _ = pc.conn.flush();
    assert!(pc.conn.pending_output() > 0, "all of it was written");
    let (mut far, _) = listener.accept().expect("accept");
    let mut some = [0u8; 64];
    far.read_exact(&mut some).expect("the handshake's start");
    let mut refusal = Vec::new();
    crate::wire::frame::encode_refusal(
        "node 1 belongs to cluster 'test', not 'other'",
        &mut refusal,
    );
    far.write_all(&refusal).expect("write the refusal");
    drop(far);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        peers.ready_inner(token, true, true, &mut events),
        Err("refused by the peer".to_string())
    );
}

/// The handshake node 2 of cluster `test` opens its connections to node 1 with.
fn node_2_handshake() -> Vec<u8> {
    let mut handshake = Vec::new();
    Handshake {
        version: PROTOCOL_VERSION,
        cluster_name: "test".to_string(),
        from: 2,
        to: 1,
        raft_addr: "127.0.0.1:9".to_string(),
        client_addr: "127.0.0.1:10".to_string(),
    }
    .encode(&mut handshake);
    handshake
}

/// Dials `listener` and has `peers` accept the connection as `token`;
/// returns the dialer's end.
fn accept_from(
    listener: &TcpListener,
    token: Token,
    peers: &mut Peers,
    poll: &mut Poll,
) -> std::net::TcpStream {
    let addr = listener.local_addr().expect("addr");
    let far = std::net::TcpStream::connect(addr).expect("connect");
    let (near, _) = listener.accept().expect("accept");
    near.set_nonblocking(true).expect("nonblocking");
    peers.accept(TcpStream::from_std(near), poll.registry(), token);
    far
}

/// A node that gave up its connection to us (its path looked cut) and
/// dialed a new one: once the new one says who it is, the old one is closed,
/// so nothing its kernel still retransmits on it arrives later, stale (see
/// `close_superseded_inbound`). The new one stays.
#[test]
fn a_peers_newer_connection_closes_its_older_one() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, "127.0.0.1:9")]);
    let mut events = Vec::new();
    let handshake = node_2_handshake();
    let mut dial = |token: Token, peers: &mut Peers, poll: &mut Poll| {
        let mut far = accept_from(&listener, token, peers, poll);
        far.write_all(&handshake).expect("the handshake");
        let start = Instant::now();
        while peers.inbound_peer(token).is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "not identified");
            poll_once(peers, poll, &mut events);
        }
        far
    };
    let (old, new) = (Token(50), Token(51));
    let mut old_far = dial(old, &mut peers, &mut poll);
    assert!(peers.owns(old), "the only connection from node 2 stays");
    let _new_far = dial(new, &mut peers, &mut poll);
    assert!(!peers.owns(old), "the older connection is still open");
    assert!(peers.owns(new));
    // Our end is closed, so the dialer's end reads its end (or a reset).
    old_far
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = old_far.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing is sent on an inbound connection");
}

/// A peer's older connection whose handshake is read only after that of
/// its newer one (the peer gave it up with the handshake still unacked;
/// its kernel delivered it, and what followed, once a partition healed):
/// it is closed on that handshake, and nothing it carried behind the
/// handshake (a stale Forward) reaches the server. The newer one stays.
#[test]
fn an_older_connection_identified_after_a_newer_one_is_closed_unread() {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut poll = Poll::new().expect("poll");
    let mut peers = node_1_knowing(&[(2, "127.0.0.1:9")]);
    let mut events = Vec::new();
    let handshake = node_2_handshake();
    let accept = |token: Token, peers: &mut Peers, poll: &mut Poll| {
        accept_from(&listener, token, peers, poll)
    };
    let (old, new) = (Token(60), Token(61));
    let mut old_far = accept(old, &mut peers, &mut poll);
    let mut new_far = accept(new, &mut peers, &mut poll);
    new_far.write_all(&handshake).expect("the handshake");
    let start = Instant::now();
    while peers.inbound_peer(new).is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "not identified");
        poll_once(&mut peers, &mut poll, &mut events);
    }
    let mut late = handshake.clone();
    PeerMessage::Forward {
        id: 7,
        payload: b"stale".to_vec(),
    }
    .encode(&mut late);
    old_far.write_all(&late).expect("the late bytes");
    let start = Instant::now();
    while peers.owns(old) && peers.inbound_peer(old).is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "never read");
        poll_once(&mut peers, &mut poll, &mut events);
    }
    // One more round, for anything read behind the handshake.
    poll_once(&mut peers, &mut poll, &mut events);
    assert!(!peers.owns(old), "the older connection is still open");
    assert!(peers.owns(new), "the newer connection was closed");
    let forwards = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PeerEvent::Message {
                    message: PeerMessage::Forward { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(forwards, 0, "a stale forward was taken");
}
