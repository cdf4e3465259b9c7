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
use crate::raft::{Message, NodeId};
use crate::wire::frame::{self, FrameKind, FrameLimits, Handshake, PROTOCOL_VERSION};
use crate::wire::peer_msg::PeerMessage;
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Beyond this much unsent output to one peer, new messages to it are dropped
/// (Raft tolerates loss; the peer is reported unreachable and probed later),
/// but for relayed replies (see [`Peers::send`]).
const MAX_PEER_BACKLOG: usize = 64 << 20;
/// Redial delays: doubling from the minimum up to the maximum, and back to
/// the minimum only after a connection stayed up for the maximum. Why not on
/// connect: a peer that takes the TCP connection and then closes it (its
/// `cluster_name` differs, say) would otherwise be redialed, and both sides
/// would log it, fifty times a second.
const BACKOFF_MIN_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 1000;
/// The least time an outbound connection may go without an acknowledgement
/// while it retransmits (or without finishing its connect) before it is
/// given up and redialed (see [`Peers::drop_cut_connections`]).
const STALL_MIN_MS: u64 = 1000;
/// How often outbound connections are checked for a cut path.
const STALL_CHECK_EVERY: Duration = Duration::from_millis(200);

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
    /// `raft_addr` is a host name being looked up off the loop.
    looking_up: bool,
    /// The address of the latest dial.
    dialed: Option<SocketAddr>,
    /// Addresses whose connect failed, or whose connection closed soon after
    /// (a proxy, a node of another id there), since one last held: of a name
    /// with several addresses, the others are dialed first. Kept by address,
    /// not by place in the answer, as resolvers rotate and shuffle answers.
    failed_addrs: Vec<SocketAddr>,
}

impl Peer {
    fn new(raft_addr: &str) -> Peer {
        Peer {
            raft_addr: raft_addr.to_string(),
            outbound: None,
            outbound_ready: false,
            backoff_ms: BACKOFF_MIN_MS,
            connected_since: None,
            looking_up: false,
            dialed: None,
            failed_addrs: Vec::new(),
        }
    }
}

impl Peer {
    /// Which of `addrs` (not empty), a lookup's answer, to dial: the address
    /// dialed last unless it failed, else the first that has not failed
    /// since one last held; when every one has, all are tried again.
    fn next_address(&mut self, addrs: &[SocketAddr]) -> SocketAddr {
        if let Some(last) = self.dialed.filter(|a| addrs.contains(a)) {
            if !self.failed_addrs.contains(&last) {
                return last;
            }
        }
        if let Some(untried) = addrs.iter().find(|a| !self.failed_addrs.contains(a)) {
            return *untried;
        }
        self.failed_addrs.clear();
        addrs[0]
    }

    fn note_failed_address(&mut self) {
        if let Some(addr) = self.dialed {
            if !self.failed_addrs.contains(&addr) {
                self.failed_addrs.push(addr);
            }
        }
    }
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
    /// When it was dialed or accepted.
    opened: Instant,
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
    /// (peer, raft address) host names for the server to look up off the
    /// loop (`server::lookups`); the answer goes to [`Peers::looked_up`].
    pub lookups: Vec<(NodeId, String)>,
    /// Peers a message could not be queued for since the last drain.
    pub unreachable: Vec<NodeId>,
    /// (id, raft address, client address) from each handshake accepted
    /// since the last drain, for the address book.
    pub learned: Vec<(NodeId, String, String)>,
    /// How long an outbound connection may retransmit without an
    /// acknowledgement, or take to connect, before it is given up and
    /// redialed (see [`Peers::drop_cut_connections`]).
    stall_ms: u64,
    /// When [`Peers::drop_cut_connections`] last looked.
    stall_checked: Instant,
}

impl Peers {
    /// `members` are the other members' (id, raft address); this node excluded.
    pub fn new(me: LocalIdentity, members: &[(NodeId, String)]) -> Peers {
        let members = members
            .iter()
            .filter(|(id, _)| *id != me.id)
            .map(|(id, addr)| (*id, Peer::new(addr)))
            .collect();
        Peers {
            me,
            members,
            conns: LoopMap::default(),
            dirty: Vec::new(),
            reconnects: Vec::new(),
            lookups: Vec::new(),
            unreachable: Vec::new(),
            learned: Vec::new(),
            stall_ms: STALL_MIN_MS,
            stall_checked: Instant::now(),
        }
    }

    /// Gives up an outbound connection that retransmits without an
    /// acknowledgement, or does not finish its connect, for two election
    /// timeouts, at least [`STALL_MIN_MS`].
    pub fn with_election_timeout(mut self, election_timeout_ms: u64) -> Peers {
        self.stall_ms = election_timeout_ms.saturating_mul(2).max(STALL_MIN_MS);
        self
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
        self.members.insert(id, Peer::new(raft_addr));
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

    /// How many members this node has an open connection to.
    pub fn connected_count(&self) -> usize {
        self.members.values().filter(|p| p.outbound_ready).count()
    }

    /// Starts a connection to `id` if it has none. An address given as a
    /// host name is first looked up off the loop (`lookups`): the lookup
    /// blocks, for many seconds when the name server does not answer. Failure
    /// to even start is retried later like any other connection failure.
    pub fn connect(&mut self, id: NodeId, registry: &Registry, token: Token) {
        let Some(peer) = self.members.get_mut(&id) else {
            return;
        };
        if peer.outbound.is_some() || peer.looking_up {
            return;
        }
        match peer.raft_addr.parse::<SocketAddr>() {
            Ok(addr) => self.dial(id, addr, registry, token),
            Err(_) => {
                peer.looking_up = true;
                self.lookups.push((id, peer.raft_addr.clone()));
            }
        }
    }

    /// The answer to the lookup of `raft_addr` for `id`: dials it, or
    /// retries later. An answer for an address the peer no longer has is
    /// dropped (the new one has its own lookup).
    pub fn looked_up(
        &mut self,
        id: NodeId,
        raft_addr: &str,
        answer: io::Result<Vec<SocketAddr>>,
        registry: &Registry,
        token: Token,
    ) {
        let Some(peer) = self.members.get_mut(&id) else {
            return;
        };
        if peer.raft_addr != raft_addr {
            return;
        }
        peer.looking_up = false;
        if peer.outbound.is_some() {
            return;
        }
        match answer {
            Ok(addrs) if !addrs.is_empty() => {
                let addr = peer.next_address(&addrs);
                self.dial(id, addr, registry, token)
            }
            Ok(_) => self.schedule_reconnect(id),
            Err(err) => {
                debug!("cannot dial peer {} at {}: {}", id, raft_addr, err);
                self.schedule_reconnect(id);
            }
        }
    }

    fn dial(&mut self, id: NodeId, addr: SocketAddr, registry: &Registry, token: Token) {
        let Some(peer) = self.members.get_mut(&id) else {
            return;
        };
        peer.dialed = Some(addr);
        let stream = TcpStream::connect(addr).and_then(|mut stream| {
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
                        opened: Instant::now(),
                    },
                );
            }
            Err(err) => {
                debug!("cannot dial peer {} at {}: {}", id, peer.raft_addr, err);
                peer.note_failed_address();
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

    /// Closes, to be redialed, each outbound connection whose path looks
    /// cut: a connect unfinished after the stall time, or sent bytes that TCP
    /// has retransmitted without any acknowledgement for that long (a
    /// partition, a dead host). Left to itself, TCP backs its retransmissions
    /// off to minutes apart, and after a partition heals nothing gets through
    /// until the next one (measured: a node cut off for 60 s stayed
    /// unreachable 48 s after the heal, and a cluster that lost its leader
    /// meanwhile could not elect one for 46 s). A peer that is alive but does
    /// not read (a stalled loop, SIGSTOP) is no cut path: its kernel answers
    /// the probes of a full window, and its connection stays, where the
    /// kernel's own `TCP_USER_TIMEOUT` would drop it and lose a snapshot
    /// stream or relayed replies in flight. Looks at most every
    /// [`STALL_CHECK_EVERY`].
    pub fn drop_cut_connections(
        &mut self,
        now: Instant,
        registry: &Registry,
        events: &mut Vec<PeerEvent>,
    ) {
        if now.saturating_duration_since(self.stall_checked) < STALL_CHECK_EVERY {
            return;
        }
        self.stall_checked = now;
        let stall = Duration::from_millis(self.stall_ms);
        let cut: Vec<(Token, String)> = self
            .conns
            .iter()
            .filter_map(|(token, pc)| match pc.side {
                Side::Outbound {
                    connected: false, ..
                } if now.saturating_duration_since(pc.opened) > stall => Some((
                    *token,
                    format!("connect not finished in {} ms", self.stall_ms),
                )),
                Side::Outbound {
                    connected: true, ..
                } if retransmits_unanswered(&pc.conn.stream, stall) => Some((
                    *token,
                    format!(
                        "sent bytes retransmitted without an acknowledgement for {} ms",
                        self.stall_ms
                    ),
                )),
                _ => None,
            })
            .collect();
        for (token, reason) in cut {
            self.close(token, registry, &reason, events);
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
                opened: Instant::now(),
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
                    let id = self.check_handshake(&hs)?;
                    if let Some(pc) = self.conns.get_mut(&token) {
                        pc.side = Side::Inbound { peer: Some(id) };
                    }
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
                        member.failed_addrs.clear();
                    } else {
                        member.note_failed_address();
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
    ///
    /// Every message fits the receiver's limits: requests, entries and
    /// transactions are bounded by max_request_bytes, below
    /// [`frame::MAX_FRAME_BYTES`], and a reply by what a reply may hold, below
    /// [`frame::MAX_FORWARD_REPLY_BYTES`], which a member accepts.
    ///
    /// A relayed reply is queued however much is already waiting: dropping it
    /// would turn a request the leader served into a timeout for the client
    /// (for a write, "outcome unknown"), where the leader's own client would
    /// have had its reply. What it holds here is what this node would hold
    /// for the same requests from clients of its own (it buffers whatever
    /// replies a client asked for), and it drains as fast as the link allows:
    /// the follower reads its peer connections whatever its clients do.
    pub fn send(&mut self, to: NodeId, message: &PeerMessage) -> bool {
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
        let is_reply = matches!(message, PeerMessage::ForwardReply { .. });
        if pc.conn.pending_output() > MAX_PEER_BACKLOG && !is_reply {
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

/// Whether TCP has retransmitted `stream`'s bytes at least twice on timeout
/// and received no acknowledgement for `stall` (`TCP_INFO`). A full window
/// does not count: its probes are answered and are not retransmissions.
fn retransmits_unanswered(stream: &TcpStream, stall: Duration) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is plain integers, for which zero is valid.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt on a socket this function borrows, into a
        // tcp_info and its size, both living through the call.
        let got = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        got == 0
            && info.tcpi_unacked > 0
            && info.tcpi_retransmits >= 2
            && u128::from(info.tcpi_last_ack_recv) >= stall.as_millis()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, stall);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Reply;
    use crate::wire::frame::{HEADER_BYTES, MAX_FORWARD_REPLY_BYTES, MAX_FRAME_BYTES};
    use byteorder::{BigEndian, ByteOrder};
    use mio::Poll;
    use std::io::Write;
    use std::net::TcpListener;

    const TOKEN: Token = Token(7);

    fn node_1_knowing(members: &[(NodeId, &str)]) -> Peers {
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

    #[test]
    fn a_host_name_is_looked_up_off_the_loop_once_at_a_time_then_dialed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let poll = Poll::new().expect("poll");
        let mut peers = node_1_knowing(&[(2, "peer-two.invalid:7002"), (3, "127.0.0.1:9")]);
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
            let mut ready = mio::Events::with_capacity(8);
            poll.poll(&mut ready, Some(Duration::from_millis(10)))
                .expect("poll");
            for event in ready.iter() {
                let (readable, writable) = (event.is_readable(), event.is_writable());
                peers.ready(
                    event.token(),
                    readable,
                    writable,
                    poll.registry(),
                    &mut events,
                );
            }
        }
        assert_eq!(token, 42, "the dead address once, then the live one");
        assert_eq!(peers.members[&2].failed_addrs, vec![dead]);
    }

    /// Which address a peer dials next, by address rather than by place in
    /// an answer that resolvers rotate and shuffle.
    #[test]
    fn the_next_address_skips_those_that_failed_and_keeps_one_that_holds() {
        let [a, b, c]: [SocketAddr; 3] =
            ["10.0.0.1:7", "10.0.0.2:7", "10.0.0.3:7"].map(|s| s.parse().expect("address"));
        let mut peer = Peer::new("name:7");
        let dial = |peer: &mut Peer, answer: &[SocketAddr], fails: bool| {
            let addr = peer.next_address(answer);
            peer.dialed = Some(addr);
            if fails {
                peer.note_failed_address();
            }
            addr
        };
        assert_eq!(dial(&mut peer, &[a, b, c], true), a);
        assert_eq!(dial(&mut peer, &[c, a, b], true), c, "a failed");
        assert_eq!(dial(&mut peer, &[c, a, b], false), b, "a and c failed");
        assert_eq!(dial(&mut peer, &[a, c, b], false), b, "b holds");
        peer.note_failed_address();
        assert_eq!(dial(&mut peer, &[a, c, b], false), a, "all failed: again");
        assert!(peer.failed_addrs.is_empty());
    }

    /// An outbound connection whose connect does not finish within the
    /// stall time is closed and redialed; one that is up and idle is kept.
    #[test]
    fn a_connect_that_does_not_finish_is_given_up_and_an_idle_connection_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut poll = Poll::new().expect("poll");
        let mut peers = node_1_knowing(&[(2, &addr)]).with_election_timeout(100);
        assert_eq!(peers.stall_ms, STALL_MIN_MS);
        peers.connect(2, poll.registry(), Token(30));
        let mut events = Vec::new();
        let start = Instant::now();
        while !peers.is_connected(2) {
            assert!(start.elapsed() < Duration::from_secs(10), "never connected");
            let mut ready = mio::Events::with_capacity(8);
            poll.poll(&mut ready, Some(Duration::from_millis(10)))
                .expect("poll");
            for event in ready.iter() {
                let token = event.token();
                peers.ready(
                    token,
                    event.is_readable(),
                    event.is_writable(),
                    poll.registry(),
                    &mut events,
                );
            }
        }
        let later = Instant::now() + Duration::from_secs(5);
        peers.drop_cut_connections(later, poll.registry(), &mut events);
        assert!(peers.owns(Token(30)), "an idle connection is no cut path");
        // A connect that never finished: pretend it was dialed long ago.
        peers.conns.get_mut(&Token(30)).expect("conn").side = Side::Outbound {
            peer: 2,
            connected: false,
        };
        peers.reconnects.clear();
        peers.drop_cut_connections(later + STALL_CHECK_EVERY, poll.registry(), &mut events);
        assert!(!peers.owns(Token(30)));
        assert_eq!(peers.reconnects.len(), 1, "redialed");
    }

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
}
