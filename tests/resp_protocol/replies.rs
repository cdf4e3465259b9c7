//! Replies: their RESP2 and RESP3 encodings and their parsing, and the
//! property tests: replies and requests round-trip through encoding and
//! parsing, and no input makes a parser panic.

use super::{encoded, parse_all, parse_byte_by_byte, MAX};
use proptest::prelude::*;
use raftkv::kv::Reply;
use raftkv::wire::resp::{encode_request, parse_reply, Protocol};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

#[test]
fn resp2_encodings() {
    let cases: Vec<(Reply, &[u8])> = vec![
        (Reply::Ok, b"+OK\r\n"),
        (Reply::Status("PONG".into()), b"+PONG\r\n"),
        (Reply::Error("ERR x".into()), b"-ERR x\r\n"),
        (Reply::Error("ERR a\r\nb".into()), b"-ERR a  b\r\n"),
        // Line breaks that end an error are dropped, as Redis drops them,
        // and only those: a space before them stays.
        (Reply::Error("ERR a\r\nb\r\n\n".into()), b"-ERR a  b\r\n"),
        (Reply::Error("ERR a \r".into()), b"-ERR a \r\n"),
        (Reply::Integer(0), b":0\r\n"),
        (Reply::Integer(-42), b":-42\r\n"),
        (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
        (Reply::Integer(i64::MAX), b":9223372036854775807\r\n"),
        (bulk(""), b"$0\r\n\r\n"),
        (Reply::Bulk(b"a\r\nb".to_vec()), b"$4\r\na\r\nb\r\n"),
        (Reply::Nil, b"$-1\r\n"),
        (Reply::Array(vec![]), b"*0\r\n"),
        (
            Reply::Array(vec![bulk("a"), Reply::Nil]),
            b"*2\r\n$1\r\na\r\n$-1\r\n",
        ),
        (
            Reply::Map(vec![
                (bulk("proto"), Reply::Integer(2)),
                (bulk("m"), Reply::Array(vec![])),
            ]),
            b"*4\r\n$5\r\nproto\r\n:2\r\n$1\r\nm\r\n*0\r\n",
        ),
    ];
    for (reply, bytes) in cases {
        assert_eq!(encoded(&reply, Protocol::Resp2), bytes, "{:?}", reply);
    }
}

#[test]
fn resp3_encodings() {
    assert_eq!(encoded(&Reply::Nil, Protocol::Resp3), b"_\r\n");
    assert_eq!(
        encoded(
            &Reply::Array(vec![Reply::Nil, Reply::Integer(1)]),
            Protocol::Resp3
        ),
        b"*2\r\n_\r\n:1\r\n"
    );
    assert_eq!(
        encoded(
            &Reply::Map(vec![(bulk("server"), bulk("raftkv"))]),
            Protocol::Resp3
        ),
        b"%1\r\n$6\r\nserver\r\n$6\r\nraftkv\r\n"
    );
    assert_eq!(encoded(&Reply::Ok, Protocol::Resp3), b"+OK\r\n");
    assert_eq!(encoded(&bulk("x"), Protocol::Resp3), b"$1\r\nx\r\n");
}

#[test]
fn encode_request_is_a_bulk_array() {
    let mut out = Vec::new();
    encode_request(&[b"SET", b"k", b""], &mut out);
    assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

#[test]
fn parse_reply_resp3_types() {
    let cases: Vec<(&[u8], Reply)> = vec![
        (b"#t\r\n", Reply::Integer(1)),
        (b"#f\r\n", Reply::Integer(0)),
        (b",3.14\r\n", bulk("3.14")),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            bulk("3492890328409238509324850943850943825024385"),
        ),
        (b"=15\r\ntxt:Some string\r\n", bulk("Some string")),
        (b"!9\r\nERR oops!\r\n", Reply::Error("ERR oops!".into())),
        (
            b"~2\r\n:1\r\n:2\r\n",
            Reply::Array(vec![Reply::Integer(1), Reply::Integer(2)]),
        ),
        (
            b">1\r\n+msg\r\n",
            Reply::Array(vec![Reply::Status("msg".into())]),
        ),
        (b"|1\r\n+ttl\r\n:3\r\n:5\r\n", Reply::Integer(5)),
        (b"*-1\r\n", Reply::Nil),
        (b"_\r\n", Reply::Nil),
        (b"+OK\r\n", Reply::Ok),
    ];
    for (bytes, reply) in cases {
        assert_eq!(
            parse_reply(bytes),
            Ok(Some((reply, bytes.len()))),
            "{:?}",
            bytes
        );
    }
}

#[test]
fn parse_reply_rejects_garbage_and_deep_nesting() {
    assert!(parse_reply(b"?x\r\n").is_err());
    assert!(parse_reply(b":12a\r\n").is_err());
    assert!(parse_reply(b"$-2\r\n").is_err());
    assert!(parse_reply(b"$1\r\nabc\r\n").is_err());
    assert!(parse_reply(&b"*1\r\n".repeat(100)).is_err());
    assert!(parse_reply(&b"|0\r\n".repeat(100)).is_err());
    // A huge declared count with few bytes behind it is just incomplete.
    assert_eq!(parse_reply(b"*2000000000\r\n:1\r\n"), Ok(None));
}

fn reply_strategy() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        Just(Reply::Ok),
        "[a-zA-Z0-9 ]{1,12}"
            .prop_filter("+OK parses as Reply::Ok", |s| s != "OK")
            .prop_map(Reply::Status),
        "ERR [a-z ]{0,12}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(Reply::Bulk),
        Just(Reply::Nil),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Reply::Array),
            prop::collection::vec((inner.clone(), inner), 0..4).prop_map(Reply::Map),
        ]
    })
}

/// What a RESP2 client sees: maps arrive as flat arrays.
fn flatten_maps(reply: Reply) -> Reply {
    match reply {
        Reply::Array(items) => Reply::Array(items.into_iter().map(flatten_maps).collect()),
        Reply::Map(pairs) => Reply::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [flatten_maps(k), flatten_maps(v)])
                .collect(),
        ),
        other => other,
    }
}

proptest! {
    #[test]
    fn parse_reply_round_trips_encode_reply(reply in reply_strategy()) {
        let bytes = encoded(&reply, Protocol::Resp3);
        prop_assert_eq!(parse_reply(&bytes), Ok(Some((reply.clone(), bytes.len()))));
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_reply(&bytes[..cut]), Ok(None));
        }
        let bytes = encoded(&reply, Protocol::Resp2);
        prop_assert_eq!(parse_reply(&bytes), Ok(Some((flatten_maps(reply), bytes.len()))));
    }

    #[test]
    fn request_round_trips_encode_request(argv in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 1..6)) {
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let mut bytes = Vec::new();
        encode_request(&refs, &mut bytes);
        prop_assert_eq!(parse_all(&bytes, MAX), Ok((vec![argv.clone()], 0)));
        prop_assert_eq!(parse_byte_by_byte(&bytes, MAX), Ok(vec![argv]));
    }

    #[test]
    fn request_parser_never_panics(junk in prop::collection::vec(
        prop_oneof![Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'"'), Just(b'\''),
                    Just(b'\\'), Just(b' '), Just(b'-'), b'0'..=b'9', any::<u8>()], 0..60)) {
        let _ = parse_all(&junk, 64);
        let _ = parse_byte_by_byte(&junk, 64);
        let _ = parse_reply(&junk);
    }
}
