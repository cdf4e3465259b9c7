//! Parsing a RESP2/RESP3 reply, the client's side of the protocol (tests,
//! benches, the load tools); the server never reads replies. Apart because
//! it is not on the server's path and maps RESP3's types onto `Reply`.

use super::ProtocolError;
use crate::kv::{parse_integer, Reply};

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
