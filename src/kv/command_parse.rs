//! Parsing a client's argv into a [`Command`]: the name, the arity, then
//! each command's arguments and options, with Redis's error for each
//! mistake. Apart from the command types, which the payload codec, the
//! keyspace and the server use without parsing anything.

use super::{
    Command, CommandError, ScanOptions, SetCondition, SetOptions, MAX_PATTERN_BYTES,
    SCAN_DEFAULT_COUNT,
};
use crate::kv::expiry::{expire_condition, getex_action, parse_expiry, TimeUnit};
use crate::kv::reply::up_to_nul;

/// Longest command name echoed back in `ERR unknown command '...'` (Redis uses 128).
pub(super) const UNKNOWN_NAME_MAX_BYTES: usize = 128;

/// Longest key-value command name (`pexpiretime`); a longer name is unknown
/// without looking further.
const LONGEST_NAME_BYTES: usize = 11;

/// How many arguments (name included) a command takes.
enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Command {
    /// Parses a client argv (`argv[0]` is the command name, any case).
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
    let name = up_to_nul(name);
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
