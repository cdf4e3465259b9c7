//! What the node does with each client request: connection commands are
//! answered on the spot; key-value commands go to the core when this node
//! leads, to the leader over the peer link when it follows, or wait (parked)
//! until a leader is known, for at most `election_timeout_ms * 4`.

use super::clients::{Kind, Pending};
use super::cluster::{PAYLOAD_CLUSTER, PAYLOAD_KV};
use super::event_loop::{Forwarded, Server, Waiter};
use super::info::{self, InfoContext};
use super::transactions::{local_arity, Arity};
use crate::kv::{Command, CommandError, Reply};
use crate::raft::{NodeId, ProposeError};
use crate::replica::Refused;
use crate::wire::peer_msg::PeerMessage;
use crate::wire::resp::Protocol;
use mio::Token;

const NOAUTH: &str = "NOAUTH Authentication required.";

fn error(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(text.as_bytes().to_vec())
}

pub(super) fn wrong_arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        name
    ))
}

/// Longest (sub)command name matched here; a longer one reads as "" (and then
/// falls through to the key-value parser, which rejects it).
const NAME_MAX_BYTES: usize = 32;

/// A command or subcommand name lower-cased for matching, on the stack: every
/// request has one, and the common ones are ASCII.
pub(super) enum Name {
    Ascii {
        bytes: [u8; NAME_MAX_BYTES],
        len: usize,
    },
    /// Not ASCII: lossily decoded, for the error message that will follow.
    Other(String),
}

impl Name {
    pub(super) fn as_str(&self) -> &str {
        match self {
            // ASCII bytes are always valid UTF-8.
            Name::Ascii { bytes, len } => std::str::from_utf8(&bytes[..*len]).unwrap_or(""),
            Name::Other(text) => text,
        }
    }
}

pub(super) fn command_name(raw: &[u8]) -> Name {
    if raw.len() > NAME_MAX_BYTES {
        return Name::Ascii {
            bytes: [0; NAME_MAX_BYTES],
            len: 0,
        };
    }
    if !raw.is_ascii() {
        return Name::Other(String::from_utf8_lossy(raw).to_ascii_lowercase());
    }
    let mut bytes = [0; NAME_MAX_BYTES];
    bytes[..raw.len()].copy_from_slice(raw);
    bytes.make_ascii_lowercase();
    Name::Ascii {
        bytes,
        len: raw.len(),
    }
}

/// Whether a request only reads the map (GET, MGET or EXISTS outside a
/// MULTI), so it need not wait behind its connection's unanswered reads.
pub(super) fn only_reads(argv: &[Vec<u8>], in_multi: bool) -> bool {
    !in_multi
        && argv
            .first()
            .is_some_and(|name| matches!(command_name(name).as_str(), "get" | "mget" | "exists"))
}

/// The error Redis checks for first, before AUTH: an unknown command or a
/// wrong number of arguments; `None` for a request that passes both.
fn unknown_or_arity_error(name: &str, argv: &[Vec<u8>]) -> Option<Reply> {
    let arity = match name {
        "multi" | "exec" | "discard" => Some(Arity::Exactly(1)),
        "watch" | "cluster" => Some(Arity::AtLeast(2)),
        "quit" => Some(Arity::AtLeast(1)),
        other => local_arity(other),
    };
    match arity {
        Some(arity) => (!arity.fits(argv.len())).then(|| wrong_arity(name)),
        None => Command::parse(argv)
            .err()
            .filter(CommandError::is_queue_time)
            .map(|err| Reply::Error(err.to_string())),
    }
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
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if !client.authenticated && !matches!(name, "auth" | "hello" | "quit") {
            // As Redis: an unknown command or a wrong number of arguments is
            // reported before the missing AUTH.
            let reply = unknown_or_arity_error(name, argv).unwrap_or_else(|| error(NOAUTH));
            client.reply_now(reply);
            return;
        }
        if client.multi.is_some()
            && !matches!(name, "exec" | "discard" | "multi" | "watch" | "quit")
        {
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
    pub(super) fn local_command(
        &mut self,
        token: Token,
        name: &str,
        argv: &[Vec<u8>],
    ) -> Option<Reply> {
        Some(match name {
            "ping" => match argv.len() {
                1 => Reply::Status("PONG".into()),
                2 => Reply::Bulk(argv[1].clone()),
                _ => wrong_arity("ping"),
            },
            "echo" if argv.len() == 2 => Reply::Bulk(argv[1].clone()),
            "echo" => wrong_arity("echo"),
            "auth" => self.auth(token, argv),
            "hello" => self.hello(token, argv),
            "info" => Reply::Bulk(self.info().into_bytes()),
            "client" => self.client_command(token, argv),
            "command" => command_command(argv),
            "select" => select_command(argv),
            "config" => config_command(argv),
            "unwatch" if argv.len() == 1 => Reply::Ok,
            "unwatch" => wrong_arity("unwatch"),
            "dbsize" if argv.len() == 1 => Reply::Integer(self.replica.kv().len() as i64),
            "dbsize" => wrong_arity("dbsize"),
            "debug" => self.debug_command(argv),
            _ => return None,
        })
    }

    fn auth(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let password = match argv.len() {
            2 => &argv[1],
            3 if argv[1] == b"default" => &argv[2],
            3 => return error("WRONGPASS invalid password"),
            _ => return wrong_arity("auth"),
        };
        let Some(expected) = self.config.requirepass.as_deref() else {
            return error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        };
        let ok = password.as_slice() == expected.as_bytes();
        if let Some(client) = self.clients.get_mut(&token) {
            client.authenticated |= ok;
        }
        if ok {
            Reply::Ok
        } else {
            error("WRONGPASS invalid password")
        }
    }

    fn hello(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let mut protocol = None;
        let mut rest = &argv[1..];
        if let Some(version) = rest.first() {
            protocol = match std::str::from_utf8(version)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(2) => Some(Protocol::Resp2),
                Some(3) => Some(Protocol::Resp3),
                Some(_) => return error("NOPROTO unsupported protocol version"),
                None => return error("ERR Protocol version is not an integer or out of range"),
            };
            rest = &rest[1..];
        }
        let mut name = None;
        while let Some(typed) = rest.first() {
            let option = command_name(typed);
            match (option.as_str(), rest.len()) {
                ("auth", n) if n >= 3 => {
                    let auth = [b"auth".to_vec(), rest[1].clone(), rest[2].clone()];
                    if self.config.requirepass.is_some() {
                        if let reply @ Reply::Error(_) = self.auth(token, &auth) {
                            return reply;
                        }
                    }
                    rest = &rest[3..];
                }
                ("setname", n) if n >= 2 => {
                    name = Some(String::from_utf8_lossy(&rest[1]).into_owned());
                    rest = &rest[2..];
                }
                _ => {
                    return Reply::Error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(typed)
                    ))
                }
            }
        }
        let Some(client) = self.clients.get_mut(&token) else {
            return Reply::Ok;
        };
        if !client.authenticated {
            return error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(protocol) = protocol {
            client.protocol = protocol;
        }
        if name.is_some() {
            client.name = name;
        }
        let proto = match client.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        info::hello_reply(client.id, proto)
    }

    fn client_command(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let Some(client) = self.clients.get_mut(&token) else {
            return Reply::Ok;
        };
        let Some(sub) = argv.get(1) else {
            return wrong_arity("client");
        };
        match (command_name(sub).as_str(), argv.len()) {
            ("setname", 3) => {
                client.name = Some(String::from_utf8_lossy(&argv[2]).into_owned());
                Reply::Ok
            }
            ("getname", 2) => match &client.name {
                Some(name) => bulk(name),
                None => Reply::Nil,
            },
            ("id", 2) => Reply::Integer(client.id as i64),
            ("setinfo", _) | ("maint_notifications", _) | ("no-evict", _) | ("no-touch", _) => {
                Reply::Ok
            }
            (known @ ("setname" | "getname" | "id"), _) => {
                wrong_arity(&format!("client|{}", known))
            }
            _ => Reply::Error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(sub)
            )),
        }
    }

    /// DEBUG DIGEST, as in Redis: a hash of this node's own state (not a
    /// linearizable read), so tests and operators can compare nodes.
    fn debug_command(&self, argv: &[Vec<u8>]) -> Reply {
        match argv.get(1).map(|sub| command_name(sub)) {
            Some(sub) if sub.as_str() == "digest" && argv.len() == 2 => {
                Reply::Status(format!("{:016x}", self.replica.kv().digest()))
            }
            Some(_) => Reply::Error(format!(
                "ERR unknown subcommand '{}'. raftkv supports DEBUG DIGEST only.",
                String::from_utf8_lossy(&argv[1])
            )),
            None => wrong_arity("debug"),
        }
    }

    fn info(&self) -> String {
        let status = self.replica.status();
        let book = &self.cluster.book;
        let addresses: Vec<(NodeId, String)> = status
            .voters
            .iter()
            .chain(&status.learners)
            .map(|id| (*id, book.raft_addr(*id).unwrap_or("").to_string()))
            .collect();
        let leader_client_addr = book.client_addr(status.leader_id).unwrap_or("");
        info::info_text(&InfoContext {
            status: &status,
            addresses: &addresses,
            leader_client_addr,
            keys: self.replica.kv().len(),
            connected_clients: self.clients.len(),
            uptime_secs: self.uptime_secs(),
            log_bytes: self.disk.storage.log_bytes(),
            snapshot: self.snapshot_info(),
        })
    }

    fn snapshot_info(&self) -> info::SnapshotInfo {
        let stats = &self.snapshots.stats;
        info::SnapshotInfo {
            bytes: stats.bytes,
            in_progress: self.snapshots.is_writing(),
            last_duration_ms: stats.last_duration.as_millis() as u64,
            taken: stats.taken,
            received: stats.received,
            sent: stats.sent,
            last_max_iteration_us: stats.last_max_iteration.as_micros() as u64,
            last_max_iteration_cpu_us: stats.last_max_iteration_cpu.as_micros() as u64,
            max_iteration_us: self.max_iteration.as_micros() as u64,
        }
    }

    /// A key-value command from a client: open its reply slot, then route it.
    fn submit(&mut self, token: Token, command: Command) {
        self.submit_exec(token, command, Vec::new());
    }

    /// [`Server::submit`] for EXEC's entry: `locals`, the replies of the
    /// connection commands queued with it, go into its reply by place.
    pub(super) fn submit_exec(
        &mut self,
        token: Token,
        command: Command,
        locals: Vec<(usize, Reply)>,
    ) {
        let kind = if command.is_write() {
            Kind::Other
        } else {
            Kind::Read
        };
        let Some(seq) = self.open_request(token, kind) else {
            return;
        };
        if !locals.is_empty() {
            if let Some(client) = self.clients.get_mut(&token) {
                client.splice_into(seq, locals);
            }
        }
        self.route(token, seq, command);
    }

    /// A plain `SET key value` on the leader, proposed straight from the
    /// request's words: no `Command` is built unless the proposal is refused
    /// and must be parked. Saves two allocations and copies per write.
    fn submit_set(&mut self, token: Token, key: &[u8], value: &[u8]) {
        let Some(seq) = self.open_request(token, Kind::Other) else {
            return;
        };
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
                self.parked.push_back((token, seq, command));
            }
        }
    }

    /// Opens a client's reply slot with a deadline and returns its sequence
    /// number; `None` if the client is gone or the cluster refuses requests
    /// now (that reply is already queued).
    fn open_request(&mut self, token: Token, kind: Kind) -> Option<u64> {
        let refusal = self.cluster.refusal();
        let client = self.clients.get_mut(&token)?;
        if let Some(reply) = refusal {
            client.reply_now(reply);
            return None;
        }
        let seq = client.open_slot(Pending::Parked, kind);
        self.schedule_deadline(token, seq);
        Some(seq)
    }

    /// Sends a client request where it can be served now, or parks it.
    fn route(&mut self, token: Token, seq: u64, command: Command) {
        let write = command.is_write();
        let waiter = Waiter::Client { token, seq };
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
                Err(refused) => self.parked.push_back((token, seq, refused.command)),
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
                self.forwards.insert(
                    id,
                    Forwarded {
                        token,
                        seq,
                        command,
                    },
                );
                self.set_pending(
                    token,
                    seq,
                    Pending::InFlight {
                        write,
                        forward: Some(id),
                    },
                );
                return;
            }
        }
        self.parked.push_back((token, seq, command));
    }

    fn propose_or_read(&mut self, command: Command, waiter: Waiter) -> Result<(), Refused<Waiter>> {
        if command.is_write() {
            self.replica.propose(command, waiter)
        } else {
            self.replica.read(command, waiter)
        }
    }

    fn set_pending(&mut self, token: Token, seq: u64, pending: Pending) {
        if let Some(client) = self.clients.get_mut(&token) {
            client.set_pending(seq, pending);
        }
    }

    /// Routes the parked requests again once a leader may serve them.
    pub(super) fn dispatch_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let leader = self.replica.node().leader_id();
        if !self.replica.is_leader() && !self.peers.is_connected(leader) {
            return;
        }
        if self.replica.is_leader() && self.replica.node().transfer_target().is_some() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for (token, seq, command) in parked {
            let still_waiting = self
                .clients
                .get(&token)
                .is_some_and(|c| c.pending(seq) == Some(Pending::Parked));
            if still_waiting {
                self.route(token, seq, command);
            }
        }
    }

    /// A request forwarded to us by a follower that believes we lead.
    pub(super) fn handle_forward(&mut self, from: NodeId, id: u64, payload: &[u8]) {
        let waiter = Waiter::Peer { from, id };
        let payload = match payload.split_first() {
            Some((&PAYLOAD_KV, command)) => command,
            Some((&PAYLOAD_CLUSTER, text)) => return self.handle_cluster_forward(from, id, text),
            _ => &[],
        };
        let command = match Command::decode(payload) {
            Ok(command) => command,
            Err(err) => {
                let reply = Reply::Error(format!("ERR forwarded request: {}", err));
                self.peers
                    .send(from, &PeerMessage::ForwardReply { id, reply });
                return;
            }
        };
        if let Err(refused) = self.propose_or_read(command, waiter) {
            if refused.error == ProposeError::TransferInProgress {
                return self.hold_forwarded(refused.waiter, refused.command);
            }
            // Nothing was appended, so the follower may safely route it again.
            let reply = match refused.error {
                ProposeError::NotLeader { .. } => error("TRYAGAIN not the leader"),
                ProposeError::TransferInProgress => error("TRYAGAIN leadership transfer"),
                ProposeError::NotReady => error("TRYAGAIN leader not ready"),
            };
            self.peers
                .send(from, &PeerMessage::ForwardReply { id, reply });
        }
    }

    pub(super) fn handle_forward_reply(&mut self, id: u64, reply: Reply) {
        let Some(forwarded) = self.forwards.remove(&id) else {
            return self.handle_cluster_forward_reply(id, reply);
        };
        let Forwarded {
            token,
            seq,
            command,
        } = forwarded;
        if is_tryagain(&reply) {
            // The leader we asked did not take it: it was not applied, try elsewhere.
            let still_waiting = self
                .clients
                .get(&token)
                .is_some_and(|c| c.pending(seq).is_some());
            if still_waiting {
                self.set_pending(token, seq, Pending::Parked);
                self.parked.push_back((token, seq, command));
            }
            return;
        }
        self.complete(Waiter::Client { token, seq }, reply);
    }

    fn complete(&mut self, waiter: Waiter, reply: Reply) {
        match waiter {
            Waiter::Client { token, seq } => {
                if let Some(client) = self.clients.get_mut(&token) {
                    if client.complete(seq, reply) {
                        self.mark_dirty(token);
                    }
                }
            }
            Waiter::Peer { from, id } => {
                self.peers
                    .send(from, &PeerMessage::ForwardReply { id, reply });
            }
        }
    }

    pub(super) fn deliver_completions(&mut self) {
        let mut done = std::mem::take(&mut self.completions);
        for completion in done.drain(..) {
            self.complete(completion.waiter, completion.reply);
        }
        // Keep the buffer: under load it holds a thousand completions per
        // iteration, and growing a fresh one each time was 1.5% of the leader.
        if self.completions.is_empty() {
            self.completions = done;
        }
    }

    /// A request's deadline passed without a reply.
    pub(super) fn expire(&mut self, token: Token, seq: u64) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let reply = match client.pending(seq) {
            None => return,
            Some(Pending::Parked) => error("TRYAGAIN no leader"),
            Some(Pending::InFlight { write, forward }) => {
                if let Some(id) = forward {
                    self.forwards.remove(&id);
                    self.cluster.forget_forward(id);
                }
                if write {
                    error("TIMEOUT outcome unknown")
                } else {
                    error("TRYAGAIN no quorum")
                }
            }
        };
        if client.complete(seq, reply) {
            self.mark_dirty(token);
        }
    }
}

/// CONFIG GET: enough for redis-benchmark and friends (they ask for `save`
/// and `appendonly`); every parameter reads as absent.
/// COMMAND: redis-cli and client libraries ask for the command table on
/// connect and do without it; this node lists none.
fn command_command(argv: &[Vec<u8>]) -> Reply {
    let Some(sub) = argv.get(1) else {
        return Reply::Array(Vec::new());
    };
    match (command_name(sub).as_str(), argv.len()) {
        ("count", 2) => Reply::Integer(0),
        ("count", _) => wrong_arity("command|count"),
        ("docs" | "info" | "list", _) => Reply::Array(Vec::new()),
        _ => Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// SELECT: there is one database, 0.
fn select_command(argv: &[Vec<u8>]) -> Reply {
    if argv.len() != 2 {
        return wrong_arity("select");
    }
    match crate::kv::parse_integer(&argv[1]) {
        Some(0) => Reply::Ok,
        Some(_) => error("ERR DB index is out of range"),
        None => error("ERR value is not an integer or out of range"),
    }
}

fn config_command(argv: &[Vec<u8>]) -> Reply {
    match argv.get(1).map(|sub| command_name(sub)) {
        Some(sub) if sub.as_str() == "get" && argv.len() >= 3 => Reply::Map(Vec::new()),
        Some(sub) if sub.as_str() == "get" => wrong_arity("config|get"),
        Some(_) => Reply::Error(format!(
            "ERR unknown subcommand '{}'. raftkv supports CONFIG GET only.",
            String::from_utf8_lossy(&argv[1])
        )),
        None => wrong_arity("config"),
    }
}
