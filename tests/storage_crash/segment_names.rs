//! Segment names and records a log cannot have: a segment named for index
//! 0, a record at the largest index, terms that fall within or across
//! segments. Each is an error as the log is opened.

use super::{entry, open, open_err, tempdir, SEG};
use raftkv::storage::record;
use std::fs;
use std::path::Path;

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
