//! Writing replies (RESP2 or RESP3, as the connection chose) and requests
//! (for clients) into a byte buffer. Apart from the request parser: the two
//! directions share only the wire types.

use super::Protocol;
use crate::kv::Reply;

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
/// does, so that a line can never break the protocol. An error first loses
/// the `\r` and `\n` at its ends, as Redis's formatted errors do
/// (`addReplyErrorFormat` trims before it maps): an option word sent as
/// `foo\r\n` shows as `foo` in both, not as `foo` and two spaces.
fn put_line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    let text = match kind {
        b'-' => trim_line_breaks(text),
        _ => text,
    };
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

fn trim_line_breaks(text: &[u8]) -> &[u8] {
    let is_break = |byte: &u8| *byte == b'\r' || *byte == b'\n';
    let start = text.iter().position(|b| !is_break(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !is_break(b))
        .map_or(start, |i| i + 1);
    &text[start..end]
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
