//! The compact log-entry payload of a [`Command`].
//!
//! Format (all integers LEB128 varints; `bytes` is a varint length then the bytes):
//!
//! ```text
//! payload  = command                      (nothing may follow it)
//! command  = tag:u8 body
//!   1 GET     bytes(key)
//!   2 MGET    count, count × bytes(key)
//!   3 EXISTS  count, count × bytes(key)
//!   4 SET     bytes(key) bytes(value)
//!   5 DEL     count, count × bytes(key)
//!   6 INCRBY  bytes(key) zigzag(by)
//!   7 MSET    count, count × (bytes(key) bytes(value))
//!   8 MULTI   count, count × command      (nested at most MAX_MULTI_DEPTH deep)
//!   9 INVALID bytes(utf-8 error text)
//!  10 SETWITH bytes(key) bytes(value) flags:u8   (1 NX, 2 XX, 4 GET, 8 counted,
//!                                                16 KEEPTTL, 32 expiry)
//!             [zigzag(time) unit:u8]          (with flag 32; unit below)
//!  11 MSETNX  count, count × (bytes(key) bytes(value))
//!  12 APPEND  bytes(key) bytes(value)
//!  13 GETDEL  bytes(key)
//!  14 RENAME  bytes(source) bytes(destination) nx:u8 (0 or 1)
//!  15 FLUSHALL
//!  16 KEYS    bytes(pattern)
//!  17 SCAN    cursor count flags:u8 (1 MATCH, 2 another TYPE) [bytes(pattern)]
//!  18 TYPE    bytes(key)
//!  19 STRLEN  bytes(key)
//!  20 TTL     bytes(key)
//!  21 PERSIST bytes(key)
//!  22 AT      stamp command                   (the leader's unix ms; outermost only)
//!  23 PTTL    bytes(key)
//!  24 EXPIRETIME bytes(key) millis:u8 (0 or 1)
//!  25 EXPIRE  bytes(key) zigzag(time) unit:u8 condition:u8 (1 NX, 2 XX, 4 GT, 8 LT)
//!  26 PURGE   count, count × bytes(key)
//!  27 GETEX   bytes(key) action:u8 (0 PERSIST, 1 a time) [zigzag(time) unit:u8]
//!  28 GETRANGE bytes(key) zigzag(start) zigzag(end)
//!  29 GETEX_REFUSED bytes(key) bytes(utf-8 error text)
//!  30 DBSIZE
//!  31 MEMORY_USAGE bytes(key)
//!
//! unit = 0 relative seconds, 1 relative ms, 2 unix seconds, 3 unix ms
//! ```
//!
//! A leader stamps every write but a plain SET or MSET with its clock (AT),
//! and every node applies the entry at that time: what has expired by then,
//! and the deadline of a relative time, are the same on every node.
//!
//! Reads (GET, KEYS, ...) are logged only inside a MULTI; all of them travel
//! in this form when a follower forwards them.
//!
//! Decoding never trusts a length or count further than the bytes that are
//! actually there, so a corrupt payload yields a `DecodeError`, never a panic or
//! a huge allocation.

use super::command::{
    Command, DecodeError, ScanOptions, SetCondition, SetOptions, MAX_PATTERN_BYTES,
};
use super::expiry::{ExpireCondition, Expiry, GetExAction, TimeUnit};

type KeyValue = (Vec<u8>, Vec<u8>);

const TAG_GET: u8 = 1;
const TAG_MGET: u8 = 2;
const TAG_EXISTS: u8 = 3;
const TAG_SET: u8 = 4;
const TAG_DEL: u8 = 5;
const TAG_INCRBY: u8 = 6;
const TAG_MSET: u8 = 7;
const TAG_MULTI: u8 = 8;
const TAG_INVALID: u8 = 9;
const TAG_SET_WITH: u8 = 10;
const TAG_MSET_NX: u8 = 11;
const TAG_APPEND: u8 = 12;
const TAG_GET_DEL: u8 = 13;
const TAG_RENAME: u8 = 14;
const TAG_FLUSH_ALL: u8 = 15;
const TAG_KEYS: u8 = 16;
const TAG_SCAN: u8 = 17;
const TAG_TYPE: u8 = 18;
const TAG_STRLEN: u8 = 19;
const TAG_TTL: u8 = 20;
const TAG_PERSIST: u8 = 21;
const TAG_AT: u8 = 22;
const TAG_PTTL: u8 = 23;
const TAG_EXPIRE_TIME: u8 = 24;
const TAG_EXPIRE: u8 = 25;
const TAG_PURGE: u8 = 26;
const TAG_GET_EX: u8 = 27;
const TAG_GET_RANGE: u8 = 28;
const TAG_GET_EX_REFUSED: u8 = 29;
const TAG_DBSIZE: u8 = 30;
const TAG_MEMORY_USAGE: u8 = 31;
const SET_KEEP_TTL: u8 = 16;
const SET_EXPIRY: u8 = 32;
const EXPIRE_NX: u8 = 1;
const EXPIRE_XX: u8 = 2;
const EXPIRE_GT: u8 = 4;
const EXPIRE_LT: u8 = 8;
const SCAN_MATCH: u8 = 1;
const SCAN_OTHER_TYPE: u8 = 2;
const SET_NX: u8 = 1;
const SET_XX: u8 = 2;
const SET_GET: u8 = 4;
const SET_COUNTED: u8 = 8;

/// At most this many items are allocated for ahead of decoding them: a count
/// is checked only against the bytes left (one per item at least), and an
/// item in memory is much larger than one byte, so a corrupt count could
/// otherwise ask for many times the payload's size.
const PREALLOCATED_ITEMS: usize = 1024;

/// Deepest `Multi` nesting `decode` accepts; bounds its recursion on corrupt input.
/// Clients cannot nest MULTI at all, so 1 level is all that is ever written.
pub const MAX_MULTI_DEPTH: usize = 8;

impl Command {
    /// Appends the compact log-payload encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Command::Get(key) => put_key(out, TAG_GET, key),
            Command::MGet(keys) => put_keys(out, TAG_MGET, keys),
            Command::Exists(keys) => put_keys(out, TAG_EXISTS, keys),
            Command::Del(keys) => put_keys(out, TAG_DEL, keys),
            Command::Set(key, value) => encode_set(key, value, out),
            Command::SetWith(key, value, options) => {
                out.push(TAG_SET_WITH);
                put_bytes(out, key);
                put_bytes(out, value);
                out.push(set_flags(options));
                if let Some(expiry) = options.expiry {
                    put_expiry(out, expiry);
                }
            }
            Command::Pttl(key) => put_key(out, TAG_PTTL, key),
            Command::ExpireTime(key, millis) => {
                put_key(out, TAG_EXPIRE_TIME, key);
                out.push(u8::from(*millis));
            }
            Command::Expire(key, expiry, condition) => {
                put_key(out, TAG_EXPIRE, key);
                put_expiry(out, *expiry);
                out.push(
                    if condition.nx { EXPIRE_NX } else { 0 }
                        | if condition.xx { EXPIRE_XX } else { 0 }
                        | if condition.gt { EXPIRE_GT } else { 0 }
                        | if condition.lt { EXPIRE_LT } else { 0 },
                );
            }
            Command::Purge(keys) => put_keys(out, TAG_PURGE, keys),
            Command::IncrBy(key, by) => {
                out.push(TAG_INCRBY);
                put_bytes(out, key);
                put_signed(out, *by);
            }
            Command::MSet(pairs) => put_pairs(out, TAG_MSET, pairs),
            Command::MSetNx(pairs) => put_pairs(out, TAG_MSET_NX, pairs),
            Command::Append(key, value) => {
                out.push(TAG_APPEND);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Command::GetDel(key) => put_key(out, TAG_GET_DEL, key),
            Command::GetEx(key, action) => {
                put_key(out, TAG_GET_EX, key);
                match action {
                    GetExAction::Persist => out.push(0),
                    GetExAction::Expire(expiry) => {
                        out.push(1);
                        put_expiry(out, *expiry);
                    }
                }
            }
            Command::Rename(source, destination, nx) => {
                out.push(TAG_RENAME);
                put_bytes(out, source);
                put_bytes(out, destination);
                out.push(u8::from(*nx));
            }
            Command::FlushAll => out.push(TAG_FLUSH_ALL),
            Command::Keys(pattern) => put_key(out, TAG_KEYS, pattern),
            Command::Scan(scan) => {
                out.push(TAG_SCAN);
                put_varint(out, scan.cursor);
                put_varint(out, scan.count);
                let flags = if scan.pattern.is_some() {
                    SCAN_MATCH
                } else {
                    0
                } | if scan.other_type { SCAN_OTHER_TYPE } else { 0 };
                out.push(flags);
                if let Some(pattern) = &scan.pattern {
                    put_bytes(out, pattern);
                }
            }
            Command::Type(key) => put_key(out, TAG_TYPE, key),
            Command::Strlen(key) => put_key(out, TAG_STRLEN, key),
            Command::MemoryUsage(key) => put_key(out, TAG_MEMORY_USAGE, key),
            Command::GetRange(key, start, end) => {
                put_key(out, TAG_GET_RANGE, key);
                put_signed(out, *start);
                put_signed(out, *end);
            }
            Command::Ttl(key) => put_key(out, TAG_TTL, key),
            Command::Persist(key) => put_key(out, TAG_PERSIST, key),
            Command::Multi(commands) => {
                out.push(TAG_MULTI);
                put_varint(out, commands.len() as u64);
                for command in commands {
                    command.encode(out);
                }
            }
            Command::Invalid(text) => {
                out.push(TAG_INVALID);
                put_bytes(out, text.as_bytes());
            }
            Command::GetExRefused(key, text) => {
                put_key(out, TAG_GET_EX_REFUSED, key);
                put_bytes(out, text.as_bytes());
            }
            Command::DbSize => out.push(TAG_DBSIZE),
        }
    }

    /// The command of a payload, whether or not a leader stamped it.
    pub fn decode(payload: &[u8]) -> Result<Command, DecodeError> {
        Ok(Command::decode_stamped(payload)?.1)
    }

    /// A payload's stamp (the leader's unix ms, if it stamped one) and command.
    pub fn decode_stamped(payload: &[u8]) -> Result<(Option<u64>, Command), DecodeError> {
        let mut reader = Reader {
            input: payload,
            pos: 0,
        };
        let stamp = match payload.first() {
            Some(&TAG_AT) => {
                reader.pos = 1;
                Some(reader.varint()?)
            }
            _ => None,
        };
        let command = reader.command(0)?;
        if reader.pos != payload.len() {
            return Err(DecodeError(format!(
                "{} trailing bytes after the command",
                payload.len() - reader.pos
            )));
        }
        Ok((stamp, command))
    }

    /// Appends the payload of this command stamped with the leader's `stamp`.
    pub fn encode_stamped(&self, stamp: u64, out: &mut Vec<u8>) {
        out.push(TAG_AT);
        put_varint(out, stamp);
        self.encode(out);
    }

    /// Whether a leader stamps this write with its clock: every write but a
    /// plain SET and MSET, whose outcome does not depend on the time.
    pub fn is_stamped(&self) -> bool {
        self.is_write() && !matches!(self, Command::Set(..) | Command::MSet(_))
    }
}

fn put_expiry(out: &mut Vec<u8>, expiry: Expiry) {
    put_varint(out, ((expiry.time << 1) ^ (expiry.time >> 63)) as u64);
    out.push(match expiry.unit {
        TimeUnit::RelativeSeconds => 0,
        TimeUnit::RelativeMillis => 1,
        TimeUnit::AbsoluteSeconds => 2,
        TimeUnit::AbsoluteMillis => 3,
    });
}

/// Appends the encoding of `Command::Set(key, value)` to `out`, without the
/// command (a leader's fast path for plain SETs, which builds none).
pub fn encode_set(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.reserve(1 + 10 + key.len() + 10 + value.len());
    out.push(TAG_SET);
    put_bytes(out, key);
    put_bytes(out, value);
}

/// The key and value of a payload that is exactly one SET, borrowed from it;
/// `None` for anything else, including a damaged SET (which `Command::decode`
/// then reports). SET is nearly every entry of a busy log, and applying it
/// from the entry's own bytes saves two allocations per entry on every node.
pub fn decode_set(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut reader = Reader {
        input: payload,
        pos: 0,
    };
    if reader.byte().ok()? != TAG_SET {
        return None;
    }
    let key = reader.slice().ok()?;
    let value = reader.slice().ok()?;
    (reader.pos == payload.len()).then_some((key, value))
}

fn set_flags(options: &SetOptions) -> u8 {
    let condition = match options.condition {
        SetCondition::Always => 0,
        SetCondition::IfAbsent => SET_NX,
        SetCondition::IfPresent => SET_XX,
    };
    condition
        | if options.get { SET_GET } else { 0 }
        | if options.counted { SET_COUNTED } else { 0 }
        | if options.keep_ttl { SET_KEEP_TTL } else { 0 }
        | if options.expiry.is_some() {
            SET_EXPIRY
        } else {
            0
        }
}

fn set_options(flags: u8) -> Result<SetOptions, DecodeError> {
    let condition = match flags & (SET_NX | SET_XX) {
        0 => SetCondition::Always,
        SET_NX => SetCondition::IfAbsent,
        SET_XX => SetCondition::IfPresent,
        _ => return Err(DecodeError("SET with both NX and XX".into())),
    };
    let known = SET_NX | SET_XX | SET_GET | SET_COUNTED | SET_KEEP_TTL | SET_EXPIRY;
    if flags & !known != 0 || flags & SET_KEEP_TTL != 0 && flags & SET_EXPIRY != 0 {
        return Err(DecodeError(format!("unknown SET flags {flags:#04x}")));
    }
    Ok(SetOptions {
        condition,
        get: flags & SET_GET != 0,
        counted: flags & SET_COUNTED != 0,
        keep_ttl: flags & SET_KEEP_TTL != 0,
        expiry: None,
    })
}

/// An i64 as a zigzag varint, so small negative numbers stay short.
fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_key(out: &mut Vec<u8>, tag: u8, key: &[u8]) {
    out.push(tag);
    put_bytes(out, key);
}

fn put_pairs(out: &mut Vec<u8>, tag: u8, pairs: &[KeyValue]) {
    out.push(tag);
    put_varint(out, pairs.len() as u64);
    for (key, value) in pairs {
        put_bytes(out, key);
        put_bytes(out, value);
    }
}

fn put_keys(out: &mut Vec<u8>, tag: u8, keys: &[Vec<u8>]) {
    out.push(tag);
    put_varint(out, keys.len() as u64);
    for key in keys {
        put_bytes(out, key);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn command(&mut self, depth: usize) -> Result<Command, DecodeError> {
        let tag = self.byte()?;
        Ok(match tag {
            TAG_GET => Command::Get(self.bytes()?),
            TAG_MGET => Command::MGet(self.keys()?),
            TAG_EXISTS => Command::Exists(self.keys()?),
            TAG_DEL => Command::Del(self.keys()?),
            TAG_SET => Command::Set(self.bytes()?, self.bytes()?),
            TAG_SET_WITH => {
                let (key, value) = (self.bytes()?, self.bytes()?);
                let flags = self.byte()?;
                let mut options = set_options(flags)?;
                if flags & SET_EXPIRY != 0 {
                    options.expiry = Some(self.expiry()?);
                }
                Command::SetWith(key, value, options)
            }
            TAG_PTTL => Command::Pttl(self.bytes()?),
            TAG_EXPIRE_TIME => {
                let key = self.bytes()?;
                match self.byte()? {
                    0 => Command::ExpireTime(key, false),
                    1 => Command::ExpireTime(key, true),
                    other => return Err(DecodeError(format!("EXPIRETIME flag {other}"))),
                }
            }
            TAG_EXPIRE => {
                let (key, expiry) = (self.bytes()?, self.expiry()?);
                let flags = self.byte()?;
                if flags & !(EXPIRE_NX | EXPIRE_XX | EXPIRE_GT | EXPIRE_LT) != 0 {
                    return Err(DecodeError(format!("EXPIRE flags {flags:#04x}")));
                }
                let condition = ExpireCondition {
                    nx: flags & EXPIRE_NX != 0,
                    xx: flags & EXPIRE_XX != 0,
                    gt: flags & EXPIRE_GT != 0,
                    lt: flags & EXPIRE_LT != 0,
                };
                Command::Expire(key, expiry, condition)
            }
            TAG_PURGE => Command::Purge(self.keys()?),
            TAG_INCRBY => {
                let key = self.bytes()?;
                Command::IncrBy(key, self.signed()?)
            }
            TAG_MSET => Command::MSet(self.pairs()?),
            TAG_MSET_NX => Command::MSetNx(self.pairs()?),
            TAG_APPEND => Command::Append(self.bytes()?, self.bytes()?),
            TAG_GET_DEL => Command::GetDel(self.bytes()?),
            TAG_GET_EX => {
                let key = self.bytes()?;
                let action = match self.byte()? {
                    0 => GetExAction::Persist,
                    1 => GetExAction::Expire(self.expiry()?),
                    other => return Err(DecodeError(format!("GETEX action {other}"))),
                };
                Command::GetEx(key, action)
            }
            TAG_RENAME => {
                let (source, destination) = (self.bytes()?, self.bytes()?);
                let nx = match self.byte()? {
                    0 => false,
                    1 => true,
                    other => return Err(DecodeError(format!("RENAME flag {other}"))),
                };
                Command::Rename(source, destination, nx)
            }
            TAG_FLUSH_ALL => Command::FlushAll,
            TAG_KEYS => Command::Keys(self.pattern()?),
            TAG_SCAN => {
                let (cursor, count) = (self.varint()?, self.varint()?);
                let flags = self.byte()?;
                if flags & !(SCAN_MATCH | SCAN_OTHER_TYPE) != 0 || count == 0 {
                    return Err(DecodeError(format!(
                        "SCAN with flags {flags:#04x} and count {count}"
                    )));
                }
                let pattern = match flags & SCAN_MATCH {
                    0 => None,
                    _ => Some(self.pattern()?),
                };
                Command::Scan(ScanOptions {
                    cursor,
                    pattern,
                    count,
                    other_type: flags & SCAN_OTHER_TYPE != 0,
                })
            }
            TAG_TYPE => Command::Type(self.bytes()?),
            TAG_STRLEN => Command::Strlen(self.bytes()?),
            TAG_MEMORY_USAGE => Command::MemoryUsage(self.bytes()?),
            TAG_GET_RANGE => Command::GetRange(self.bytes()?, self.signed()?, self.signed()?),
            TAG_TTL => Command::Ttl(self.bytes()?),
            TAG_PERSIST => Command::Persist(self.bytes()?),
            TAG_MULTI => {
                if depth >= MAX_MULTI_DEPTH {
                    return Err(DecodeError(format!(
                        "MULTI nested deeper than {}",
                        MAX_MULTI_DEPTH
                    )));
                }
                // FLUSHALL, the shortest command, is its tag alone.
                let count = self.count(1)?;
                let mut commands = Vec::with_capacity(count.min(PREALLOCATED_ITEMS));
                for _ in 0..count {
                    commands.push(self.command(depth + 1)?);
                }
                Command::Multi(commands)
            }
            TAG_INVALID => {
                let text = self.bytes()?;
                let text = String::from_utf8(text)
                    .map_err(|_| DecodeError("INVALID text is not UTF-8".into()))?;
                Command::Invalid(text)
            }
            TAG_GET_EX_REFUSED => {
                let key = self.bytes()?;
                let text = String::from_utf8(self.bytes()?)
                    .map_err(|_| DecodeError("GETEX_REFUSED text is not UTF-8".into()))?;
                Command::GetExRefused(key, text)
            }
            TAG_DBSIZE => Command::DbSize,
            other => {
                return Err(DecodeError(format!(
                    "unknown tag {} at offset {}",
                    other,
                    self.pos - 1
                )))
            }
        })
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = *self
            .input
            .get(self.pos)
            .ok_or_else(|| DecodeError(format!("truncated at offset {}", self.pos)))?;
        self.pos += 1;
        Ok(byte)
    }

    /// An i64 written by [`put_signed`].
    fn signed(&mut self) -> Result<i64, DecodeError> {
        let zigzag = self.varint()?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError(format!(
            "varint overflows u64 at offset {}",
            start
        )))
    }

    /// A length that must fit in the bytes left.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = self.varint()?;
        let left = self.input.len() - self.pos;
        if len > left as u64 {
            return Err(DecodeError(format!(
                "length {} at offset {} exceeds the {} bytes left",
                len, at, left
            )));
        }
        Ok(len as usize)
    }

    /// An item count, each item taking at least `min_item_bytes` of what is left.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let count = self.varint()?;
        let left = (self.input.len() - self.pos) / min_item_bytes;
        if count > left as u64 {
            return Err(DecodeError(format!(
                "count {} at offset {} cannot fit in the bytes left",
                count, at
            )));
        }
        Ok(count as usize)
    }

    /// A KEYS or SCAN pattern, no longer than a client may send.
    fn pattern(&mut self) -> Result<Vec<u8>, DecodeError> {
        let pattern = self.bytes()?;
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(DecodeError(format!(
                "a pattern of {} bytes, over {MAX_PATTERN_BYTES}",
                pattern.len()
            )));
        }
        Ok(pattern)
    }

    fn expiry(&mut self) -> Result<Expiry, DecodeError> {
        let zigzag = self.varint()?;
        let time = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        let unit = match self.byte()? {
            0 => TimeUnit::RelativeSeconds,
            1 => TimeUnit::RelativeMillis,
            2 => TimeUnit::AbsoluteSeconds,
            3 => TimeUnit::AbsoluteMillis,
            other => return Err(DecodeError(format!("expiry unit {other}"))),
        };
        Ok(Expiry { time, unit })
    }

    fn pairs(&mut self) -> Result<Vec<KeyValue>, DecodeError> {
        // Each pair takes at least two bytes (two empty lengths).
        let count = self.count(2)?;
        let mut pairs = Vec::with_capacity(count.min(PREALLOCATED_ITEMS));
        for _ in 0..count {
            pairs.push((self.bytes()?, self.bytes()?));
        }
        Ok(pairs)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        self.slice().map(<[u8]>::to_vec)
    }

    fn slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.len()?;
        let bytes = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn keys(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let count = self.count(1)?;
        let mut keys = Vec::with_capacity(count.min(PREALLOCATED_ITEMS));
        for _ in 0..count {
            keys.push(self.bytes()?);
        }
        Ok(keys)
    }
}

#[cfg(test)]
#[path = "payload_tests.rs"]
mod tests;
