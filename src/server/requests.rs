//! What the node does with each client request: connection commands are
//! answered by this node (those that report its data once the connection's
//! earlier replies are in); key-value commands go to the core when this node
//! leads, to the leader over the peer link when it follows, or wait (parked)
//! until a leader is known, for at most `election_timeout_ms * 4`.
//! Requests other nodes forward here, and the replies relayed for ours, are
//! in `requests_forwarded.rs`; parked ones routed again in
//! `requests_rerouting.rs`.

use super::clients::{Kind, Pending};
use super::cluster::{Standing, PAYLOAD_KV};
use super::connection::{
    command_name, error, is_local, precheck, request_error, served_when_not_a_member,
};
use super::event_loop::{Forwarded, Server, Waiter};
use super::transactions::LocalCommand;
use crate::kv::{Command, KvStore, Reply, MAX_REPLY_VALUE_BYTES};
use crate::replica::{reply_transfer_abandoned, Refused};
use crate::wire::peer_msg::PeerMessage;
use mio::Token;

#[path = "requests_forwarded.rs"]
mod forwarded;
#[path = "requests_rerouting.rs"]
mod rerouting;

const NOAUTH: &str = "NOAUTH Authentication required.";
/// What a request that found no leader, or no quorum, gets at its deadline
/// (SPEC's wording for both).
pub(super) const NO_LEADER: &str = "TRYAGAIN no leader";
/// What a request gets when it came back from where it was sent and cannot
/// go again, since a request its connection sent after it was answered
/// (`dispatch_parked`); also what a leader tells the follower whose read it
/// dropped when it stopped leading.
pub(in crate::server) const READ_DROPPED: &str = "TRYAGAIN leader changed";

/// Whether a request only reads the map (GET, MGET or EXISTS outside a
/// MULTI), so it need not wait behind its connection's unanswered barriers.
pub(super) fn only_reads(argv: &[Vec<u8>], in_multi: bool) -> bool {
    !in_multi
        && argv
            .first()
            .is_some_and(|name| matches!(command_name(name).as_str(), "get" | "mget" | "exists"))
}

/// About the bytes `command` holds in this node until it is answered: the
/// values its reply will carry, judged from this node's map now (a
/// follower's may lag a little: it is an estimate for backpressure, see
/// `clients::MAX_PENDING_OUTPUT`), and the values a write carries, held
/// while it waits for a leader or its commit. KEYS, and SCAN with a large
/// COUNT, are taken to answer with the whole map. Each value read may also
/// hold what the connection's unanswered writes put in it, `written` in all
/// (see `Client::expect_written_bytes`).
fn expected_reply_bytes(kv: &KvStore, command: &Command, written: usize) -> usize {
    let value = |key: &[u8]| kv.get(key).map_or(0, <[u8]>::len).saturating_add(written);
    let pairs = |pairs: &[(Vec<u8>, Vec<u8>)]| -> usize {
        pairs
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .fold(0, usize::saturating_add)
    };
    let bytes = match command {
        Command::Get(key) | Command::GetDel(key) | Command::GetEx(key, _) => value(key),
        Command::GetRange(key, ..) => value(key),
        Command::Set(key, carried) | Command::Append(key, carried) => key.len() + carried.len(),
        Command::SetWith(key, carried, options) => {
            let old = if options.get { value(key) } else { 0 };
            (key.len() + carried.len()).saturating_add(old)
        }
        Command::MSet(carried) | Command::MSetNx(carried) => pairs(carried),
        Command::MGet(keys) => keys
            .iter()
            .map(|key| value(key))
            .fold(0, usize::saturating_add),
        Command::Keys(_) => kv.approx_bytes().saturating_add(written),
        Command::Scan(_) if command.reads_many_keys() => kv.approx_bytes().saturating_add(written),
        Command::Multi(commands) => commands
            .iter()
            .map(|command| expected_reply_bytes(kv, command, written))
            .fold(0, usize::saturating_add),
        _ => 0,
    };
    bytes.min(MAX_REPLY_VALUE_BYTES)
}

/// About the value bytes `command` may leave in keys once applied, for the
/// reads its connection pipelined after it (see `expected_reply_bytes`).
fn written_bytes(kv: &KvStore, command: &Command) -> usize {
    match command {
        Command::Set(_, value) | Command::SetWith(_, value, _) | Command::Append(_, value) => {
            value.len()
        }
        Command::MSet(pairs) | Command::MSetNx(pairs) => {
            pairs.iter().map(|(_, value)| value.len()).sum()
        }
        Command::Rename(from, ..) => kv.get(from).map_or(0, <[u8]>::len),
        Command::Multi(commands) => commands
            .iter()
            .map(|command| written_bytes(kv, command))
            .fold(0, usize::saturating_add),
        _ => 0,
    }
}

/// Whether a slot holds a write in flight: answered, or parked again, it no
/// longer holds back the connection's reads forwarded to a node that
/// stopped leading (`Server::recheck_held_reads_of`).
fn is_write_in_flight(pending: Option<Pending>) -> bool {
    matches!(pending, Some(Pending::InFlight { write: true, .. }))
}

fn is_tryagain(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(text) if text.starts_with("TRYAGAIN"))
}

impl Server {
    pub(super) fn handle_request(&mut self, token: Token, argv: &[Vec<u8>]) {
        let Some(first) = argv.first() else {
            return;
        };
        let name = command_name(first);
        let name = name.as_str();
        self.commands_processed += 1;
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.info.note_command(name, argv);
        if !client.authenticated && !matches!(name, "auth" | "hello" | "quit") {
            // As Redis: an unknown command or a wrong number of arguments is
            // reported before the missing AUTH.
            let reply = request_error(name, argv).unwrap_or_else(|| error(NOAUTH));
            self.refuse(token, name, reply);
            return;
        }
        let in_multi = client.multi.is_some();
        if let Some(reply) = precheck(name, argv) {
            self.refuse(token, name, reply);
            return;
        }
        if self.cluster.standing != Standing::Member
            && (matches!(name, "multi" | "exec" | "discard" | "watch")
                || (is_local(name) && !served_when_not_a_member(name)))
        {
            // Not connection commands (SPEC §3): a node that is not a member
            // serves none of them, and a transaction begun before it was
            // removed ends here. Key-value and CLUSTER commands are refused
            // where they are routed.
            if let Some(reply) = self.cluster.refusal() {
                if let Some(client) = self.clients.get_mut(&token) {
                    client.multi = None;
                    client.reply_now(reply);
                }
                return;
            }
        }
        if in_multi
            && (matches!(name, "cluster" | "shutdown") || (name == "hello" && argv.len() > 1))
        {
            // A membership change cannot be part of a transaction's log
            // entry. A HELLO that names a protocol would switch it only when
            // EXEC's entry is applied, after the replies to the requests
            // pipelined behind EXEC were already framed in the old one.
            // SHUTDOWN Redis refuses there too (it is a `no-multi` command).
            // This is Redis's answer to a command it will not queue.
            let reply = error("ERR Command not allowed inside a transaction");
            self.refuse(token, name, reply);
            return;
        }
        if in_multi && !matches!(name, "exec" | "discard" | "multi" | "watch" | "quit") {
            self.queue_in_multi(token, name, argv);
            return;
        }
        if let Some(reply) = self.local_command(token, name, argv) {
            if let Some(client) = self.clients.get_mut(&token) {
                client.reply_now(reply);
            }
            return;
        }
        let reply = match name {
            "quit" => {
                if let Some(client) = self.clients.get_mut(&token) {
                    client.close_after_replies = true;
                }
                Some(Reply::Ok)
            }
            "multi" => Some(self.multi(token)),
            "exec" => self.exec(token),
            "discard" => Some(self.discard(token)),
            "watch" => Some(error("ERR WATCH is not supported")),
            "cluster" => self.cluster_command(token, argv),
            "shutdown" => self.shutdown_command(token, argv),
            "set" if argv.len() == 3 && self.replica.is_leader() => {
                self.submit_set(token, &argv[1], &argv[2]);
                None
            }
            _ => match Command::parse(argv) {
                Ok(command) => {
                    self.submit(token, command);
                    None
                }
                Err(err) => Some(Reply::Error(err.to_string())),
            },
        };
        if let (Some(reply), Some(client)) = (reply, self.clients.get_mut(&token)) {
            client.reply_now(reply);
        }
    }

    /// The connection commands: answered by this node at once, in every
    /// state, and queued like any other command inside MULTI. `None` for
    /// anything else.
    /// A key-value command from a client: open its reply slot, then route it.
    fn submit(&mut self, token: Token, command: Command) {
        self.submit_exec(token, command, Vec::new());
    }

    /// [`Server::submit`] for EXEC's entry: `locals`, the connection commands
    /// queued with it by place, run when its reply comes (see `transactions`).
    pub(super) fn submit_exec(
        &mut self,
        token: Token,
        command: Command,
        locals: Vec<LocalCommand>,
    ) {
        // The connection commands queued with EXEC run when its reply comes:
        // the connection's later requests wait until then, so that an INFO
        // there does not count later writes, nor a CLIENT GETNAME after it
        // miss a CLIENT SETNAME there.
        let write = command.is_write();
        let kind = if !locals.is_empty() {
            if write {
                Kind::WriteBarrier
            } else {
                Kind::Barrier
            }
        } else if write {
            Kind::Write
        } else {
            Kind::Read
        };
        let written = if write {
            written_bytes(self.replica.kv(), &command)
        } else {
            0
        };
        let Some(seq) = self.open_request(token, kind, written) else {
            return;
        };
        if let Some(client) = self.clients.get_mut(&token) {
            // A client with no other reply to come holds at most this one,
            // which a reply's own limit bounds: the lookup is for pipelines
            // (and costs a GET-bound leader a few percent).
            if client.first_seq() < seq {
                // Its own write counts too: right for a transaction that
                // writes then reads a key, one value too many for SET ... GET.
                let written = client.written_in_flight();
                let expected = expected_reply_bytes(self.replica.kv(), &command, written);
                client.expect_reply_bytes(seq, expected);
            }
            if !locals.is_empty() {
                client.await_locals(seq, locals);
            }
        }
        self.route(token, seq, command);
    }

    /// A plain `SET key value` on the leader, proposed straight from the
    /// request's words: no `Command` is built unless the proposal is refused
    /// and must be parked. Saves two allocations and copies per write.
    fn submit_set(&mut self, token: Token, key: &[u8], value: &[u8]) {
        let Some(seq) = self.open_request(token, Kind::Write, value.len()) else {
            return;
        };
        if !self.quorum_connected || self.must_park(token) {
            let command = Command::Set(key.to_vec(), value.to_vec());
            self.parked.push_back(token, seq, command);
            return;
        }
        match self
            .replica
            .propose_set(key, value, Waiter::Client { token, seq })
        {
            Ok(()) => self.set_pending(
                token,
                seq,
                Pending::InFlight {
                    write: true,
                    forward: None,
                },
            ),
            Err(_) => {
                let command = Command::Set(key.to_vec(), value.to_vec());
                self.parked.push_back(token, seq, command);
            }
        }
    }

    /// Opens a client's reply slot with a deadline and returns its sequence
    /// number; `None` if the client is gone or the cluster refuses requests
    /// now (that reply is already queued).
    /// `written`: the value bytes the request may write (see
    /// `Client::expect_written_bytes`), and holds until answered.
    fn open_request(&mut self, token: Token, kind: Kind, written: usize) -> Option<u64> {
        let refusal = self.cluster.refusal();
        let client = self.clients.get_mut(&token)?;
        if let Some(reply) = refusal {
            client.reply_now(reply);
            return None;
        }
        let seq = client.open_slot(Pending::Parked, kind);
        if written > 0 {
            client.expect_written_bytes(seq, written);
            // A pipeline's writes also count what they hold until answered
            // (a lone request is bounded by the request limit);
            // `submit_exec` refines this with the whole command.
            if client.first_seq() < seq {
                client.expect_reply_bytes(seq, written);
            }
        }
        self.schedule_deadline(token, seq);
        Some(seq)
    }

    /// Whether this node leads and may append client writes now: not while
    /// it hands the leadership over (parked writes wait for the outcome),
    /// nor while its connections to a majority of the voters are closed
    /// (followers that died or were shut down; a frozen one keeps its
    /// connection). A write appended then could not commit now, yet might
    /// once the followers return, so it could only be answered `-TIMEOUT
    /// outcome unknown`; parked instead (or, from a follower, held in
    /// `quorum_waits`), it is appended once the connections are back, or
    /// gets `-TRYAGAIN` at its deadline, never having been written (SPEC: no
    /// quorum is `-TRYAGAIN`).
    pub(super) fn takes_writes(&self) -> bool {
        self.replica.is_leader()
            && self.replica.node().transfer_target().is_none()
            && self.quorum_connected
    }

    /// Recomputes `quorum_connected`: once per iteration, not per write.
    pub(super) fn refresh_quorum_connected(&mut self) {
        let me = self.config.id;
        let voters = self.replica.node().voters();
        let connected = voters
            .iter()
            .filter(|&&id| id == me || self.peers.is_connected(id))
            .count();
        self.quorum_connected = connected > voters.len() / 2;
    }

    /// Sends a client request where it can be served now, or parks it.
    fn route(&mut self, token: Token, seq: u64, command: Command) {
        let write = command.is_write();
        let waiter = Waiter::Client { token, seq };
        let held_back = write && self.replica.is_leader() && !self.quorum_connected;
        if held_back || self.must_park(token) {
            self.parked.push_back(token, seq, command);
            return;
        }
        if self.replica.is_leader() {
            match self.propose_or_read(command, waiter) {
                Ok(()) => self.set_pending(
                    token,
                    seq,
                    Pending::InFlight {
                        write,
                        forward: None,
                    },
                ),
                Err(refused) => self.parked.push_back(token, seq, refused.command),
            }
            return;
        }
        let leader = self.replica.node().leader_id();
        if self.peers.is_connected(leader) {
            let id = self.next_forward_id;
            let mut payload = vec![PAYLOAD_KV];
            command.encode(&mut payload);
            if self
                .peers
                .send(leader, &PeerMessage::Forward { id, payload })
            {
                self.next_forward_id += 1;
                self.note_forward_sent(leader, id);
                self.forwards.insert(
                    id,
                    Forwarded {
                        token,
                        seq,
                        command,
                        leader,
                    },
                );
                if let Some(client) = self.clients.get_mut(&token) {
                    client.set_forwarded(seq, write, id, leader);
                }
                return;
            }
        }
        self.parked.push_back(token, seq, command);
    }

    fn propose_or_read(&mut self, command: Command, waiter: Waiter) -> Result<(), Refused<Waiter>> {
        if command.is_write() {
            self.replica.propose(command, waiter)
        } else {
            self.replica.read(command, waiter)
        }
    }

    pub(super) fn set_pending(&mut self, token: Token, seq: u64, pending: Pending) {
        if let Some(client) = self.clients.get_mut(&token) {
            client.set_pending(seq, pending);
        }
    }

    fn complete(&mut self, waiter: Waiter, reply: Reply) {
        match waiter {
            Waiter::Client { token, seq } => {
                let Some(client) = self.clients.get_mut(&token) else {
                    return;
                };
                let write_in_flight = is_write_in_flight(client.pending(seq));
                let answered = match client.take_locals(seq) {
                    None => client.complete(seq, reply),
                    // An EXEC with connection commands: they run now.
                    Some(locals) => {
                        let reply = self.exec_reply(token, reply, locals);
                        self.clients
                            .get_mut(&token)
                            .is_some_and(|client| client.complete(seq, reply))
                    }
                };
                if answered {
                    self.mark_dirty(token);
                    self.retry_parked_of(token);
                    if write_in_flight {
                        self.recheck_held_reads_of(token);
                    }
                }
            }
            Waiter::Peer { from, id } => {
                self.peers
                    .send(from, &PeerMessage::ForwardReply { id, reply });
            }
            Waiter::Nobody => {}
        }
    }

    pub(super) fn deliver_completions(&mut self) {
        let mut done = std::mem::take(&mut self.completions);
        self.rechecks_deferred = Some(Vec::new());
        for completion in done.drain(..) {
            self.complete(completion.waiter, completion.reply);
        }
        for token in self.rechecks_deferred.take().unwrap_or_default() {
            self.settle_held_reads_of(token);
        }
        // Keep the buffer: under load it holds a thousand completions per
        // iteration, and growing a fresh one each time was 1.5% of the leader.
        if self.completions.is_empty() {
            self.completions = done;
        }
    }

    /// A request's deadline passed without a reply.
    pub(super) fn expire(&mut self, token: Token, seq: u64) {
        // Taken first, so that it leaves with the slot's deadline whatever
        // became of the request.
        let orphaned_transfer = self.cluster.take_orphaned_transfer(token, seq);
        // Every request's deadline fires, most long after the reply: those
        // return here.
        let Some(pending) = self.clients.get(&token).and_then(|c| c.pending(seq)) else {
            return;
        };
        let reply = match pending {
            Pending::Parked => {
                // In one queue or the other: a CLUSTER command's, or not.
                self.parked.remove(token, seq);
                self.cluster.parked.remove(token, seq);
                match orphaned_transfer {
                    // The leader it went to may have acted on it.
                    Some(target) => reply_transfer_abandoned(target),
                    None => error(NO_LEADER),
                }
            }
            Pending::InFlight { write, forward } => {
                let transfer = if let Some(id) = forward {
                    if self.relayed_reply_arrived(token, seq) {
                        return;
                    }
                    self.forwards.remove(&id);
                    self.cluster.forget_forward(id)
                } else {
                    let waiter = Waiter::Client { token, seq };
                    self.replica.forget_transfer_waiter(&waiter)
                };
                // One held here may have been acted on where it went first.
                if let Some(target) = transfer.or(orphaned_transfer) {
                    // This leader, or the one it went to, may have told the
                    // target to campaign (it may lead by now): not
                    // `-TRYAGAIN`, whose promise is that nothing happened.
                    reply_transfer_abandoned(target)
                } else if write {
                    error("TIMEOUT outcome unknown")
                } else {
                    error(NO_LEADER)
                }
            }
        };
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        // An EXEC that timed out runs none of its connection commands.
        client.take_locals(seq);
        if client.complete(seq, reply) {
            self.mark_dirty(token);
            self.retry_parked_of(token);
            if is_write_in_flight(Some(pending)) {
                self.recheck_held_reads_of(token);
            }
        }
    }

    /// Whether a relayed reply to this slot came: it is delivered after the
    /// apply (`handle_forward_reply`), and it answers, not the deadline.
    fn relayed_reply_arrived(&self, token: Token, seq: u64) -> bool {
        let this = |waiter: &Waiter| matches!(*waiter, Waiter::Client { token: t, seq: s } if t == token && s == seq);
        self.completions.iter().any(|done| this(&done.waiter))
            || self
                .relayed_replies
                .iter()
                .any(|(_, done)| this(&done.waiter))
    }
}
