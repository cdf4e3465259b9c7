//! Crash recovery of the data directory, by editing the files the way a crash
//! or a bad disk would and reopening:
//!
//! - a newest segment cut at every byte inside its last three records (the
//!   rest zero, as preallocated space is) reopens to exactly the whole records,
//!   with a warning naming the file when a partial record was cut;
//! - a flipped byte in the last record is a torn tail; anywhere else it is an
//!   error naming the file, and the files are left untouched;
//! - the newest segment truncated inside its last record is a torn tail;
//!   truncated at a record boundary it opens; either way it is brought back
//!   to its created size; any non-zero byte after the damaged record (two
//!   damaged records, garbage, a valid record, bytes after zeros), or a
//!   short older segment, is an error; the open itself writes nothing
//!   (repairs wait for `finish_recovery`);
//! - the stable file and snapshots fail loudly, never silently to defaults;
//! - a removed `log/` next to a stable file is an error, not a new empty log,
//!   and a data dir another open `Storage` holds (its lock) is refused;
//! - rollover, prefix drops and truncation across many small segments.
//!
//! The cases are grouped by topic, one module each; this file holds the
//! helpers they share (opening, building and damaging a data dir, and the
//! captured log lines).

mod corruption;
mod cut_short;
mod payloads;
mod rollover;
mod segment_names;
mod snapshots;
mod stable_file;
mod torn_tails;

use raftkv::raft::{Entry, EntryKind, SnapshotMeta};
use raftkv::storage::record;
use raftkv::storage::snapshot::{self, SnapshotWriter};
use raftkv::storage::{Storage, StorageOptions};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// Collects log lines so tests can assert that a warning names a file. Tests
/// run in parallel, so each looks only for lines naming its own temp dir.
struct Capture;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CAPTURE: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

fn warnings_naming(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains(&needle))
        .cloned()
        .collect()
}

fn options(segment_bytes: u64) -> StorageOptions {
    StorageOptions {
        segment_bytes,
        ..StorageOptions::default()
    }
}

fn entry(index: u64, term: u64, payload: usize) -> Entry {
    Entry {
        index,
        term,
        kind: if index % 5 == 0 {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        // Never zero, so a cut inside the payload always leaves evidence;
        // reduced first, as u64::MAX * 7 overflows.
        data: (0..payload)
            .map(|k| 1 + (((index % 250) as usize * 7 + k) % 250) as u8)
            .collect(),
    }
}

fn entries(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..hi)
        .map(|i| entry(i, term, 20 + (i as usize * 37) % 100))
        .collect()
}

fn open(dir: &Path, segment_bytes: u64) -> Storage {
    match Storage::open(dir, options(segment_bytes)) {
        Ok(mut storage) => {
            storage.finish_recovery().expect("finish recovery");
            storage
        }
        Err(err) => panic!("open {} failed: {}", dir.display(), err),
    }
}

fn open_err(dir: &Path, segment_bytes: u64) -> String {
    match Storage::open(dir, options(segment_bytes)) {
        Ok(storage) => panic!(
            "open {} succeeded with log {}..={}",
            dir.display(),
            storage.first_index(),
            storage.last_index()
        ),
        Err(err) => err.to_string(),
    }
}

/// A synced log of `want` in `dir`.
fn build(dir: &Path, segment_bytes: u64, want: &[Entry]) {
    let mut storage = open(dir, segment_bytes);
    for batch in want.chunks(16) {
        storage.append(batch).expect("append");
    }
    storage.sync().expect("sync");
}

fn all_entries(storage: &Storage) -> Vec<Entry> {
    storage
        .entries(storage.first_index(), storage.last_index() + 1)
        .expect("entries")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// `(start, end)` of every record in a segment file's bytes.
fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while let Ok(view) = record::decode(&bytes[at..]) {
        spans.push((at, at + view.len));
        at += view.len;
    }
    spans
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for item in fs::read_dir(from).expect("read_dir") {
        let item = item.expect("dir entry");
        let target = to.join(item.file_name());
        if item.file_type().expect("file type").is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            fs::copy(item.path(), &target).expect("copy");
        }
    }
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).expect("read");
    bytes[at] ^= 0x5a;
    fs::write(path, bytes).expect("write");
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

const SEG: u64 = 4096;
const RECORDS: u64 = 300;

/// The last record of the newest segment, and the segment's path.
fn last_record(dir: &Path) -> (PathBuf, (usize, usize)) {
    let newest = segment_files(dir).pop().expect("a segment");
    let spans = record_spans(&fs::read(&newest).expect("read"));
    (newest, *spans.last().expect("a record"))
}

/// A data dir of `records` entries in segments of `SEG` bytes, built once;
/// each case damages a fresh copy of it.
struct Pristine {
    dir: tempfile::TempDir,
    want: Vec<Entry>,
    /// The newest segment's path inside the dir.
    newest: PathBuf,
    /// The byte ranges of the newest segment's records.
    spans: Vec<(usize, usize)>,
}

impl Pristine {
    fn build(records: u64) -> Pristine {
        let dir = tempdir();
        let want = entries(1, records + 1, 1);
        build(dir.path(), SEG, &want);
        let newest = segment_files(dir.path()).pop().expect("a segment");
        let spans = record_spans(&fs::read(&newest).expect("read"));
        let newest = newest
            .strip_prefix(dir.path())
            .expect("inside")
            .to_path_buf();
        Pristine {
            dir,
            want,
            newest,
            spans,
        }
    }

    fn last_record(&self) -> (usize, usize) {
        *self.spans.last().expect("a record")
    }

    /// A fresh copy, and the path of its newest segment.
    fn copy(&self) -> (tempfile::TempDir, PathBuf) {
        let work = tempdir();
        copy_dir(self.dir.path(), work.path());
        let newest = work.path().join(&self.newest);
        (work, newest)
    }
}

/// Deterministic bytes, never all zero.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    out[0] |= 1;
    out
}

/// Every file under `dir` (relative path → bytes), the lock file aside.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for item in fs::read_dir(dir).expect("read dir") {
            let path = item.expect("dir entry").path();
            let rel = path.strip_prefix(root).expect("inside").to_path_buf();
            if path.is_dir() {
                walk(root, &path, out);
            } else if rel != Path::new("lock") {
                out.push((rel, fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn open_and_refuse(dir: &Path, damaged: &Path, offset: usize) -> String {
    let before = contents(dir);
    let message = open_err(dir, SEG);
    assert!(
        message.contains(&damaged.display().to_string())
            && message.contains(&format!("at offset {}", offset)),
        "error does not name {} at offset {}: {}",
        damaged.display(),
        offset,
        message
    );
    assert!(contents(dir) == before, "a failed open changed files");
    message
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        voters: vec![1, 2, 3],
        learners: vec![9],
    }
}

fn body(index: u64) -> Vec<u8> {
    (0..10_000u32)
        .map(|k| (k as u64 * 3 + index) as u8)
        .collect()
}

fn write_snapshot(dir: &Path, index: u64, term: u64) -> snapshot::SnapshotInfo {
    let mut writer = SnapshotWriter::create(dir, &meta(index, term)).expect("create");
    for chunk in body(index).chunks(999) {
        writer.write_all(chunk).expect("write");
    }
    writer.finish().expect("finish")
}

const SMALL: u64 = 512;
