//! Corruption: damage that no crash makes (a flipped byte before the last
//! record, an older segment damaged or missing, a misnamed segment, a
//! record of an unknown kind or the wrong index) is an error naming the
//! file, and the files are left untouched (leftover temp files, which a
//! crash does leave, are ignored). Apart from torn tails, which are cut
//! instead.

use super::{
    all_entries, build, entries, entry, flip, last_record, open, open_and_refuse, open_err,
    random_bytes, record_spans, segment_files, tempdir, SEG,
};
use raftkv::raft::HardState;
use raftkv::storage::record;
use std::fs;
use std::path::Path;

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
