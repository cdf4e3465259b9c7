//! Torn tails: a newest segment cut at every byte of its last records, or
//! with its last record flipped, zeroed or its length damaged, reopens to
//! the whole records before the damage (or is refused when whole records
//! run on inside the damage). Apart because it is the one case a crash
//! leaves on every disk, and the largest.

use super::{
    all_entries, build, capture_logs, copy_dir, entries, flip, open, open_and_refuse, options,
    record_spans, segment_files, tempdir, warnings_naming, Pristine, RECORDS, SEG,
};
use raftkv::storage::record;
use raftkv::storage::Storage;
use std::fs;

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
