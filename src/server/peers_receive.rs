//! What peers send us: connections accepted on the raft port, the dialer's
//! handshake that opens each, and the frames after it, decoded into
//! [`PeerEvent`]s.
//!
//! The first frame on a connection is the dialer's handshake; an acceptor that
//! does not like it (another cluster, the wrong id, a bad frame) logs why,
//! tells the dialer why in a refusal frame, which the dialer logs, and closes
//! that connection only. Any node id but our own is accepted, not only
//! the members we know: a joining node knows nobody until the leader dials
//! it, and a member may hear from a new learner before it appends the entry
//! that adds it. The core ignores what non-members have no business sending.
//!
//! Separate from `peers.rs` because this is where bytes from outside the node
//! are judged: how many connections may stay silent, how large a frame each
//! may declare, what a handshake must say. Those limits are easier to check
//! when they are not spread among the dialing and sending code.

use super::{PeerConn, PeerEvent, Peers, Side, Who};
use crate::raft::NodeId;
use crate::server::conn::{Conn, Fill};
use crate::server::fd_limit::MAX_UNIDENTIFIED_PEERS;
use crate::wire::frame::{self, FrameKind, FrameLimits, Handshake, PROTOCOL_VERSION};
use crate::wire::peer_msg::PeerMessage;
use log::{info, log, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::time::Instant;

/// Bytes read from one peer connection at a time. Bounds the entries a
/// follower appends and applies in one loop iteration, as `READ_BUDGET` does
/// for a client: reading on while the leader kept sending took a follower's
/// loop up to 0.5 s for forty pipelined 3 MB SETs.
pub(super) const READ_BUDGET: usize = 4 << 20;

/// Why a connection closed when the other side hung up.
pub(super) const CLOSED_BY_PEER: &str = "closed by peer";
/// Why our connection closed when the node we dialed refused it.
pub(super) const REFUSED_BY_PEER: &str = "refused by the peer";

impl Peers {
    /// A connection someone made to our raft port.
    pub fn accept(&mut self, mut stream: TcpStream, registry: &Registry, token: Token) {
        // A member sends its handshake as soon as it connects, so the oldest
        // connection still silent goes first: refusing the newest instead
        // would let a few silent strangers lock the members out.
        let unidentified: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, pc)| matches!(pc.side, Side::Inbound { peer: None }))
            .map(|(token, _)| *token)
            .collect();
        if unidentified.len() >= MAX_UNIDENTIFIED_PEERS {
            if let Some(oldest) = unidentified.iter().min() {
                let reason = "no handshake, and a newer connection needs its place";
                self.close(*oldest, registry, reason, &mut Vec::new());
            }
        }
        if let Err(err) = registry.register(&mut stream, token, Interest::READABLE) {
            warn!("cannot register inbound peer connection: {}", err);
            return;
        }
        let _ = stream.set_nodelay(true);
        let ip = stream.peer_addr().ok().map(|addr| addr.ip());
        self.conns.insert(
            token,
            PeerConn {
                conn: Conn::new(stream),
                side: Side::Inbound { peer: None },
                opened: Instant::now(),
                who: Who::Dialer {
                    ip,
                    claimed: None,
                    dialed: None,
                },
            },
        );
    }

    pub(super) fn read_frames(
        &mut self,
        token: Token,
        events: &mut Vec<PeerEvent>,
    ) -> Result<(), String> {
        let mut read = 0;
        loop {
            let Some(pc) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            if read >= self.read_budget {
                self.unfinished_reads.push(token);
                return Ok(());
            }
            let before = pc.conn.input().len();
            let fill = pc.conn.fill().map_err(|e| format!("read failed: {}", e))?;
            read += pc.conn.input().len() - before;
            self.decode_frames(token, events)?;
            match fill {
                Fill::Data => continue,
                Fill::Drained | Fill::WouldBlock => return Ok(()),
                Fill::Closed => return Err(CLOSED_BY_PEER.to_string()),
            }
        }
    }

    /// Reads on from the connections that spent their budget last time.
    pub fn resume_reads(&mut self, registry: &Registry, events: &mut Vec<PeerEvent>) {
        for token in std::mem::take(&mut self.unfinished_reads) {
            self.ready(token, true, false, registry, events);
        }
    }

    pub fn has_unfinished_reads(&self) -> bool {
        !self.unfinished_reads.is_empty()
    }

    fn decode_frames(&mut self, token: Token, events: &mut Vec<PeerEvent>) -> Result<(), String> {
        loop {
            let Some(pc) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            // More only for a reply relayed by a member: an identified
            // stranger (the right cluster name, an id not in the
            // configuration) gets the limit of an unidentified connection.
            // Our outbound connections receive nothing at all.
            let member = matches!(pc.side, Side::Inbound { peer: Some(id) } if self.members.contains_key(&id));
            let limits = if member {
                FrameLimits::MEMBER
            } else {
                FrameLimits::UNIDENTIFIED
            };
            let decoded = match frame::decode_frame(pc.conn.input(), limits) {
                Ok(None) => {
                    if let Some(size) = frame::declared_size(pc.conn.input()) {
                        pc.conn.expect_input(size);
                    }
                    return Ok(());
                }
                Ok(Some((kind, body, used))) => (kind, decode_body(kind, body), used),
                Err(err) => return Err(format!("bad frame: {}", err)),
            };
            let (kind, body, used) = decoded;
            pc.conn.consume(used);
            match (&mut pc.side, body) {
                (Side::Inbound { peer: None }, Body::Handshake(hs)) => {
                    if let Who::Dialer {
                        claimed, dialed, ..
                    } = &mut pc.who
                    {
                        (*claimed, *dialed) = (Some(hs.from), Some(hs.to));
                    }
                    if self.superseded_inbound(token, hs.from) {
                        return Err(format!(
                            "node {} dialed a newer connection to us since",
                            hs.from
                        ));
                    }
                    let id = match self.check_handshake(&hs) {
                        Ok(id) => id,
                        Err(reason) => {
                            self.refuse(token, &reason);
                            return Err(reason);
                        }
                    };
                    self.note_connection(id);
                    if let Some(pc) = self.conns.get_mut(&token) {
                        pc.side = Side::Inbound { peer: Some(id) };
                        if let Some(after) = self.refusals.accepted(pc.who, Instant::now()) {
                            info!("accepted node {}'s connection again, {}", id, after);
                        }
                    }
                }
                (Side::Inbound { peer: None }, Body::Bad(err)) if kind == FrameKind::Handshake => {
                    let reason = format!("bad handshake: {}", err);
                    self.refuse(token, &reason);
                    return Err(reason);
                }
                (Side::Outbound { peer, .. }, Body::Refusal(reason)) => {
                    // Shown, cut short, also as the streak's reason: the
                    // streak keeps it, and the peer chose its length.
                    let reason = shown(&reason);
                    let line = format!("node {} refused our connection: {}", peer, reason);
                    let who = Who::Dialed(*peer);
                    let (level, line) = self.refusals.refused(who, &reason, &line, Instant::now());
                    log!(level, "{}", line);
                    return Err(REFUSED_BY_PEER.to_string());
                }
                (_, Body::Bad(err)) => return Err(format!("bad {:?} frame: {}", kind, err)),
                (Side::Inbound { peer: None }, _) => {
                    return Err(format!("expected a handshake, got a {:?} frame", kind))
                }
                (Side::Inbound { peer: Some(from) }, Body::Message(msg)) => {
                    let from = *from;
                    events.push(peer_event(from, msg)?);
                }
                (Side::Outbound { .. }, _) | (Side::Inbound { .. }, _) => {
                    return Err(format!("unexpected {:?} frame", kind))
                }
            }
        }
    }

    /// Tells the dialer why its handshake was turned down, as far as the
    /// socket takes it without blocking; the caller then closes.
    fn refuse(&mut self, token: Token, reason: &str) {
        let Some(pc) = self.conns.get_mut(&token) else {
            return;
        };
        frame::encode_refusal(reason, pc.conn.output());
        let _ = pc.conn.flush();
    }

    fn check_handshake(&mut self, hs: &Handshake) -> Result<NodeId, String> {
        if hs.version != PROTOCOL_VERSION {
            return Err(format!("peer speaks protocol version {}", hs.version));
        }
        if hs.cluster_name != self.me.cluster_name {
            return Err(format!(
                "node {} belongs to cluster '{}', not '{}'",
                hs.from,
                shown(&hs.cluster_name),
                self.me.cluster_name
            ));
        }
        if hs.to != self.me.id {
            return Err(format!(
                "node {} dialed node {} but this is node {}",
                hs.from, hs.to, self.me.id
            ));
        }
        if hs.from == self.me.id || hs.from == crate::raft::NO_NODE {
            return Err(format!("a peer claims to be node {}", hs.from));
        }
        self.learned
            .push((hs.from, hs.raft_addr.clone(), hs.client_addr.clone()));
        info!("peer {} connected from {}", hs.from, shown(&hs.raft_addr));
        Ok(hs.from)
    }
}

/// Text a peer sent, as it may appear in our log: whoever opens the raft
/// port picks it, so it is cut short and its control characters escaped, so
/// that it stays one line of reasonable length.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 128;
    let mut shown = crate::config::printable(&text.chars().take(MAX_CHARS).collect::<String>());
    if text.chars().nth(MAX_CHARS).is_some() {
        shown.push_str("...");
    }
    shown
}

enum Body {
    Handshake(Handshake),
    Refusal(String),
    Message(PeerMessage),
    Bad(frame::FrameError),
}

fn decode_body(kind: FrameKind, body: &[u8]) -> Body {
    let decoded = match kind {
        FrameKind::Handshake => Handshake::decode(body).map(Body::Handshake),
        FrameKind::Refusal => frame::decode_refusal(body).map(Body::Refusal),
        _ => PeerMessage::decode(kind, body).map(Body::Message),
    };
    decoded.unwrap_or_else(Body::Bad)
}

fn peer_event(from: NodeId, message: PeerMessage) -> Result<PeerEvent, String> {
    match &message {
        PeerMessage::Raft(msg) if msg.from != from => Err(format!(
            "peer {} sent a message claiming to be from {}",
            from, msg.from
        )),
        _ => Ok(PeerEvent::Message { from, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Reply;
    use crate::server::peers::LocalIdentity;
    use crate::wire::frame::{HEADER_BYTES, MAX_FORWARD_REPLY_BYTES, MAX_FRAME_BYTES};
    use byteorder::{BigEndian, ByteOrder};
    use mio::Poll;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    const TOKEN: Token = Token(7);

    struct Harness {
        peers: Peers,
        poll: Poll,
        /// Our end of node 2's connection to us (node 1).
        far: std::net::TcpStream,
        events: Vec<PeerEvent>,
    }

    impl Harness {
        /// Node 1 with one inbound connection, not yet identified.
        fn new() -> Harness {
            let me = LocalIdentity {
                id: 1,
                cluster_name: "test".to_string(),
                raft_addr: "127.0.0.1:1".to_string(),
                client_addr: "127.0.0.1:2".to_string(),
            };
            // Node 2 is a member; node 3 only knows the cluster's name.
            let mut peers = Peers::new(me, &[(2, "127.0.0.1:3".to_string())]);
            let poll = Poll::new().expect("poll");
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let far = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let (near, _) = listener.accept().expect("accept");
            near.set_nonblocking(true).expect("nonblocking");
            peers.accept(TcpStream::from_std(near), poll.registry(), TOKEN);
            Harness {
                peers,
                poll,
                far,
                events: Vec::new(),
            }
        }

        fn handshake(&mut self) {
            self.handshake_as(2);
        }

        fn handshake_as(&mut self, from: NodeId) {
            let mut out = Vec::new();
            Handshake {
                version: PROTOCOL_VERSION,
                cluster_name: "test".to_string(),
                from,
                to: 1,
                raft_addr: format!("127.0.0.1:{}", from + 1),
                client_addr: "127.0.0.1:4".to_string(),
            }
            .encode(&mut out);
            self.write(&out);
            self.read_until("the handshake", |h| {
                h.conn().is_some_and(|c| c.input().is_empty())
                    && h.peers.learned.iter().any(|(id, ..)| *id == from)
            });
        }

        fn write(&mut self, bytes: &[u8]) {
            self.far.write_all(bytes).expect("write to the node");
        }

        fn conn(&self) -> Option<&Conn> {
            self.peers.conns.get(&TOKEN).map(|pc| &pc.conn)
        }

        fn is_open(&self) -> bool {
            self.peers.owns(TOKEN)
        }

        /// Lets the node read until `done`, for at most 10 s.
        fn read_until(&mut self, what: &str, done: impl Fn(&Harness) -> bool) {
            let start = Instant::now();
            while !done(self) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "timed out waiting for {what}"
                );
                let registry = self.poll.registry();
                self.peers
                    .ready(TOKEN, true, false, registry, &mut self.events);
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// Sends a frame header declaring `length` bytes of body; whether the
        /// node keeps the connection to wait for them.
        fn declare(&mut self, kind: FrameKind, length: usize) -> bool {
            let mut header = [0; HEADER_BYTES];
            BigEndian::write_u32(&mut header[..4], length as u32);
            header[8] = kind as u8;
            self.write(&header);
            self.read_until("the header to be read or refused", |h| {
                h.conn().is_none_or(|c| c.input().len() == HEADER_BYTES)
            });
            if let Some(conn) = self.conn() {
                assert_eq!(
                    conn.expected_input(),
                    HEADER_BYTES + length,
                    "told the buffer"
                );
            }
            self.is_open()
        }
    }

    #[test]
    fn a_large_relayed_reply_is_waited_for_only_from_a_member() {
        let big = MAX_FRAME_BYTES + 1;
        let mut stranger = Harness::new();
        assert!(!stranger.declare(FrameKind::ForwardReply, big));
        let mut outsider = Harness::new();
        outsider.handshake_as(3);
        assert!(
            !outsider.declare(FrameKind::ForwardReply, big),
            "the right cluster name, but not a member"
        );

        let mut member = Harness::new();
        member.handshake();
        assert!(member.declare(FrameKind::ForwardReply, MAX_FORWARD_REPLY_BYTES));
        let mut member = Harness::new();
        member.handshake();
        assert!(!member.declare(FrameKind::ForwardReply, MAX_FORWARD_REPLY_BYTES + 1));
        for kind in [
            FrameKind::Raft,
            FrameKind::Forward,
            FrameKind::SnapshotChunk,
        ] {
            let mut member = Harness::new();
            member.handshake();
            assert!(!member.declare(kind, big), "{kind:?}");
        }
    }

    #[test]
    fn a_reply_larger_than_a_frame_arrives_whole_from_a_member() {
        let mut member = Harness::new();
        member.handshake();
        let reply = Reply::Array(vec![
            Reply::Bulk(vec![b'a'; MAX_FRAME_BYTES / 2]),
            Reply::Bulk(vec![b'b'; MAX_FRAME_BYTES / 2]),
            Reply::Nil,
        ]);
        let message = PeerMessage::ForwardReply { id: 9, reply };
        let mut out = Vec::new();
        message.encode(&mut out);
        assert!(out.len() > MAX_FRAME_BYTES + HEADER_BYTES);
        let mut far = member.far.try_clone().expect("clone");
        let writer = std::thread::spawn(move || far.write_all(&out).expect("write the reply"));
        member.read_until("the reply", |h| !h.events.is_empty() || !h.is_open());
        writer.join().expect("writer");
        assert!(member.is_open());
        match member.events.as_slice() {
            [PeerEvent::Message {
                from: 2,
                message: got,
            }] => assert!(*got == message),
            other => panic!("got {} events, not the reply", other.len()),
        }
        assert!(member.conn().is_some_and(|c| c.input().is_empty()));
    }

    #[test]
    fn a_connection_is_read_a_budget_at_a_time_and_resumed_without_a_new_event() {
        let mut member = Harness::new();
        member.handshake();
        member.peers.read_budget = 1024;
        let message = |id| PeerMessage::ForwardReply {
            id,
            reply: Reply::Bulk(vec![b'v'; 4000]),
        };
        let mut out = Vec::new();
        for id in 0..64 {
            message(id).encode(&mut out);
        }
        let mut far = member.far.try_clone().expect("clone");
        let writer = std::thread::spawn(move || far.write_all(&out).expect("write the frames"));
        // Far more than one read is queued by then.
        std::thread::sleep(Duration::from_millis(200));
        let registry = member.poll.registry();
        member
            .peers
            .ready(TOKEN, true, false, registry, &mut member.events);
        assert!(
            (1..=4).contains(&member.events.len()),
            "{} messages from one call with a budget of 1 KiB",
            member.events.len()
        );
        assert!(member.peers.has_unfinished_reads());
        let start = Instant::now();
        while member.events.len() < 64 {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            assert!(member.is_open());
            if member.peers.has_unfinished_reads() {
                member
                    .peers
                    .resume_reads(member.poll.registry(), &mut member.events);
            } else {
                // Drained: the rest comes with the next readiness event.
                std::thread::sleep(Duration::from_millis(1));
                let registry = member.poll.registry();
                member
                    .peers
                    .ready(TOKEN, true, false, registry, &mut member.events);
            }
        }
        writer.join().expect("writer");
        for (id, event) in member.events.iter().enumerate() {
            match event {
                PeerEvent::Message {
                    from: 2,
                    message: got,
                } => {
                    assert!(*got == message(id as u64), "message {id}")
                }
                _ => panic!("event {id} is not a message from node 2"),
            }
        }
    }

    /// What the node sent back to a dialer it refused.
    fn refused_with(handshake: Handshake) -> Vec<u8> {
        let mut node = Harness::new();
        let mut out = Vec::new();
        handshake.encode(&mut out);
        // More right behind the handshake than the node reads before it
        // refuses, as a dialer sends its queued frames at once: the refusal
        // must still reach it.
        out.extend_from_slice(&vec![0u8; 4 << 20]);
        let mut far = node.far.try_clone().expect("clone");
        let writer = std::thread::spawn(move || far.write_all(&out).is_ok());
        node.read_until("the refusal", |h| !h.is_open());
        node.far
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut back = Vec::new();
        // Closed with input unread, the node's socket may end in a reset;
        // what came before it is still kept in `back`.
        let _ = std::io::Read::read_to_end(&mut node.far, &mut back);
        let _ = writer.join();
        back
    }

    #[test]
    fn a_refused_dialer_is_told_why() {
        let stranger = Handshake {
            version: PROTOCOL_VERSION,
            cluster_name: "staging".to_string(),
            from: 3,
            to: 1,
            raft_addr: "127.0.0.1:9".to_string(),
            client_addr: "127.0.0.1:10".to_string(),
        };
        let back = refused_with(stranger.clone());
        let Ok(Some((kind, body, used))) = frame::decode_frame(&back, FrameLimits::UNIDENTIFIED)
        else {
            panic!("no whole frame came back: {back:?}");
        };
        assert_eq!(kind, FrameKind::Refusal);
        assert_eq!(used, back.len(), "only the refusal");
        assert_eq!(
            frame::decode_refusal(body).expect("decodes"),
            "node 3 belongs to cluster 'staging', not 'test'"
        );

        let wrong_id = Handshake {
            cluster_name: "test".to_string(),
            to: 5,
            ..stranger
        };
        let back = refused_with(wrong_id);
        let reason = frame::decode_frame(&back, FrameLimits::UNIDENTIFIED)
            .ok()
            .flatten()
            .and_then(|(_, body, _)| frame::decode_refusal(body).ok());
        assert_eq!(
            reason.as_deref(),
            Some("node 3 dialed node 5 but this is node 1")
        );
    }

    #[test]
    fn a_long_refusal_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(frame::MAX_REFUSAL_BYTES);
        let mut out = Vec::new();
        frame::encode_refusal(&reason, &mut out);
        let (kind, body, _) = frame::decode_frame(&out, FrameLimits::UNIDENTIFIED)
            .expect("valid")
            .expect("whole");
        assert_eq!(kind, FrameKind::Refusal);
        let got = frame::decode_refusal(body).expect("UTF-8");
        assert_eq!(got, "é".repeat(frame::MAX_REFUSAL_BYTES / 2));
    }

    #[test]
    fn a_strangers_cluster_name_is_logged_on_one_short_line() {
        let mut node = Harness::new();
        let mut out = Vec::new();
        Handshake {
            version: PROTOCOL_VERSION,
            cluster_name: format!("evil\nINFO forged line{}", "x".repeat(1 << 20)),
            from: 3,
            to: 1,
            raft_addr: "127.0.0.1:9".to_string(),
            client_addr: "127.0.0.1:10".to_string(),
        }
        .encode(&mut out);
        let mut far = node.far.try_clone().expect("clone");
        let writer = std::thread::spawn(move || far.write_all(&out).is_ok());
        let mut reason = String::new();
        let start = Instant::now();
        while node.is_open() {
            assert!(start.elapsed() < Duration::from_secs(10), "not refused");
            if let Err(err) = node.peers.read_frames(TOKEN, &mut node.events) {
                reason = err;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = writer.join();
        assert!(
            reason.starts_with("node 3 belongs to cluster 'evil\\nINFO forged line"),
            "{reason}"
        );
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.len() < 300, "{} bytes", reason.len());
    }
}
