//! CLIENT LIST's line and options.

use super::*;
use crate::server::clients::Multi;
use crate::server::conn::Conn;

/// A client with id 7 connected over loopback, the far end, and the
/// listener (kept open for the test's length). CLIENT KILL's tests use it too.
pub(in crate::server) fn client() -> (Client, std::net::TcpStream, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let far = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (near, _) = listener.accept().expect("accept");
    let conn = Conn::new(mio::net::TcpStream::from_std(near));
    (Client::new(conn, 7, 1 << 20, true), far, listener)
}

pub(in crate::server) fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

/// The line's `field=value` pairs, in order; panics on a word without `=`.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .map(|pair| {
            let (field, value) = pair.split_once('=').expect("field=value");
            (field.to_string(), value.to_string())
        })
        .collect()
}

/// Every field of Redis 7.4's CLIENT LIST line, in its order: parsers of
/// client libraries (redis-py's `parse_client_list`) split on spaces and
/// `=`, and tools read fields by name.
const REDIS_FIELDS: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "name",
    "age",
    "idle",
    "flags",
    "db",
    "sub",
    "psub",
    "ssub",
    "multi",
    "watch",
    "qbuf",
    "qbuf-free",
    "argv-mem",
    "multi-mem",
    "rbs",
    "rbp",
    "obl",
    "oll",
    "omem",
    "tot-mem",
    "events",
    "cmd",
    "user",
    "redir",
    "resp",
    "lib-name",
    "lib-ver",
];

#[test]
fn a_line_has_redis_fields_in_redis_order_and_ends_with_a_newline() {
    let (mut c, far, _listener) = client();
    c.name = Some("worker-1".into());
    c.info.lib_name = Some("redis-py".into());
    c.info.lib_ver = Some("5.0.1".into());
    c.info.note_command("client", &words("CLIENT LIST"));
    let now = unix_millis() + 5_000;
    let mut out = String::new();
    write_line(&mut out, &c, now, 10);
    let line = out.strip_suffix('\n').expect("ends with a newline");
    assert!(!line.contains('\n'), "{line}");
    let fields = fields(line);
    let names: Vec<&str> = fields.iter().map(|(field, _)| field.as_str()).collect();
    assert_eq!(names, REDIS_FIELDS);
    let value = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("id"), "7");
    assert_eq!(value("addr"), far.local_addr().expect("addr").to_string());
    assert_eq!(value("laddr"), far.peer_addr().expect("addr").to_string());
    assert_eq!(value("name"), "worker-1");
    assert_eq!(value("age"), "5");
    assert_eq!(value("idle"), "5");
    assert_eq!(value("flags"), "N");
    assert_eq!(value("multi"), "-1");
    assert_eq!(value("argv-mem"), "10");
    assert_eq!(value("cmd"), "client|list");
    assert_eq!(value("resp"), "2");
    assert_eq!(value("lib-name"), "redis-py");
    assert_eq!(value("lib-ver"), "5.0.1");
    assert!(value("fd").parse::<i32>().is_ok_and(|fd| fd > 2), "{line}");
}

#[test]
fn a_client_in_multi_shows_flag_x_and_its_queued_count() {
    let (mut c, _far, _listener) = client();
    c.protocol = Protocol::Resp3;
    c.multi = Some(Multi {
        queued: Vec::new(),
        failed: false,
        bytes: 40,
    });
    c.info.note_command("set", &words("SET k v"));
    let mut out = String::new();
    write_line(&mut out, &c, unix_millis(), 0);
    for expected in [
        " flags=x ",
        " multi=0 ",
        " multi-mem=40 ",
        " cmd=set ",
        " resp=3 ",
        " name= ",
    ] {
        assert!(out.contains(expected), "{expected} in {out}");
    }
}

/// Only the families Redis lists as `name|sub` get their subcommand, and a
/// word that would break the line is shown as Redis shows an unknown
/// command.
#[test]
fn the_last_command_is_lowercased_with_its_subcommand() {
    let (mut c, _far, _listener) = client();
    let mut shown = |name: &str, line: &str| {
        c.info.note_command(name, &words(line));
        c.info.last_command.clone()
    };
    assert_eq!(shown("config", "CONFIG GET maxmemory"), "config|get");
    assert_eq!(shown("cluster", "CLUSTER Info"), "cluster|info");
    assert_eq!(shown("get", "GET client"), "get");
    assert_eq!(shown("debug", "DEBUG DIGEST"), "debug");
    assert_eq!(shown("client", "CLIENT"), "client");
    assert_eq!(shown("client", "CLIENT a=b"), "client");
    assert_eq!(shown("a b", "a b"), "NULL");
}

#[test]
fn list_options_are_checked_as_redis_checks_them() {
    let filter = |line: &str| list_filter(&words(line));
    assert_eq!(filter("CLIENT LIST"), Ok(ListFilter::All));
    assert_eq!(filter("CLIENT LIST type NORMAL"), Ok(ListFilter::All));
    for kind in ["master", "replica", "slave", "pubsub"] {
        assert_eq!(
            filter(&format!("CLIENT LIST TYPE {kind}")),
            Ok(ListFilter::Nothing)
        );
    }
    assert_eq!(
        filter("CLIENT LIST ID 3 1 0 -1 3"),
        Ok(ListFilter::Ids(vec![0, 1, 3])),
        "sorted and each once, for a binary search per client"
    );
    assert_eq!(
        filter("CLIENT LIST TYPE bogus"),
        Err(error("ERR Unknown client type 'bogus'"))
    );
    assert_eq!(
        filter("CLIENT LIST ID 1 x"),
        Err(error("ERR Invalid client ID"))
    );
    for line in [
        "CLIENT LIST foo",
        "CLIENT LIST TYPE",
        "CLIENT LIST ID",
        "CLIENT LIST TYPE normal ID 5",
    ] {
        assert_eq!(filter(line), Err(error("ERR syntax error")), "{line}");
    }
}
