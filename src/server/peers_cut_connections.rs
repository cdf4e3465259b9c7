//! Giving up outbound connections whose path is cut, so that they are
//! redialed at once instead of waiting out TCP's own retransmission backoff;
//! and, on the receiving side, closing a peer's connection that its newer
//! one superseded, so that what the peer gave up on it is not taken late.
//!
//! Separate from `peers.rs` because it is a periodic check of its own, driven
//! by the clock rather than by readiness, and it rests on what the kernel
//! says about a socket (`TCP_INFO`) rather than on anything sent or received:
//! why a cut path and a peer that merely does not read must be told apart,
//! and how, reads best in one place.

use super::{PeerEvent, Peers, Side};
use crate::raft::NodeId;
use log::info;
use mio::net::TcpStream;
use mio::{Registry, Token};
use std::time::{Duration, Instant};

/// The least time an outbound connection may go without an acknowledgement
/// while it retransmits (or without finishing its connect) before it is
/// given up and redialed (see [`Peers::drop_cut_connections`]).
pub(super) const STALL_MIN_MS: u64 = 1000;
/// How often outbound connections are checked for a cut path.
const STALL_CHECK_EVERY: Duration = Duration::from_millis(200);

impl Peers {
    /// Gives up an outbound connection that retransmits without an
    /// acknowledgement, or does not finish its connect, for two election
    /// timeouts, at least [`STALL_MIN_MS`].
    pub fn with_election_timeout(mut self, election_timeout_ms: u64) -> Peers {
        self.stall_ms = election_timeout_ms.saturating_mul(2).max(STALL_MIN_MS);
        self
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
        self.note_lasting_dials(now);
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
            if let Some(pc) = self.conns.get(&token) {
                discard_unsent_on_close(&pc.conn.stream);
            }
            self.close(token, registry, &reason, events);
        }
    }
}

impl Peers {
    /// The peer an inbound connection's handshake named, once it has.
    pub(super) fn inbound_peer(&self, token: Token) -> Option<NodeId> {
        match self.conns.get(&token)?.side {
            Side::Inbound { peer } => peer,
            Side::Outbound { .. } => None,
        }
    }

    /// Whether `id` has a connection to us accepted after `token` and
    /// already identified: the peer dials in order and closes one before
    /// it dials the next, so `token` is one it gave up, whose handshake
    /// its kernel delivered late (a partition healed), and whatever
    /// follows the handshake is as stale as what
    /// `close_superseded_inbound` keeps out. Closed before a frame behind
    /// the handshake is read (or its addresses learned).
    pub(super) fn superseded_inbound(&self, token: Token, id: NodeId) -> bool {
        let Some(opened) = self.conns.get(&token).map(|pc| pc.opened) else {
            return false;
        };
        self.conns.iter().any(|(other, pc)| {
            *other != token
                && pc.opened > opened
                && matches!(pc.side, Side::Inbound { peer: Some(p) } if p == id)
        })
    }

    /// `token` has just said which peer it is from: closes that peer's
    /// connections to us accepted before it. A peer sends on one connection
    /// at a time and dials anew only after closing the last one, so an older
    /// one is dead or given up (`drop_cut_connections` on its side). Left
    /// open, a given-up one still took what the peer's kernel retransmitted
    /// after a partition healed, at TCP's backoff: once, a write a follower
    /// forwarded, and answered `-TIMEOUT` itself 0.8 s later, reached the
    /// leader and was applied 26 s after it was sent, with the cluster quiet
    /// by then. Closed, such bytes meet a reset. One accepted before the
    /// newest but identified after it is closed instead
    /// (`superseded_inbound`).
    pub(super) fn close_superseded_inbound(&mut self, token: Token, registry: &Registry) {
        let Some(id) = self.inbound_peer(token) else {
            return;
        };
        let Some(opened) = self.conns.get(&token).map(|pc| pc.opened) else {
            return;
        };
        let older: Vec<Token> = self
            .conns
            .iter()
            .filter(|(other, pc)| {
                **other != token
                    && pc.opened < opened
                    && matches!(pc.side, Side::Inbound { peer: Some(p) } if p == id)
            })
            .map(|(other, _)| *other)
            .collect();
        for other in older {
            if let Some(mut pc) = self.conns.remove(&other) {
                let _ = registry.deregister(&mut pc.conn.stream);
                info!("closed node {id}'s older connection to us: it dialed a newer one");
            }
        }
    }
}

/// Whether TCP has retransmitted `stream`'s bytes at least twice on timeout
/// and received no acknowledgement for `stall` (`TCP_INFO`). A full window
/// does not count: its probes are answered and are not retransmissions.
/// The kernel counts from the last acknowledgement of any kind, so on a
/// connection that was idle before its unanswered bytes (one used only for
/// votes) the two retransmissions, about 0.6 s, are all it waits: a cut path
/// is redialed sooner there, which costs one redial at worst.
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

/// Has closing `stream` reset the connection and drop what its kernel still
/// holds unsent or unacknowledged. A plain close leaves the socket to the
/// kernel, which goes on retransmitting those bytes at its backoff and
/// delivers them whenever the path heals: a write a follower forwarded
/// there, and answered `-TIMEOUT` itself, reached the leader 26 s later and
/// was applied then. The receiver closes such a connection once our newer
/// one says who it is (`close_superseded_inbound`), but bytes that arrived
/// before that handshake were still taken. Given up, the bytes are gone, and
/// what they carried is what the deadlines already treat as lost.
fn discard_unsent_on_close(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket this function borrows, from a
        // linger that lives through the call, with its size.
        let set = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if set != 0 {
            info!(
                "could not set a reset on close for a cut peer connection: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::peers::tests::{node_1_knowing, poll_once};
    use mio::Poll;
    use std::net::TcpListener;

    /// Node 1, its connection to node 2 (`listener`) up as `Token(30)`,
    /// giving up cut paths after the least stall time.
    fn connected_to_2(listener: &TcpListener) -> (Peers, Poll, Vec<PeerEvent>) {
        let addr = listener.local_addr().expect("addr").to_string();
        let mut poll = Poll::new().expect("poll");
        let mut peers = node_1_knowing(&[(2, &addr)]).with_election_timeout(100);
        peers.connect(2, poll.registry(), Token(30));
        let mut events = Vec::new();
        let start = Instant::now();
        while !peers.is_connected(2) {
            assert!(start.elapsed() < Duration::from_secs(10), "never connected");
            poll_once(&mut peers, &mut poll, &mut events);
        }
        (peers, poll, events)
    }

    /// Has `drop_cut_connections` take `Token(30)` for a connect that never
    /// finished: the check of a path cannot be made to fail on loopback,
    /// and both kinds of cut are given up by the same code.
    fn pretend_unfinished(peers: &mut Peers) {
        peers.conns.get_mut(&Token(30)).expect("conn").side = Side::Outbound {
            peer: 2,
            connected: false,
        };
    }

    /// An outbound connection whose connect does not finish within the
    /// stall time is closed and redialed; one that is up and idle is kept.
    #[test]
    fn a_connect_that_does_not_finish_is_given_up_and_an_idle_connection_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut peers, poll, mut events) = connected_to_2(&listener);
        assert_eq!(peers.stall_ms, STALL_MIN_MS);
        let later = Instant::now() + Duration::from_secs(5);
        peers.drop_cut_connections(later, poll.registry(), &mut events);
        assert!(peers.owns(Token(30)), "an idle connection is no cut path");
        pretend_unfinished(&mut peers);
        peers.reconnects.clear();
        peers.drop_cut_connections(later + STALL_CHECK_EVERY, poll.registry(), &mut events);
        assert!(!peers.owns(Token(30)));
        assert_eq!(peers.reconnects.len(), 1, "redialed");
    }

    /// A connection given up as cut takes its unsent bytes with it: the far
    /// end gets a reset, not the bytes followed by an orderly end, which a
    /// healed path would deliver late (see `discard_unsent_on_close`).
    #[test]
    fn a_connection_given_up_as_cut_is_reset_with_its_unsent_bytes_dropped() {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut peers, poll, mut events) = connected_to_2(&listener);
        // More queued than the sockets hold: the kernel keeps the rest of
        // what it took, as it would the bytes a cut path does not carry.
        let pc = peers.conns.get_mut(&Token(30)).expect("the connection");
        pc.conn.output().extend_from_slice(&vec![0u8; 32 << 20]);
        let _ = pc.conn.flush();
        assert!(pc.conn.pending_output() > 0, "all of it was written");
        let (mut far, _) = listener.accept().expect("accept");
        pretend_unfinished(&mut peers);
        let later = Instant::now() + Duration::from_secs(5);
        peers.drop_cut_connections(later, poll.registry(), &mut events);
        assert!(!peers.owns(Token(30)), "not given up");
        far.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0usize;
        let end = loop {
            match far.read(&mut buf) {
                Ok(0) => break Ok(read),
                Ok(n) => read += n,
                Err(err) => break Err(err.kind()),
            }
        };
        assert_eq!(
            end,
            Err(std::io::ErrorKind::ConnectionReset),
            "the far end read the bytes the kernel held to the end"
        );
    }
}
