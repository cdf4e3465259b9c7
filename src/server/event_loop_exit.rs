//! What a node tells its clients just before it exits (SIGTERM or SIGINT,
//! once a stopping leader's handover ended, or at once on a follower).
//! Every request it took and has not answered gets, now, the answer its
//! deadline would have given (`Server::expire`). Left to the closed
//! connection, a client could not tell a write that was never applied, and
//! is safe to send again, from one that may have been.
//!
//! - Parked, so never appended here nor sent to another node (no leader, no
//!   connected quorum, held for the handover, past a dispatch budget, or
//!   behind its connection's earlier requests): `-TRYAGAIN no leader`, the
//!   promise that it was not and will not be applied.
//! - Appended here, or sent on to another node, and unanswered:
//!   `-TIMEOUT outcome unknown`, since the next leader may commit it.
//! - A read waiting for its ReadIndex round, or sent on: `-TRYAGAIN no
//!   leader`, since a read changes nothing.
//! - A `CLUSTER TRANSFER` under way: `-ERR transfer to N abandoned`, as at
//!   its deadline (it may still finish). The other CLUSTER commands are
//!   answered first (`Server::answer_own_cluster_commands`).
//! - The request held behind its connection's unanswered barriers, the
//!   whole requests left in its input buffer, and those still in its socket,
//!   never read (sent after a stopping leader stopped reading its clients at
//!   the start of its handover, or during the last iteration): never
//!   handled, so `-TRYAGAIN no leader` (a QUIT among them `+OK`, and nothing
//!   after it; a malformed or oversized one its protocol error, and nothing
//!   after it either).
//!
//! The replies keep each connection's order (its reply slots): a request
//! whose outcome is unknown is answered before those sent after it. Nothing
//! is taken or applied here: the loop has ended. The replies are written,
//! and the connections closed, by `event_loop_exit_linger.rs`.
//!
//! Known gaps, neither a broken promise: a reply the leader relayed that
//! waits for this node to apply its entry is delivered at exit without that
//! apply, so an EXEC whose queued INFO or DBSIZE runs on delivery reports
//! the state from before the entry; and a transfer waiter whose target
//! already leads, the outcome not yet processed, gets "abandoned", not `+OK`.

use super::Server;
use crate::kv::Reply;
use crate::replica::{reply_transfer_abandoned, Completion};
use crate::server::clients::Client;
use crate::server::conn::Fill;
use crate::server::requests::NO_LEADER;
use crate::wire::resp::{Argv, ProtocolError};
use log::debug;
use mio::Token;
use std::io;

/// The most request bytes read from one connection's socket at exit: more
/// than a socket's receive buffer holds with Linux's default `tcp_rmem`
/// (6 MiB at most), so in practice all of what a client had sent when the
/// node stopped, while one that keeps sending cannot keep it from exiting.
const EXIT_READ_BYTES: usize = 16 << 20;

impl Server {
    /// Answers every request of every client still waiting (see the module
    /// docs); the replies go out with the last `flush_clients` and the
    /// linger after it (`Server::linger_before_exit`).
    pub(super) fn answer_clients_before_exit(&mut self) {
        self.answer_own_cluster_commands();
        // Replies the leader relayed that wait only for this node to apply
        // what they committed: the real answer, not `-TIMEOUT`.
        let relayed = std::mem::take(&mut self.relayed_replies);
        self.completions
            .extend(relayed.into_iter().map(|(_, done)| done));
        for (target, waiter) in self.replica.take_transfer_waiters() {
            self.completions.push(Completion {
                waiter,
                reply: reply_transfer_abandoned(target),
            });
        }
        self.deliver_completions();
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            self.expire_waiting_requests(token);
            self.refuse_unhandled_requests(token);
            self.mark_dirty(token);
        }
    }

    /// Answers each request of the connection still waiting as its
    /// deadline would, oldest first.
    fn expire_waiting_requests(&mut self, token: Token) {
        let Some(client) = self.clients.get(&token) else {
            return;
        };
        let waiting: Vec<u64> = (client.first_seq()..client.next_seq())
            .filter(|&seq| client.pending(seq).is_some())
            .collect();
        for seq in waiting {
            self.expire(token, seq);
        }
    }

    /// Refuses the connection's requests it never handled: the one held
    /// behind its barriers (all answered by now), the whole ones still in its
    /// input buffer, then those its socket holds, never read (see
    /// [`next_unhandled`]), up to a QUIT, which is answered `+OK` as always:
    /// what follows it is never taken, as in `handle_buffered_requests`. A
    /// malformed or oversized request gets its protocol error, as it would
    /// have, and ends the connection too: what follows cannot be told apart.
    fn refuse_unhandled_requests(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let mut held = client.release_held();
        let mut socket = SocketReads::default();
        // After a QUIT or a protocol error, nothing more is taken.
        while !client.close_after_replies && client.lingering.is_none() {
            let argv = match held.take() {
                Some(argv) => argv,
                None => match next_unhandled(client, &mut socket) {
                    Unhandled::Request(argv) => argv,
                    Unhandled::Malformed(err) => {
                        client.reply_now(Reply::Error(err.to_string()));
                        client.close_after_replies = true;
                        break;
                    }
                    Unhandled::None => break,
                    Unhandled::ReadFailed(err) => {
                        debug!("client {} read failed at exit: {}", client.id, err);
                        return self.close_client(token);
                    }
                },
            };
            if argv
                .first()
                .is_some_and(|name| name.eq_ignore_ascii_case(b"quit"))
            {
                client.reply_now(Reply::Ok);
                client.close_after_replies = true;
            } else {
                client.reply_now(Reply::error(NO_LEADER));
            }
            client.parser.recycle(argv);
        }
    }
}

/// What [`next_unhandled`] found.
enum Unhandled {
    Request(Argv),
    Malformed(ProtocolError),
    /// No whole request left: the buffer holds at most the start of one,
    /// and the socket is empty, closed, or read up to [`EXIT_READ_BYTES`].
    None,
    ReadFailed(io::Error),
}

/// How far a connection's socket was read at exit.
#[derive(Default)]
struct SocketReads {
    bytes: usize,
    /// It held nothing more, or the client closed its side.
    drained: bool,
}

/// The next whole request in the connection's input buffer, reading its
/// socket for more while there is none: requests a client sent that the node
/// never read (after a stopping leader stopped reading, or in the last
/// iteration) are answered too, not left to the closing connection. Reading
/// stops once the socket holds nothing more (or after [`EXIT_READ_BYTES`]):
/// what arrives later is after the node's exit point, and gets no answer
/// (`event_loop_exit_linger.rs`).
fn next_unhandled(client: &mut Client, socket: &mut SocketReads) -> Unhandled {
    loop {
        match client.parser.parse(client.conn.input()) {
            Ok(Some((argv, used))) => {
                client.conn.consume(used);
                return Unhandled::Request(argv);
            }
            Ok(None) => {}
            Err(err) => return Unhandled::Malformed(err),
        }
        if socket.drained || socket.bytes >= EXIT_READ_BYTES {
            return Unhandled::None;
        }
        let before = client.conn.input().len();
        let fill = match client.conn.fill() {
            Ok(fill) => fill,
            Err(err) => return Unhandled::ReadFailed(err),
        };
        socket.bytes += client.conn.input().len() - before;
        match fill {
            Fill::Data => {}
            Fill::Drained | Fill::WouldBlock => socket.drained = true,
            Fill::Closed => {
                socket.drained = true;
                client.close_after_replies = true;
                client.peer_closed = true;
            }
        }
    }
}

#[cfg(test)]
#[path = "event_loop_exit_tests.rs"]
mod tests;
