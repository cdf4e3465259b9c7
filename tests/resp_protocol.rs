//! The client protocol without sockets, in the manner of redis
//! `tests/unit/protocol.tcl`: raw bytes in, the exact argv or error line out,
//! one test per malformation; then whole requests through `Command::parse` and
//! `KvStore::apply` to the exact reply bytes.

use proptest::prelude::*;
use raftkv::kv::{Command, KvStore, Reply};
use raftkv::wire::resp::{
    encode_reply, encode_request, parse_reply, Argv, Protocol, ProtocolError, RequestParser,
};

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

// ---- multibulk malformations (protocol.tcl) ----

#[test]
fn out_of_range_multibulk_length() {
    assert_eq!(
        error(b"*3000000000\r\n"),
        "ERR protocol error: invalid multibulk length"
    );
}

#[test]
fn non_number_multibulk_length() {
    assert_eq!(
        error(b"*abc\r\n"),
        "ERR protocol error: invalid multibulk length"
    );
    assert_eq!(
        error(b"*+1\r\n"),
        "ERR protocol error: invalid multibulk length"
    );
    assert_eq!(
        error(b"*01\r\n"),
        "ERR protocol error: invalid multibulk length"
    );
    assert_eq!(
        error(b"*\r\n"),
        "ERR protocol error: invalid multibulk length"
    );
}

#[test]
fn negative_multibulk_length() {
    // Redis skips any count <= 0; SPEC §3 makes a negative count an error,
    // the null array `*-1` included.
    for input in [&b"*-10\r\n"[..], b"*-1\r\nPING\r\n"] {
        assert_eq!(error(input), "ERR protocol error: invalid multibulk length");
    }
}

#[test]
fn multibulk_count_without_line_feed() {
    assert_eq!(
        error(b"*1\rX"),
        "ERR protocol error: invalid multibulk length"
    );
}

#[test]
fn overlong_multibulk_count_line() {
    let mut input = b"*".to_vec();
    input.extend_from_slice(&[b'1'; 40]);
    assert_eq!(
        error(&input),
        "ERR protocol error: invalid multibulk length"
    );
    // Still waiting while the line could yet be valid.
    assert_eq!(parse_all(&input[..20], MAX), Ok((vec![], 20)));
}

#[test]
fn overlong_header_line_with_its_cr_just_past_the_limit() {
    // 33 digits put the `\r` on the last byte the parser looks at for a
    // header line: it used to wait for a `\n` it would never look at, and
    // buffer everything sent after it.
    for prefix in [&b"*"[..], b"*1\r\n$"] {
        let mut input = prefix.to_vec();
        input.extend_from_slice(&[b'1'; 33]);
        input.push(b'\r');
        input.extend_from_slice(&[b'x'; 4096]);
        let expected = if prefix == b"*" {
            "ERR protocol error: invalid multibulk length"
        } else {
            "ERR protocol error: invalid bulk length"
        };
        assert_eq!(error_with_max(&input, 1024), expected);
        assert_eq!(
            parse_byte_by_byte(&input, 1024).map_err(|e| e.to_string()),
            Err(expected.to_string())
        );
    }
}

/// SPEC sets no floor under `max_request_bytes`: a limit of a few bytes
/// holds at the byte, inline and as RESP.
#[test]
fn a_limit_of_a_few_bytes_holds_at_the_byte() {
    let inline = b"PING\r\n";
    assert_eq!(parse_all(inline, 6), Ok((vec![words(&["PING"])], 0)));
    assert_eq!(
        error_with_max(inline, 5),
        "ERR protocol error: request exceeds max_request_bytes (5)"
    );
    let resp = b"*1\r\n$4\r\nPING\r\n";
    assert_eq!(parse_all(resp, 14), Ok((vec![words(&["PING"])], 0)));
    assert_eq!(
        error_with_max(resp, 13),
        "ERR protocol error: request exceeds max_request_bytes (13)"
    );
}

#[test]
fn empty_multibulk_requests_count_toward_the_size_limit() {
    // Skipped `*0` requests stay in the connection's buffer until a whole
    // request follows them; they used to be buffered without limit.
    let input = b"*0\r\n".repeat(1000);
    assert_eq!(
        error_with_max(&input, 1024),
        "ERR protocol error: request exceeds max_request_bytes (1024)"
    );
    assert_eq!(
        parse_byte_by_byte(&input, 1024).map_err(|e| e.to_string()),
        Err("ERR protocol error: request exceeds max_request_bytes (1024)".to_string())
    );
    // Under the limit they are still skipped, and what follows them is parsed.
    let mut input = b"*0\r\n".repeat(100);
    input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(parse_all(&input, 1024), Ok((vec![words(&["PING"])], 0)));
}

#[test]
fn wrong_multibulk_payload_header() {
    assert_eq!(
        error(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n"),
        "ERR protocol error: expected '$', got 'f'"
    );
}

#[test]
fn multibulk_request_not_followed_by_bulk_arguments() {
    assert_eq!(
        error(b"*1\r\nfoo\r\n"),
        "ERR protocol error: expected '$', got 'f'"
    );
}

#[test]
fn negative_multibulk_payload_length() {
    assert_eq!(
        error(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n"),
        "ERR protocol error: invalid bulk length"
    );
    assert_eq!(
        error(b"*1\r\n$-1\r\n"),
        "ERR protocol error: invalid bulk length"
    );
}

#[test]
fn non_number_multibulk_payload_length() {
    assert_eq!(
        error(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n"),
        "ERR protocol error: invalid bulk length"
    );
}

#[test]
fn protocol_desync_regression() {
    // protocol.tcl sends `*1\r\n$` and then junk without a newline: the server
    // must not wait forever for the end of the length line.
    let mut input = b"*1\r\n$".to_vec();
    input.extend_from_slice(&[b'A'; 100]);
    assert_eq!(error(&input), "ERR protocol error: invalid bulk length");
}

#[test]
fn bulk_data_not_followed_by_crlf() {
    assert_eq!(
        error(b"*1\r\n$3\r\nfooXX"),
        "ERR protocol error: expected '\\r\\n' after bulk data"
    );
}

#[test]
fn error_is_sticky() {
    let mut parser = RequestParser::new(MAX);
    let first = parser.parse(b"*x\r\n").unwrap_err();
    assert_eq!(parser.parse(b"*x\r\n*1\r\n$1\r\na\r\n"), Err(first));
}

// ---- inline requests ----

#[test]
fn inline_words() {
    assert_eq!(one(b"set foo bar\r\n"), words(&["set", "foo", "bar"]));
    assert_eq!(one(b"set foo bar\n"), words(&["set", "foo", "bar"]));
    assert_eq!(
        one(b"  set\t foo   bar  \r\n"),
        words(&["set", "foo", "bar"])
    );
}

#[test]
fn inline_quoting() {
    assert_eq!(one(b"set \"a b\" 'c d'\r\n"), words(&["set", "a b", "c d"]));
    assert_eq!(
        one(b"set k \"\\x41\\x4a\\n\\r\\t\\\\\\\"\\q\\xZZ\"\r\n"),
        vec![b"set".to_vec(), b"k".to_vec(), b"AJ\n\r\t\\\"qxZZ".to_vec()]
    );
    assert_eq!(
        one(b"set k 'it\\'s \\n'\r\n"),
        words(&["set", "k", "it's \\n"])
    );
    assert_eq!(one(b"set k \"\"\r\n"), words(&["set", "k", ""]));
    // A quote inside a word starts quoting there, as in sdssplitargs.
    assert_eq!(
        one(b"set k foo\"bar baz\"\r\n"),
        words(&["set", "k", "foobar baz"])
    );
}

#[test]
fn unbalanced_number_of_quotes() {
    let expected = "ERR protocol error: unbalanced quotes in request";
    assert_eq!(
        error(b"set \"\"\"test-key\"\"\" test-value\r\nping\r\n"),
        expected
    );
    assert_eq!(error(b"set \"foo\r\n"), expected);
    assert_eq!(error(b"set 'foo\r\n"), expected);
    assert_eq!(error(b"set \"foo\"bar\r\n"), expected);
    assert_eq!(error(b"set k \"ends with backslash\\\r\n"), expected);
}

#[test]
fn empty_requests_are_skipped() {
    let input = b"\r\n\n   \r\n*0\r\nPING\r\n";
    assert_eq!(parse_all(input, MAX), Ok((vec![words(&["PING"])], 0)));
    // Skipped bytes are reported as used with the request after them, even
    // when they arrived in an earlier read.
    let mut parser = RequestParser::new(MAX);
    assert_eq!(parser.parse(b"\r\n\r\n"), Ok(None));
    assert_eq!(parser.parse(b"\r\n\r\nPI"), Ok(None));
    assert_eq!(
        parser.parse(b"\r\n\r\nPING\r\n"),
        Ok(Some((words(&["PING"]), 10)))
    );
}

#[test]
fn inline_and_multibulk_interleave() {
    let mut input = b"PING\r\n".to_vec();
    encode_request(&[b"GET", b"k"], &mut input);
    input.extend_from_slice(b"get k\n");
    let (requests, left) = parse_all(&input, MAX).unwrap();
    assert_eq!(
        requests,
        vec![words(&["PING"]), words(&["GET", "k"]), words(&["get", "k"])]
    );
    assert_eq!(left, 0);
}

// ---- framing: pipelines and partial reads ----

fn mixed_stream() -> Vec<u8> {
    let mut input = Vec::new();
    encode_request(
        &[b"SET", b"key:1", b"value with\r\nCRLF and \0 inside"],
        &mut input,
    );
    input.extend_from_slice(b"\r\nset 'a b' \"c\\x00d\"\r\n");
    encode_request(&[b"MGET", b"", b"x"], &mut input);
    input.extend_from_slice(b"*0\r\nPING\n");
    encode_request(&[b"DEL", &[0xff; 300]], &mut input);
    input
}

#[test]
fn a_request_split_at_every_byte_parses_identically() {
    let input = mixed_stream();
    let (whole, left) = parse_all(&input, MAX).unwrap();
    assert_eq!((whole.len(), left), (5, 0));
    assert_eq!(parse_byte_by_byte(&input, MAX).unwrap(), whole);
    for split in 0..=input.len() {
        let mut parser = RequestParser::new(MAX);
        let mut got = Vec::new();
        let mut front = 0;
        for end in [split, input.len()] {
            while let Some((argv, used)) = parser.parse(&input[front..end]).unwrap() {
                got.push(argv);
                front += used;
            }
        }
        assert_eq!(got, whole, "split at {}", split);
    }
}

#[test]
fn recycled_buffers_carry_nothing_into_the_next_request() {
    // Long words before short ones and the reverse, multibulk and inline.
    let mut input = mixed_stream();
    let mut reversed = Vec::new();
    encode_request(&[b"GET", b"k"], &mut reversed);
    encode_request(&[b"SET", &[b'v'; 500], b"x"], &mut reversed);
    reversed.extend_from_slice(b"a bb ccc dddd\r\n");
    input.extend_from_slice(&reversed);
    input.extend_from_slice(&mixed_stream());
    let (whole, left) = parse_all(&input, MAX).unwrap();
    assert_eq!((whole.len(), left), (13, 0));
    let mut parser = RequestParser::new(MAX);
    let mut got = Vec::new();
    let mut front = 0;
    while let Some((argv, used)) = parser.parse(&input[front..]).unwrap() {
        got.push(argv.clone());
        parser.recycle(argv);
        front += used;
    }
    assert_eq!(got, whole);
}

#[test]
fn recycling_keeps_only_a_few_small_buffers() {
    let mut parser = RequestParser::new(MAX);
    let mut input = Vec::new();
    encode_request(&[b"SET", b"key", &[b'v'; 100]], &mut input);
    let (argv, _) = parser.parse(&input).unwrap().unwrap();
    parser.recycle(argv);
    assert!(parser.spare_bytes() >= 100, "a SET's buffers are kept");
    let big = vec![b'x'; 10_000];
    let words: Vec<&[u8]> = std::iter::once(&b"MSET"[..])
        .chain(std::iter::repeat_n(&big[..], 200))
        .collect();
    let mut input = Vec::new();
    encode_request(&words, &mut input);
    let mut parser = RequestParser::new(MAX * 4);
    let (argv, _) = parser.parse(&input).unwrap().unwrap();
    assert_eq!(argv.len(), 201);
    parser.recycle(argv);
    assert!(
        parser.spare_bytes() <= 16 * 1024 + 64 * 24,
        "kept {} bytes",
        parser.spare_bytes()
    );
}

#[test]
fn pipelined_requests() {
    let mut input = Vec::new();
    for i in 0..64 {
        let key = format!("key:{:012}", i);
        encode_request(&[b"SET", key.as_bytes(), &[b'v'; 100]], &mut input);
    }
    let (requests, left) = parse_all(&input, MAX).unwrap();
    assert_eq!((requests.len(), left), (64, 0));
    assert_eq!(requests[63][1], b"key:000000000063");
    // A partial request at the end is left for the next read.
    let (requests, left) = parse_all(&input[..input.len() - 1], MAX).unwrap();
    assert_eq!(requests.len(), 63);
    assert_eq!(left, input.len() / 64 - 1);
}

// ---- size limit ----

#[test]
fn oversized_declared_bulk_is_rejected_before_its_data() {
    let expected = "ERR protocol error: request exceeds max_request_bytes (1024)";
    assert_eq!(
        error_with_max(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n", 1024),
        expected
    );
    // A count that cannot fit, even with empty arguments.
    assert_eq!(error_with_max(b"*200\r\n", 1024), expected);
    assert_eq!(error_with_max(b"*3\r\n$1000\r\n", 1024), expected);
}

#[test]
fn request_of_exactly_max_bytes_is_accepted() {
    let value = vec![b'v'; 1000];
    let mut input = Vec::new();
    encode_request(&[b"SET", b"k", &value], &mut input);
    let max = input.len();
    assert_eq!(parse_all(&input, max).unwrap().0.len(), 1);
    assert_eq!(
        error_with_max(&input, max - 1),
        format!(
            "ERR protocol error: request exceeds max_request_bytes ({})",
            max - 1
        )
    );
}

#[test]
fn overlong_inline_line_is_rejected_without_its_newline() {
    let line = vec![b'a'; 1025];
    let mut parser = RequestParser::new(1024);
    assert_eq!(parser.parse(&line[..1024]), Ok(None));
    assert!(parser.parse(&line).is_err());
    let mut complete = vec![b'a'; 1023];
    complete.push(b'\n');
    assert_eq!(parse_all(&complete, 1024).unwrap().0.len(), 1);
    complete.insert(0, b'a');
    assert!(parse_all(&complete, 1024).is_err());
}

// ---- cost ----

#[test]
fn a_large_bulk_arriving_in_small_reads_is_not_rescanned() {
    let value = vec![b'x'; 8 * 1024 * 1024];
    let mut input = Vec::new();
    encode_request(&[b"SET", b"k", &value], &mut input);
    let mut parser = RequestParser::new(16 * 1024 * 1024);
    let mut result = None;
    for end in (10_000..input.len() + 10_000).step_by(10_000) {
        result = parser.parse(&input[..end.min(input.len())]).unwrap();
    }
    let (argv, used) = result.expect("complete request");
    assert_eq!((argv[2].len(), used), (value.len(), input.len()));
    // About 840 calls; a parser that rescanned the bulk would examine ~3.5 GB.
    assert!(
        parser.bytes_examined() < 100_000,
        "examined {}",
        parser.bytes_examined()
    );
}

#[test]
fn a_long_inline_line_arriving_in_small_reads_is_scanned_once() {
    let mut input = vec![b'a'; 1024 * 1024];
    input.push(b'\n');
    let mut parser = RequestParser::new(2 * 1024 * 1024);
    let mut result = None;
    for end in (1000..input.len() + 1000).step_by(1000) {
        result = parser.parse(&input[..end.min(input.len())]).unwrap();
    }
    assert_eq!(result.map(|(_, used)| used), Some(input.len()));
    assert!(
        parser.bytes_examined() <= input.len() as u64,
        "examined {}",
        parser.bytes_examined()
    );
}

// ---- reply encoding ----

fn encoded(reply: &Reply, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    encode_reply(reply, protocol, &mut out);
    out
}

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

// ---- reply parsing ----

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

// ---- commands: request bytes to reply bytes ----

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
