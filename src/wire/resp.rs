//! RESP2 requests (multibulk and inline) and RESP2/RESP3 reply encoding.
//!
//! The request parser follows Redis `networking.c` (`processInputBuffer`,
//! `processInlineBuffer`, `processMultibulkBuffer`): a request whose first byte
//! is `*` is a multibulk array of bulk strings, anything else is an inline
//! line. The error texts after `ERR protocol error: ` are Redis's. Differences,
//! all stricter or safer: the whole request is limited by `max_request_bytes`
//! (Redis limits each bulk and each inline line separately); the `\r\n` after
//! a header line or bulk data is checked (Redis skips two bytes unseen);
//! `*-2` and below are errors (Redis treats any count ≤ 0 as empty); a NUL
//! byte in an inline line is an ordinary byte (Redis ends the line there).

use crate::kv::{parse_integer, Reply};
use std::fmt;

/// A request's words: argv[0] is the command name.
pub type Argv = Vec<Vec<u8>>;

/// Which reply dialect a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// A request that cannot be parsed; the connection gets `-ERR protocol error: <detail>`
/// and is closed. `Display` gives the whole line without the leading `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERR protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Longest `*<count>` or `$<len>` line, without `\r\n`, that can be valid:
/// `$-9223372036854775808` is 21 bytes. A longer one is rejected at once.
const HEADER_MAX_BYTES: usize = 32;

/// Smallest possible bulk argument on the wire: `$0\r\n\r\n`.
const MIN_BULK_BYTES: usize = 6;

/// `argv` capacity reserved up front at most, whatever count a client declares
/// (Redis uses the same bound).
const ARGV_PREALLOC_MAX: usize = 1024;

/// Buffers handed back through [`RequestParser::recycle`] are kept for reuse
/// only up to these sizes and counts, so an idle connection holds at most a
/// few kilobytes, whatever requests it sent before.
const SPARE_WORD_MAX_BYTES: usize = 1024;
const SPARE_WORDS_MAX: usize = 16;
const SPARE_ARGV_MAX_WORDS: usize = 64;

/// Where the parser stands inside the request that begins at `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing of the next request parsed yet.
    Begin,
    /// An inline line; `pos` is how far it has been searched for `\n`.
    Inline,
    /// The `*<count>\r\n` line, starting at `start`.
    Count,
    /// The `$<len>\r\n` line of the next argument, at `pos`; `remaining`
    /// arguments (this one included) are still to come.
    BulkHeader { remaining: usize },
    /// `len` bytes of data and `\r\n` at `pos`.
    BulkData { remaining: usize, len: usize },
}

/// Incremental request parser for one connection. It keeps its position inside
/// a partly received request, so a large bulk arriving in many reads is not
/// rescanned, and it rejects a request larger than `max_request_bytes` as soon
/// as the declared or buffered size shows it, before buffering it.
///
/// # Contract
/// The caller keeps one input buffer per connection and passes its unconsumed
/// front to `parse`:
/// - after `Ok(Some((argv, used)))`, it drops `used` bytes from the front, and
///   the next call starts with the byte after them;
/// - after `Ok(None)`, the next call must pass the same bytes again with any
///   newly read bytes appended (the buffer may move, its contents may not);
/// - after `Err`, it writes the error reply and closes the connection; further
///   calls return the same error.
pub struct RequestParser {
    max_request_bytes: usize,
    state: State,
    /// Offset of the current request in the caller's buffer. Empty requests
    /// (blank inline lines, `*0`) before it have been skipped but are
    /// still in the caller's buffer, and count toward the size limit.
    start: usize,
    /// Offset where parsing resumes.
    pos: usize,
    /// The arguments of a multibulk request parsed so far.
    argv: Argv,
    /// Buffers of earlier requests given back by the caller: a word is copied
    /// into one of these instead of a fresh allocation, as a pipelined stream
    /// of same-shaped requests (SET k v, SET k v, ...) would otherwise allocate
    /// every word of every request.
    spare_words: Vec<Vec<u8>>,
    spare_argv: Argv,
    failed: Option<ProtocolError>,
    /// Bytes looked at by searches and checks, for tests that parse cost stays
    /// linear in the input (the final copy of each argument is not counted).
    bytes_examined: u64,
}

impl RequestParser {
    pub fn new(max_request_bytes: usize) -> RequestParser {
        RequestParser {
            max_request_bytes,
            state: State::Begin,
            start: 0,
            pos: 0,
            argv: Vec::new(),
            spare_words: Vec::new(),
            spare_argv: Vec::new(),
            failed: None,
            bytes_examined: 0,
        }
    }

    /// Parses the next whole request from the front of `input`. Returns the argv
    /// and how many bytes of `input` it used, `Ok(None)` if more bytes are needed
    /// (remembering progress), or an error. An empty inline line is skipped
    /// (counted as used) as Redis does: a returned argv is never empty, and
    /// `used` includes the empty requests skipped before it.
    pub fn parse(&mut self, input: &[u8]) -> Result<Option<(Argv, usize)>, ProtocolError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        assert!(
            input.len() >= self.pos,
            "RequestParser::parse given {} bytes, fewer than the {} already parsed",
            input.len(),
            self.pos
        );
        let result = self.step_until_done(input);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// Gives back an argv returned by `parse` once the caller is done with it,
    /// so its buffers serve the next requests.
    pub fn recycle(&mut self, mut argv: Argv) {
        // Reversed, so the next request's first word gets this one's first
        // buffer back: same-shaped requests then fit without reallocating.
        for mut word in argv.drain(..).rev() {
            if self.spare_words.len() < SPARE_WORDS_MAX && word.capacity() <= SPARE_WORD_MAX_BYTES {
                word.clear();
                self.spare_words.push(word);
            }
        }
        if argv.capacity() <= SPARE_ARGV_MAX_WORDS {
            self.spare_argv = argv;
        }
    }

    /// Bytes of buffer capacity kept for reuse; a diagnostic for tests.
    pub fn spare_bytes(&self) -> usize {
        let words: usize = self.spare_words.iter().map(Vec::capacity).sum();
        words + self.spare_argv.capacity() * std::mem::size_of::<Vec<u8>>()
    }

    fn push_word(&mut self, bytes: &[u8]) {
        let mut word = self.spare_words.pop().unwrap_or_default();
        word.extend_from_slice(bytes);
        self.argv.push(word);
    }

    /// Bytes examined so far (see the field); a diagnostic for tests.
    pub fn bytes_examined(&self) -> u64 {
        self.bytes_examined
    }

    fn step_until_done(&mut self, input: &[u8]) -> Result<Option<(Argv, usize)>, ProtocolError> {
        loop {
            let progressed = match self.state {
                State::Begin => self.begin(input),
                State::Inline => self.inline(input)?,
                State::Count => self.count(input)?,
                State::BulkHeader { remaining } => self.bulk_header(input, remaining)?,
                State::BulkData { remaining, len } => self.bulk_data(input, remaining, len)?,
            };
            if !progressed {
                return Ok(None);
            }
            if self.state == State::Begin && !self.argv.is_empty() {
                let argv = std::mem::take(&mut self.argv);
                let used = self.pos;
                self.start = 0;
                self.pos = 0;
                return Ok(Some((argv, used)));
            }
        }
    }

    /// Ends the current request (whole or empty) at `end`.
    fn finish_request(&mut self, end: usize) {
        self.state = State::Begin;
        self.start = end;
        self.pos = end;
    }

    fn too_large(&self) -> ProtocolError {
        ProtocolError(format!(
            "request exceeds max_request_bytes ({})",
            self.max_request_bytes
        ))
    }

    fn begin(&mut self, input: &[u8]) -> bool {
        match input.get(self.start) {
            None => false,
            Some(b'*') => {
                self.state = State::Count;
                true
            }
            Some(_) => {
                self.state = State::Inline;
                self.pos = self.start;
                true
            }
        }
    }

    fn inline(&mut self, input: &[u8]) -> Result<bool, ProtocolError> {
        let unsearched = &input[self.pos..];
        self.bytes_examined += unsearched.len() as u64;
        let Some(offset) = find_newline(unsearched) else {
            self.pos = input.len();
            if input.len() > self.max_request_bytes {
                return Err(self.too_large());
            }
            return Ok(false);
        };
        let newline = self.pos + offset;
        if newline + 1 > self.max_request_bytes {
            return Err(self.too_large());
        }
        let mut line = &input[self.start..newline];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let mut argv = std::mem::take(&mut self.spare_argv);
        if !split_inline(line, &mut argv, &mut self.spare_words) {
            return Err(ProtocolError("unbalanced quotes in request".into()));
        }
        self.argv = argv;
        self.finish_request(newline + 1);
        Ok(true)
    }

    fn count(&mut self, input: &[u8]) -> Result<bool, ProtocolError> {
        let invalid = || ProtocolError("invalid multibulk length".into());
        let Some((count, next)) = self.header_line(input, self.start + 1, invalid)? else {
            return Ok(false);
        };
        // Redis skips any count <= 0, the null array `*-1` included; SPEC §3
        // makes every negative count a protocol error.
        if count == 0 {
            // Skipped empty requests stay in the caller's buffer until a
            // whole request follows them, so they count toward the limit,
            // as blank inline lines do; unchecked, a stream of `*0` alone
            // was buffered without end.
            if next > self.max_request_bytes {
                return Err(self.too_large());
            }
            self.finish_request(next);
            return Ok(true);
        }
        if count < 0 || count > i64::from(i32::MAX) {
            return Err(invalid());
        }
        let count = count as usize;
        if next.saturating_add(count.saturating_mul(MIN_BULK_BYTES)) > self.max_request_bytes {
            return Err(self.too_large());
        }
        self.argv = std::mem::take(&mut self.spare_argv);
        self.argv.reserve(count.min(ARGV_PREALLOC_MAX));
        self.state = State::BulkHeader { remaining: count };
        self.pos = next;
        Ok(true)
    }

    fn bulk_header(&mut self, input: &[u8], remaining: usize) -> Result<bool, ProtocolError> {
        let Some(&first) = input.get(self.pos) else {
            return Ok(false);
        };
        if first != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(first)
            )));
        }
        let invalid = || ProtocolError("invalid bulk length".into());
        let Some((len, next)) = self.header_line(input, self.pos + 1, invalid)? else {
            return Ok(false);
        };
        let len = usize::try_from(len).map_err(|_| invalid())?;
        let least_total = next
            .saturating_add(len)
            .saturating_add(2)
            .saturating_add((remaining - 1).saturating_mul(MIN_BULK_BYTES));
        if least_total > self.max_request_bytes {
            return Err(self.too_large());
        }
        self.state = State::BulkData { remaining, len };
        self.pos = next;
        Ok(true)
    }

    fn bulk_data(
        &mut self,
        input: &[u8],
        remaining: usize,
        len: usize,
    ) -> Result<bool, ProtocolError> {
        let end = self.pos + len;
        if input.len() < end + 2 {
            return Ok(false);
        }
        self.bytes_examined += 2;
        if &input[end..end + 2] != b"\r\n" {
            return Err(ProtocolError("expected '\\r\\n' after bulk data".into()));
        }
        self.push_word(&input[self.pos..end]);
        if remaining == 1 {
            self.finish_request(end + 2);
        } else {
            self.state = State::BulkHeader {
                remaining: remaining - 1,
            };
            self.pos = end + 2;
        }
        Ok(true)
    }

    /// Reads a `<integer>\r\n` line starting at `from`; returns the integer and
    /// the offset after the line, or `None` if it is not all there yet.
    fn header_line(
        &mut self,
        input: &[u8],
        from: usize,
        invalid: impl Fn() -> ProtocolError,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        let window = &input[from.min(input.len())..input.len().min(from + HEADER_MAX_BYTES + 2)];
        self.bytes_examined += window.len() as u64;
        let Some(cr) = window.iter().position(|&b| b == b'\r') else {
            return if window.len() >= HEADER_MAX_BYTES + 2 {
                Err(invalid())
            } else {
                Ok(None)
            };
        };
        // A line already too long to be valid must fail now: with its `\r`
        // on the window's last byte, waiting for the `\n` would never end,
        // since the window never grows, and the connection would buffer
        // whatever the client sends after it.
        if cr > HEADER_MAX_BYTES {
            return Err(invalid());
        }
        match window.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => {
                let value = parse_integer(&window[..cr]).ok_or_else(&invalid)?;
                Ok(Some((value, from + cr + 2)))
            }
            Some(_) => Err(invalid()),
        }
    }
}

/// Splits an inline line into words as Redis `sdssplitargs`: words separated by
/// whitespace; `"..."` with `\n \r \t \b \a \\ \" \xHH` escapes; `'...'` with
/// `\'`; a quote may start inside a word, and a closing quote must be followed
/// by whitespace or the end. The words are appended to `words`, in buffers
/// taken from `spare` where it has any; `false` means unbalanced quotes.
fn split_inline(line: &[u8], words: &mut Argv, spare: &mut Vec<Vec<u8>>) -> bool {
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return true;
        }
        let run = line[i..]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'"' | b'\''))
            .unwrap_or(line.len() - i);
        let mut word = spare.pop().unwrap_or_default();
        word.extend_from_slice(&line[i..i + run]);
        i += run;
        if let Some(&quote) = line.get(i).filter(|&&b| b == b'"' || b == b'\'') {
            match split_quoted(line, i + 1, quote, &mut word) {
                Some(next) => i = next,
                None => return false,
            }
        }
        words.push(word);
    }
}

/// Appends the quoted part starting at `i` (after the opening `quote`) to
/// `word`; returns the offset after the closing quote.
fn split_quoted(line: &[u8], mut i: usize, quote: u8, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        let run = line[i..]
            .iter()
            .position(|&b| b == quote || b == b'\\')
            .unwrap_or(line.len() - i);
        word.extend_from_slice(&line[i..i + run]);
        i += run;
        let next = line.get(i + 1).copied();
        match line.get(i) {
            None => return None,
            Some(&c) if c == quote => {
                return match next {
                    Some(after) if !is_space(after) => None,
                    _ => Some(i + 1),
                };
            }
            // A backslash.
            Some(_) if quote == b'\'' => {
                let escaped_quote = next == Some(b'\'');
                word.push(if escaped_quote { b'\'' } else { b'\\' });
                i += if escaped_quote { 2 } else { 1 };
            }
            Some(_) => {
                let hex_byte = match (line.get(i + 2).and_then(hex), line.get(i + 3).and_then(hex))
                {
                    (Some(hi), Some(lo)) if next == Some(b'x') => Some(hi << 4 | lo),
                    _ => None,
                };
                match (hex_byte, next) {
                    (Some(byte), _) => {
                        word.push(byte);
                        i += 4;
                    }
                    (None, Some(escaped)) => {
                        word.push(unescape(escaped));
                        i += 2;
                    }
                    // A backslash ending the line; the missing quote fails next round.
                    (None, None) => {
                        word.push(b'\\');
                        i += 1;
                    }
                }
            }
        }
    }
}

fn unescape(byte: u8) -> u8 {
    match byte {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// The first `\n`, eight bytes at a time (the SWAR "has zero byte" test).
fn find_newline(haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(b'\n');
    let mut i = 0;
    while i + 8 <= haystack.len() {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&haystack[i..i + 8]);
        let x = u64::from_le_bytes(chunk) ^ pattern;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            break;
        }
        i += 8;
    }
    haystack[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| i + p)
}

/// C `isspace`.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(byte: &u8) -> Option<u8> {
    (*byte as char).to_digit(16).map(|d| d as u8)
}

/// Appends the encoding of `reply` in `protocol` to `out`.
pub fn encode_reply(reply: &Reply, protocol: Protocol, out: &mut Vec<u8>) {
    match reply {
        Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
        Reply::Status(text) => put_line(out, b'+', text.as_bytes()),
        Reply::Error(text) => put_line(out, b'-', text.as_bytes()),
        Reply::Integer(n) => {
            out.push(b':');
            put_decimal(out, *n);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Bulk(bytes) => put_bulk(out, bytes),
        Reply::Nil => match protocol {
            Protocol::Resp2 => out.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
        },
        Reply::Array(items) => {
            put_header(out, b'*', items.len());
            for item in items {
                encode_reply(item, protocol, out);
            }
        }
        Reply::Map(pairs) => {
            match protocol {
                Protocol::Resp2 => put_header(out, b'*', pairs.len() * 2),
                Protocol::Resp3 => put_header(out, b'%', pairs.len()),
            }
            for (key, value) in pairs {
                encode_reply(key, protocol, out);
                encode_reply(value, protocol, out);
            }
        }
    }
}

/// Appends `argv` as a RESP array of bulk strings (what clients send).
pub fn encode_request(argv: &[&[u8]], out: &mut Vec<u8>) {
    put_header(out, b'*', argv.len());
    for arg in argv {
        put_bulk(out, arg);
    }
}

/// A status or error line; `\r` and `\n` in the text become spaces, as Redis
/// does, so that a line can never break the protocol.
fn put_line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    let start = out.len();
    out.extend_from_slice(text);
    for byte in &mut out[start..] {
        if *byte == b'\r' || *byte == b'\n' {
            *byte = b' ';
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn put_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    put_header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    put_unsigned(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

fn put_decimal(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    put_unsigned(out, n.unsigned_abs());
}

fn put_unsigned(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Deepest nesting of aggregates `parse_reply` follows (bounds its recursion).
const REPLY_DEPTH_MAX: usize = 64;

/// Parses one RESP2/RESP3 reply from the front of `input` (for clients: tests,
/// benches, the load tools). Returns the reply and the bytes used, or `Ok(None)`
/// if incomplete. Not resumable: an incomplete reply is parsed again from its
/// start on the next call.
///
/// RESP3 types without a `Reply` variant map to the nearest one: booleans to
/// `Integer(1|0)`, doubles and big numbers to `Bulk` of their text, verbatim
/// strings to `Bulk` without the format prefix, sets and pushes to `Array`,
/// blob errors to `Error`; attributes are skipped. `+OK` becomes `Reply::Ok`.
pub fn parse_reply(input: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_value(input, 0, 0)
}

fn parse_value(
    input: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > REPLY_DEPTH_MAX {
        return Err(ProtocolError(format!(
            "reply nested deeper than {}",
            REPLY_DEPTH_MAX
        )));
    }
    let Some(&kind) = input.get(at) else {
        return Ok(None);
    };
    let Some((line, next)) = reply_line(input, at + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let reply = match kind {
        b'+' if line == b"OK" => Reply::Ok,
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(reply_integer(line)?),
        b'_' => Reply::Nil,
        b'#' => match line {
            b"t" => Reply::Integer(1),
            b"f" => Reply::Integer(0),
            _ => return Err(ProtocolError(format!("bad boolean '{}'", text()))),
        },
        b',' | b'(' => Reply::Bulk(line.to_vec()),
        b'$' | b'=' | b'!' => return parse_blob(input, kind, line, next),
        b'*' | b'~' | b'>' | b'%' | b'|' => return parse_aggregate(input, kind, line, next, depth),
        other => {
            return Err(ProtocolError(format!(
                "unknown reply type '{}'",
                char::from(other)
            )))
        }
    };
    Ok(Some((reply, next)))
}

fn parse_blob(
    input: &[u8],
    kind: u8,
    line: &[u8],
    next: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let len = reply_integer(line)?;
    if len == -1 && kind == b'$' {
        return Ok(Some((Reply::Nil, next)));
    }
    let len = usize::try_from(len).map_err(|_| ProtocolError("invalid bulk length".into()))?;
    let end = next.saturating_add(len);
    if input.len() < end.saturating_add(2) {
        return Ok(None);
    }
    if &input[end..end + 2] != b"\r\n" {
        return Err(ProtocolError("expected '\\r\\n' after bulk data".into()));
    }
    let data = &input[next..end];
    let reply = match kind {
        b'!' => Reply::Error(String::from_utf8_lossy(data).into_owned()),
        b'=' if data.len() >= 4 && data[3] == b':' => Reply::Bulk(data[4..].to_vec()),
        _ => Reply::Bulk(data.to_vec()),
    };
    Ok(Some((reply, end + 2)))
}

fn parse_aggregate(
    input: &[u8],
    kind: u8,
    line: &[u8],
    mut next: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let count = reply_integer(line)?;
    if count == -1 && kind == b'*' {
        return Ok(Some((Reply::Nil, next)));
    }
    let count =
        usize::try_from(count).map_err(|_| ProtocolError("invalid multibulk length".into()))?;
    let is_map = kind == b'%' || kind == b'|';
    let elements = if is_map {
        count.saturating_mul(2)
    } else {
        count
    };
    // Every element takes at least 3 bytes; never reserve more than could be there.
    let mut items = Vec::with_capacity(elements.min(input.len().saturating_sub(next) / 3));
    for _ in 0..elements {
        let Some((item, after)) = parse_value(input, next, depth + 1)? else {
            return Ok(None);
        };
        items.push(item);
        next = after;
    }
    let reply = if is_map {
        let mut pairs = Vec::with_capacity(count);
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            pairs.push((key, value));
        }
        Reply::Map(pairs)
    } else {
        Reply::Array(items)
    };
    if kind == b'|' {
        // An attribute annotates the reply that follows it: return that one.
        return parse_value(input, next, depth + 1);
    }
    Ok(Some((reply, next)))
}

/// The line starting at `from` (up to `\r\n`) and the offset after it.
fn reply_line(input: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = input.get(from..)?;
    let newline = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..newline], from + newline + 2))
}

fn reply_integer(line: &[u8]) -> Result<i64, ProtocolError> {
    parse_integer(line)
        .ok_or_else(|| ProtocolError(format!("bad integer '{}'", String::from_utf8_lossy(line))))
}
