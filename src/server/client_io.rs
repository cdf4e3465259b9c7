//! The client side of the event loop: accepting connections, reading and
//! handling their requests (holding one behind the connection's unanswered
//! membership changes, see `Client::held`), and writing their replies, one
//! write per connection per iteration.

use super::clients::Client;
use super::clock::unix_millis;
use super::conn::{Conn, Fill};
use super::event_loop::Server;
use crate::kv::Reply;
use crate::wire::resp::ProtocolError;
use log::{debug, warn};
use mio::{Interest, Token};
use std::io;
use std::time::Duration;

const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";
/// Request bytes one client is read for at a time. Bounds the work one
/// pipelining client puts into a loop iteration: 100 MB of large SETs read
/// at once took the leader's loop 0.4 s, long enough for its followers to
/// stop hearing it and elect another leader.
const READ_BUDGET: usize = 4 << 20;
/// Bytes read and dropped from a client after its last reply before the
/// connection is closed anyway (see [`Server::linger`]).
const LINGER_BYTES: usize = 256 << 20;
/// How long a client has to close after its last reply before the
/// connection is closed anyway: time to send the rest of a request too large
/// to take (at `LINGER_BYTES`) and read the error, without keeping a client
/// that never closes.
const LINGER_TIME: Duration = Duration::from_secs(10);

impl Server {
    pub(super) fn accept_clients(&mut self) {
        loop {
            match self.client_listener.accept() {
                Ok((mut stream, addr)) => {
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
                    let client = Client::new(Conn::new(stream), id, max, authenticated);
                    self.clients.insert(token, client);
                    debug!("client {} connected from {}", id, addr);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    warn!("accept on the client port failed: {}", err);
                    return;
                }
            }
        }
    }

    /// Reads and handles requests until the socket is drained, the client
    /// asked to close, it has too many replies outstanding, a request waits
    /// behind its unanswered membership changes (see `Client::held`), or this
    /// call has read [`READ_BUDGET`] bytes; the rest waits for the next
    /// iteration.
    pub(super) fn read_client(&mut self, token: Token) {
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
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            if client.close_after_replies || client.is_holding() {
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
            if got > 0 {
                // The requests just read were sent after the loop's last
                // look at the clock, which can be a tick old or more: at
                // that time a read would find a key alive that its client
                // had seen pass its deadline, and a write would be stamped
                // with a time before it was sent.
                self.replica.set_wall_clock(unix_millis());
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
            let Some(client) = self.clients.get_mut(&token) else {
                return Ok(());
            };
            if client.close_after_replies || client.is_holding() {
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
            self.handle_request(token, &argv);
            if let Some(client) = self.clients.get_mut(&token) {
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
            debug!("client {} closed", client.id);
        }
    }

    pub(super) fn flush_clients(&mut self) {
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
            } else if client.read_paused && !client.is_backlogged() {
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
