//! Peer connections. Each node dials every other member once and sends all its
//! messages to that member on that outbound connection; what it receives
//! arrives on the members' outbound connections to it (inbound here). So no
//! connection is ever shared by two directions and there is nothing to dedupe.
//!
//! The first frame on a connection is the dialer's handshake; an acceptor that
//! does not like it (another cluster, the wrong id, a bad frame) logs why and
//! closes that connection only. Any node id but our own is accepted, not only
//! the members we know: a joining node knows nobody until the leader dials
//! it, and a member may hear from a new learner before it appends the entry
//! that adds it. The core ignores what non-members have no business sending.
//!
//! The members dialed follow the configuration in force (`add_member`,
//! `remove_member`, driven by `cluster.rs`).

use super::conn::{Conn, Fill};
use super::fd_limit::MAX_UNIDENTIFIED_PEERS;
use super::LoopMap;
use crate::kv::Reply;
use crate::raft::{Message, NodeId};
use crate::wire::frame::{self, FrameKind, Handshake, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use crate::wire::peer_msg::{self, PeerMessage};
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Beyond this much unsent output to one peer, new messages to it are dropped
/// (Raft tolerates loss; the peer is reported unreachable and probed later).
const MAX_PEER_BACKLOG: usize = 64 << 20;
/// Redial delays: doubling from the minimum up to the maximum, and back to
/// the minimum only after a connection stayed up for the maximum. Why not on
/// connect: a peer that takes the TCP connection and then closes it (its
/// `cluster_name` differs, say) would otherwise be redialed, and both sides
/// would log it, fifty times a second.
const BACKOFF_MIN_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 1000;

/// What arrived from a peer, for the server to act on.
#[derive(Debug)]
pub enum PeerEvent {
    /// A message from member `from` (a Raft message's own `from` was checked
    /// against the handshake).
    Message {
        from: NodeId,
        message: PeerMessage,
    },
    Disconnected(NodeId),
}

/// One member as this node knows it.
pub struct Peer {
    pub raft_addr: String,
    outbound: Option<Token>,
    outbound_ready: bool,
    backoff_ms: u64,
    /// When our connection to it finished connecting, while it is up.
    connected_since: Option<Instant>,
}

enum Side {
    /// We dialed `peer`; `connected` once the connect finished.
    Outbound { peer: NodeId, connected: bool },
    /// They dialed us; `peer` is known after their handshake.
    Inbound { peer: Option<NodeId> },
}

struct PeerConn {
    conn: Conn,
    side: Side,
}

/// This node's side of the handshake.
#[derive(Clone)]
pub struct LocalIdentity {
    pub id: NodeId,
    pub cluster_name: String,
    pub raft_addr: String,
    pub client_addr: String,
}

pub struct Peers {
    me: LocalIdentity,
    pub members: BTreeMap<NodeId, Peer>,
    conns: LoopMap<Token, PeerConn>,
    /// Connections with output to write this iteration.
    dirty: Vec<Token>,
    /// (peer, delay in ms) reconnects for the server to put on the timer wheel.
    pub reconnects: Vec<(NodeId, u64)>,
    /// Peers a message could not be queued for since the last drain.
    pub unreachable: Vec<NodeId>,
    /// (id, raft address, client address) from each handshake accepted
    /// since the last drain, for the address book.
    pub learned: Vec<(NodeId, String, String)>,
}

impl Peers {
    /// `members` are the other members' (id, raft address); this node excluded.
    pub fn new(me: LocalIdentity, members: &[(NodeId, String)]) -> Peers {
        let members = members
            .iter()
            .filter(|(id, _)| *id != me.id)
            .map(|(id, addr)| {
                (
                    *id,
                    Peer {
                        raft_addr: addr.clone(),
                        outbound: None,
                        outbound_ready: false,
                        backoff_ms: BACKOFF_MIN_MS,
                        connected_since: None,
                    },
                )
            })
            .collect();
        Peers {
            me,
            members,
            conns: LoopMap::default(),
            dirty: Vec::new(),
            reconnects: Vec::new(),
            unreachable: Vec::new(),
            learned: Vec::new(),
        }
    }

    /// See [`Conn::note_read_closed`].
    pub fn note_read_closed(&mut self, token: Token) {
        if let Some(pc) = self.conns.get_mut(&token) {
            pc.conn.note_read_closed();
        }
    }

    /// Starts keeping a connection to `id` at `raft_addr` (dial it with
    /// `connect`). A member whose address changed is dropped and re-added.
    pub fn add_member(&mut self, id: NodeId, raft_addr: &str, registry: &Registry) {
        if id == self.me.id {
            return;
        }
        if let Some(peer) = self.members.get(&id) {
            if peer.raft_addr == raft_addr {
                return;
            }
            self.remove_member(id, registry);
        }
        self.members.insert(
            id,
            Peer {
                raft_addr: raft_addr.to_string(),
                outbound: None,
                outbound_ready: false,
                backoff_ms: BACKOFF_MIN_MS,
                connected_since: None,
            },
        );
    }

    /// Stops dialing `id` and closes our connection to it, after one last
    /// try at writing what is queued (a removed node's last heartbeat tells
    /// it that its removal committed). Its connection to us stays until it
    /// closes it.
    pub fn remove_member(&mut self, id: NodeId, registry: &Registry) {
        let Some(peer) = self.members.remove(&id) else {
            return;
        };
        if let Some(mut pc) = peer.outbound.and_then(|t| self.conns.remove(&t)) {
            let _ = pc.conn.flush();
            let _ = registry.deregister(&mut pc.conn.stream);
        }
        info!("stopped dialing node {} (not in the configuration)", id);
    }

    pub fn owns(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    pub fn is_connected(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|p| p.outbound_ready)
    }

    /// Starts a connection to `id` if it has none. Failure to even start is
    /// retried later like any other connection failure.
    pub fn connect(&mut self, id: NodeId, registry: &Registry, token: Token) {
        let Some(peer) = self.members.get_mut(&id) else {
            return;
        };
        if peer.outbound.is_some() {
            return;
        }
        let stream = resolve(&peer.raft_addr).and_then(|addr| {
            let mut stream = TcpStream::connect(addr)?;
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                let mut conn = Conn::new(stream);
                Handshake {
                    version: PROTOCOL_VERSION,
                    cluster_name: self.me.cluster_name.clone(),
                    from: self.me.id,
                    to: id,
                    raft_addr: self.me.raft_addr.clone(),
                    client_addr: self.me.client_addr.clone(),
                }
                .encode(conn.output());
                peer.outbound = Some(token);
                self.conns.insert(
                    token,
                    PeerConn {
                        conn,
                        side: Side::Outbound {
                            peer: id,
                            connected: false,
                        },
                    },
                );
            }
            Err(err) => {
                debug!("cannot dial peer {} at {}: {}", id, peer.raft_addr, err);
                self.schedule_reconnect(id);
            }
        }
    }

    fn schedule_reconnect(&mut self, id: NodeId) {
        if let Some(peer) = self.members.get_mut(&id) {
            self.reconnects.push((id, peer.backoff_ms));
            peer.backoff_ms = (peer.backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }

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
        self.conns.insert(
            token,
            PeerConn {
                conn: Conn::new(stream),
                side: Side::Inbound { peer: None },
            },
        );
    }

    /// Handles readiness on a peer connection, pushing what arrived onto `events`.
    pub fn ready(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        registry: &Registry,
        events: &mut Vec<PeerEvent>,
    ) {
        let result = self.ready_inner(token, readable, writable, events);
        if let Err(reason) = result {
            self.close(token, registry, &reason, events);
        }
    }

    fn ready_inner(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        events: &mut Vec<PeerEvent>,
    ) -> Result<(), String> {
        let Some(pc) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        if let Side::Outbound {
            peer,
            connected: false,
        } = pc.side
        {
            if !writable && !readable {
                return Ok(());
            }
            match connect_finished(&pc.conn.stream)? {
                false => return Ok(()),
                true => {
                    pc.side = Side::Outbound {
                        peer,
                        connected: true,
                    };
                    let _ = pc.conn.stream.set_nodelay(true);
                    if let Some(member) = self.members.get_mut(&peer) {
                        member.outbound_ready = true;
                        member.connected_since = Some(Instant::now());
                    }
                    info!("connected to peer {}", peer);
                }
            }
        }
        if writable || matches!(pc.side, Side::Outbound { .. }) {
            pc.conn
                .flush()
                .map_err(|e| format!("write failed: {}", e))?;
        }
        if readable {
            self.read_frames(token, events)?;
        }
        Ok(())
    }

    fn read_frames(&mut self, token: Token, events: &mut Vec<PeerEvent>) -> Result<(), String> {
        loop {
            let Some(pc) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            let fill = pc.conn.fill().map_err(|e| format!("read failed: {}", e))?;
            self.decode_frames(token, events)?;
            match fill {
                Fill::Data => continue,
                Fill::Drained | Fill::WouldBlock => return Ok(()),
                Fill::Closed => return Err("closed by peer".to_string()),
            }
        }
    }

    fn decode_frames(&mut self, token: Token, events: &mut Vec<PeerEvent>) -> Result<(), String> {
        loop {
            let Some(pc) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            let decoded = match frame::decode_frame(pc.conn.input(), MAX_FRAME_BYTES) {
                Ok(None) => return Ok(()),
                Ok(Some((kind, body, used))) => (kind, decode_body(kind, body), used),
                Err(err) => return Err(format!("bad frame: {}", err)),
            };
            let (kind, body, used) = decoded;
            pc.conn.consume(used);
            match (&mut pc.side, body) {
                (Side::Inbound { peer: None }, Body::Handshake(hs)) => {
                    let id = self.check_handshake(&hs)?;
                    if let Some(pc) = self.conns.get_mut(&token) {
                        pc.side = Side::Inbound { peer: Some(id) };
                    }
                }
                (Side::Inbound { peer: None }, _) => {
                    return Err(format!("expected a handshake, got a {:?} frame", kind))
                }
                (Side::Inbound { peer: Some(from) }, Body::Message(msg)) => {
                    let from = *from;
                    events.push(peer_event(from, msg)?);
                }
                (_, Body::Bad(err)) => return Err(format!("bad {:?} frame: {}", kind, err)),
                (Side::Outbound { .. }, _) | (Side::Inbound { .. }, _) => {
                    return Err(format!("unexpected {:?} frame", kind))
                }
            }
        }
    }

    fn check_handshake(&mut self, hs: &Handshake) -> Result<NodeId, String> {
        if hs.version != PROTOCOL_VERSION {
            return Err(format!("peer speaks protocol version {}", hs.version));
        }
        if hs.cluster_name != self.me.cluster_name {
            return Err(format!(
                "node {} belongs to cluster '{}', not '{}'",
                hs.from, hs.cluster_name, self.me.cluster_name
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
        info!("peer {} connected from {}", hs.from, hs.raft_addr);
        Ok(hs.from)
    }

    fn close(
        &mut self,
        token: Token,
        registry: &Registry,
        reason: &str,
        events: &mut Vec<PeerEvent>,
    ) {
        let Some(mut pc) = self.conns.remove(&token) else {
            return;
        };
        let _ = registry.deregister(&mut pc.conn.stream);
        match pc.side {
            Side::Outbound { peer, connected } => {
                if let Some(member) = self.members.get_mut(&peer) {
                    member.outbound = None;
                    member.outbound_ready = false;
                    let stayed = member.connected_since.take().map(|at| at.elapsed());
                    if stayed >= Some(Duration::from_millis(BACKOFF_MAX_MS)) {
                        member.backoff_ms = BACKOFF_MIN_MS;
                    }
                }
                if connected {
                    info!("disconnected from peer {}: {}", peer, reason);
                    events.push(PeerEvent::Disconnected(peer));
                } else {
                    debug!("connecting to peer {} failed: {}", peer, reason);
                }
                self.schedule_reconnect(peer);
            }
            Side::Inbound { peer: Some(peer) } => {
                info!("peer {} closed its connection to us: {}", peer, reason)
            }
            Side::Inbound { peer: None } => {
                warn!("refused peer connection: {}", reason)
            }
        }
    }

    /// Unsent bytes queued for `to`; None when there is no ready connection.
    pub fn pending_output(&self, to: NodeId) -> Option<usize> {
        let token = self
            .members
            .get(&to)
            .filter(|p| p.outbound_ready)
            .and_then(|p| p.outbound)?;
        self.conns.get(&token).map(|pc| pc.conn.pending_output())
    }

    /// Queues a message on the outbound connection to `to`; false if it was dropped.
    pub fn send(&mut self, to: NodeId, message: &PeerMessage) -> bool {
        // A frame over the limit would make the receiver drop the connection,
        // and with it every message queued behind. Requests, entries and
        // transactions are bounded by max_request_bytes, below the limit;
        // only replies are not (MGET of large values).
        if let PeerMessage::ForwardReply { id, reply } = message {
            if message.encoded_len() > MAX_FRAME_BYTES {
                let reply = fit_for_relay(reply.clone(), MAX_FRAME_BYTES - FORWARD_REPLY_OVERHEAD);
                return self.queue(to, &PeerMessage::ForwardReply { id: *id, reply });
            }
        }
        self.queue(to, message)
    }

    fn queue(&mut self, to: NodeId, message: &PeerMessage) -> bool {
        let Some(token) = self
            .members
            .get(&to)
            .filter(|p| p.outbound_ready)
            .and_then(|p| p.outbound)
        else {
            return false;
        };
        let Some(pc) = self.conns.get_mut(&token) else {
            return false;
        };
        if pc.conn.pending_output() > MAX_PEER_BACKLOG {
            return false;
        }
        let was_idle = pc.conn.pending_output() == 0;
        message.encode(pc.conn.output());
        if was_idle {
            self.dirty.push(token);
        }
        true
    }

    pub fn send_raft(&mut self, message: Message) {
        let to = message.to;
        if !self.send(to, &PeerMessage::Raft(message)) {
            self.unreachable.push(to);
        }
    }

    /// Writes every connection's pending output.
    pub fn flush(&mut self, registry: &Registry, events: &mut Vec<PeerEvent>) {
        let dirty = std::mem::take(&mut self.dirty);
        for token in &dirty {
            let failed = match self.conns.get_mut(token) {
                Some(pc) => pc.conn.flush().err(),
                None => None,
            };
            if let Some(err) = failed {
                self.close(*token, registry, &format!("write failed: {}", err), events);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self, registry: &Registry) {
        for (_, mut pc) in self.conns.drain() {
            let _ = pc.conn.flush();
            let _ = registry.deregister(&mut pc.conn.stream);
        }
    }
}

enum Body {
    Handshake(Handshake),
    Message(PeerMessage),
    Bad(frame::FrameError),
}

fn decode_body(kind: FrameKind, body: &[u8]) -> Body {
    let decoded = if kind == FrameKind::Handshake {
        Handshake::decode(body).map(Body::Handshake)
    } else {
        PeerMessage::decode(kind, body).map(Body::Message)
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

/// Frame header and request id around a relayed reply, with room to spare.
const FORWARD_REPLY_OVERHEAD: usize = 64;

/// A reply cut down to at most `limit` encoded bytes for a follower to
/// relay. Elements of an array larger than an error give way largest first,
/// each replaced by an error, so that a transaction still reports its
/// writes' outcomes (they were applied: answering the whole EXEC with an
/// error would invite a retry). If that is not enough (a great many small
/// elements), the whole reply is one error.
fn fit_for_relay(reply: Reply, limit: usize) -> Reply {
    let too_large = || {
        Reply::Error(
            "ERR reply too large for a follower to relay (16 MiB); send the command to the leader"
                .into(),
        )
    };
    let Reply::Array(mut items) = reply else {
        return too_large();
    };
    let error_len = peer_msg::reply_len(&too_large());
    let mut sizes: Vec<(usize, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (peer_msg::reply_len(item), i))
        .collect();
    let mut total: usize = sizes.iter().map(|(len, _)| len).sum::<usize>() + 16;
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    for (len, i) in sizes {
        if total <= limit || len <= error_len {
            break;
        }
        items[i] = too_large();
        total = total - len + error_len;
    }
    if total > limit {
        return too_large();
    }
    Reply::Array(items)
}

/// Whether a non-blocking connect has finished (mio's `TcpStream::connect` steps):
/// an error means it failed; `NotConnected` from `peer_addr` means not yet.
fn connect_finished(stream: &TcpStream) -> Result<bool, String> {
    if let Ok(Some(err)) | Err(err) = stream.take_error() {
        return Err(format!("connect failed: {}", err));
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(format!("connect failed: {}", err)),
    }
}

/// Resolves a configured host:port (a literal address, or a name once per dial).
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    if let Ok(parsed) = addr.parse() {
        return Ok(parsed);
    }
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no address for {}", addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply) -> usize {
        peer_msg::reply_len(reply)
    }

    #[test]
    fn a_relayed_reply_is_cut_to_fit_and_never_grows() {
        let big = Reply::Bulk(vec![b'v'; 600]);
        let small = Reply::Integer(1);
        let fitted = fit_for_relay(
            Reply::Array(vec![small.clone(), big.clone(), big.clone()]),
            1000,
        );
        let Reply::Array(items) = &fitted else {
            panic!("not an array: {fitted:?}");
        };
        assert_eq!(items[0], small, "a write's outcome is kept");
        assert_eq!(items.iter().filter(|i| **i == big).count(), 1);
        assert!(encoded(&fitted) <= 1000);
        // Many elements smaller than an error: replacing them would only
        // grow the reply, so it becomes one error.
        let many = Reply::Array(vec![Reply::Bulk(b"0123456789".to_vec()); 1000]);
        assert!(encoded(&many) > 5000);
        assert!(matches!(fit_for_relay(many, 5000), Reply::Error(_)));
        assert!(matches!(fit_for_relay(big, 100), Reply::Error(_)));
    }
}
