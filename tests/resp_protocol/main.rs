//! The client protocol without sockets, in the manner of redis
//! `tests/unit/protocol.tcl`: raw bytes in, the exact argv or error line out,
//! one test per malformation; then whole requests through `Command::parse` and
//! `KvStore::apply` to the exact reply bytes.
//!
//! The tests are grouped by what they are about, one module each; this file
//! holds the helpers more than one of them uses.

mod commands;
mod framing;
mod inline;
mod multibulk;
mod replies;

use raftkv::kv::Reply;
use raftkv::wire::resp::{encode_reply, Argv, Protocol, ProtocolError, RequestParser};

const MAX: usize = 1024 * 1024;

fn words(list: &[&str]) -> Argv {
    list.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Parses every whole request in `input` at once; returns them and the bytes left.
fn parse_all(input: &[u8], max: usize) -> Result<(Vec<Argv>, usize), ProtocolError> {
    let mut parser = RequestParser::new(max);
    let mut requests = Vec::new();
    let mut front = 0;
    while let Some((argv, used)) = parser.parse(&input[front..])? {
        assert!(!argv.is_empty(), "an empty argv was returned");
        assert!(
            used > 0 && front + used <= input.len(),
            "used {} at {}",
            used,
            front
        );
        requests.push(argv);
        front += used;
    }
    Ok((requests, input.len() - front))
}

fn one(input: &[u8]) -> Argv {
    match parse_all(input, MAX) {
        Ok((mut requests, 0)) if requests.len() == 1 => requests.remove(0),
        other => panic!("{:?}: expected exactly one request, got {:?}", input, other),
    }
}

/// The error line the client would get (without the leading `-`).
fn error(input: &[u8]) -> String {
    error_with_max(input, MAX)
}

fn error_with_max(input: &[u8], max: usize) -> String {
    match parse_all(input, max) {
        Err(e) => e.to_string(),
        Ok(ok) => panic!("{:?}: expected a protocol error, got {:?}", input, ok),
    }
}

/// Feeds `input` one byte at a time, the way a slow client's reads arrive.
fn parse_byte_by_byte(input: &[u8], max: usize) -> Result<Vec<Argv>, ProtocolError> {
    let mut parser = RequestParser::new(max);
    let mut buffer = Vec::new();
    let mut requests = Vec::new();
    for &byte in input {
        buffer.push(byte);
        while let Some((argv, used)) = parser.parse(&buffer)? {
            requests.push(argv);
            buffer.drain(..used);
        }
    }
    Ok(requests)
}

fn encoded(reply: &Reply, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    encode_reply(reply, protocol, &mut out);
    out
}
