//! The check of one value against its key's kind: integers in range,
//! `host:port` addresses, `id=host:port,...` member lists, words. Apart
//! because they look at one value alone; `founders` parses member lists too.

use super::ValueKind;
use crate::raft::NodeId;

/// Checks one value against its kind; the error is the reason, for `bad value`.
pub(super) fn check_value(kind: ValueKind, value: &str) -> Result<(), String> {
    match kind {
        ValueKind::Int { min, max } => parse_int(value, min, max).map(|_| ()),
        ValueKind::Addr => check_addr(value),
        ValueKind::Members => parse_members(value).map(|_| ()),
        ValueKind::Word if value.is_empty() => Err("must not be empty".to_string()),
        ValueKind::Word if value.chars().any(char::is_whitespace) => {
            Err("must not contain whitespace".to_string())
        }
        ValueKind::Text | ValueKind::Path if value.is_empty() => {
            Err("must not be empty".to_string())
        }
        // Found here, it is a bad value (status 2) rather than a data dir that
        // cannot be created (status 1).
        ValueKind::Path if value.contains('\0') => {
            Err("a path cannot contain a NUL byte".to_string())
        }
        ValueKind::Word | ValueKind::Text | ValueKind::Path => Ok(()),
        ValueKind::OneOf(words) if words.iter().any(|w| w.eq_ignore_ascii_case(value)) => Ok(()),
        ValueKind::OneOf(words) => Err(format!("expected {}", one_of(words))),
    }
}

/// `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {}", rest.join(", "), last),
        None => String::new(),
    }
}

fn parse_int(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let range = if max == u64::MAX {
        format!("an integer >= {min}")
    } else {
        format!("an integer from {min} to {max}")
    };
    // Digits only: Rust's parse would also take a leading '+'.
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u64>() {
        Ok(n) if digits && (min..=max).contains(&n) => Ok(n),
        _ if digits => Err(format!("out of range, expected {range}")),
        _ => Err(format!("expected {range}")),
    }
}

/// `host:port`: a non-empty host without whitespace (an IPv6 host in brackets),
/// and a port from 1 to 65535. Names are not resolved here.
fn check_addr(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected host:port".to_string());
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err("expected host:port with a host name or IP address".to_string());
    }
    if host.starts_with('[') || host.ends_with(']') {
        let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if inner
            .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return Err("expected an IPv6 address in brackets, as in [::1]:7001".to_string());
        }
    } else if host.contains(':') {
        return Err("an IPv6 address needs brackets, as in [::1]:7001".to_string());
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("bad port '{port}', expected 1 to 65535")),
    }
}

/// `id=host:port,...` into members sorted by id; ids unique.
pub(crate) fn parse_members(value: &str) -> Result<Vec<(NodeId, String)>, String> {
    let mut members: Vec<(NodeId, String)> = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let Some((id, addr)) = part.split_once('=') else {
            return Err(format!("expected id=host:port, not '{part}'"));
        };
        let (id, addr) = (id.trim(), addr.trim());
        let id = parse_int(id, 1, u64::MAX).map_err(|why| format!("node id '{id}': {why}"))?;
        check_addr(addr).map_err(|why| format!("node {id} address '{addr}': {why}"))?;
        if members.iter().any(|(seen, _)| *seen == id) {
            return Err(format!("node {id} appears twice"));
        }
        if let Some((other, _)) = members.iter().find(|(_, seen)| seen == addr) {
            return Err(format!(
                "nodes {other} and {id} have the same address {addr}"
            ));
        }
        members.push((id, addr.to_string()));
    }
    members.sort_by_key(|(id, _)| *id);
    Ok(members)
}
