//! Request parsing: one request, and a pipeline of 64 SETs, as multibulk and as
//! inline lines. The in-run baseline is cloning the parsed argvs: a parser that
//! is not handed its buffers back has to allocate and fill the same vectors at
//! least once, so the ratio to it is the cost of the parsing proper.
//! `_parse_recycled` gives each argv back after use, as the server does, so
//! its words land in buffers already allocated.
//!
//! `cargo bench --bench resp_parse` (a short run: 20 samples of ~2 s per case).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use raftkv::wire::resp::{encode_request, RequestParser};
use std::time::Duration;

const PIPELINE: usize = 64;
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

fn multibulk_sets(count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let key = format!("key:{:012}", i);
        encode_request(&[b"SET", key.as_bytes(), &[b'v'; 100]], &mut out);
    }
    out
}

fn inline_sets(count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        out.extend_from_slice(format!("SET key:{:012} {}\r\n", i, "v".repeat(100)).as_bytes());
    }
    out
}

/// Parses every request in `input`, handing each argv back to the parser
/// when `recycle`; returns a checksum of the argv lengths so the work cannot
/// be optimised away.
fn parse_all(parser: &mut RequestParser, input: &[u8], recycle: bool) -> usize {
    let mut front = 0;
    let mut checksum = 0;
    while let Some((argv, used)) = parser.parse(&input[front..]).expect("valid input") {
        checksum += argv.iter().map(Vec::len).sum::<usize>();
        if recycle {
            parser.recycle(argv);
        }
        front += used;
    }
    assert_eq!(front, input.len(), "all requests parsed");
    checksum
}

fn parse_to_argvs(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut parser = RequestParser::new(MAX_REQUEST_BYTES);
    let mut front = 0;
    let mut argvs = Vec::new();
    while let Some((argv, used)) = parser.parse(&input[front..]).expect("valid input") {
        argvs.push(argv);
        front += used;
    }
    argvs
}

fn bench_group(c: &mut Criterion, name: &str, count: usize, by_bytes: bool) {
    let inputs = [
        ("multibulk", multibulk_sets(count)),
        ("inline", inline_sets(count)),
    ];
    let mut group = c.benchmark_group(name);
    for (kind, input) in &inputs {
        group.throughput(if by_bytes {
            Throughput::Bytes(input.len() as u64)
        } else {
            Throughput::Elements(count as u64)
        });
        group.bench_function(format!("{}_parse", kind), |b| {
            let mut parser = RequestParser::new(MAX_REQUEST_BYTES);
            b.iter(|| black_box(parse_all(&mut parser, input, false)))
        });
        group.bench_function(format!("{}_parse_recycled", kind), |b| {
            let mut parser = RequestParser::new(MAX_REQUEST_BYTES);
            b.iter(|| black_box(parse_all(&mut parser, input, true)))
        });
        let parsed = parse_to_argvs(input);
        group.bench_function(format!("{}_baseline_clone_argvs", kind), |b| {
            b.iter(|| {
                // One argv at a time, dropped before the next, as the parse loop does.
                for argv in &parsed {
                    black_box(argv.clone());
                }
            })
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    bench_group(c, "resp_parse/1_set", 1, false);
    bench_group(c, "resp_parse/64_set_pipeline", PIPELINE, false);
    bench_group(c, "resp_parse/64_set_pipeline_bytes", PIPELINE, true);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse
}
criterion_main!(benches);
