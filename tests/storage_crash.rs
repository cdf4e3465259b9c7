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

use raftkv::raft::{Entry, EntryKind, HardState, SnapshotMeta};
use raftkv::storage::record;
use raftkv::storage::snapshot::{self, RawReader, SnapshotReceiver, SnapshotWriter};
use raftkv::storage::{Storage, StorageOptions};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

// ---------------------------------------------------------------------------
// Helpers

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

// ---------------------------------------------------------------------------
// Torn tails

const SEG: u64 = 4096;
const RECORDS: u64 = 300;

#[test]
fn cut_at_every_byte_of_the_last_three_records_recovers_the_whole_ones() {
    capture_logs();
    let pristine = tempdir();
    let want = entries(1, RECORDS + 1, 1);
    build(pristine.path(), SEG, &want);
    let files = segment_files(pristine.path());
    assert!(files.len() > 3, "want many segments, got {}", files.len());
    let newest_name = files[files.len() - 1].file_name().expect("name").to_owned();
    let bytes = fs::read(&files[files.len() - 1]).expect("read newest");
    let spans = record_spans(&bytes);
    assert!(
        spans.len() >= 3,
        "newest segment holds {} records",
        spans.len()
    );
    let first_in_newest = RECORDS + 1 - spans.len() as u64;
    let last_three = &spans[spans.len() - 3..];

    for cut in last_three[0].0..=last_three[2].1 {
        let work = tempdir();
        copy_dir(pristine.path(), work.path());
        let newest = work.path().join("log").join(&newest_name);
        let mut damaged = bytes.clone();
        damaged[cut..].fill(0);
        fs::write(&newest, &damaged).expect("write cut segment");

        let whole = spans.iter().filter(|s| s.1 <= cut).count() as u64;
        let last = first_in_newest + whole - 1;
        let mut storage = open(work.path(), SEG);
        assert_eq!(storage.last_index(), last, "cut at byte {}", cut);
        assert_eq!(
            all_entries(&storage),
            want[..last as usize],
            "cut at {}",
            cut
        );

        let partial = spans.iter().find(|s| s.0 < cut && cut < s.1);
        let evidence = partial.is_some_and(|s| damaged[s.0..cut].iter().any(|&b| b != 0));
        let warned = warnings_naming(&newest);
        assert_eq!(
            !warned.is_empty(),
            evidence,
            "cut at {}: warnings {:?}",
            cut,
            warned
        );
        if let (true, Some(s)) = (evidence, partial) {
            let at = format!("at offset {}", s.0);
            assert!(
                warned.iter().any(|w| w.contains(&at)),
                "{:?} lacks {}",
                warned,
                at
            );
        }

        // The cut bytes are gone for good: new records follow and survive.
        storage
            .append(&entries(last + 1, last + 3, 2))
            .expect("append after cut");
        storage.sync().expect("sync");
        drop(storage);
        let storage = open(work.path(), SEG);
        assert_eq!(storage.last_index(), last + 2, "cut at {}", cut);
        assert_eq!(storage.term(last + 1), Some(2));
    }
}

#[test]
fn torn_only_record_leaves_an_empty_newest_segment_that_takes_appends() {
    capture_logs();
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let newest = segment_files(dir.path()).pop().expect("a segment");
    let mut bytes = fs::read(&newest).expect("read");
    let spans = record_spans(&bytes);
    let first_in_newest = 101 - spans.len() as u64;
    bytes[spans[0].0 + 10..].fill(0);
    fs::write(&newest, &bytes).expect("write");

    let mut storage = open(dir.path(), SEG);
    assert_eq!(storage.last_index(), first_in_newest - 1);
    assert_eq!(warnings_naming(&newest).len(), 1);
    assert_eq!(segment_files(dir.path()).last(), Some(&newest), "file kept");
    storage
        .append(&entries(first_in_newest, first_in_newest + 3, 2))
        .expect("append into the emptied segment");
    drop(storage);
    let storage = open(dir.path(), SEG);
    assert_eq!(storage.last_index(), first_in_newest + 2);
    assert_eq!(storage.term(first_in_newest), Some(2));
}

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

/// Truncation and the cut of a torn tail zero records from the last back to
/// the first, and in each the length field last. A process killed at any
/// instant of that (its page cache kept) leaves one of the states built
/// here: the records after one all zero, that one with some of its body
/// zeroed (from either end) or its body zeroed and some of its length
/// field. Each must open as a prefix of the log holding at least the
/// records before the zeroed ones (the others were never acknowledged).
#[test]
fn every_instant_of_zeroing_records_back_to_front_opens() {
    capture_logs();
    let pristine = Pristine::build(RECORDS);
    let spans = &pristine.spans;
    let bytes = fs::read(pristine.dir.path().join(&pristine.newest)).expect("read");
    let first_in_newest = RECORDS + 1 - spans.len() as u64;
    let zeroed = 3;
    let keep = spans.len() - zeroed;
    let mut states = Vec::new();
    for k in (keep..spans.len()).rev() {
        let (start, end) = spans[k];
        let mut base = bytes.clone();
        base[end..spans[spans.len() - 1].1].fill(0);
        for c in 0..=(end - start - 4) {
            let mut from_front = base.clone();
            from_front[start + 4..start + 4 + c].fill(0);
            states.push((k, c, from_front));
            let mut from_back = base.clone();
            from_back[end - c..end].fill(0);
            states.push((k, c, from_back));
        }
        for j in 1..=4 {
            let mut length = base.clone();
            length[start + 4..end].fill(0);
            length[start..start + j].fill(0);
            states.push((k, 100 + j, length.clone()));
            length[start..start + 4].copy_from_slice(&bytes[start..start + 4]);
            length[start + 4 - j..start + 4].fill(0);
            states.push((k, 200 + j, length));
        }
    }
    for (k, step, state) in states {
        let (work, newest) = pristine.copy();
        fs::write(&newest, &state).expect("write state");
        let storage = match Storage::open(work.path(), options(SEG)) {
            Ok(storage) => storage,
            Err(err) => panic!("record {k}, step {step}: {err}"),
        };
        let last = storage.last_index();
        let kept = first_in_newest + keep as u64 - 1;
        assert!(
            (kept..=RECORDS).contains(&last),
            "record {k}, step {step}: log ends at {last}"
        );
        assert_eq!(all_entries(&storage), pristine.want[..last as usize]);
    }
    // Front to back, a kill could leave the first length field zero with
    // the records after it whole, which no torn write leaves: refused.
    let (work, newest) = pristine.copy();
    let mut front_first = bytes.clone();
    front_first[spans[keep].0..spans[keep].0 + 4].fill(0);
    fs::write(&newest, &front_first).expect("write state");
    assert!(Storage::open(work.path(), options(SEG)).is_err());
}

#[test]
fn flipped_byte_in_the_last_record_is_cut_with_a_warning() {
    capture_logs();
    let pristine = Pristine::build(100);
    let (start, end) = pristine.last_record();
    // Every byte after the length field: crc, index, term, kind, payload.
    for at in start + 4..end {
        let (work, damaged) = pristine.copy();
        flip(&damaged, at);
        let storage = open(work.path(), SEG);
        assert_eq!(storage.last_index(), 99, "flip at {}", at);
        assert_eq!(all_entries(&storage), pristine.want[..99]);
        let warned = warnings_naming(&damaged);
        let offset = format!("at offset {}", start);
        assert!(warned.iter().any(|w| w.contains(&offset)), "{:?}", warned);
    }
}

#[test]
fn flipped_length_of_the_last_record_never_yields_a_wrong_log() {
    let pristine = Pristine::build(100);
    let (start, _) = pristine.last_record();
    let name = pristine.newest.display().to_string();
    for at in start..start + 4 {
        let (work, damaged) = pristine.copy();
        flip(&damaged, at);
        // A length that claims less than was written leaves non-zero bytes
        // behind the record, which recovery may not call torn.
        match Storage::open(work.path(), options(SEG)) {
            Ok(storage) => assert_eq!(all_entries(&storage), pristine.want[..99], "flip at {}", at),
            Err(err) => assert!(err.to_string().contains(&name), "{}", err),
        }
    }
}

/// A length field damaged to claim every byte up to the end of the records,
/// or of the file: the record fails its CRC with only zeros after what it
/// claims, as a torn write would, but whole records run on inside it to the
/// end. Cutting it would lose them, so the start is refused.
#[test]
fn a_length_damaged_to_cover_the_records_after_it_is_an_error() {
    let pristine = Pristine::build(RECORDS);
    let spans = &pristine.spans;
    assert!(
        spans.len() >= 4,
        "the newest segment holds {} records",
        spans.len()
    );
    let end = pristine.last_record().1;
    for k in [0, spans.len() / 2, spans.len() - 2] {
        let start = spans[k].0;
        for claim_to in [end, SEG as usize] {
            let (work, damaged) = pristine.copy();
            let mut bytes = fs::read(&damaged).expect("read");
            let length = (claim_to - start - record::HEADER_BYTES) as u32;
            bytes[start..start + 4].copy_from_slice(&length.to_be_bytes());
            fs::write(&damaged, bytes).expect("write");
            let message = open_and_refuse(work.path(), &damaged, start);
            assert!(
                message.contains("its length field is damaged"),
                "record {} claiming up to {}: {}",
                k,
                claim_to,
                message
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Corruption: an error naming the file, and nothing changed

fn assert_corrupt_untouched(dir: &Path, damaged: &Path, offset: Option<usize>) {
    let before: Vec<Vec<u8>> = segment_files(dir)
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    let message = open_err(dir, SEG);
    assert!(
        message.contains(&damaged.display().to_string()),
        "error does not name {}: {}",
        damaged.display(),
        message
    );
    if let Some(offset) = offset {
        let at = format!("at offset {}", offset);
        assert!(message.contains(&at), "error lacks '{}': {}", at, message);
    }
    let after: Vec<Vec<u8>> = segment_files(dir)
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    assert!(before == after, "a failed open changed the segment files");
}

#[test]
fn flipped_byte_in_an_earlier_record_of_the_newest_segment_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let newest = segment_files(dir.path()).pop().expect("a segment");
    let spans = record_spans(&fs::read(&newest).expect("read"));
    let (start, end) = spans[spans.len() - 2];
    flip(&newest, (start + end) / 2);
    assert_corrupt_untouched(dir.path(), &newest, Some(start));
}

#[test]
fn flipped_byte_in_an_older_segment_is_an_error() {
    for which in ["first", "last"] {
        let dir = tempdir();
        build(dir.path(), SEG, &entries(1, 201, 1));
        let older = segment_files(dir.path())[1].clone();
        let spans = record_spans(&fs::read(&older).expect("read"));
        let (start, end) = if which == "first" {
            spans[0]
        } else {
            spans[spans.len() - 1]
        };
        flip(&older, end - 1);
        assert_corrupt_untouched(dir.path(), &older, Some(start));
    }
}

/// Zeros read as the end of an older segment's records, so the error comes
/// up at the next segment's first index; it names the older file too, and
/// where its records stop, which is where the damage is.
/// The first index a segment's file name gives.
fn first_index_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .expect("a segment's name")
}

#[test]
fn zeroed_last_record_of_an_older_segment_is_an_error_naming_where_it_stops() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 201, 1));
    let files = segment_files(dir.path());
    let older = files[1].clone();
    let mut bytes = fs::read(&older).expect("read");
    let (start, end) = *record_spans(&bytes).last().expect("records");
    bytes[start..end].fill(0);
    fs::write(&older, &bytes).expect("write");
    let message = open_err(dir.path(), SEG);
    let stop = format!(
        "{} ends at index {} (its records stop at offset {})",
        older.display(),
        record_spans(&bytes).len() as u64 + first_index_of(&older) - 1,
        start
    );
    assert!(
        message.contains(&files[2].display().to_string()) && message.contains(&stop),
        "error lacks '{}': {}",
        stop,
        message
    );
}

#[test]
fn missing_middle_segment_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 201, 1));
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).expect("remove");
    assert_corrupt_untouched(dir.path(), &files[3], Some(0));
}

/// A valid record after damage in the newest segment shows the damage is
/// no torn write: cutting there would lose the record.
#[test]
fn garbage_after_the_last_record_followed_by_a_valid_record_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let (newest, (_, end)) = last_record(dir.path());
    let mut bytes = fs::read(&newest).expect("read");
    // Garbage, then (after a gap of zeros) a whole record for index 101.
    let garbage = random_bytes(7, 50);
    bytes[end..end + 50].copy_from_slice(&garbage);
    let at = end + 50 + 13;
    record::encode(&entry(101, 1, 30), &mut bytes[at..]);
    fs::write(&newest, bytes).expect("write");
    let message = open_and_refuse(dir.path(), &newest, end);
    assert!(message.contains("not a torn tail"), "{}", message);
}

/// A segment renamed by hand (not 20 digits) would otherwise be passed
/// over, and the log end before its records: an error naming it, files
/// untouched. A file that is no segment at all is left alone, and so is a
/// `.tmp` file of another name (only a segment creation's leftover is
/// removed).
#[test]
fn segment_under_a_name_not_of_20_digits_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 201, 1));
    let notes = dir.path().join("log/notes.tmp");
    fs::write(&notes, b"kept").expect("write");
    fs::write(dir.path().join("log/README"), b"kept").expect("write");
    let newest = segment_files(dir.path()).pop().expect("a segment");
    let first = newest.file_stem().expect("stem").to_string_lossy();
    let renamed = newest.with_file_name(format!("{}.seg", first.trim_start_matches('0')));
    fs::rename(&newest, &renamed).expect("rename");
    let message = open_err(dir.path(), SEG);
    assert!(
        message.contains(&renamed.display().to_string()) && message.contains("not a segment name"),
        "{}",
        message
    );
    fs::rename(&renamed, &newest).expect("rename back");
    let storage = open(dir.path(), SEG);
    assert_eq!(storage.last_index(), 200);
    assert!(notes.exists() && dir.path().join("log/README").exists());
}

/// A whole last record (its CRC matches) of a kind this build does not know
/// is no torn write: refused, not cut, so a node started on an older build
/// than wrote it loses nothing.
#[test]
fn last_record_of_an_unknown_kind_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let (newest, (start, end)) = last_record(dir.path());
    let mut bytes = fs::read(&newest).expect("read");
    // len | crc | index | term | kind | payload; the crc covers index on.
    bytes[start + 24] = 0xEE;
    let crc = crc32fast::hash(&bytes[start + 8..end]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    fs::write(&newest, bytes).expect("write");
    let message = open_and_refuse(dir.path(), &newest, start);
    assert!(message.contains("newer build"), "{}", message);
}

#[test]
fn record_with_the_wrong_index_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let files = segment_files(dir.path());
    // A valid segment under the wrong name: its records do not match it.
    let wrong = files[1].with_file_name("00000000000000000002.seg");
    fs::rename(&files[0], &wrong).expect("rename");
    let message = open_err(dir.path(), SEG);
    assert!(message.contains("00000000000000000002.seg"), "{}", message);
}

#[test]
fn leftover_temp_files_are_ignored() {
    let dir = tempdir();
    let want = entries(1, 51, 1);
    build(dir.path(), SEG, &want);
    let hard_state = HardState { term: 4, vote: 2 };
    open(dir.path(), SEG)
        .set_hard_state(hard_state)
        .expect("stable");
    fs::write(
        dir.path().join("log/00000000000000000999.seg.tmp"),
        [7u8; 64],
    )
    .expect("tmp");
    fs::write(dir.path().join("stable.tmp"), b"garbage").expect("tmp");
    let storage = open(dir.path(), SEG);
    assert_eq!(all_entries(&storage), want);
    assert_eq!(storage.hard_state(), hard_state);
}

// ---------------------------------------------------------------------------
// The newest segment cut short, and garbage after its last record: per SPEC
// §4 a torn write (the last record incomplete or failing its CRC, nothing
// but zeros after it) is cut on start, and a cut at a record boundary is no
// damage; non-zero bytes past the damaged record are an error. The open changes nothing; `finish_recovery` cuts the tail and
// brings the file back to its created size, with a warning naming the file.

fn set_len(path: &Path, len: usize) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len as u64))
        .expect("truncate");
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

/// Opens `dir` expecting a torn tail or a short newest segment: the open
/// itself changes no file (a start refused later must leave the data dir
/// as it was), and `finish_recovery` then repairs it. Returns the storage.
fn open_deferred(dir: &Path, segment_bytes: u64) -> Storage {
    let before = contents(dir);
    let storage = match Storage::open(dir, options(segment_bytes)) {
        Ok(storage) => storage,
        Err(err) => panic!("open {} failed: {}", dir.display(), err),
    };
    assert!(contents(dir) == before, "the open changed files");
    let (first, last) = (storage.first_index(), storage.last_index());
    let read = all_entries(&storage);
    // Dropped unfinished (a refused start): still nothing changed.
    drop(storage);
    assert!(contents(dir) == before, "an unfinished open changed files");
    let mut storage = Storage::open(dir, options(segment_bytes)).expect("reopen");
    storage.finish_recovery().expect("finish recovery");
    assert_eq!((storage.first_index(), storage.last_index()), (first, last));
    assert_eq!(all_entries(&storage), read);
    storage
}

/// After the repair: the newest segment is back to its created size, takes
/// appends after `last`, and they survive a reopen.
fn assert_repaired(dir: &Path, mut storage: Storage, newest: &Path, last: u64) {
    assert_eq!(storage.last_index(), last);
    assert_eq!(fs::metadata(newest).expect("stat").len(), SEG);
    let bytes = fs::read(newest).expect("read");
    let end = record_spans(&bytes).last().map_or(0, |s| s.1);
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "bytes left after the records"
    );
    storage
        .append(&entries(last + 1, last + 4, 2))
        .expect("append after the repair");
    storage.sync().expect("sync");
    drop(storage);
    let storage = open(dir, SEG);
    assert_eq!(storage.last_index(), last + 3);
    assert_eq!(storage.term(last + 1), Some(2));
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

/// Opens `dir`, whose newest segment `newest` was damaged from `end` on:
/// every record in `want` is there, the damage is cut as a torn tail with a
/// warning naming the file and `end`, and the repair holds.
fn assert_torn_tail_cut(dir: &Path, newest: &Path, end: usize, want: &[Entry], case: &str) {
    let storage = open_deferred(dir, SEG);
    assert_eq!(all_entries(&storage), want, "{}", case);
    let at = format!("at offset {}: cutting torn tail", end);
    let warned = warnings_naming(newest);
    assert!(
        warned.iter().any(|w| w.contains(&at)),
        "{}: {:?}",
        case,
        warned
    );
    assert_repaired(dir, storage, newest, want.len() as u64);
}

#[test]
fn newest_segment_truncated_inside_its_last_record_is_a_torn_tail() {
    capture_logs();
    let pristine = Pristine::build(RECORDS);
    let (start, end) = pristine.last_record();
    for cut in start + 1..end {
        let (work, damaged) = pristine.copy();
        set_len(&damaged, cut);
        let storage = open_deferred(work.path(), SEG);
        assert_eq!(storage.last_index(), RECORDS - 1, "cut at {}", cut);
        assert_eq!(all_entries(&storage), pristine.want[..RECORDS as usize - 1]);
        let warned = warnings_naming(&damaged);
        assert!(
            warned.iter().any(|w| w.contains("short of")),
            "cut at {}: {:?}",
            cut,
            warned
        );
        // The length field's high bytes are zero: a cut inside them leaves
        // only zeros, a clean end; past them the record is torn.
        if cut >= start + 4 {
            let at = format!("at offset {}: cutting torn tail", start);
            assert!(
                warned.iter().any(|w| w.contains(&at)),
                "cut at {}: {:?} lacks {}",
                cut,
                warned,
                at
            );
        }
        assert_repaired(work.path(), storage, &damaged, RECORDS - 1);
    }
}

#[test]
fn newest_segment_truncated_at_a_record_boundary_opens_with_the_records_before_it() {
    capture_logs();
    let pristine = Pristine::build(RECORDS);
    let first_in_newest = RECORDS + 1 - pristine.spans.len() as u64;
    // Right after the last record (no record lost: all open), before each
    // of the others, and at 0 (an empty file).
    let mut cuts: Vec<(usize, u64)> = vec![(pristine.last_record().1, RECORDS)];
    for (k, s) in pristine.spans.iter().enumerate() {
        cuts.push((s.0, first_in_newest + k as u64 - 1));
    }
    for (cut, last) in cuts {
        let (work, damaged) = pristine.copy();
        set_len(&damaged, cut);
        let storage = open_deferred(work.path(), SEG);
        assert_eq!(storage.last_index(), last, "cut at {}", cut);
        assert_eq!(all_entries(&storage), pristine.want[..last as usize]);
        let warned = warnings_naming(&damaged);
        assert!(
            warned.iter().any(|w| w.contains("short of"))
                && !warned.iter().any(|w| w.contains("torn")),
            "cut at {}: {:?}",
            cut,
            warned
        );
        assert_repaired(work.path(), storage, &damaged, last);
    }
}

/// Random bytes written just after the last record, zeros after them. Their
/// first byte is never zero, so their length field claims more than the file
/// holds, which no write of a full-size segment makes: only a header's worth
/// is a record's, cut as a torn tail; anything beyond is an error.
#[test]
fn random_garbage_after_the_last_record_is_cut_only_within_a_header() {
    capture_logs();
    let pristine = Pristine::build(100);
    let (_, end) = pristine.last_record();
    for seed in 1..=12u64 {
        for len in [1, 2, 3, 4, 5, 7, 8, 9, 24, 25, 26, 60, 123, 200] {
            let (work, damaged) = pristine.copy();
            let mut bytes = fs::read(&damaged).expect("read");
            bytes[end..end + len].copy_from_slice(&random_bytes(seed * 1000 + len as u64, len));
            fs::write(&damaged, bytes).expect("write");
            let case = format!("seed {} len {}", seed, len);
            if len <= record::HEADER_BYTES {
                assert_torn_tail_cut(work.path(), &damaged, end, &pristine.want, &case);
            } else {
                let message = open_and_refuse(work.path(), &damaged, end);
                assert!(message.contains("not a torn tail"), "{}: {}", case, message);
            }
        }
    }
}

/// Non-zero bytes some way after the last record, zeros in between and
/// after: SPEC §4 allows only zeros after a torn write, so this is an error
/// and nothing is cut, whether the bytes came from a torn append whose
/// first page did not reach the disk or from anything else.
#[test]
fn non_zero_bytes_after_zeros_after_the_last_record_are_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let (newest, (_, end)) = last_record(dir.path());
    let mut bytes = fs::read(&newest).expect("read");
    bytes[end + 100] = 1;
    bytes[end + 700..end + 900].copy_from_slice(&random_bytes(3, 200));
    fs::write(&newest, bytes).expect("write");
    let message = open_and_refuse(dir.path(), &newest, end);
    assert!(
        message.contains(&format!("byte {} after it", end + 100)),
        "{}",
        message
    );
}

/// The last two records both damaged: the first is followed by bytes that
/// are not zero, so it is no torn write, and the acknowledged record it
/// holds is not cut.
#[test]
fn two_damaged_records_at_the_end_are_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let newest = segment_files(dir.path()).pop().expect("a segment");
    let spans = record_spans(&fs::read(&newest).expect("read"));
    let [.., (start, mid), (_, end)] = spans[..] else {
        panic!("the newest segment holds {} records", spans.len());
    };
    flip(&newest, mid - 1);
    flip(&newest, end - 1);
    let message = open_and_refuse(dir.path(), &newest, start);
    assert!(message.contains("not a torn tail"), "{}", message);
}

/// A torn append (its length written, its payload not all) whose payload, a
/// client's value, holds the encoding of the next record: the torn record
/// reaches as far as its length says, so the bytes of its value are its own
/// and cannot make the torn tail look like lost records.
#[test]
fn a_record_inside_a_torn_records_value_does_not_stop_the_cut() {
    capture_logs();
    let dir = tempdir();
    let want = entries(1, 101, 1);
    build(dir.path(), SEG, &want);
    let (newest, (_, end)) = last_record(dir.path());
    let mut value = vec![7u8; 1000];
    let inner = entry(102, 1, 30);
    let inner_len = record::encoded_len(inner.data.len());
    record::encode(&inner, &mut value[100..100 + inner_len]);
    let torn = Entry {
        index: 101,
        term: 1,
        kind: EntryKind::Normal,
        data: value.into(),
    };
    let mut bytes = fs::read(&newest).expect("read");
    let torn_len = record::encoded_len(torn.data.len());
    record::encode(&torn, &mut bytes[end..end + torn_len]);
    // The end of the value did not reach the disk.
    bytes[end + torn_len - 300..end + torn_len].fill(0);
    fs::write(&newest, bytes).expect("write");
    assert_torn_tail_cut(dir.path(), &newest, end, &want, "a record inside the value");
}

/// Entries 1..=100, then entry 101 holding `value`, appended and synced;
/// returns the dir, the newest segment and where entry 101 starts and ends.
fn with_last_value(
    segment_bytes: u64,
    value: Vec<u8>,
) -> (tempfile::TempDir, PathBuf, usize, usize) {
    let dir = tempdir();
    build(dir.path(), segment_bytes, &entries(1, 101, 1));
    let mut storage = open(dir.path(), segment_bytes);
    let last = Entry {
        index: 101,
        term: 1,
        kind: EntryKind::Normal,
        data: value.into(),
    };
    storage.append(&[last]).expect("append");
    storage.sync().expect("sync");
    drop(storage);
    let (newest, (start, end)) = last_record(dir.path());
    (dir, newest, start, end)
}

/// The encoding of entry `index` holding `payload`, as a client could put
/// it in a value.
fn encoded(index: u64, payload: Vec<u8>) -> Vec<u8> {
    let inner = Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        data: payload.into(),
    };
    let mut bytes = vec![0u8; record::encoded_len(inner.data.len())];
    record::encode(&inner, &mut bytes);
    bytes
}

/// Opens `dir` after damage to entry 101 and expects it cut as a torn tail.
fn assert_last_cut(dir: &Path, segment_bytes: u64, case: &str) {
    match Storage::open(dir, options(segment_bytes)) {
        Ok(storage) => assert_eq!(storage.last_index(), 100, "{case}"),
        Err(err) => panic!("{case}: a torn write refused: {err}"),
    }
}

/// Torn writes of a value that holds the encoding of the next entry, torn
/// where that encoding ends, inside it (its payload zeros, as the bytes a
/// tear leaves unwritten are), or with an earlier page lost: each leaves
/// the last record failing its CRC with zeros after it, a torn tail, which
/// the check for a damaged length field must not take for one.
#[test]
fn torn_values_holding_the_next_record_are_cut() {
    capture_logs();
    let inner = encoded(102, vec![5u8; 30]);
    let value = [vec![7u8; 100], inner.clone(), vec![7u8; 300]].concat();
    let (dir, newest, start, end) = with_last_value(SEG, value);
    let mut bytes = fs::read(&newest).expect("read");
    bytes[start + 25 + 100 + inner.len()..end].fill(0);
    fs::write(&newest, bytes).expect("write");
    assert_last_cut(dir.path(), SEG, "torn right after the inner record");

    let zeros = encoded(102, vec![0u8; 200]);
    let value = [vec![7u8; 10], zeros, vec![7u8; 100]].concat();
    for cut in [40usize, 60, 100, 150, 200] {
        let (dir, newest, start, end) = with_last_value(SEG, value.clone());
        let mut bytes = fs::read(&newest).expect("read");
        bytes[start + 25 + 10 + cut..end].fill(0);
        fs::write(&newest, bytes).expect("write");
        assert_last_cut(
            dir.path(),
            SEG,
            &format!("torn {cut} bytes into a zero payload"),
        );
    }

    let value = [vec![7u8; 300], inner].concat();
    let (dir, newest, start, _) = with_last_value(SEG, value);
    let mut bytes = fs::read(&newest).expect("read");
    bytes[start + 25 + 50..start + 25 + 150].fill(0);
    fs::write(&newest, bytes).expect("write");
    assert_last_cut(dir.path(), SEG, "an earlier page of the value lost");
}

/// A torn value made of nothing but places where the next entry's index
/// appears, each behind a length that claims a megabyte: still a torn tail.
#[test]
fn a_torn_value_full_of_the_next_index_is_cut() {
    capture_logs();
    const BIG: u64 = 4 << 20;
    let mut value = vec![0u8; 1 << 20];
    for block in value.chunks_exact_mut(16) {
        block[0..4].copy_from_slice(&(1u32 << 20).to_be_bytes());
        block[8..16].copy_from_slice(&102u64.to_be_bytes());
    }
    let (dir, newest, _, end) = with_last_value(BIG, value);
    flip(&newest, end - 1);
    assert_last_cut(dir.path(), BIG, "a value of candidates");
}

/// A whole record for the next index after zeros: records in between are
/// lost, which is no torn write.
#[test]
fn a_valid_record_after_zeros_after_the_last_record_is_an_error() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let (newest, (_, end)) = last_record(dir.path());
    let mut bytes = fs::read(&newest).expect("read");
    record::encode(&entry(102, 1, 30), &mut bytes[end + 333..]);
    fs::write(&newest, bytes).expect("write");
    open_and_refuse(dir.path(), &newest, end);
}

#[test]
fn older_segment_cut_short_is_an_error() {
    let pristine = tempdir();
    build(pristine.path(), SEG, &entries(1, 201, 1));
    let older = segment_files(pristine.path())[1].clone();
    let rel = older.strip_prefix(pristine.path()).expect("inside");
    let spans = record_spans(&fs::read(&older).expect("read"));
    // Inside its last record, before it, and right after it (where the next
    // segment still follows on).
    let (start, end) = spans[spans.len() - 1];
    for cut in [start + 10, start, end] {
        let work = tempdir();
        copy_dir(pristine.path(), work.path());
        let damaged = work.path().join(rel);
        set_len(&damaged, cut);
        let message = open_and_refuse(work.path(), &damaged, cut);
        assert!(message.contains("older than the newest"), "{}", message);
    }
}

/// A record whose length runs past the end of the newest segment, with
/// nothing but zeros after its header (the file ends inside its index, whose
/// high bytes are zero): its last record, incomplete, so a torn tail, even
/// where the file is not shorter than the size the log is opened with.
#[test]
fn record_running_past_the_end_of_the_newest_file_is_a_torn_tail() {
    capture_logs();
    let dir = tempdir();
    let want = entries(1, 31, 1);
    build(dir.path(), SEG, &want);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1, "one segment");
    let spans = record_spans(&fs::read(&files[0]).expect("read"));
    let (k, &(start, _)) = spans
        .iter()
        .enumerate()
        .find(|s| s.1 .0 > SMALL as usize)
        .expect("a record past SMALL bytes");
    set_len(&files[0], start + 12);
    let mut storage = Storage::open(dir.path(), options(SMALL)).expect("open");
    assert_eq!(
        fs::metadata(&files[0]).expect("stat").len(),
        start as u64 + 12,
        "the open changed nothing"
    );
    assert_eq!(all_entries(&storage), want[..k]);
    storage.finish_recovery().expect("finish");
    let at = format!("at offset {}: cutting torn tail", start);
    assert!(warnings_naming(&files[0]).iter().any(|w| w.contains(&at)));
    assert!(fs::read(&files[0]).expect("read")[start..]
        .iter()
        .all(|&b| b == 0));
}

/// Garbage with a torn-looking last record in the newest segment, and a
/// segment file a crash cannot leave: both are found by the open, the
/// storage is dropped before `finish_recovery` (as when the snapshot check
/// then refuses the start), and every file is as it was.
#[test]
fn an_open_never_finished_changes_no_file() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 101, 1));
    let (newest, (start, end)) = last_record(dir.path());
    flip(&newest, (start + end) / 2);
    fs::write(
        dir.path().join("log/00000000000000000999.seg.tmp"),
        [7u8; 64],
    )
    .expect("tmp");
    let before = contents(dir.path());
    let storage = Storage::open(dir.path(), options(SEG)).expect("open");
    assert_eq!(storage.last_index(), 99);
    drop(storage);
    assert!(contents(dir.path()) == before, "the open changed files");
    set_len(&newest, start + 3);
    let before = contents(dir.path());
    let storage = Storage::open(dir.path(), options(SEG)).expect("open");
    assert_eq!(storage.last_index(), 99);
    drop(storage);
    assert!(contents(dir.path()) == before, "the open changed files");
}

#[test]
#[should_panic(expected = "before finish_recovery")]
fn appending_before_finish_recovery_panics() {
    let dir = tempdir();
    let mut storage = Storage::open(dir.path(), options(SEG)).expect("open");
    let _ = storage.append(&entries(1, 2, 1));
}

// ---------------------------------------------------------------------------
// Segment names a log cannot have

#[test]
fn segment_named_for_index_zero_is_an_error() {
    let dir = tempdir();
    fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    let seg = dir.path().join("log/00000000000000000000.seg");
    fs::write(&seg, vec![0u8; SEG as usize]).expect("write");
    let message = open_err(dir.path(), SEG);
    assert!(message.contains(&seg.display().to_string()), "{}", message);
}

#[test]
fn record_at_the_largest_index_is_an_error() {
    let dir = tempdir();
    fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    let seg = dir.path().join(format!("log/{:020}.seg", u64::MAX));
    let mut bytes = vec![0u8; SEG as usize];
    record::encode(&entry(u64::MAX, 1, 10), &mut bytes);
    fs::write(&seg, bytes).expect("write");
    let message = open_err(dir.path(), SEG);
    assert!(
        message.contains(&seg.display().to_string()) && message.contains("at offset 0"),
        "{}",
        message
    );
}

#[test]
fn terms_that_fall_are_an_error_within_and_across_segments() {
    // Written whole (CRCs match), but no leader's log has them.
    let write = |dir: &Path, first: u64, terms: &[u64]| {
        let mut bytes = vec![0u8; SEG as usize];
        let mut at = 0;
        for (i, term) in terms.iter().enumerate() {
            at += record::encode(&entry(first + i as u64, *term, 10), &mut bytes[at..]);
        }
        let seg = dir.join(format!("log/{:020}.seg", first));
        fs::write(&seg, bytes).expect("write");
        seg
    };
    let dir = tempdir();
    fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    let seg = write(dir.path(), 1, &[1, 2, 1]);
    let message = open_err(dir.path(), SEG);
    assert!(
        message.contains(&seg.display().to_string())
            && message.contains("entry 3 has term 1, below the term 2"),
        "{}",
        message
    );
    let dir = tempdir();
    fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    write(dir.path(), 1, &[1, 3]);
    let seg = write(dir.path(), 3, &[2]);
    let message = open_err(dir.path(), SEG);
    assert!(
        message.contains(&seg.display().to_string())
            && message.contains("entry 3 has term 2, below the term 3"),
        "{}",
        message
    );
    write(dir.path(), 3, &[3, 4]);
    assert_eq!(open(dir.path(), SEG).last_index(), 4);
}

// ---------------------------------------------------------------------------
// Payloads: a record written whole (its CRC matches) whose payload is not
// one its kind can have is corruption, found as the log is opened

#[test]
fn payload_that_does_not_decode_is_an_error_naming_the_record() {
    use raftkv::kv::Command;
    let mut set = Vec::new();
    Command::Set(b"k".to_vec(), b"v".to_vec()).encode(&mut set);
    for kind in [EntryKind::ConfChange, EntryKind::Normal] {
        let dir = tempdir();
        let log = [
            Entry {
                index: 1,
                term: 1,
                kind: EntryKind::Normal,
                data: set.clone().into(),
            },
            Entry {
                index: 2,
                term: 1,
                kind,
                data: vec![0x01, 0x09].into(),
            },
        ];
        build(dir.path(), SEG, &log);
        let checked = StorageOptions {
            check_payload: Some(raftkv::recovery::check_payload),
            ..options(SEG)
        };
        let message = match Storage::open(dir.path(), checked) {
            Ok(_) => panic!("{:?} entry 2 with payload 01 09 was accepted", kind),
            Err(err) => err.to_string(),
        };
        let newest = segment_files(dir.path()).pop().expect("a segment");
        let at = format!("at offset {}", record::encoded_len(set.len()));
        assert!(
            message.contains(&newest.display().to_string()) && message.contains(&at),
            "{}",
            message
        );
        // Without a check (the default) storage takes any payload.
        assert_eq!(all_entries(&open(dir.path(), SEG)), log);
    }
}

// ---------------------------------------------------------------------------
// The stable file

#[test]
fn hard_state_survives_reopen_and_defaults_when_missing() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SEG);
    assert_eq!(storage.hard_state(), HardState::default());
    let hard_state = HardState { term: 7, vote: 3 };
    storage.set_hard_state(hard_state).expect("set");
    drop(storage);
    assert_eq!(open(dir.path(), SEG).hard_state(), hard_state);
    assert!(!dir.path().join("stable.tmp").exists());
}

#[test]
fn stable_file_with_a_flipped_byte_is_an_error_naming_it() {
    let dir = tempdir();
    open(dir.path(), SEG)
        .set_hard_state(HardState { term: 7, vote: 3 })
        .expect("set");
    let stable = dir.path().join("stable");
    for at in 0..28 {
        let mut bytes = fs::read(&stable).expect("read");
        bytes[at] ^= 1;
        let work = tempdir();
        fs::write(work.path().join("stable"), bytes).expect("write");
        let message = open_err(work.path(), SEG);
        let named = work.path().join("stable").display().to_string();
        assert!(message.contains(&named), "flip at {}: {}", at, message);
    }
    fs::write(&stable, b"").expect("truncate");
    assert!(open_err(dir.path(), SEG).contains("stable"));
}

/// `rm -rf data_dir/log` on a node with state: the stable file shows a log
/// was there (log/ is created before the first stable file), so the open
/// fails naming log/ and recreates nothing, instead of starting empty.
#[test]
fn a_removed_log_dir_next_to_a_stable_file_is_an_error_naming_it() {
    let dir = tempdir();
    build(dir.path(), SEG, &entries(1, 41, 3));
    open(dir.path(), SEG)
        .set_hard_state(HardState { term: 3, vote: 1 })
        .expect("set");
    let log_dir = dir.path().join("log");
    fs::remove_dir_all(&log_dir).expect("remove log/");
    let stable_before = fs::read(dir.path().join("stable")).expect("read stable");
    let message = open_err(dir.path(), SEG);
    assert!(
        message.contains(&log_dir.display().to_string()) && message.contains("missing"),
        "{}",
        message
    );
    assert!(
        !log_dir.exists(),
        "the open recreated {}",
        log_dir.display()
    );
    assert_eq!(
        fs::read(dir.path().join("stable")).expect("read"),
        stable_before
    );
    // Every later attempt fails the same way.
    assert_eq!(open_err(dir.path(), SEG), message);
}

/// What a first start can leave behind at any point, and a node that joined
/// and holds a term but never received an entry: all open.
#[test]
fn a_new_or_half_created_data_dir_and_a_stable_file_with_an_empty_log_open() {
    // Nothing yet, not even the directory.
    let parent = tempdir();
    let fresh = parent.path().join("a/b/data");
    assert_eq!(open(&fresh, SEG).last_index(), 0);
    assert!(fresh.join("log").is_dir());
    // Only the directory, or the directory and its lock file: a crash before log/.
    let bare = tempdir();
    assert_eq!(open(bare.path(), SEG).last_index(), 0);
    let locked_only = tempdir();
    fs::write(locked_only.path().join("lock"), b"12345\n").expect("write lock");
    assert_eq!(open(locked_only.path(), SEG).last_index(), 0);
    // A stable file next to an empty log/ (a joiner that only heard a term).
    let joiner = tempdir();
    let hard_state = HardState { term: 5, vote: 0 };
    open(joiner.path(), SEG)
        .set_hard_state(hard_state)
        .expect("set");
    let storage = open(joiner.path(), SEG);
    assert_eq!(storage.hard_state(), hard_state);
    assert_eq!((storage.first_index(), storage.last_index()), (1, 0));
}

/// One open `Storage` per data dir: a second open, here in the same process,
/// fails naming the directory and the holder, and changes nothing; once the
/// first is dropped (as a process's lock goes when it dies) it opens.
#[test]
fn a_data_dir_open_elsewhere_is_refused_until_released() {
    let dir = tempdir();
    let want = entries(1, 31, 2);
    let mut first = open(dir.path(), SEG);
    first.append(&want).expect("append");
    first.sync().expect("sync");
    let lock = dir.path().join("lock");
    let pid = std::process::id().to_string();
    assert_eq!(fs::read_to_string(&lock).expect("read lock").trim(), pid);
    let segments = segment_files(dir.path());
    let before: Vec<Vec<u8>> = segments
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    let message = open_err(dir.path(), SEG);
    assert_eq!(
        message,
        format!(
            "data dir {} is in use by another process: pid {} holds the lock on {}",
            dir.path().display(),
            pid,
            lock.display()
        )
    );
    let after: Vec<Vec<u8>> = segments
        .iter()
        .map(|p| fs::read(p).expect("read"))
        .collect();
    assert_eq!(after, before);
    assert_eq!(all_entries(&first), want);
    drop(first);
    assert_eq!(all_entries(&open(dir.path(), SEG)), want);
}

// ---------------------------------------------------------------------------
// Snapshots

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

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn snapshots_keep_the_newest_two_and_load_the_newest() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    assert!(snapshot::load_latest(&snaps).expect("load").is_none());
    let infos: Vec<_> = [(10, 1), (20, 2), (30, 2)]
        .iter()
        .map(|&(i, t)| write_snapshot(&snaps, i, t))
        .collect();
    assert_eq!(
        snapshot_files(&snaps),
        vec![infos[1].path.clone(), infos[2].path.clone()]
    );
    assert_eq!(
        infos[2].path.file_name().and_then(|n| n.to_str()),
        Some("00000000000000000030-00000000000000000002.snap")
    );
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(loaded.meta, meta(30, 2));
    assert_eq!(loaded.body, body(30));
    assert_eq!(loaded.path, infos[2].path);
    assert!(loaded.skipped.is_empty());
    assert_eq!(
        infos[2].bytes,
        fs::metadata(&infos[2].path).expect("stat").len()
    );
}

/// Snapshots named newer than the one published (another build's, left
/// by a node that then caught up from further back) neither count nor go:
/// pruning by rank alone deleted the one just published, and its writer
/// was told it succeeded.
#[test]
fn pruning_keeps_the_snapshot_published_and_the_one_before_it() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let fallback = write_snapshot(&snaps, 50, 1);
    // Written elsewhere and copied in, so that writing them prunes nothing here.
    let elsewhere = tempdir();
    let newer: Vec<PathBuf> = [100, 110]
        .iter()
        .map(|&i| {
            let written = write_snapshot(elsewhere.path(), i, 2).path;
            let here = snaps.join(written.file_name().expect("name"));
            fs::copy(&written, &here).expect("copy");
            here
        })
        .collect();
    let published = write_snapshot(&snaps, 60, 2);
    assert!(
        published.path.exists(),
        "the snapshot just published is gone"
    );
    let mut want = vec![fallback.path, published.path.clone()];
    want.extend(newer.iter().cloned());
    assert_eq!(snapshot_files(&snaps), want);

    // The next one keeps itself and the one before it, as always.
    let next = write_snapshot(&snaps, 70, 2);
    let mut want = vec![published.path, next.path];
    want.extend(newer);
    assert_eq!(snapshot_files(&snaps), want);
}

#[test]
fn corrupt_newest_snapshot_is_passed_over_for_the_previous() {
    capture_logs();
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let older = write_snapshot(&snaps, 10, 1);
    let newest = write_snapshot(&snaps, 20, 2);
    flip(&newest.path, 5_000);
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(loaded.meta, meta(10, 1));
    assert_eq!(loaded.body, body(10));
    assert_eq!(
        loaded.skipped,
        vec![snapshot::Skipped {
            path: newest.path.clone(),
            corrupt: true
        }]
    );
    let warned = warnings_naming(&newest.path);
    assert!(
        warned
            .iter()
            .any(|w| w.contains(&older.path.display().to_string())),
        "warning names the skipped and the used file: {:?}",
        warned
    );

    // Set aside, it is no longer listed, but its index still is.
    let broken = snapshot::set_aside(&newest.path).expect("set aside");
    assert!(broken.display().to_string().ends_with(".snap.broken"));
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!((loaded.meta, loaded.skipped), (meta(10, 1), Vec::new()));
    assert_eq!(
        snapshot::set_aside_snapshots(&snaps).expect("list"),
        vec![(20, broken.clone())]
    );

    // One that cannot be read is passed over too, but not as corrupt: it
    // may be good, and is not to be set aside.
    let unreadable = snaps.join(newest.path.file_name().expect("name"));
    fs::create_dir(&unreadable).expect("a directory in its place");
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(
        loaded.skipped,
        vec![snapshot::Skipped {
            path: unreadable.clone(),
            corrupt: false
        }]
    );

    // Nor does it count among the snapshots pruning keeps, and it does not
    // stop pruning (it used to fail every snapshot published after it).
    let newer = write_snapshot(&snaps, 30, 2);
    let newest = write_snapshot(&snaps, 40, 2);
    assert!(unreadable.is_dir());
    assert_eq!(
        snapshot_files(&snaps),
        vec![unreadable, broken, newer.path, newest.path],
        "the two newest snapshots beside what is no snapshot"
    );
}

/// A whole snapshot of another version (its CRC matches) is passed over as
/// one this build cannot read, not as corrupt: it is not set aside.
#[test]
fn a_snapshot_of_another_version_is_passed_over_but_not_as_corrupt() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    write_snapshot(&snaps, 10, 1);
    let newest = write_snapshot(&snaps, 20, 2);
    let mut bytes = fs::read(&newest.path).expect("read");
    let crc_at = bytes.len() - 4;
    bytes[8..12].copy_from_slice(&99u32.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..].copy_from_slice(&crc.to_be_bytes());
    fs::write(&newest.path, &bytes).expect("write");
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!(loaded.meta, meta(10, 1));
    assert_eq!(
        loaded.skipped,
        vec![snapshot::Skipped {
            path: newest.path,
            corrupt: false
        }]
    );
}

#[test]
fn all_snapshots_corrupt_is_an_error_naming_the_newest() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let older = write_snapshot(&snaps, 10, 1);
    let newest = write_snapshot(&snaps, 20, 2);
    flip(&older.path, 100);
    flip(&newest.path, 2);
    let err = snapshot::load_latest(&snaps).expect_err("both corrupt");
    assert!(
        err.to_string().contains(&newest.path.display().to_string()),
        "{}",
        err
    );
}

#[test]
fn snapshot_streams_to_a_receiver_in_chunks_of_any_size() {
    let leader = tempdir();
    let info = write_snapshot(leader.path(), 42, 5);
    let reader = RawReader::open(&info.path).expect("open raw");
    assert_eq!(reader.len(), info.bytes);
    for chunk in [1usize, 3, 4, 5, 999, 1 << 20] {
        let follower = tempdir();
        let mut receiver = SnapshotReceiver::create(follower.path(), 42, 5).expect("create");
        let mut offset = 0;
        while offset < reader.len() {
            let bytes = reader.read_chunk(offset, chunk).expect("chunk");
            receiver.write_at(offset, &bytes).expect("write_at");
            offset += bytes.len() as u64;
        }
        assert!(reader.read_chunk(offset, chunk).expect("end").is_empty());
        let got = receiver.finish(reader.len()).expect("finish");
        assert_eq!(got.meta(), &meta(42, 5));
        let got = got.publish().expect("publish");
        let loaded = snapshot::load_latest(follower.path())
            .expect("load")
            .expect("some");
        assert_eq!(loaded.body, body(42), "chunk size {}", chunk);
        assert_eq!(snapshot_files(follower.path()), vec![got.path]);
    }
}

/// A snapshot received whole and checked stays under a temporary name,
/// synced, until the node installs it (`publish`): killed before that, a
/// start loads the snapshots the node had, all of them still there, and
/// deletes the received file as a leftover. It used to be published (and
/// prune the older ones) as soon as it was checked.
#[test]
fn a_received_snapshot_is_no_snapshot_a_start_takes_until_published() {
    let leader = tempdir();
    let raw = fs::read(write_snapshot(leader.path(), 42, 5).path).expect("read");
    let follower = tempdir();
    let snaps = follower.path().join("snapshot");
    let older: Vec<PathBuf> = [(10, 1), (20, 2)]
        .iter()
        .map(|&(i, t)| write_snapshot(&snaps, i, t).path)
        .collect();
    let received = receive(&snaps, 42, 5, &raw)
        .finish(raw.len() as u64)
        .expect("finish");
    let tmp = received.tmp_path().to_path_buf();
    assert!(
        tmp.display().to_string().ends_with(".tmp"),
        "{}",
        tmp.display()
    );
    let mut want = older.clone();
    want.push(tmp.clone());
    want.sort();
    assert_eq!(snapshot_files(&snaps), want, "published or pruned");

    // Killed here: a start takes the newest snapshot the node had.
    let crashed = tempdir();
    copy_dir(&snaps, crashed.path());
    let loaded = snapshot::load_latest(crashed.path())
        .expect("load")
        .expect("some");
    assert_eq!((loaded.meta, loaded.skipped), (meta(20, 2), Vec::new()));
    assert_eq!(
        snapshot::remove_temp_files(crashed.path()).expect("remove"),
        1
    );
    assert_eq!(snapshot_files(crashed.path()).len(), 2);

    // Installed: published under its final name, the newest, and pruned.
    let info = received.publish().expect("publish");
    assert_eq!(snapshot_files(&snaps), vec![older[1].clone(), info.path]);
    let loaded = snapshot::load_latest(&snaps).expect("load").expect("some");
    assert_eq!((loaded.meta, loaded.body), (meta(42, 5), body(42)));

    // Dropped instead (refused, or not needed), it leaves nothing.
    let raw = fs::read(write_snapshot(leader.path(), 50, 5).path).expect("read");
    let unused = receive(&snaps, 50, 5, &raw)
        .finish(raw.len() as u64)
        .expect("finish");
    drop(unused);
    assert_eq!(
        snapshot_files(&snaps).len(),
        2,
        "{:?}",
        snapshot_files(&snaps)
    );
}

fn receive(dir: &Path, index: u64, term: u64, bytes: &[u8]) -> SnapshotReceiver {
    let mut receiver = SnapshotReceiver::create(dir, index, term).expect("create");
    receiver.write_at(0, bytes).expect("write_at");
    receiver
}

#[test]
fn receiver_rejects_bad_streams_and_leaves_no_file() {
    let leader = tempdir();
    let info = write_snapshot(leader.path(), 42, 5);
    let raw = fs::read(&info.path).expect("read");
    let follower = tempdir();

    let mut receiver = SnapshotReceiver::create(follower.path(), 42, 5).expect("create");
    receiver.write_at(0, &raw[..10]).expect("write_at");
    assert!(
        receiver.write_at(20, &raw[20..30]).is_err(),
        "a gap is out of order"
    );
    assert!(
        receiver.write_at(0, &raw[..10]).is_err(),
        "a repeat is out of order"
    );
    drop(receiver);

    let short = receive(follower.path(), 42, 5, &raw[..raw.len() - 1]);
    assert!(short.finish(raw.len() as u64).is_err(), "missing bytes");

    let mut damaged = raw.clone();
    damaged[500] ^= 1;
    let err = receive(follower.path(), 42, 5, &damaged)
        .finish(raw.len() as u64)
        .expect_err("bad crc");
    assert!(err.to_string().contains("receiving.tmp"), "{}", err);

    let wrong = receive(follower.path(), 43, 5, &raw)
        .finish(raw.len() as u64)
        .expect_err("header names another index");
    assert!(wrong.to_string().contains("index 42"), "{}", wrong);

    assert!(
        snapshot_files(follower.path()).is_empty(),
        "failed receives leave nothing"
    );
}

#[test]
fn unfinished_writer_leaves_nothing_and_temp_files_are_ignored() {
    let dir = tempdir();
    let mut writer = SnapshotWriter::create(dir.path(), &meta(5, 1)).expect("create");
    writer.write_all(b"half a snapshot").expect("write");
    drop(writer);
    assert!(snapshot_files(dir.path()).is_empty());

    write_snapshot(dir.path(), 5, 1);
    let stale = dir
        .path()
        .join("00000000000000000009-00000000000000000001.snap.writing.tmp");
    fs::write(&stale, b"crashed mid-write").expect("tmp");
    let loaded = snapshot::load_latest(dir.path())
        .expect("load")
        .expect("some");
    assert_eq!(loaded.meta.index, 5);
    assert_eq!(snapshot::remove_temp_files(dir.path()).expect("remove"), 1);
    assert!(!stale.exists());

    // One that cannot be removed (a directory) is passed over, not fatal:
    // the start that calls this has already repaired the log.
    let stuck = dir.path().join("x.tmp");
    fs::create_dir(&stuck).expect("mkdir");
    fs::write(&stale, b"crashed mid-write").expect("tmp");
    assert_eq!(snapshot::remove_temp_files(dir.path()).expect("remove"), 1);
    assert!(!stale.exists() && stuck.is_dir());
}

// ---------------------------------------------------------------------------
// Rollover, prefix drop, truncation, reset

const SMALL: u64 = 512;

#[test]
fn rollover_and_prefix_drop_across_many_segments() {
    let dir = tempdir();
    let want = entries(1, 301, 1);
    build(dir.path(), SMALL, &want);
    let files = segment_files(dir.path());
    assert!(files.len() > 50, "{} segments", files.len());
    let mut storage = open(dir.path(), SMALL);
    assert_eq!(all_entries(&storage), want);
    let bytes_before = storage.log_bytes();
    assert_eq!(bytes_before, files.len() as u64 * SMALL);

    storage.drop_before(150).expect("drop");
    let first = storage.first_index();
    assert!(first <= 150 && first > 140, "first index {}", first);
    assert!(storage.log_bytes() < bytes_before);
    let on_disk = segment_files(dir.path());
    assert!(on_disk[0].ends_with(format!("log/{:020}.seg", first)));
    assert_eq!(storage.term(first - 1), None);
    assert_eq!(all_entries(&storage), want[first as usize - 1..]);

    storage
        .drop_before(10_000)
        .expect("drop all but the newest");
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(storage.last_index(), 300);
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!(storage.last_index(), 300);
    assert_eq!(
        all_entries(&storage),
        want[storage.first_index() as usize - 1..]
    );
}

#[test]
fn detached_segments_stay_until_removed_and_go_before_a_reset() {
    let dir = tempdir();
    let want = entries(1, 301, 1);
    build(dir.path(), SMALL, &want);
    let mut storage = open(dir.path(), SMALL);
    let files_before = segment_files(dir.path()).len();
    let remover = storage.detach_before(150);
    let first = storage.first_index();
    assert!(first <= 150 && first > 140, "first index {}", first);
    assert_eq!(all_entries(&storage), want[first as usize - 1..]);
    // Nothing deleted yet: a crash now reopens the longer log, contiguous.
    // (Reopened from a copy: `storage` still holds the data dir's lock.)
    assert_eq!(segment_files(dir.path()).len(), files_before);
    let crashed = tempdir();
    copy_dir(dir.path(), crashed.path());
    let reopened = open(crashed.path(), SMALL);
    assert_eq!(reopened.first_index(), 1);
    assert_eq!(all_entries(&reopened), want);
    drop(reopened);
    // The remover may run on another thread.
    std::thread::spawn(move || remover.remove().expect("remove"))
        .join()
        .expect("remover thread");
    let on_disk = segment_files(dir.path());
    assert!(on_disk[0].ends_with(format!("log/{:020}.seg", first)));

    // Detached again and never removed: reset deletes them first, so no
    // older file is left beside the new segment.
    let _pending = storage.detach_before(250);
    storage.reset(1_000).expect("reset");
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!(storage.first_index(), 1_000);
}

#[test]
fn truncation_removes_newer_segments_and_zeroes_the_rest() {
    for sync_before_reopen in [false, true] {
        let dir = tempdir();
        build(dir.path(), SMALL, &entries(1, 101, 1));
        let mut storage = open(dir.path(), SMALL);
        let replacement: Vec<Entry> = (40..45).map(|i| entry(i, 2, 3)).collect();
        storage.append(&replacement).expect("append over the tail");
        assert_eq!(storage.last_index(), 44);
        assert_eq!(storage.term(39), Some(1));
        assert_eq!(storage.term(40), Some(2));

        let files = segment_files(dir.path());
        let newest = files.last().expect("a segment");
        let bytes = fs::read(newest).expect("read");
        let end = record_spans(&bytes).last().expect("records").1;
        assert!(
            bytes[end..].iter().all(|&b| b == 0),
            "old records left behind"
        );
        let first_of_newest: u64 = newest
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("numeric name");
        assert!(
            first_of_newest <= 44,
            "segment {} survived",
            first_of_newest
        );

        if sync_before_reopen {
            storage.sync().expect("sync");
        }
        drop(storage);
        let storage = open(dir.path(), SMALL);
        let mut want = entries(1, 40, 1);
        want.extend(replacement.clone());
        assert_eq!(all_entries(&storage), want);
    }
}

#[test]
fn oversized_records_get_a_segment_of_their_own() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SMALL);
    let want = vec![
        entry(1, 1, 2_000), // into a fresh, empty log
        entry(2, 1, 10),
        entry(3, 1, 3_000), // after a record: a new segment
        entry(4, 1, 10),
    ];
    storage.append(&want).expect("append");
    let sizes: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .collect();
    assert_eq!(sizes, vec![2_025, SMALL, 3_025, SMALL]);
    storage.reset(10).expect("reset");
    storage
        .append(&[entry(10, 2, 5_000)])
        .expect("oversized after reset");
    storage.sync().expect("sync");
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!(all_entries(&storage), vec![entry(10, 2, 5_000)]);
}

#[test]
fn reset_is_remembered_across_reopen() {
    let dir = tempdir();
    build(dir.path(), SMALL, &entries(1, 60, 1));
    let mut storage = open(dir.path(), SMALL);
    storage.reset(1_000).expect("reset");
    assert_eq!((storage.first_index(), storage.last_index()), (1_000, 999));
    drop(storage);
    let mut storage = open(dir.path(), SMALL);
    assert_eq!((storage.first_index(), storage.last_index()), (1_000, 999));
    assert_eq!(segment_files(dir.path()).len(), 1);
    storage.append(&entries(1_000, 1_010, 3)).expect("append");
    assert_eq!(storage.term(1_000), Some(3));
}

#[test]
#[should_panic(expected = "outside the log")]
fn append_after_reset_must_start_at_the_reset_index() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SMALL);
    storage.reset(50).expect("reset");
    let _ = storage.append(&[entry(51, 1, 1)]);
}

#[test]
fn a_fresh_log_may_start_at_any_index() {
    let dir = tempdir();
    let mut storage = open(dir.path(), SMALL);
    assert_eq!((storage.first_index(), storage.last_index()), (1, 0));
    assert_eq!(storage.log_bytes(), 0);
    storage.append(&entries(42, 50, 1)).expect("append");
    drop(storage);
    let storage = open(dir.path(), SMALL);
    assert_eq!((storage.first_index(), storage.last_index()), (42, 49));
}

/// A snapshot at the largest index there is (its CRC good: a crafted file,
/// or another build's bug) is corrupt, named with its offset: the log after
/// it would start at index 0 (`index + 1` wraps), which made a start's plan
/// for the log overflow.
#[test]
fn a_snapshot_at_the_largest_index_is_corrupt() {
    let dir = tempdir();
    let snaps = dir.path().join("snapshot");
    let info = write_snapshot(&snaps, u64::MAX, 1);
    let err = snapshot::load_latest(&snaps)
        .map(|loaded| loaded.map(|l| l.meta))
        .expect_err("a snapshot no log can follow");
    assert!(
        matches!(err.kind, raftkv::storage::StorageErrorKind::Corrupt(_)),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&info.path.display().to_string()) && text.contains("offset 12"),
        "{text}"
    );
}
