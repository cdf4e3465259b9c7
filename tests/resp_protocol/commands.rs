//! Commands: request bytes through `Command::parse` and `KvStore::apply` to
//! the exact reply bytes.

use super::{encoded, parse_all, words, MAX};
use raftkv::kv::{Command, KvStore, Reply};
use raftkv::wire::resp::{encode_reply, encode_request, Protocol};

/// Runs each request in `input` against `kv` as the server would (minus the
/// log), returning the concatenated reply bytes.
fn run(kv: &mut KvStore, input: &[u8], protocol: Protocol) -> Vec<u8> {
    let (requests, left) = parse_all(input, MAX).expect("well-formed input");
    assert_eq!(left, 0);
    let mut out = Vec::new();
    for argv in requests {
        let reply = match Command::parse(&argv) {
            Ok(command) => kv.apply(&command),
            Err(e) => Reply::Error(e.to_string()),
        };
        encode_reply(&reply, protocol, &mut out);
    }
    out
}

fn run2(kv: &mut KvStore, input: &[u8]) -> Vec<u8> {
    run(kv, input, Protocol::Resp2)
}

#[test]
fn set_then_get() {
    let mut kv = KvStore::new();
    assert_eq!(
        run2(&mut kv, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        b"+OK\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        b"$1\r\nv\r\n"
    );
    assert_eq!(run2(&mut kv, b"get missing\r\n"), b"$-1\r\n");
    assert_eq!(run(&mut kv, b"get missing\r\n", Protocol::Resp3), b"_\r\n");
}

#[test]
fn binary_safe_keys_and_values() {
    let mut kv = KvStore::new();
    let mut input = Vec::new();
    encode_request(&[b"SET", b"k\r\n\0", b"\r\n$1\r\n"], &mut input);
    encode_request(&[b"GET", b"k\r\n\0"], &mut input);
    assert_eq!(run2(&mut kv, &input), b"+OK\r\n$6\r\n\r\n$1\r\n\r\n");
}

#[test]
fn exists_counts_repeated_keys() {
    let mut kv = KvStore::new();
    assert_eq!(
        run2(
            &mut kv,
            b"mset a 1 b 2\r\nexists a a b c\r\ndel a c\r\nexists a\r\n"
        ),
        b"+OK\r\n:3\r\n:1\r\n:0\r\n"
    );
}

#[test]
fn mget_has_nil_elements() {
    let mut kv = KvStore::new();
    assert_eq!(
        run2(&mut kv, b"set a 1\r\nmget a nope\r\n"),
        b"+OK\r\n*2\r\n$1\r\n1\r\n$-1\r\n"
    );
    assert_eq!(
        run(&mut kv, b"mget nope\r\n", Protocol::Resp3),
        b"*1\r\n_\r\n"
    );
}

#[test]
fn incr_replies_and_errors() {
    let mut kv = KvStore::new();
    assert_eq!(
        run2(&mut kv, b"incr n\r\nincrby n 10\r\ndecr n\r\ndecrby n 3\r\nset s abc\r\nincr s\r\nincrby n x\r\n"),
        b":1\r\n:11\r\n:10\r\n:7\r\n+OK\r\n-ERR value is not an integer or out of range\r\n\
          -ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"set m 9223372036854775807\r\nincr m\r\nget m\r\n"),
        b"+OK\r\n-ERR increment or decrement would overflow\r\n$19\r\n9223372036854775807\r\n"
    );
}

#[test]
fn command_errors() {
    let mut kv = KvStore::new();
    assert_eq!(
        run2(&mut kv, b"foo bar\r\n"),
        b"-ERR unknown command 'foo'\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"SET k\r\n"),
        b"-ERR wrong number of arguments for 'set' command\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"SET k v EX 0\r\n"),
        b"-ERR invalid expire time in 'set' command\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"SET k v NX XX\r\n"),
        b"-ERR syntax error\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"MSET a 1 b\r\n"),
        b"-ERR wrong number of arguments for 'mset' command\r\n"
    );
    // A name with CR/LF inside (possible in a bulk) cannot break the reply line.
    let mut input = Vec::new();
    encode_request(&[b"x\r\ny"], &mut input);
    assert_eq!(run2(&mut kv, &input), b"-ERR unknown command 'x  y'\r\n");
}

#[test]
fn multi_array_holds_errors_of_failed_commands() {
    let mut kv = KvStore::new();
    run2(&mut kv, b"set s text\r\n");
    let queued: Vec<Command> = [
        &["SET", "a", "1"][..],
        &["INCR", "s"],
        &["INCR", "a"],
        &["INCRBY", "a", "x"],
    ]
    .iter()
    .map(|w| Command::parse_queued(&words(w)).unwrap())
    .collect();
    let reply = kv.apply(&Command::Multi(queued));
    assert_eq!(
        encoded(&reply, Protocol::Resp2),
        b"*4\r\n+OK\r\n-ERR value is not an integer or out of range\r\n:2\r\n\
          -ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        run2(&mut kv, b"get a\r\nget s\r\n"),
        b"$1\r\n2\r\n$4\r\ntext\r\n"
    );
}
