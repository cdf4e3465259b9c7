//! Inline requests: words, quoting and its errors, empty lines, and inline
//! requests interleaved with multibulk ones.

use super::{error, one, parse_all, words, MAX};
use raftkv::wire::resp::{encode_request, RequestParser};

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
