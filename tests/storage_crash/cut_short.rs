//! The newest segment cut short, and garbage after its last record: per SPEC
//! §4 a torn write (the last record incomplete or failing its CRC, nothing
//! but zeros after it) is cut on start, and a cut at a record boundary is no
//! damage; non-zero bytes past the damaged record are an error. The open
//! changes nothing; `finish_recovery` cuts the tail and brings the file back
//! to its created size, with a warning naming the file. Apart from the torn
//! tails of `torn_tails.rs` because each case here also checks that the
//! open itself writes nothing, and the repair after it.

use super::{
    all_entries, build, capture_logs, contents, copy_dir, entries, entry, flip, last_record, open,
    open_and_refuse, options, random_bytes, record_spans, segment_files, tempdir, warnings_naming,
    Pristine, RECORDS, SEG, SMALL,
};
use raftkv::raft::{Entry, EntryKind};
use raftkv::storage::record;
use raftkv::storage::Storage;
use std::fs;
use std::path::{Path, PathBuf};

fn set_len(path: &Path, len: usize) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len as u64))
        .expect("truncate");
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
