//! Key-value commands: from a client's argv, and to/from a log entry payload
//! (the payload codec is in `payload.rs`).
//!
//! Parsing follows Redis: the command name is case-insensitive, arity is checked
//! first (`ERR wrong number of arguments for 'set' command`), then arguments
//! (`ERR value is not an integer or out of range`, `ERR syntax error`). Integers
//! are parsed as Redis `string2ll` does: an optional `-`, no `+`, no spaces, no
//! leading zeros except `0` itself, within `i64`.
//!
//! This file holds the command types and what the server asks of a parsed
//! command (is it a write, its name); parsing an argv is in
//! `command_parse.rs`.

#[path = "command_parse.rs"]
mod parse;

pub use parse::parse_integer;

use super::expiry::{ExpireCondition, Expiry, GetExAction};
use std::fmt;

/// A key-value command. Reads are never logged on their own, but may be part of
/// a `Multi` (a MULTI/EXEC transaction is one log entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get(Vec<u8>),
    MGet(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    Set(Vec<u8>, Vec<u8>),
    /// SET with options (NX, XX, GET, a time, KEEPTTL), GETSET, SETNX, SETEX
    /// and PSETEX; a plain SET is `Set`.
    SetWith(Vec<u8>, Vec<u8>, SetOptions),
    Del(Vec<Vec<u8>>),
    /// INCR is `IncrBy(key, 1)`, DECR `IncrBy(key, -1)`, DECRBY n `IncrBy(key, -n)`.
    IncrBy(Vec<u8>, i64),
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// MSETNX: sets every pair only if none of the keys exists.
    MSetNx(Vec<(Vec<u8>, Vec<u8>)>),
    /// APPEND key value.
    Append(Vec<u8>, Vec<u8>),
    /// GETDEL key.
    GetDel(Vec<u8>),
    /// GETEX key with an option (without one it is a GET).
    GetEx(Vec<u8>, GetExAction),
    /// GETEX with a time Redis refuses (not a number, not positive, too
    /// large): Redis looks the key up first, so this answers nil without
    /// the key and this error text with it. A read: it changes nothing.
    GetExRefused(Vec<u8>, String),
    /// RENAME source destination; RENAMENX when the flag is set.
    Rename(Vec<u8>, Vec<u8>, bool),
    /// FLUSHALL and FLUSHDB (there is one database).
    FlushAll,
    /// KEYS pattern.
    Keys(Vec<u8>),
    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type].
    Scan(ScanOptions),
    /// TYPE key.
    Type(Vec<u8>),
    /// STRLEN key.
    Strlen(Vec<u8>),
    /// MEMORY USAGE key [SAMPLES n]: the bytes the key's entry takes here
    /// (nil for no key). `redis-cli --memkeys` asks it of every key.
    MemoryUsage(Vec<u8>),
    /// GETRANGE key start end (SUBSTR too): the bytes from start to end,
    /// both included, negative ones counted from the end.
    GetRange(Vec<u8>, i64, i64),
    /// DBSIZE queued in a transaction, answered at its place in it: the keys
    /// then, expired ones not yet purged included. Outside a transaction
    /// DBSIZE is a connection command that each node answers itself.
    DbSize,
    /// TTL key: seconds left (rounded), -1 without a timeout, -2 for no key.
    Ttl(Vec<u8>),
    /// PTTL key: milliseconds left, as TTL.
    Pttl(Vec<u8>),
    /// EXPIRETIME key, or PEXPIRETIME when the flag is set: the deadline.
    ExpireTime(Vec<u8>, bool),
    /// PERSIST key: removes the key's timeout.
    Persist(Vec<u8>),
    /// EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT.
    Expire(Vec<u8>, Expiry, ExpireCondition),
    /// Deletes those of the keys whose deadline has passed (a leader's
    /// active expiry; no client sends it).
    Purge(Vec<Vec<u8>>),
    /// The queued commands of one MULTI/EXEC, applied atomically in order.
    Multi(Vec<Command>),
    /// A queued command whose arguments Redis rejects only when EXEC runs it
    /// (`INCRBY k abc`, `SET k v NX XX`): applying it answers this error text and
    /// changes nothing. Made by [`Command::parse_queued`], never by `parse`.
    Invalid(String),
}

/// When a [`Command::SetWith`] writes, and what it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// NX: only if the key is absent; XX: only if it is present.
    pub condition: SetCondition,
    /// GET (and GETSET): answer the old value (nil if none) instead of `+OK`.
    pub get: bool,
    /// SETNX: answer `:1` if it wrote, `:0` if not.
    pub counted: bool,
    /// KEEPTTL: the key keeps its timeout (else a SET removes it).
    pub keep_ttl: bool,
    /// EX, PX, EXAT or PXAT (and SETEX, PSETEX).
    pub expiry: Option<Expiry>,
}

/// Where a [`Command::Scan`] goes on, and which keys it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    /// 0 to start; each reply gives the cursor to go on from, 0 at the end.
    pub cursor: u64,
    /// MATCH's pattern; `None` for every key.
    pub pattern: Option<Vec<u8>>,
    /// COUNT: about how many keys to look at (at least 1).
    pub count: u64,
    /// TYPE named a type other than `string`, the only one here: no key
    /// is returned, though the cursor moves on as usual.
    pub other_type: bool,
}

/// SCAN's COUNT when none is given, as in Redis.
pub const SCAN_DEFAULT_COUNT: u64 = 10;

/// A SCAN with a larger COUNT may take milliseconds: a leader answers it
/// off its event loop, as it does KEYS.
pub const SCAN_MAX_COUNT_IN_PLACE: u64 = 10_000;

/// What a read of many keys (see [`Command::reads_many_keys`]) becomes in a
/// transaction that writes, and the bytes it takes in that entry then.
pub const MANY_KEYS_REFUSED_IN_WRITES: &str =
    "ERR KEYS, and SCAN with a COUNT over 10000, are not allowed in a transaction that writes";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetCondition {
    #[default]
    Always,
    IfAbsent,
    IfPresent,
}

/// Why an argv is not a command; `Display` gives the exact Redis error text
/// (without the leading `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// `ERR unknown command 'foo'` (name as the client wrote it).
    Unknown(String),
    /// `ERR wrong number of arguments for 'set' command` (name lower-cased).
    WrongArity(String),
    /// `ERR value is not an integer or out of range`
    NotInteger,
    /// `ERR syntax error` (e.g. `SET k v NX XX`).
    Syntax,
    /// `ERR invalid expire time in 'set' command` (an expiry of 0 or less),
    /// with the command's name.
    InvalidExpireTime(&'static str),
    /// Another of Redis's argument errors, its whole text.
    Rejected(String),
    /// `ERR invalid cursor` (SCAN's cursor is not an unsigned 64-bit number).
    InvalidCursor,
    /// A KEYS or SCAN MATCH pattern longer than [`MAX_PATTERN_BYTES`].
    PatternTooLong,
    /// `ERR decrement would overflow` (`DECRBY k -9223372036854775808`, as Redis).
    DecrementOverflow,
    /// `ERR unknown subcommand 'x'. Try MEMORY HELP.` (the subcommand as
    /// written): Redis 7 looks subcommands up as commands, at queue time.
    UnknownSubcommand(String, &'static str),
}

impl CommandError {
    /// Whether Redis reports this error when a command is queued inside MULTI
    /// (so that EXEC aborts) rather than when EXEC runs it.
    pub fn is_queue_time(&self) -> bool {
        matches!(
            self,
            CommandError::Unknown(_)
                | CommandError::WrongArity(_)
                | CommandError::UnknownSubcommand(..)
        )
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(name) => write!(f, "ERR unknown command '{}'", name),
            CommandError::WrongArity(name) => {
                write!(f, "ERR wrong number of arguments for '{}' command", name)
            }
            CommandError::NotInteger => write!(f, "ERR value is not an integer or out of range"),
            CommandError::Syntax => write!(f, "ERR syntax error"),
            CommandError::UnknownSubcommand(sub, family) => {
                write!(f, "ERR unknown subcommand '{}'. Try {} HELP.", sub, family)
            }
            CommandError::InvalidExpireTime(name) => {
                write!(f, "ERR invalid expire time in '{name}' command")
            }
            CommandError::InvalidCursor => write!(f, "ERR invalid cursor"),
            CommandError::Rejected(text) => write!(f, "{text}"),
            CommandError::PatternTooLong => {
                write!(f, "ERR pattern longer than {MAX_PATTERN_BYTES} bytes")
            }
            CommandError::DecrementOverflow => write!(f, "ERR decrement would overflow"),
        }
    }
}

impl std::error::Error for CommandError {}

/// A log payload that does not decode (a bug or a corrupt log, never client input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad command payload: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The longest KEYS or SCAN MATCH pattern: matching costs up to the
/// pattern's length times the key's for each key (and a step budget bounds
/// the whole, see `keyspace.rs`).
pub const MAX_PATTERN_BYTES: usize = 4096;

impl Command {
    /// Whether the command changes the map (must go through the log).
    pub fn is_write(&self) -> bool {
        match self {
            Command::Get(_)
            | Command::MGet(_)
            | Command::Exists(_)
            | Command::Keys(_)
            | Command::Scan(_)
            | Command::Type(_)
            | Command::Strlen(_)
            | Command::MemoryUsage(_)
            | Command::GetRange(..)
            | Command::GetExRefused(..)
            | Command::DbSize
            | Command::Ttl(_)
            | Command::Pttl(_)
            | Command::ExpireTime(..)
            | Command::Invalid(_) => false,
            Command::Set(..)
            | Command::SetWith(..)
            | Command::Del(_)
            | Command::IncrBy(..)
            | Command::MSet(_)
            | Command::MSetNx(_)
            | Command::Append(..)
            | Command::GetDel(_)
            | Command::GetEx(..)
            | Command::Rename(..)
            | Command::Persist(_)
            | Command::Expire(..)
            | Command::Purge(_)
            | Command::FlushAll => true,
            Command::Multi(commands) => commands.iter().any(Command::is_write),
        }
    }

    /// Whether answering it may look at more keys than an event loop should
    /// in one go: KEYS, a SCAN with a COUNT over [`SCAN_MAX_COUNT_IN_PLACE`],
    /// or a transaction holding one.
    pub fn reads_many_keys(&self) -> bool {
        match self {
            Command::Keys(_) => true,
            Command::Scan(scan) => scan.count > SCAN_MAX_COUNT_IN_PLACE,
            Command::Multi(commands) => commands.iter().any(Command::reads_many_keys),
            _ => false,
        }
    }

    /// The transaction of these queued commands. In one that writes, reads
    /// of many keys become errors: its entry is applied on every node's
    /// event loop, where they could stall every node at once.
    pub fn transaction(commands: Vec<Command>) -> Command {
        let writes = commands.iter().any(Command::is_write);
        if !writes || !commands.iter().any(Command::reads_many_keys) {
            return Command::Multi(commands);
        }
        Command::Multi(
            commands
                .into_iter()
                .map(|c| match c.reads_many_keys() {
                    true => Command::Invalid(MANY_KEYS_REFUSED_IN_WRITES.to_string()),
                    false => c,
                })
                .collect(),
        )
    }

    /// The command's name, for logs and assertion messages (never the arguments,
    /// which may be large or private).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get(_) => "get",
            Command::MGet(_) => "mget",
            Command::Exists(_) => "exists",
            Command::Set(..) | Command::SetWith(..) => "set",
            Command::Del(_) => "del",
            Command::IncrBy(..) => "incrby",
            Command::MSet(_) => "mset",
            Command::MSetNx(_) => "msetnx",
            Command::Append(..) => "append",
            Command::GetDel(_) => "getdel",
            Command::GetEx(..) | Command::GetExRefused(..) => "getex",
            Command::Rename(_, _, false) => "rename",
            Command::Rename(_, _, true) => "renamenx",
            Command::FlushAll => "flushall",
            Command::Keys(_) => "keys",
            Command::Scan(_) => "scan",
            Command::Type(_) => "type",
            Command::Strlen(_) => "strlen",
            Command::MemoryUsage(_) => "memory",
            Command::GetRange(..) => "getrange",
            Command::DbSize => "dbsize",
            Command::Ttl(_) => "ttl",
            Command::Pttl(_) => "pttl",
            Command::ExpireTime(_, false) => "expiretime",
            Command::ExpireTime(_, true) => "pexpiretime",
            Command::Persist(_) => "persist",
            Command::Expire(..) => "expire",
            Command::Purge(_) => "purge",
            Command::Multi(_) => "multi",
            Command::Invalid(_) => "invalid",
        }
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
