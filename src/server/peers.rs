//! Peer connections. Each node dials every other member once and sends all its
//! messages to that member on that outbound connection; what it receives
//! arrives on the members' outbound connections to it (inbound here). So no
//! connection is ever shared by two directions and there is nothing to dedupe.
//!
//! The members dialed follow the configuration in force (`add_member`,
//! `remove_member`, driven by `cluster.rs`).
//!
//! Three parts live in files of their own, each readable without the rest:
//! the connections accepted and what arrives on them, the handshake first
//! (`peers_receive.rs`); which of a host name's addresses to dial
//! (`peers_address_choice.rs`); and giving up connections whose path is cut
//! (`peers_cut_connections.rs`). Host names are looked up in `lookups.rs`.

#[path = "peers_address_choice.rs"]
mod address_choice;
#[path = "peers_cut_connections.rs"]
mod cut_connections;
#[path = "peers_receive.rs"]
mod receive;
#[cfg(test)]
#[path = "peers_redial_tests.rs"]
mod redial_tests;
#[path = "peers_refusals.rs"]
mod refusals;

use super::conn::Conn;
use super::LoopMap;
use crate::raft::{Message, NodeId};
use crate::wire::frame::{Handshake, PROTOCOL_VERSION};
use crate::wire::peer_msg::PeerMessage;
use address_choice::AddressChoice;
use cut_connections::STALL_MIN_MS;
use log::{debug, info, log, Level};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use refusals::{Refusals, Who};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Which of its host name's addresses to dial next.
    address_choice: AddressChoice,
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
            address_choice: AddressChoice::default(),
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
    /// Whom a refusal on it is counted for.
    who: Who,
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
    /// Connections that spent their read budget with input possibly left in
    /// the socket: read again next iteration, as no new readiness event may
    /// come for bytes already queued (see [`Peers::resume_reads`]).
    unfinished_reads: Vec<Token>,
    /// Bytes read from one connection at a time: `peers_receive::READ_BUDGET`,
    /// less in tests.
    pub(super) read_budget: usize,
    /// (peer, delay in ms) reconnects for the server to put on the timer wheel.
    pub reconnects: Vec<(NodeId, u64)>,
    /// Peers with a reconnect on the timer wheel: at most one each. A dial
    /// outside the timer (each change of leader or membership dials every
    /// member not connected) that failed while one waited added a second,
    /// and so on, until a dead peer was dialed twenty times a second.
    /// Kept across `remove_member`, so a timer still out for a removed and
    /// re-added peer counts as its one.
    redials: BTreeSet<NodeId>,
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
    /// Per node, the number of its latest connection either way (ours
    /// connected, or its handshake accepted), counted across all nodes.
    connections: HashMap<NodeId, u64>,
    connections_made: u64,
    refusals: Refusals,
    /// Every forward reply sent, connected or not, for unit tests whose
    /// followers never run: (follower, forward id, reply).
    #[cfg(test)]
    pub forward_replies: Vec<(NodeId, u64, crate::kv::Reply)>,
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
            unfinished_reads: Vec::new(),
            read_budget: receive::READ_BUDGET,
            reconnects: Vec::new(),
            redials: BTreeSet::new(),
            lookups: Vec::new(),
            unreachable: Vec::new(),
            learned: Vec::new(),
            stall_ms: STALL_MIN_MS,
            stall_checked: Instant::now(),
            connections: HashMap::new(),
            connections_made: 0,
            refusals: Refusals::default(),
            #[cfg(test)]
            forward_replies: Vec::new(),
        }
    }

    /// A connection with `id` was made, either way.
    pub(in crate::server) fn note_connection(&mut self, id: NodeId) {
        self.connections_made += 1;
        self.connections.insert(id, self.connections_made);
    }

    /// The number of the latest connection made with `id` (0: none yet).
    /// What a node read of ours is known only for what went on since then:
    /// before it, our bytes may have gone to an earlier run of it.
    pub fn last_connection(&self, id: NodeId) -> u64 {
        self.connections.get(&id).copied().unwrap_or(0)
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
                let addr = peer.address_choice.next_address(&addrs);
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
        peer.address_choice.note_dialed(addr);
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
                        who: Who::Dialed(id),
                    },
                );
            }
            Err(err) => {
                debug!("cannot dial peer {} at {}: {}", id, peer.raft_addr, err);
                peer.address_choice.note_failed_address();
                self.schedule_reconnect(id);
            }
        }
    }

    /// The reconnect timer for `id` fired: dials it unless connected.
    pub fn redial(&mut self, id: NodeId, registry: &Registry, token: Token) {
        self.redials.remove(&id);
        self.connect(id, registry, token);
    }

    fn schedule_reconnect(&mut self, id: NodeId) {
        if let Some(peer) = self.members.get_mut(&id) {
            if !self.redials.insert(id) {
                return;
            }
            self.reconnects.push((id, peer.backoff_ms));
            peer.backoff_ms = (peer.backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
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
        let identified = self.inbound_peer(token).is_some();
        let result = self.ready_inner(token, readable, writable, events);
        if let Err(reason) = result {
            self.close(token, registry, &reason, events);
        } else if !identified {
            self.close_superseded_inbound(token, registry);
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
                    self.connections_made += 1;
                    self.connections.insert(peer, self.connections_made);
                    let mut at = "";
                    if let Some(member) = self.members.get_mut(&peer) {
                        member.outbound_ready = true;
                        member.connected_since = Some(Instant::now());
                        at = &member.raft_addr;
                    }
                    // Said at debug while it keeps refusing us: once a second
                    // for hours otherwise. `note_lasting_dials` says when it stops.
                    let level = match self.refusals.refusing(Who::Dialed(peer)) {
                        true => Level::Debug,
                        false => Level::Info,
                    };
                    log!(level, "connected to peer {} at {}", peer, at);
                }
            }
        }
        if writable || matches!(pc.side, Side::Outbound { .. }) {
            if let Err(err) = pc.conn.flush() {
                // A node that refused our handshake with our later bytes
                // unread resets the connection: its refusal came before the
                // reset and is still there to read, and says why.
                if readable {
                    self.read_frames(token, events)?;
                }
                return Err(format!("write failed: {}", err));
            }
        }
        if readable {
            self.read_frames(token, events)?;
        }
        Ok(())
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
                let mut at = String::new();
                if let Some(member) = self.members.get_mut(&peer) {
                    at.clone_from(&member.raft_addr);
                    member.outbound = None;
                    member.outbound_ready = false;
                    let stayed = member.connected_since.take().map(|at| at.elapsed());
                    if stayed >= Some(Duration::from_millis(BACKOFF_MAX_MS)) {
                        member.backoff_ms = BACKOFF_MIN_MS;
                        member.address_choice.forget_failed_addresses();
                    } else {
                        member.address_choice.note_failed_address();
                    }
                }
                if connected {
                    // A refusal was logged already, as its streak allows.
                    let level = match reason == receive::REFUSED_BY_PEER {
                        true => Level::Debug,
                        false => Level::Info,
                    };
                    log!(
                        level,
                        "disconnected from peer {} at {}: {}",
                        peer,
                        at,
                        reason
                    );
                    events.push(PeerEvent::Disconnected(peer));
                } else {
                    debug!("connecting to peer {} at {} failed: {}", peer, at, reason);
                }
                self.schedule_reconnect(peer);
            }
            Side::Inbound { peer: Some(peer) } => {
                info!("peer {} closed its connection to us: {}", peer, reason)
            }
            // The dialer hung up before it said who it is: its connect
            // timed out, say, while a partition healed. Nothing was refused.
            Side::Inbound { peer: None } if reason == receive::CLOSED_BY_PEER => {
                info!("a peer connection closed before its handshake")
            }
            Side::Inbound { peer: None } => {
                let line = format!("refused peer connection: {}", reason);
                let (level, line) = self.refusals.refused(pc.who, reason, &line, Instant::now());
                log!(level, "{}", line)
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
    /// transactions are bounded by max_request_bytes or its highest setting, below
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
    ///
    /// [`frame::MAX_FRAME_BYTES`]: crate::wire::frame::MAX_FRAME_BYTES
    /// [`frame::MAX_FORWARD_REPLY_BYTES`]: crate::wire::frame::MAX_FORWARD_REPLY_BYTES
    pub fn send(&mut self, to: NodeId, message: &PeerMessage) -> bool {
        #[cfg(test)]
        if let PeerMessage::ForwardReply { id, reply } = message {
            self.forward_replies.push((to, *id, reply.clone()));
        }
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

    /// Closes the connection this node sends `id` on (`id` said it is
    /// stopping): it counts as unreachable until the redial this schedules,
    /// which waits the longest backoff rather than the usual 20 ms: a node
    /// still exiting could accept that one, and be sent requests it will
    /// never read.
    pub fn close_outbound(
        &mut self,
        id: NodeId,
        registry: &Registry,
        reason: &str,
        events: &mut Vec<PeerEvent>,
    ) {
        if let Some(token) = self.members.get(&id).and_then(|p| p.outbound) {
            self.close(token, registry, reason, events);
            for (peer, delay_ms) in self.reconnects.iter_mut() {
                if *peer == id {
                    *delay_ms = (*delay_ms).max(BACKOFF_MAX_MS);
                }
            }
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self, registry: &Registry) {
        for (_, mut pc) in self.conns.drain() {
            let _ = pc.conn.flush();
            let _ = registry.deregister(&mut pc.conn.stream);
        }
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

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
