//! RESP2 requests (multibulk and inline) and RESP2/RESP3 reply encoding.
//!
//! (Helper C: replace the stubs; keep the public API.)

use crate::kv::Reply;
use std::fmt;

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

/// Incremental request parser for one connection. It keeps its position inside
/// a partly received request, so a large bulk arriving in many reads is not
/// rescanned, and it rejects a request larger than `max_request_bytes` as soon
/// as the declared or buffered size shows it, before buffering it.
pub struct RequestParser {
    _private: (),
}

impl RequestParser {
    pub fn new(_max_request_bytes: usize) -> RequestParser {
        todo!()
    }
    /// Parses the next whole request from the front of `input`. Returns the argv
    /// and how many bytes of `input` it used, `Ok(None)` if more bytes are needed
    /// (remembering progress), or an error. An empty inline line is skipped
    /// (counted as used) as Redis does.
    pub fn parse(&mut self, _input: &[u8]) -> Result<Option<(Vec<Vec<u8>>, usize)>, ProtocolError> {
        todo!()
    }
}

/// Appends the encoding of `reply` in `protocol` to `out`.
pub fn encode_reply(_reply: &Reply, _protocol: Protocol, _out: &mut Vec<u8>) {
    todo!()
}

/// Appends `argv` as a RESP array of bulk strings (what clients send).
pub fn encode_request(_argv: &[&[u8]], _out: &mut Vec<u8>) {
    todo!()
}

/// Parses one RESP2/RESP3 reply from the front of `input` (for clients: tests,
/// benches, the load tools). Returns the reply and the bytes used, or `Ok(None)`
/// if incomplete.
pub fn parse_reply(_input: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    todo!()
}
