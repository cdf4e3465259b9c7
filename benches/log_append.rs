//! Log append throughput, with and without the sync that makes it durable,
//! for batches of 1, 16 and 256 entries of 100-byte payloads, beside what the
//! same disk allows: 4 KiB `write_all` + `sync_data` appended to a plain file
//! (and, for reference, overwriting preallocated space, and appending while two
//! other threads append and sync files of their own on the same disk, as the
//! three nodes of a local cluster do).
//!
//! All files live in a temporary directory under `CARGO_TARGET_TMPDIR`
//! (`target/tmp`), so the log and the baseline share a disk. Criterion reports
//! entries/s (`Throughput::Elements`) for the log and MiB/s for the baseline;
//! a summary printed at the end puts both in entries/s, payload MB/s and
//! syncs/s, as a fraction of the raw fdatasync rate.
//!
//! `cargo bench --bench log_append`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkv::raft::{Entry, EntryKind};
use raftkv::storage::{Storage, StorageOptions};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 100;
const BATCH_SIZES: [u64; 3] = [1, 16, 256];
/// Without sync the log grows at page-cache speed; older segments are
/// dropped (untimed) beyond this so the bench stays within a few segments.
const MAX_LOG_BYTES: u64 = 256 << 20;
const RAW_BLOCK: usize = 4096;
const RAW_FILE_BYTES: u64 = 64 << 20;

/// Work done and time spent per benchmark, over every iteration criterion ran.
#[derive(Default)]
struct Tally {
    elapsed: Duration,
    entries: u64,
    payload_bytes: u64,
    syncs: u64,
}

static TALLIES: Mutex<BTreeMap<String, Tally>> = Mutex::new(BTreeMap::new());

fn record(name: &str, elapsed: Duration, entries: u64, payload_bytes: u64, syncs: u64) {
    let mut tallies = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    let tally = tallies.entry(name.to_string()).or_default();
    tally.elapsed += elapsed;
    tally.entries += entries;
    tally.payload_bytes += payload_bytes;
    tally.syncs += syncs;
}

fn bench_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("create target tmp dir");
    tempfile::Builder::new()
        .prefix("log_append-")
        .tempdir_in(base)
        .expect("bench tempdir")
}

fn batch(first: u64, len: u64) -> Vec<Entry> {
    (first..first + len)
        .map(|index| Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: vec![(index % 251) as u8 + 1; PAYLOAD_BYTES].into(),
        })
        .collect()
}

fn log_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for sync in [false, true] {
        for size in BATCH_SIZES {
            let label = if sync { "append+sync" } else { "append" };
            let name = format!("{}/{}", label, size);
            group.throughput(Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(label, size), |b| {
                let dir = bench_dir();
                let mut storage =
                    Storage::open(dir.path(), StorageOptions::default()).expect("open log");
                storage.finish_recovery().expect("finish recovery");
                let mut next = 1;
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let entries = batch(next, size);
                        let start = Instant::now();
                        storage.append(&entries).expect("append");
                        if sync {
                            storage.sync().expect("sync");
                        }
                        elapsed += start.elapsed();
                        next += size;
                        if storage.log_bytes() > MAX_LOG_BYTES {
                            storage.drop_before(next).expect("drop_before");
                        }
                    }
                    let payload = iters * size * PAYLOAD_BYTES as u64;
                    record(&name, elapsed, iters * size, payload, iters * sync as u64);
                    elapsed
                });
            });
        }
    }
    group.finish();
}

/// A file written 4 KiB + fdatasync at a time, from the front again once full.
/// `grows`: it starts empty and each write extends it, as a log without
/// preallocation would; otherwise it is written in full first and each write
/// overwrites already-allocated blocks.
struct RawFile {
    _dir: tempfile::TempDir,
    file: File,
    grows: bool,
    written: u64,
    block: Vec<u8>,
}

impl RawFile {
    fn new(grows: bool) -> RawFile {
        let dir = bench_dir();
        let file = raw_file(&dir, !grows);
        RawFile {
            _dir: dir,
            file,
            grows,
            written: 0,
            block: vec![0xa5u8; RAW_BLOCK],
        }
    }

    /// Starts over at the front once the file is full; not part of the timing.
    fn make_room(&mut self) {
        if self.written + RAW_BLOCK as u64 > RAW_FILE_BYTES {
            rewind(&mut self.file, self.grows);
            self.written = 0;
        }
    }

    fn write_synced(&mut self) {
        self.file.write_all(&self.block).expect("write");
        self.file.sync_data().expect("fdatasync");
        self.written += RAW_BLOCK as u64;
    }

    /// `iters` timed writes, recorded under `name`.
    fn timed(&mut self, name: &str, iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            self.make_room();
            let start = Instant::now();
            self.write_synced();
            elapsed += start.elapsed();
        }
        record(name, elapsed, iters, iters * RAW_BLOCK as u64, iters);
        elapsed
    }
}

fn raw_group(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("raw_disk");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(RAW_BLOCK as u64));
    group
}

/// 4 KiB blocks + fdatasync each, appended to a growing file or overwriting
/// an already-written one.
fn raw_disk(c: &mut Criterion) {
    let mut group = raw_group(c);
    for mode in ["append", "overwrite"] {
        let name = format!("4KiB-{}+fdatasync", mode);
        group.bench_function(name.as_str(), |b| {
            let mut raw = RawFile::new(mode == "append");
            b.iter_custom(|iters| raw.timed(&name, iters));
        });
    }
    group.finish();
}

/// The `append` case of `raw_disk` while two more threads each append and
/// fdatasync a file of their own for as long as it is measured: what one node
/// of a three-node cluster on one disk gets.
fn raw_disk_beside_two_more(c: &mut Criterion) {
    let mut group = raw_group(c);
    let name = "4KiB-append+fdatasync-beside-2-more";
    group.bench_function(name, |b| {
        let stop = Arc::new(AtomicBool::new(false));
        let others: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut raw = RawFile::new(true);
                    while !stop.load(Ordering::Relaxed) {
                        raw.make_room();
                        raw.write_synced();
                    }
                })
            })
            .collect();
        let mut raw = RawFile::new(true);
        b.iter_custom(|iters| raw.timed(name, iters));
        stop.store(true, Ordering::Relaxed);
        for other in others {
            other.join().expect("a competing writer panicked");
        }
    });
    group.finish();
}

fn raw_file(dir: &tempfile::TempDir, preallocate: bool) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("raw"))
        .expect("open raw file");
    if preallocate {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..RAW_FILE_BYTES >> 20 {
            file.write_all(&chunk).expect("preallocate");
        }
        file.sync_all().expect("sync preallocated");
        file.seek(SeekFrom::Start(0)).expect("seek");
    }
    file
}

fn rewind(file: &mut File, truncate: bool) {
    if truncate {
        file.set_len(0).expect("truncate");
        file.sync_all().expect("sync");
    }
    file.seek(SeekFrom::Start(0)).expect("seek");
}

fn summary(_: &mut Criterion) {
    let tallies = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
    let per_sec = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(1e-9);
    let raw = tallies
        .get("4KiB-append+fdatasync")
        .map(|t| per_sec(t.syncs, t.elapsed));
    println!("\nsummary (means over all iterations, warm-up included)");
    println!(
        "{:<36} {:>12} {:>14} {:>10} {:>16}",
        "bench", "entries/s", "payload MB/s", "syncs/s", "syncs vs raw"
    );
    for (name, t) in tallies.iter() {
        let syncs = per_sec(t.syncs, t.elapsed);
        let versus = match (raw, t.syncs) {
            (Some(raw), s) if s > 0 => format!("{:.2}", syncs / raw),
            _ => "-".to_string(),
        };
        println!(
            "{:<36} {:>12.0} {:>14.1} {:>10.0} {:>16}",
            name,
            per_sec(t.entries, t.elapsed),
            per_sec(t.payload_bytes, t.elapsed) / 1e6,
            syncs,
            versus
        );
    }
    println!("(raw rows: one 4 KiB block = one entry; files under target/tmp)");
}

criterion_group!(
    benches,
    log_append,
    raw_disk,
    raw_disk_beside_two_more,
    summary
);
criterion_main!(benches);
