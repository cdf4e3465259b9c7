//! The last thing a node does before it exits, after its last answers
//! (`event_loop_exit.rs`), its last words to its peers and its final sync:
//! it gets its clients' replies to them. One write sends only what fits in
//! the socket's buffers, and a client not reading at that moment (busy, or
//! pipelining before it reads) would lose the rest; and Linux answers the
//! close of a socket with unread input with a reset, which destroys what it
//! has not transmitted yet and can reach the client before the replies it
//! did. So for at most [`EXIT_LINGER`] the node goes on writing each
//! client's unsent replies as it reads them, using the loop's poll (no
//! thread), then shuts its side of the connection (FIN), so the client reads
//! every reply and then the end of the connection, not a reset.
//!
//! What a client sends meanwhile is read and dropped, never answered: it
//! came after the node's exit point (its requests are neither taken nor
//! applied; the loop has ended and the final sync is done, so nothing here
//! can delay it). A connection is closed once the client has acknowledged
//! every byte and the FIN (the kernel's send queue is empty: nothing is left
//! to lose), or has closed its side, or failed. Both listeners are closed
//! first: a client or peer that connects now is refused, rather than
//! accepted by the kernel into a queue nobody reads and reset at exit.
//!
//! The bound: a client that reads at all takes megabytes of replies within
//! milliseconds; one that does not read for a second keeps what its buffers
//! hold. It keeps a stopping leader's exit within the 2 s bound of its
//! handover (`MAX_HANDOFF`) plus one, under the 4 s `--local-cluster` gives
//! its children after it asks them to stop (SPEC: gone within 5 s). A
//! second stop request ends it at once, as it does a handover.

use super::{Server, SIGNALS, WAKER};
use crate::server::clients::Client;
use crate::server::conn::Fill;
use log::{debug, info, warn};
use mio::{Events, Token};
use std::time::{Duration, Instant};

/// The longest a node spends getting its clients their last replies.
pub(super) const EXIT_LINGER: Duration = Duration::from_secs(1);
/// How soon a connection whose replies are all written, and its side shut,
/// is looked at again for the client's acknowledgement of them, which
/// raises no readiness event.
const ACK_CHECK: Duration = Duration::from_millis(5);
/// Bytes read and dropped from one client per pass, so one that keeps
/// sending does not hold up the others' writes.
const DROP_PER_PASS: usize = 1 << 20;

/// Where one client's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Linger {
    /// Every reply acknowledged, the client gone, or the connection failed:
    /// to close.
    Done,
    /// Replies still to write: waits until the socket takes more.
    Writing,
    /// All written and this side shut: waits for the client to acknowledge.
    Unacknowledged,
    /// The client sent more than one pass drops: there is more to read now.
    Sending,
}

impl Server {
    /// Writes the clients' replies still unsent and closes their
    /// connections (see the module docs).
    pub(super) fn linger_before_exit(&mut self) {
        self.close_listeners();
        let until = Instant::now() + EXIT_LINGER;
        let mut events = Events::with_capacity(256);
        loop {
            let mut wait = until.saturating_duration_since(Instant::now());
            let tokens: Vec<Token> = self.clients.keys().copied().collect();
            for token in tokens {
                match self.linger_pass(token) {
                    Linger::Done => self.close_client(token),
                    Linger::Writing => {}
                    Linger::Unacknowledged => wait = wait.min(ACK_CHECK),
                    Linger::Sending => wait = Duration::ZERO,
                }
            }
            if self.clients.is_empty() {
                return;
            }
            if Instant::now() >= until {
                debug!(
                    "{} clients still unanswered or unacknowledged at exit",
                    self.clients.len()
                );
                return;
            }
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    warn!("poll failed while writing the last replies: {}", err);
                    return;
                }
            }
            if events
                .iter()
                .any(|event| self.asked_to_stop_again(event.token()))
            {
                info!("asked to stop again while writing the last replies; stopping now");
                return;
            }
        }
    }

    /// Closes the client and raft listeners.
    fn close_listeners(&mut self) {
        self.stop_taking_clients();
        if let Some(mut listener) = self.raft_listener.take() {
            if let Err(err) = self.poll.registry().deregister(&mut listener) {
                warn!("cannot deregister the raft listener: {}", err);
            }
        }
    }

    /// Whether the event on `token` is a further stop request.
    fn asked_to_stop_again(&mut self, token: Token) -> bool {
        match token {
            SIGNALS => self
                .signals
                .as_mut()
                .is_some_and(|signals| signals.pending().next().is_some()),
            WAKER => self
                .stop_channel
                .as_ref()
                .is_some_and(|channel| channel.try_recv().is_ok()),
            _ => false,
        }
    }

    /// Writes what the client's socket takes, drops what it sent, and shuts
    /// this side once all is written.
    fn linger_pass(&mut self, token: Token) -> Linger {
        let Some(client) = self.clients.get_mut(&token) else {
            return Linger::Done;
        };
        // Answered at exit: every reply is there to encode.
        client.encode_replies();
        if let Err(err) = client.conn.flush() {
            debug!("client {} write failed at exit: {}", client.id, err);
            return Linger::Done;
        }
        let sending = match drop_input(client) {
            Ok(sending) => sending,
            Err(err) => {
                debug!("client {} read failed at exit: {}", client.id, err);
                return Linger::Done;
            }
        };
        let state = if client.conn.pending_output() > 0 {
            Linger::Writing
        } else {
            if client.lingering.is_none() {
                if let Err(err) = client.conn.stream.shutdown(std::net::Shutdown::Write) {
                    debug!("client {} shutdown failed at exit: {}", client.id, err);
                    return Linger::Done;
                }
                client.lingering = Some(0);
            }
            if client.peer_closed || unacknowledged_bytes(&client.conn.stream) == 0 {
                return Linger::Done;
            }
            Linger::Unacknowledged
        };
        if sending {
            Linger::Sending
        } else {
            state
        }
    }
}

/// Reads and drops what the client sent, up to [`DROP_PER_PASS`]: whether
/// it may have more to read now. What its input buffer holds goes too (the
/// start of a request, or requests after a QUIT): none of it is taken.
fn drop_input(client: &mut Client) -> std::io::Result<bool> {
    let mut dropped = 0;
    loop {
        let got = client.conn.input().len();
        client.conn.consume(got);
        dropped += got;
        if client.peer_closed {
            return Ok(false);
        }
        if dropped >= DROP_PER_PASS {
            return Ok(true);
        }
        match client.conn.fill()? {
            Fill::Data => {}
            Fill::Drained | Fill::WouldBlock => {
                let got = client.conn.input().len();
                client.conn.consume(got);
                return Ok(false);
            }
            Fill::Closed => client.peer_closed = true,
        }
    }
}

/// The bytes written to `stream` (its FIN included) that the other end has
/// not acknowledged yet: once none, closing it loses nothing, whatever
/// arrives after.
fn unacknowledged_bytes(stream: &mio::net::TcpStream) -> usize {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut queued: libc::c_int = 0;
        // SAFETY: ioctl(TIOCOUTQ) on a socket this function borrows, into an
        // int living through the call.
        let got = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if got == 0 {
            usize::try_from(queued).unwrap_or(0)
        } else {
            0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        0
    }
}

#[cfg(test)]
#[path = "event_loop_exit_linger_tests.rs"]
mod tests;
