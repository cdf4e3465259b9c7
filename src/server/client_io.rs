//! The client side of the event loop: accepting connections, reading and
//! handling their requests (holding one behind the connection's unanswered
//! membership changes, see `Client::held`), and writing their replies, one
//! write per connection per iteration.

use super::clients::Client;
use super::clock::unix_millis;
use super::conn::{Conn, Fill};
use super::event_loop::{after_accept_error, AfterAcceptError, Server};
use crate::kv::Reply;
use crate::wire::resp::ProtocolError;
use log::{debug, warn};
use mio::{Interest, Token};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";
/// Request bytes one client is read for at a time. Bounds the work one
/// pipelining client puts into a loop iteration: 100 MB of large SETs read
/// at once took the leader's loop 0.4 s, long enough for its followers to
/// stop hearing it and elect another leader.
const READ_BUDGET: usize = 4 << 20;
/// Request bytes read from all clients together, and reply bytes the
/// requests handled are expected to answer, per loop iteration; once it is
/// spent, the clients with more to read wait for the next iteration, where
/// they go first. [`READ_BUDGET`] bounds one client's share, not the sum:
/// 40 clients each sending an 8 MB SET to a leader took its loop 1.3 s in one
/// iteration, which cost the cluster its leader.
const ITERATION_BUDGET: usize = 16 << 20;
/// The reply bytes that all clients' unanswered requests may be expected to
/// hold together (as much as one client may have, `MAX_PENDING_OUTPUT`):
/// past it, a client with replies still to come waits before it sends more.
/// Reads are answered in batches (a ReadIndex round), so a bound on each
/// iteration's requests alone lets the replies of many iterations be made in
/// one: 10 clients each pipelining `GET` of a 4 MB value without reading
/// their replies (64 MiB of replies each) took a leader's loop 1 s, which cost
/// the cluster its leader.
const MAX_UNANSWERED_BYTES: usize = 64 << 20;
/// Bytes read and dropped from a client after its last reply before the
/// connection is closed anyway (see [`Server::linger`]).
const LINGER_BYTES: usize = 256 << 20;
/// How long a client has to close after its last reply before the
/// connection is closed anyway: time to send the rest of a request too large
/// to take (at `LINGER_BYTES`) and read the error, without keeping a client
/// that never closes.
const LINGER_TIME: Duration = Duration::from_secs(10);

/// [`Server::over_client_budget`], from the figures it reads, for a caller
/// that holds the client mutably (one map lookup per request, not two).
fn over_budget(spent: usize, unanswered: usize, client: &Client) -> bool {
    spent >= ITERATION_BUDGET || (unanswered >= MAX_UNANSWERED_BYTES && client.awaits_replies())
}

impl Server {
    /// Starts a loop iteration's budget for client work, and resumes first
    /// the clients that stopped for lack of it, in the order they stopped.
    pub(super) fn start_client_budget(&mut self) {
        self.iteration_client_bytes = 0;
        if self.handing_over() {
            return;
        }
        let waiting = std::mem::take(&mut self.over_budget);
        let mut still = VecDeque::new();
        for token in waiting {
            let Some(client) = self.clients.get(&token) else {
                continue;
            };
            if self.over_client_budget(client) {
                still.push_back(token);
                continue;
            }
            if let Some(client) = self.clients.get_mut(&token) {
                client.over_budget = false;
                // A request it read meanwhile (when another client's replies
                // went away, say) may be held: it stays paused, for
                // `flush_clients` to serve the held request once the replies
                // before it come, as it does for any held request.
                if !client.is_holding() {
                    client.read_paused = false;
                }
            }
            self.read_client(token);
        }
        // Those stopped again just now go after those not reached.
        still.append(&mut self.over_budget);
        self.over_budget = still;
    }

    /// Whether `client` must wait before its next request is read or
    /// handled: the iteration's budget is spent, or it has replies to come
    /// while all clients' unanswered requests expect the most they may.
    fn over_client_budget(&self, client: &Client) -> bool {
        let unanswered = self.unanswered_reply_bytes.load(Ordering::Relaxed);
        over_budget(self.iteration_client_bytes, unanswered, client)
    }

    /// Whether a client waiting for the budget could go on in the next
    /// iteration.
    pub(super) fn over_budget_resumable(&self) -> bool {
        let full = self.unanswered_reply_bytes.load(Ordering::Relaxed) >= MAX_UNANSWERED_BYTES;
        self.over_budget.iter().any(|token| {
            self.clients
                .get(token)
                .is_some_and(|client| !(full && client.awaits_replies()))
        })
    }

    /// Stops reading from a client until the budget allows.
    fn pause_over_budget(&mut self, token: Token) {
        if let Some(client) = self.clients.get_mut(&token) {
            client.read_paused = true;
            if !client.over_budget {
                client.over_budget = true;
                self.over_budget.push_back(token);
            }
        }
    }

    pub(super) fn accept_clients(&mut self) {
        loop {
            // Closed by a stopping leader; a retry timer may still fire.
            let Some(listener) = self.client_listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    self.accept_failures[0] = 0;
                    if self.clients.len() >= self.max_clients {
                        // Best effort, as Redis: the socket's buffer is empty.
                        let _ = io::Write::write(&mut stream, MAX_CLIENTS_REACHED);
                        debug!("refused client {}: max number of clients reached", addr);
                        continue;
                    }
                    let token = self.take_token();
                    if let Err(err) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!("cannot register client {}: {}", addr, err);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let id = self.next_client_id;
                    self.next_client_id += 1;
                    let authenticated = self.config.requirepass.is_none();
                    let max = self.config.max_request_bytes as usize;
                    let mut client = Client::new(Conn::new(stream), id, max, authenticated);
                    client.count_unanswered_in(Arc::clone(&self.unanswered_reply_bytes));
                    self.clients.insert(token, client);
                    debug!("client {} connected from {}", id, addr);
                }
                Err(err) => match after_accept_error(&err) {
                    AfterAcceptError::Stop => return,
                    AfterAcceptError::Next => debug!("accept on the client port: {}", err),
                    AfterAcceptError::Retry => return self.accept_failed(false, &err),
                },
            }
        }
    }

    /// Reads and handles requests until the socket is drained, the client
    /// asked to close, it has too many replies outstanding, a request waits
    /// behind its unanswered membership changes (see `Client::held`), or this
    /// call has read [`READ_BUDGET`] bytes; the rest waits for the next
    /// iteration.
    pub(super) fn read_client(&mut self, token: Token) {
        // A stopping node takes no new request: one read now could get no
        // answer before the node goes.
        if self.stopping() {
            return;
        }
        if self
            .clients
            .get(&token)
            .is_some_and(|c| c.lingering.is_some())
        {
            return self.linger(token);
        }
        // Requests left in the buffer when the client became backlogged
        // are served before anything more is read: reading on meanwhile
        // would buffer input the node cannot take yet.
        self.handle_input(token);
        let mut read = 0;
        loop {
            let unanswered = self.unanswered_reply_bytes.load(Ordering::Relaxed);
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            let over_budget = over_budget(self.iteration_client_bytes, unanswered, client);
            if client.close_after_replies || client.is_holding() {
                break;
            }
            if over_budget && !client.is_backlogged() {
                self.pause_over_budget(token);
                break;
            }
            if client.is_backlogged() || read >= READ_BUDGET {
                // Resumed by `flush_clients`, which marks it dirty again, so
                // the loop does not block while its input waits.
                client.read_paused = true;
                break;
            }
            let before = client.conn.input().len();
            let fill = match client.conn.fill() {
                Ok(fill) => fill,
                Err(err) => {
                    debug!("client {} read failed: {}", client.id, err);
                    self.close_client(token);
                    return;
                }
            };
            let got = client.conn.input().len() - before;
            read += got;
            self.iteration_client_bytes += got;
            if got > 0 {
                // The requests just read were sent after the loop's last
                // look at the clock, which can be a tick old or more: at
                // that time a read would find a key alive that its client
                // had seen pass its deadline, and a write would be stamped
                // with a time before it was sent.
                let now_ms = unix_millis();
                self.replica.set_wall_clock(now_ms);
                if let Some(client) = self.clients.get_mut(&token) {
                    client.info.note_read(now_ms);
                }
            }
            self.handle_input(token);
            match fill {
                Fill::Data => continue,
                Fill::Drained | Fill::WouldBlock => break,
                // Nothing is read while a request is held, so the requests
                // sent before the client shut its side are all served first.
                // Nor while backlogged with requests still buffered: the end
                // of the input is read again once they are served.
                Fill::Closed => {
                    if let Some(client) = self.clients.get_mut(&token) {
                        if client.has_output_backlog() {
                            client.read_paused = true;
                            break;
                        }
                        client.close_after_replies = true;
                        client.peer_closed = true;
                    }
                    break;
                }
            }
        }
        self.mark_dirty(token);
    }

    /// Handles the whole requests in the client's input buffer; a protocol
    /// error is answered and closes the connection after the replies.
    pub(super) fn handle_input(&mut self, token: Token) {
        if let Err(err) = self.handle_buffered_requests(token) {
            if let Some(client) = self.clients.get_mut(&token) {
                debug!("client {}: {}", client.id, err);
                client.reply_now(Reply::Error(err.to_string()));
                client.close_after_replies = true;
            }
        }
    }

    /// Handles, one by one, the whole requests in a client's input buffer,
    /// until one must wait behind the connection's unanswered membership
    /// changes.
    pub(super) fn handle_buffered_requests(&mut self, token: Token) -> Result<(), ProtocolError> {
        loop {
            // Nothing after a SHUTDOWN is taken, as nothing is read once a
            // signal stopped the node: what follows it in the buffer is
            // refused at exit (`refuse_unhandled_requests`).
            if self.stopping() {
                return Ok(());
            }
            let unanswered = self.unanswered_reply_bytes.load(Ordering::Relaxed);
            let Some(client) = self.clients.get_mut(&token) else {
                return Ok(());
            };
            let over_budget = over_budget(self.iteration_client_bytes, unanswered, client);
            if client.close_after_replies || client.is_holding() {
                return Ok(());
            }
            if over_budget && !client.has_output_backlog() {
                self.pause_over_budget(token);
                return Ok(());
            }
            if client.has_output_backlog() {
                // Checked before each request, not each read: one read of
                // `GET big` requests could otherwise answer a copy of the
                // value per request. The rest waits in the buffer, and
                // `flush_clients` resumes it.
                client.read_paused = true;
                return Ok(());
            }
            let Some((argv, used)) = client.parser.parse(client.conn.input())? else {
                return Ok(());
            };
            client.conn.consume(used);
            if client.must_wait(&argv) {
                client.hold(argv);
                client.read_paused = true;
                return Ok(());
            }
            let expected = client.unsent_reply_bytes();
            self.handle_request(token, &argv);
            if let Some(client) = self.clients.get_mut(&token) {
                self.iteration_client_bytes += client.unsent_reply_bytes().saturating_sub(expected);
                client.parser.recycle(argv);
            }
        }
    }

    /// Serves a held request once the barriers before it are answered, then the
    /// input after it, and reads on.
    pub(super) fn resume_held(&mut self, token: Token) {
        let Some(argv) = self.clients.get_mut(&token).and_then(Client::release_held) else {
            return;
        };
        self.handle_request(token, &argv);
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.parser.recycle(argv);
        self.handle_input(token);
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.is_holding() {
            // Held again behind later requests: the replies just made go
            // out now, not when those are answered.
            self.mark_dirty(token);
            return;
        }
        client.read_paused = false;
        self.read_client(token);
    }

    pub(super) fn mark_dirty(&mut self, token: Token) {
        self.dirty_clients.push(token);
    }

    /// Every reply is written. A client that has not closed its side may
    /// still be sending (the rest of a request too large to take, requests
    /// pipelined after QUIT); closing a socket with unread input sends a
    /// reset, which can destroy the error reply before the client reads it.
    /// So this side is shut, and what arrives is dropped until the client
    /// closes, up to [`LINGER_BYTES`].
    fn finish_client(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.peer_closed || client.lingering.is_some() {
            return self.close_client(token);
        }
        if client
            .conn
            .stream
            .shutdown(std::net::Shutdown::Write)
            .is_err()
        {
            return self.close_client(token);
        }
        client.lingering = Some(0);
        self.schedule_end_linger(token, LINGER_TIME);
        self.linger(token);
    }

    /// Reads and drops a lingering client's input until it closes, fails,
    /// or sent [`LINGER_BYTES`], or [`READ_BUDGET`] this iteration.
    fn linger(&mut self, token: Token) {
        let mut read = 0;
        while read < READ_BUDGET {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            let fill = client.conn.fill();
            let got = client.conn.input().len();
            client.conn.consume(got);
            read += got;
            let dropped = client.lingering.unwrap_or(0) + got;
            client.lingering = Some(dropped);
            match fill {
                Ok(Fill::Data | Fill::Drained | Fill::WouldBlock) if dropped >= LINGER_BYTES => {
                    debug!(
                        "client {} sent {} bytes after its last reply",
                        client.id, dropped
                    );
                    return self.close_client(token);
                }
                Ok(Fill::Data) => continue,
                Ok(Fill::Drained | Fill::WouldBlock) => return,
                Ok(Fill::Closed) | Err(_) => return self.close_client(token),
            }
        }
        // The budget is spent with input left: the next readiness event may
        // never come for bytes already queued, so read on next iteration.
        self.mark_dirty(token);
    }

    pub(super) fn close_client(&mut self, token: Token) {
        if let Some(mut client) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(&mut client.conn.stream);
            // Nobody waits for these replies any more. Left in the maps, a
            // forward is dropped only when its reply comes, and the two ways
            // one is settled without a reply both need the client: its
            // deadline (`expire`) and, for a read, routing it again
            // (`settle_orphaned_forwards`). A reply that never comes (the
            // leader killed, or the connection carrying it cut) then kept
            // the entry, command and all, for the life of the node.
            for id in client.forward_ids() {
                self.forwards.remove(&id);
                self.cluster.forget_forward(id);
            }
            // Its parked requests likewise: dropped at the next dispatch,
            // which does not come while no leader is reachable.
            self.parked.forget(token);
            self.cluster.parked.forget(token);
            self.reads_held.remove(&token);
            debug!("client {} closed", client.id);
        }
    }

    pub(super) fn flush_clients(&mut self) {
        // A stopping node takes no more requests (`Server::stopping`), not
        // even one released from behind a barrier: routed now, it could only
        // be answered `-TIMEOUT` at exit, where it is refused `-TRYAGAIN`.
        let stopping = self.stopping();
        let mut dirty = std::mem::take(&mut self.dirty_clients);
        dirty.sort_unstable();
        dirty.dedup();
        for token in dirty {
            let Some(client) = self.clients.get_mut(&token) else {
                continue;
            };
            if client.lingering.is_some() {
                self.linger(token);
                continue;
            }
            client.encode_replies();
            if let Err(err) = client.conn.flush() {
                debug!("client {} write failed: {}", client.id, err);
                self.close_client(token);
                continue;
            }
            if client.finished() {
                self.finish_client(token);
            } else if client.read_paused
                && !client.is_backlogged()
                && !client.over_budget
                && !stopping
            {
                // Resumed clients may leave new work in `dirty_clients`; the
                // next poll does not wait for it (see `has_immediate_work`).
                if client.is_holding() {
                    self.resume_held(token);
                } else {
                    client.read_paused = false;
                    self.read_client(token);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "client_io_tests.rs"]
pub(super) mod tests;
