//! MULTI, EXEC and DISCARD, as in Redis: after MULTI each command is answered
//! `+QUEUED` (an unknown command, a wrong number of arguments or an unknown
//! subcommand is answered at once and makes EXEC answer `-EXECABORT`); EXEC
//! commits the queued key-value commands as one log entry and answers with an
//! array of every queued command's reply.
//!
//! Connection commands (PING, INFO, CLIENT ...) in a transaction have
//! nothing to put in the log: this node runs them when the entry's replies
//! come back, so they see its writes, and puts their replies in their
//! places in EXEC's array ([`splice`]). An EXEC that fails (`-TRYAGAIN`,
//! `-TIMEOUT`) runs none of them. DBSIZE is the exception: it goes in the
//! entry ([`Command::DbSize`]), so that it counts the keys at its place in
//! the transaction, as in Redis, not after all of it.

use super::clients::Multi;
use super::connection::{command_name, is_local};
use super::event_loop::Server;
use crate::config::MAX_REQUEST_BYTES_LIMIT;
use crate::kv::command::MANY_KEYS_REFUSED_IN_WRITES;
use crate::kv::{Command, Reply};
use mio::Token;

/// A command queued after MULTI.
pub enum Queued {
    Kv(Command),
    /// A connection command's words.
    Local(Vec<Vec<u8>>),
}

/// A connection command queued in a transaction: its place among the
/// queued commands, and its words.
pub type LocalCommand = (usize, Vec<Vec<u8>>);

impl Server {
    /// Queues a command after MULTI; it passed `connection::precheck`.
    pub(super) fn queue_in_multi(&mut self, token: Token, name: &str, argv: &[Vec<u8>]) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let Some(multi) = client.multi.as_mut() else {
            return;
        };
        // EXEC puts the whole transaction in one log entry, and a peer frame
        // holds an entry whole: the transaction gets the limit of the largest
        // request a node may be configured to take, whatever this node's
        // `max_request_bytes` (each of its commands is held to that), so that
        // commands accepted one by one are accepted together too, as far as a
        // frame allows. Each word is counted with 16 bytes more than its
        // length, as much as or more than it costs in a request or in the
        // entry; a read of many keys at least as the error text it becomes
        // in a transaction that writes, so that the count bounds the entry
        // and EXEC never builds one past a frame (425,000 `KEYS *` made
        // 38 MB, which took the loop 0.44 s to build and refuse).
        let queued = if name == "dbsize" {
            Ok(Queued::Kv(Command::DbSize))
        } else if is_local(name) {
            Ok(Queued::Local(argv.to_vec()))
        } else {
            Command::parse_queued(argv).map(Queued::Kv)
        };
        let mut bytes: usize = argv.iter().map(|word| word.len() + 16).sum();
        if matches!(&queued, Ok(Queued::Kv(command)) if command.reads_many_keys()) {
            bytes = bytes.max(MANY_KEYS_REFUSED_IN_WRITES.len() + 16);
        }
        let limit = MAX_REQUEST_BYTES_LIMIT as usize;
        if multi.bytes + bytes > limit {
            multi.failed = true;
            return client.reply_now(Reply::Error(format!(
                "ERR the transaction exceeds {limit} bytes, the most one log entry may hold"
            )));
        }
        multi.bytes += bytes;
        let reply = match queued {
            Ok(queued) => {
                multi.queued.push(queued);
                Reply::Status("QUEUED".into())
            }
            Err(err) => {
                multi.failed = true;
                Reply::Error(err.to_string())
            }
        };
        client.reply_now(reply);
    }

    /// Answers a request that failed `connection::precheck`. Inside MULTI
    /// that fails the transaction, and an EXEC with arguments discards it;
    /// as in Redis, a refused EXEC is an `EXECABORT` outside MULTI too.
    pub(super) fn refuse(&mut self, token: Token, name: &str, reply: Reply) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let reply = match (client.multi.as_mut(), reply) {
            (_, Reply::Error(text)) if name == "exec" => {
                client.multi = None;
                let why = text.strip_prefix("ERR ").unwrap_or(&text);
                Reply::Error(format!(
                    "EXECABORT Transaction discarded because of: {}",
                    why
                ))
            }
            (Some(multi), reply) => {
                multi.failed = true;
                reply
            }
            (None, reply) => reply,
        };
        client.reply_now(reply);
    }

    pub(super) fn multi(&mut self, token: Token) -> Reply {
        let Some(client) = self.clients.get_mut(&token) else {
            return Reply::Ok;
        };
        if client.multi.is_some() {
            return Reply::Error("ERR MULTI calls can not be nested".into());
        }
        client.multi = Some(Multi {
            queued: Vec::new(),
            failed: false,
            bytes: 0,
        });
        Reply::Ok
    }

    pub(super) fn discard(&mut self, token: Token) -> Reply {
        match self.clients.get_mut(&token).and_then(|c| c.multi.take()) {
            Some(_) => Reply::Ok,
            None => Reply::Error("ERR DISCARD without MULTI".into()),
        }
    }

    /// EXEC: the queued key-value commands become one log entry. `None` when
    /// that entry is submitted (the reply comes when it is applied).
    pub(super) fn exec(&mut self, token: Token) -> Option<Reply> {
        let client = self.clients.get_mut(&token)?;
        let Some(multi) = client.multi.take() else {
            return Some(Reply::Error("ERR EXEC without MULTI".into()));
        };
        if multi.failed {
            return Some(Reply::Error(
                "EXECABORT Transaction discarded because of previous errors.".into(),
            ));
        }
        let mut commands = Vec::new();
        let mut locals = Vec::new();
        for (at, queued) in multi.queued.into_iter().enumerate() {
            match queued {
                Queued::Kv(command) => commands.push(command),
                Queued::Local(argv) => locals.push((at, argv)),
            }
        }
        if commands.is_empty() {
            return Some(self.exec_reply(token, Reply::Array(Vec::new()), locals));
        }
        let transaction = Command::transaction(commands);
        // The count kept as commands were queued bounds the entry, so this
        // is a second line: an entry past a peer frame would be refused by
        // every follower, and sent again for ever.
        let mut entry = Vec::new();
        transaction.encode(&mut entry);
        let limit = MAX_REQUEST_BYTES_LIMIT as usize;
        if entry.len() > limit {
            return Some(Reply::Error(format!(
                "EXECABORT Transaction discarded because of: the transaction exceeds {limit} bytes, the most one log entry may hold"
            )));
        }
        self.submit_exec(token, transaction, locals);
        None
    }

    /// EXEC's reply from its entry's: runs the connection commands queued
    /// with it and puts their replies in their places, unless the entry
    /// failed.
    pub(super) fn exec_reply(
        &mut self,
        token: Token,
        reply: Reply,
        locals: Vec<LocalCommand>,
    ) -> Reply {
        if !matches!(reply, Reply::Array(_)) {
            return reply;
        }
        let mut replies = Vec::with_capacity(locals.len());
        for (at, argv) in locals {
            let name = command_name(&argv[0]);
            let local = self
                .local_command(token, name.as_str(), &argv)
                .unwrap_or(Reply::Ok);
            replies.push((at, local));
        }
        splice(reply, replies)
    }
}

/// EXEC's reply: the log entry's replies with the connection commands'
/// replies put back at their places (`locals`: place and reply, in order). An
/// error instead of the entry's replies (`-TRYAGAIN`, `-TIMEOUT`) is the
/// whole reply.
pub fn splice(reply: Reply, locals: Vec<(usize, Reply)>) -> Reply {
    let Reply::Array(entry_replies) = reply else {
        return reply;
    };
    let mut out = Vec::with_capacity(entry_replies.len() + locals.len());
    let mut entry_replies = entry_replies.into_iter();
    let mut locals = locals.into_iter().peekable();
    loop {
        let next = match locals.next_if(|(at, _)| *at == out.len()) {
            Some((_, reply)) => Some(reply),
            None => entry_replies.next(),
        };
        match next {
            Some(reply) => out.push(reply),
            None => break,
        }
    }
    out.extend(locals.map(|(_, reply)| reply));
    Reply::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(text: &str) -> Reply {
        Reply::Status(text.into())
    }

    #[test]
    fn local_replies_go_back_to_their_places() {
        let entry = Reply::Array(vec![Reply::Ok, Reply::Integer(2)]);
        let locals = vec![(0, status("PONG")), (2, status("B")), (4, status("E"))];
        assert_eq!(
            splice(entry, locals),
            Reply::Array(vec![
                status("PONG"),
                Reply::Ok,
                status("B"),
                Reply::Integer(2),
                status("E"),
            ])
        );
    }

    #[test]
    fn an_error_instead_of_the_entry_replies_is_the_whole_reply() {
        let error = Reply::Error("TRYAGAIN no leader".into());
        assert_eq!(splice(error.clone(), vec![(0, status("PONG"))]), error);
    }
}
