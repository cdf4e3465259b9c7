//! The client protocol's exact replies on a live node (SPEC §3): AUTH with
//! requirepass, MULTI/EXEC/DISCARD and their errors, HELLO in RESP2 and
//! RESP3, and the connection commands clients send on connect. Raw bytes are
//! compared where the encoding matters.
//!
//! The tests are grouped by what they are about, one module each; this file
//! holds the helpers more than one of them uses.

mod auth;
mod client_kill;
mod closing_connections;
#[path = "../common/mod.rs"]
mod common;
mod connection_commands;
mod memory;
mod operator_commands;
mod transactions;

use raftkv::kv::Reply;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn err(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

fn status(text: &str) -> Reply {
    Reply::Status(text.to_string())
}

/// Sends `request` as typed and returns exactly `expected.len()` bytes of reply.
fn raw(addr: &str, request: &[u8], expected: &[u8]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = vec![0u8; expected.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}
