//! Multibulk malformations, as in redis `tests/unit/protocol.tcl`: one test
//! per malformation, each with the exact error line the client gets.

use super::{error, error_with_max, parse_all, parse_byte_by_byte, words, MAX};
use raftkv::wire::resp::RequestParser;

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
