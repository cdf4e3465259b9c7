//! Key-value commands: from a client's argv, and to/from a log entry payload
//! (the payload codec is in `payload.rs`).
//!
//! Parsing follows Redis: the command name is case-insensitive, arity is checked
//! first (`ERR wrong number of arguments for 'set' command`), then arguments
//! (`ERR value is not an integer or out of range`, `ERR syntax error`). Integers
//! are parsed as Redis `string2ll` does: an optional `-`, no `+`, no spaces, no
//! leading zeros except `0` itself, within `i64`.

use super::expiry::{
    expire_condition, getex_action, parse_expiry, ExpireCondition, Expiry, GetExAction, TimeUnit,
};
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

/// Longest command name echoed back in `ERR unknown command '...'` (Redis uses 128).
const UNKNOWN_NAME_MAX_BYTES: usize = 128;

/// Longest key-value command name (`pexpiretime`); a longer name is unknown
/// without looking further.
const LONGEST_NAME_BYTES: usize = 11;

/// The longest KEYS or SCAN MATCH pattern: matching costs up to the
/// pattern's length times the key's for each key (and a step budget bounds
/// the whole, see `keyspace.rs`).
pub const MAX_PATTERN_BYTES: usize = 4096;

/// How many arguments (name included) a command takes.
enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Command {
    /// Parses a client argv (argv[0] is the command name, any case).
    pub fn parse(argv: &[Vec<u8>]) -> Result<Command, CommandError> {
        let Some(name) = argv.first() else {
            return Err(CommandError::Unknown(String::new()));
        };
        let mut lower = [0u8; LONGEST_NAME_BYTES];
        let lower = match lower.get_mut(..name.len()) {
            Some(lower) => {
                lower.copy_from_slice(name);
                lower.make_ascii_lowercase();
                &*lower
            }
            None => &[],
        };
        let arity = match arity_of(lower) {
            Some(arity) => arity,
            None => return Err(CommandError::Unknown(printable_name(name))),
        };
        let arity_ok = match arity {
            Arity::Exactly(n) => argv.len() == n,
            Arity::AtLeast(n) => argv.len() >= n,
        };
        if !arity_ok {
            return Err(CommandError::WrongArity(
                String::from_utf8_lossy(lower).into_owned(),
            ));
        }
        if lower == b"memory" {
            // Only USAGE: the others (STATS, DOCTOR, ...) describe Redis's allocator.
            if !argv[1].eq_ignore_ascii_case(b"usage") {
                return Err(CommandError::UnknownSubcommand(
                    printable_name(&argv[1]),
                    "MEMORY",
                ));
            }
            if argv.len() < 3 {
                return Err(CommandError::WrongArity("memory|usage".into()));
            }
        }
        // Redis declares MSET's arity as "at least 3" and finds odd pairs
        // only when it runs the command, with the same words: so inside
        // MULTI it is queued and EXEC answers the error in its place, and
        // before AUTH it gets NOAUTH.
        if matches!(lower, b"mset" | b"msetnx") && argv.len() % 2 == 0 {
            return Err(CommandError::Rejected(
                CommandError::WrongArity(String::from_utf8_lossy(lower).into_owned()).to_string(),
            ));
        }
        build(lower, &argv[1..])
    }

    /// Like [`Command::parse`] for a command queued inside MULTI: only the errors
    /// Redis reports at queue time (unknown command, wrong arity) are returned;
    /// argument errors become [`Command::Invalid`], answered when EXEC applies it.
    pub fn parse_queued(argv: &[Vec<u8>]) -> Result<Command, CommandError> {
        match Command::parse(argv) {
            Err(e) if !e.is_queue_time() => Ok(Command::Invalid(e.to_string())),
            other => other,
        }
    }

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

fn arity_of(lower_name: &[u8]) -> Option<Arity> {
    Some(match lower_name {
        b"get" | b"incr" | b"decr" | b"getdel" | b"keys" | b"type" | b"strlen" | b"ttl"
        | b"pttl" | b"persist" | b"expiretime" | b"pexpiretime" => Arity::Exactly(2),
        b"incrby" | b"decrby" | b"getset" | b"setnx" | b"append" | b"rename" | b"renamenx" => {
            Arity::Exactly(3)
        }
        b"setex" | b"psetex" | b"getrange" | b"substr" => Arity::Exactly(4),
        // SET takes options in Redis; extra arguments are a syntax error, not arity.
        b"set" => Arity::AtLeast(3),
        b"getex" => Arity::AtLeast(2),
        b"del" | b"unlink" | b"exists" | b"touch" | b"mget" | b"scan" => Arity::AtLeast(2),
        b"mset" | b"msetnx" => Arity::AtLeast(3),
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => Arity::AtLeast(3),
        b"flushall" | b"flushdb" => Arity::AtLeast(1),
        b"memory" => Arity::AtLeast(2),
        _ => return None,
    })
}

/// Builds the command from the arguments after its name, once the arity is
/// known to be right.
fn build(lower_name: &[u8], words: &[Vec<u8>]) -> Result<Command, CommandError> {
    let mut args = words.iter().cloned();
    let mut next = || match args.next() {
        Some(arg) => arg,
        None => panic!(
            "arity checked before build for '{}'",
            String::from_utf8_lossy(lower_name)
        ),
    };
    let command = match lower_name {
        b"get" => Command::Get(next()),
        b"set" => {
            let (key, value) = (next(), next());
            let options: Vec<Vec<u8>> = args.collect();
            match set_options(&options)? {
                plain if plain == SetOptions::default() => Command::Set(key, value),
                options => Command::SetWith(key, value, options),
            }
        }
        b"getset" => {
            let get = SetOptions {
                get: true,
                ..SetOptions::default()
            };
            Command::SetWith(next(), next(), get)
        }
        b"setnx" => {
            let counted = SetOptions {
                condition: SetCondition::IfAbsent,
                counted: true,
                ..SetOptions::default()
            };
            Command::SetWith(next(), next(), counted)
        }
        b"incr" => Command::IncrBy(next(), 1),
        b"decr" => Command::IncrBy(next(), -1),
        b"incrby" => {
            let key = next();
            Command::IncrBy(key, parse_integer(&next()).ok_or(CommandError::NotInteger)?)
        }
        b"decrby" => {
            let key = next();
            let by = parse_integer(&next()).ok_or(CommandError::NotInteger)?;
            let negated = by.checked_neg().ok_or(CommandError::DecrementOverflow)?;
            Command::IncrBy(key, negated)
        }
        b"del" | b"unlink" => Command::Del(args.collect()),
        // TOUCH counts the keys there as EXISTS does (there is no idle time
        // to reset here).
        b"exists" | b"touch" => Command::Exists(args.collect()),
        b"mget" => Command::MGet(args.collect()),
        b"mset" | b"msetnx" => {
            let mut pairs = Vec::with_capacity(args.len() / 2);
            while let (Some(key), Some(value)) = (args.next(), args.next()) {
                pairs.push((key, value));
            }
            if lower_name == b"mset" {
                Command::MSet(pairs)
            } else {
                Command::MSetNx(pairs)
            }
        }
        b"append" => Command::Append(next(), next()),
        b"getdel" => Command::GetDel(next()),
        b"getex" => match getex_action(&words[1..]) {
            Ok(None) => Command::Get(next()),
            Ok(Some(action)) => Command::GetEx(next(), action),
            Err(refused @ (CommandError::NotInteger | CommandError::InvalidExpireTime(_))) => {
                Command::GetExRefused(next(), refused.to_string())
            }
            Err(syntax) => return Err(syntax),
        },
        b"rename" => Command::Rename(next(), next(), false),
        b"renamenx" => Command::Rename(next(), next(), true),
        b"flushall" | b"flushdb" => {
            // ASYNC and SYNC are accepted; the snapshot thread frees the keys
            // after either.
            let mode = args.next().map(|word| word.to_ascii_lowercase());
            match (mode.as_deref(), args.next()) {
                (None | Some(b"async" | b"sync"), None) => Command::FlushAll,
                _ => return Err(CommandError::Syntax),
            }
        }
        b"keys" => Command::Keys(pattern(next())?),
        b"scan" => Command::Scan(scan_options(&words[0], &words[1..])?),
        b"type" => Command::Type(next()),
        b"strlen" => Command::Strlen(next()),
        b"memory" => {
            let _usage = next();
            let key = next();
            // SAMPLES n, as Redis checks it; a string has no elements to sample.
            let mut options = args;
            while let Some(word) = options.next() {
                let samples = match options.next() {
                    Some(n) if word.eq_ignore_ascii_case(b"samples") => n,
                    _ => return Err(CommandError::Syntax),
                };
                if parse_integer(&samples).ok_or(CommandError::NotInteger)? < 0 {
                    return Err(CommandError::Syntax);
                }
            }
            Command::MemoryUsage(key)
        }
        b"getrange" | b"substr" => {
            let key = next();
            let start = parse_integer(&next()).ok_or(CommandError::NotInteger)?;
            let end = parse_integer(&next()).ok_or(CommandError::NotInteger)?;
            Command::GetRange(key, start, end)
        }
        b"ttl" => Command::Ttl(next()),
        b"pttl" => Command::Pttl(next()),
        b"expiretime" => Command::ExpireTime(next(), false),
        b"pexpiretime" => Command::ExpireTime(next(), true),
        b"persist" => Command::Persist(next()),
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" | b"setex" | b"psetex" => {
            let name = expiry_name(lower_name);
            let unit = TimeUnit::of(lower_name).ok_or(CommandError::Syntax)?;
            let (key, time) = (next(), next());
            if matches!(lower_name, b"setex" | b"psetex") {
                let options = SetOptions {
                    expiry: Some(parse_expiry(name, &time, unit, true)?),
                    ..SetOptions::default()
                };
                Command::SetWith(key, next(), options)
            } else {
                let condition = expire_condition(&words[2..])?;
                Command::Expire(key, parse_expiry(name, &time, unit, false)?, condition)
            }
        }
        other => panic!(
            "build called for a name without arity: '{}'",
            String::from_utf8_lossy(other)
        ),
    };
    Ok(command)
}

/// SET's options after key and value, as Redis 7 takes them: NX or XX, GET,
/// KEEPTTL or one of EX, PX, EXAT and PXAT.
fn set_options(words: &[Vec<u8>]) -> Result<SetOptions, CommandError> {
    let mut options = SetOptions::default();
    // The expiry's unit (lower case) and time, the last one given.
    let mut expiry: Option<(Vec<u8>, &[u8])> = None;
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let lower = word.to_ascii_lowercase();
        match lower.as_slice() {
            b"nx" if options.condition != SetCondition::IfPresent => {
                options.condition = SetCondition::IfAbsent
            }
            b"xx" if options.condition != SetCondition::IfAbsent => {
                options.condition = SetCondition::IfPresent
            }
            b"get" => options.get = true,
            b"keepttl" if expiry.is_none() => options.keep_ttl = true,
            b"ex" | b"px" | b"exat" | b"pxat" => {
                // One kind of expiry, given again at most, and never with KEEPTTL.
                let other_kind = matches!(&expiry, Some((unit, _)) if *unit != lower);
                match words.next() {
                    Some(time) if !other_kind && !options.keep_ttl => expiry = Some((lower, time)),
                    _ => return Err(CommandError::Syntax),
                }
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    if let Some((unit, time)) = expiry {
        let unit = TimeUnit::of(&unit).ok_or(CommandError::Syntax)?;
        options.expiry = Some(parse_expiry("set", time, unit, true)?);
    }
    Ok(options)
}

/// SCAN's cursor and options, checked as Redis 7.0 checks them: the cursor
/// first, then each option in turn.
fn scan_options(cursor: &[u8], words: &[Vec<u8>]) -> Result<ScanOptions, CommandError> {
    let cursor = parse_cursor(cursor).ok_or(CommandError::InvalidCursor)?;
    let mut options = ScanOptions {
        cursor,
        pattern: None,
        count: SCAN_DEFAULT_COUNT,
        other_type: false,
    };
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let lower = word.to_ascii_lowercase();
        let Some(value) = words.next() else {
            return Err(CommandError::Syntax);
        };
        match lower.as_slice() {
            b"count" => match parse_integer(value) {
                None => return Err(CommandError::NotInteger),
                Some(count) if count < 1 => return Err(CommandError::Syntax),
                Some(count) => options.count = count as u64,
            },
            b"match" => options.pattern = Some(pattern(value.clone())?).filter(|p| p != b"*"),
            b"type" => options.other_type = !value.eq_ignore_ascii_case(b"string"),
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(options)
}

/// A cursor as Redis 7.0 reads one, with C's `strtoul`: an optional sign
/// and decimal digits within `u64` (a `-` negates modulo 2^64), and nothing
/// at all as 0.
fn parse_cursor(word: &[u8]) -> Option<u64> {
    if word.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match word.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, word),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

fn pattern(word: Vec<u8>) -> Result<Vec<u8>, CommandError> {
    if word.len() > MAX_PATTERN_BYTES {
        return Err(CommandError::PatternTooLong);
    }
    Ok(word)
}

/// The static name of an expiry command, for its errors.
fn expiry_name(lower_name: &[u8]) -> &'static str {
    match lower_name {
        b"pexpire" => "pexpire",
        b"expireat" => "expireat",
        b"pexpireat" => "pexpireat",
        b"setex" => "setex",
        b"psetex" => "psetex",
        _ => "expire",
    }
}

fn printable_name(name: &[u8]) -> String {
    let shown = &name[..name.len().min(UNKNOWN_NAME_MAX_BYTES)];
    String::from_utf8_lossy(shown).into_owned()
}

/// Parses a decimal `i64` exactly as Redis `string2ll`: optional `-`, no `+`, no
/// spaces, no leading zeros (except `0` itself; `-0` is rejected), within range.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    // Accumulate as a negative number so that i64::MIN is reachable.
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(byte - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
