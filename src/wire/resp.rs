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
//!
//! This file holds the wire types and the request parser's state machine;
//! splitting an inline line is in `resp_inline.rs`, writing replies and
//! requests in `resp_encode.rs`, and parsing replies (for clients) in
//! `resp_reply.rs`.

#[path = "resp_encode.rs"]
mod encode;
#[path = "resp_inline.rs"]
mod inline;
#[path = "resp_reply.rs"]
mod reply;

pub use encode::{encode_reply, encode_request};
pub use reply::parse_reply;

use self::inline::split_inline;
use crate::kv::parse_integer;
use std::fmt;

/// A request's words: `argv[0]` is the command name.
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
