//! CLIENT KILL: closes client connections of this node, as Redis 7 does,
//! in its two forms: `CLIENT KILL ip:port` (`+OK`, or `-ERR No such client`)
//! and `CLIENT KILL <filter> <value> ...` (the number closed). Only what
//! `self.clients` holds can match, so a peer connection (which is no client)
//! is never closed by it, nor a request a follower forwarded here.
//!
//! A killed connection goes the way of one whose socket failed
//! (`close_client`): its pending replies are dropped, while the writes it
//! already proposed still commit. The caller, when it matches, is closed
//! only after its reply, as Redis does.

use super::clients::Client;
use super::clock::unix_millis;
use super::connection::{command_name, error, shown_word};
use super::event_loop::Server;
use crate::kv::command::parse_integer;
use crate::kv::Reply;
use mio::Token;

/// Which connections a CLIENT KILL names; every filter given must match.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    /// `TYPE master|replica|slave|pubsub`: raftkv has no such client, so
    /// nothing matches. `TYPE normal` (every client) changes nothing.
    pub no_such_type: bool,
    /// Whether the asking connection is left alone (Redis's default).
    pub skip_me: bool,
    /// Only connections at least this many whole seconds old.
    pub max_age: Option<u64>,
    /// The old `CLIENT KILL ip:port`, which replies `+OK` or an error
    /// rather than a count.
    pub old_form: bool,
}

/// CLIENT KILL's arguments (the whole request), refused with Redis's texts.
/// Everything is checked before anything is killed, as in Redis.
pub fn kill_filter(argv: &[Vec<u8>]) -> Result<KillFilter, Reply> {
    if argv.len() == 3 {
        // Redis reads three words as the old form whatever the word is,
        // so `CLIENT KILL id` looks for a client at address "id".
        return Ok(KillFilter {
            addr: Some(String::from_utf8_lossy(&argv[2]).into_owned()),
            old_form: true,
            ..KillFilter::default()
        });
    }
    let mut filter = KillFilter {
        skip_me: true,
        ..KillFilter::default()
    };
    for pair in argv[2..].chunks(2) {
        let [option, value] = pair else {
            return Err(error("ERR syntax error"));
        };
        match command_name(option).as_str() {
            "id" => match parse_integer(value) {
                Some(id) if id > 0 => filter.id = Some(id as u64),
                _ => return Err(error("ERR client-id should be greater than 0")),
            },
            "addr" => filter.addr = Some(String::from_utf8_lossy(value).into_owned()),
            "laddr" => filter.laddr = Some(String::from_utf8_lossy(value).into_owned()),
            "type" => match command_name(value).as_str() {
                "normal" => filter.no_such_type = false,
                "master" | "replica" | "slave" | "pubsub" => filter.no_such_type = true,
                _ => {
                    return Err(Reply::Error(format!(
                        "ERR Unknown client type '{}'",
                        shown_word(value)
                    )))
                }
            },
            // Redis looks the name up as given: only `default` exists here.
            "user" if value.as_slice() == b"default" => {}
            "user" => {
                return Err(Reply::Error(format!(
                    "ERR No such user '{}'",
                    shown_word(value)
                )))
            }
            "skipme" => match command_name(value).as_str() {
                "yes" => filter.skip_me = true,
                "no" => filter.skip_me = false,
                _ => return Err(error("ERR syntax error")),
            },
            // Redis 7.4's filter (7.0 has none): texts as Redis words them.
            "maxage" => match parse_integer(value) {
                Some(age) if age > 0 => filter.max_age = Some(age as u64),
                Some(_) => return Err(error("ERR maxage should be greater than 0")),
                None => return Err(error("ERR maxage is not an integer or out of range")),
            },
            _ => return Err(error("ERR syntax error")),
        }
    }
    Ok(filter)
}

impl KillFilter {
    /// Whether `client` (the asking one when `is_caller`) is to be killed
    /// at `now_ms` (unix milliseconds).
    pub fn matches(&self, client: &Client, is_caller: bool, now_ms: u64) -> bool {
        let info = &client.info;
        let spared = self.no_such_type || (self.skip_me && is_caller);
        !spared
            && self.id.is_none_or(|id| id == client.id)
            && self.addr.as_deref().is_none_or(|addr| addr == info.addr())
            && self
                .laddr
                .as_deref()
                .is_none_or(|laddr| laddr == info.laddr())
            && self
                .max_age
                .is_none_or(|max_age| info.age_secs(now_ms) >= max_age)
    }
}

impl Server {
    /// CLIENT KILL: closes the matching client connections of this node.
    pub(super) fn client_kill(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let filter = match kill_filter(argv) {
            Ok(filter) => filter,
            Err(refusal) => return refusal,
        };
        let now = unix_millis();
        let matching: Vec<Token> = self
            .clients
            .iter()
            .filter(|(listed, client)| filter.matches(client, **listed == token, now))
            .map(|(listed, _)| *listed)
            .collect();
        for &killed in &matching {
            if killed == token {
                // Its reply is still to be sent: closed after it, as QUIT is.
                if let Some(client) = self.clients.get_mut(&token) {
                    client.close_after_replies = true;
                }
            } else {
                if let Some(client) = self.clients.get(&killed) {
                    log::info!(
                        "client id={} addr={} killed by CLIENT KILL",
                        client.id,
                        client.info.addr()
                    );
                }
                self.close_client(killed);
            }
        }
        match (filter.old_form, matching.is_empty()) {
            (true, false) => Reply::Ok,
            (true, true) => error("ERR No such client"),
            (false, _) => Reply::Integer(matching.len() as i64),
        }
    }
}

#[cfg(test)]
#[path = "client_kill_tests.rs"]
mod tests;
