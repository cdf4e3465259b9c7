//! CLIENT LIST and CLIENT INFO: one line per client connection of this node,
//! in the field order of Redis 7.4 (what `redis-cli client list` and client
//! libraries' parsers expect). Peer connections are not clients, and a
//! request a follower forwarded here is that follower's client's: it is
//! listed on the follower, not here.
//!
//! The fields raftkv has no notion of are given as Redis gives them for a
//! plain client (db 0, no subscriptions, no WATCH, user `default`, no
//! redirection). The buffer fields describe raftkv's buffers: one input
//! buffer (`qbuf`, `qbuf-free`) and one output buffer (`rbs` its size,
//! `rbp` too since its peak is not tracked, `omem` its unsent bytes);
//! `obl`/`oll` (Redis's reply list) are 0.

use super::clients::Client;
use super::clock::unix_millis;
use super::connection::{command_name, error, shown_word};
use super::event_loop::Server;
use crate::kv::command::parse_integer;
use crate::kv::Reply;
use crate::wire::resp::Protocol;
use mio::Token;
use std::fmt::Write;
use std::os::fd::AsRawFd;

/// What a connection's CLIENT LIST line reports beyond its buffers and
/// protocol state: where it comes from, and what it last did.
pub struct ClientInfo {
    addr: String,
    laddr: String,
    fd: i32,
    /// Unix milliseconds, as Redis takes age and idle from the wall clock:
    /// the read path already reads it (for write stamps), so keeping it
    /// costs no clock read.
    created_ms: u64,
    last_read_ms: u64,
    /// The last command, lower-cased, with its subcommand for the command
    /// families Redis lists that way (`client|list`); `NULL` before the
    /// first, as Redis shows a client that sent none.
    last_command: String,
    pub lib_name: Option<String>,
    pub lib_ver: Option<String>,
}

/// Commands Redis lists with their subcommand (`config|get`).
fn has_subcommands(name: &str) -> bool {
    matches!(name, "client" | "command" | "config" | "cluster")
}

/// A word that can stand in a CLIENT LIST line: no spaces, newlines or
/// `=` that would break a parser splitting on them.
fn is_listable(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

impl ClientInfo {
    pub fn new(stream: &mio::net::TcpStream) -> ClientInfo {
        let shown = |addr: std::io::Result<std::net::SocketAddr>| {
            addr.map_or_else(|_| "?:0".to_string(), |addr| addr.to_string())
        };
        let now = unix_millis();
        ClientInfo {
            addr: shown(stream.peer_addr()),
            laddr: shown(stream.local_addr()),
            fd: stream.as_raw_fd(),
            created_ms: now,
            last_read_ms: now,
            last_command: "NULL".to_string(),
            lib_name: None,
            lib_ver: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn laddr(&self) -> &str {
        &self.laddr
    }

    /// Whole seconds since the connection was accepted, as `age` shows.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.created_ms) / 1000
    }

    /// Bytes came from the client: it is not idle.
    pub fn note_read(&mut self, now_ms: u64) {
        self.last_read_ms = now_ms;
    }

    /// The client sent a request named `name` (lower-cased); `argv` is the
    /// whole request. Reuses the string: this runs for every request.
    pub fn note_command(&mut self, name: &str, argv: &[Vec<u8>]) {
        self.last_command.clear();
        if !is_listable(name) {
            self.last_command.push_str("NULL");
            return;
        }
        self.last_command.push_str(name);
        if has_subcommands(name) {
            if let Some(sub) = argv.get(1).map(|sub| command_name(sub)) {
                if is_listable(sub.as_str()) {
                    self.last_command.push('|');
                    self.last_command.push_str(sub.as_str());
                }
            }
        }
    }
}

/// Which clients CLIENT LIST asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum ListFilter {
    /// No option, or `TYPE normal`: every client connection.
    All,
    /// `TYPE master|replica|slave|pubsub`: there are none.
    Nothing,
    /// `ID id...`: sorted, each once (the lines come in id order anyway).
    Ids(Vec<u64>),
}

/// CLIENT LIST's options, worded as Redis 7 refuses them: one `TYPE t` or
/// one `ID id...`, nothing else.
pub fn list_filter(argv: &[Vec<u8>]) -> Result<ListFilter, Reply> {
    let Some(option) = argv.get(2) else {
        return Ok(ListFilter::All);
    };
    match command_name(option).as_str() {
        "type" if argv.len() == 4 => match command_name(&argv[3]).as_str() {
            "normal" => Ok(ListFilter::All),
            "master" | "replica" | "slave" | "pubsub" => Ok(ListFilter::Nothing),
            _ => Err(Reply::Error(format!(
                "ERR Unknown client type '{}'",
                shown_word(&argv[3])
            ))),
        },
        "id" if argv.len() > 3 => argv[3..]
            .iter()
            .map(|id| {
                // Redis reads a long and matches it: 0 or -1 name nobody.
                parse_integer(id)
                    .map(|id| u64::try_from(id).unwrap_or(0))
                    .ok_or_else(|| error("ERR Invalid client ID"))
            })
            .collect::<Result<Vec<u64>, Reply>>()
            .map(|mut ids| {
                // Sorted for a binary search per client: a request may name
                // a million ids (`max_request_bytes`), and a look through
                // all of them per client stalled the loop (0.35 s with 1,000
                // clients), long enough, with more, to cost the leadership.
                ids.sort_unstable();
                ids.dedup();
                ListFilter::Ids(ids)
            }),
        _ => Err(error("ERR syntax error")),
    }
}

/// Appends `client`'s line, newline included, as of `now_ms` (unix
/// milliseconds). `current_argv`:
/// the words of the request being answered, for the client that asked
/// (Redis's `argv-mem`), 0 for the others.
pub fn write_line(out: &mut String, client: &Client, now_ms: u64, current_argv: usize) {
    let info = &client.info;
    let multi = client.multi.as_ref();
    let queued = multi.map_or(-1, |multi| multi.queued.len() as i64);
    let multi_mem = multi.map_or(0, |multi| multi.bytes);
    let (qbuf, qbuf_free) = (client.conn.input().len(), client.conn.input_free());
    let output_size = client.conn.output_capacity();
    let unsent = client.conn.pending_output();
    let total = qbuf + qbuf_free + output_size + multi_mem + current_argv;
    // Formatting into a String cannot fail.
    let _ = writeln!(
        out,
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 \
         multi={} watch=0 qbuf={} qbuf-free={} argv-mem={} multi-mem={} rbs={} rbp={} obl=0 \
         oll=0 omem={} tot-mem={} events={} cmd={} user=default redir=-1 resp={} lib-name={} \
         lib-ver={}",
        client.id,
        info.addr,
        info.laddr,
        info.fd,
        client.name.as_deref().unwrap_or(""),
        info.age_secs(now_ms),
        now_ms.saturating_sub(info.last_read_ms) / 1000,
        if multi.is_some() { "x" } else { "N" },
        queued,
        qbuf,
        qbuf_free,
        current_argv,
        multi_mem,
        output_size,
        output_size,
        unsent,
        total,
        if unsent > 0 { "rw" } else { "r" },
        info.last_command,
        match client.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        },
        info.lib_name.as_deref().unwrap_or(""),
        info.lib_ver.as_deref().unwrap_or(""),
    );
}

impl Server {
    /// CLIENT LIST: this node's client connections, oldest first.
    pub(super) fn client_list(&self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let filter = match list_filter(argv) {
            Ok(filter) => filter,
            Err(refusal) => return refusal,
        };
        let mut clients: Vec<(&Token, &Client)> = self
            .clients
            .iter()
            .filter(|(_, client)| match &filter {
                ListFilter::All => true,
                ListFilter::Nothing => false,
                ListFilter::Ids(ids) => ids.binary_search(&client.id).is_ok(),
            })
            .collect();
        clients.sort_unstable_by_key(|(_, client)| client.id);
        let now = unix_millis();
        let mut out = String::new();
        for (listed, client) in clients {
            let current = if *listed == token {
                argv_bytes(argv)
            } else {
                0
            };
            write_line(&mut out, client, now, current);
        }
        Reply::Bulk(out.into_bytes())
    }

    /// CLIENT INFO: the line of the connection that asks.
    pub(super) fn client_info(&self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let mut out = String::new();
        if let Some(client) = self.clients.get(&token) {
            write_line(&mut out, client, unix_millis(), argv_bytes(argv));
        }
        Reply::Bulk(out.into_bytes())
    }
}

fn argv_bytes(argv: &[Vec<u8>]) -> usize {
    argv.iter().map(Vec::len).sum()
}

#[cfg(test)]
#[path = "client_list_tests.rs"]
pub(super) mod tests;
