//! Framing: pipelines and requests split across reads, the parser's recycled
//! buffers, the request size limit, and the cost of requests that arrive in
//! small reads.

use super::{error_with_max, parse_all, parse_byte_by_byte, MAX};
use raftkv::wire::resp::{encode_request, RequestParser};

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
