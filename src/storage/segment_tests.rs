//! Tests of the segment's writes, reads and sealing, apart so that the
//! segment reads in one sitting.

use super::write::{ZERO_AHEAD_MAX, ZERO_AHEAD_MIN};
use super::*;

#[test]
fn file_names_are_fixed_width_and_parse_back() {
    assert_eq!(file_name(1), "00000000000000000001.seg");
    assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
    assert_eq!(parse_file_name("00000000000000000001.seg.tmp"), None);
    assert_eq!(parse_file_name("1.seg"), None);
    assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
    assert_eq!(parse_file_name("99999999999999999999.seg"), None);
}

fn entry(index: u64, len: usize) -> Entry {
    Entry {
        index,
        term: 1,
        kind: crate::raft::EntryKind::Normal,
        data: vec![0xA5; len].into_iter().collect(),
    }
}

/// Appends `count` records of `len` bytes as one batch and checks that
/// zeros run at least `ZERO_AHEAD_MIN` ahead without growing the file.
fn append_batch(seg: &mut Segment, count: usize, len: usize, size: u64) {
    for _ in 0..count {
        let index = seg.next_index();
        seg.append(&entry(index, len));
    }
    seg.write_pending().expect("write");
    let want = (seg.write_offset + ZERO_AHEAD_MIN).min(size as usize);
    assert!(
        seg.written_to >= want,
        "zeros written to {}, records end at {}",
        seg.written_to,
        seg.write_offset
    );
    let file = seg.file.as_ref().expect("a new segment's file is open");
    assert_eq!(file.metadata().expect("metadata").len(), size);
}

fn assert_reads_back(seg: &Segment, len: usize) {
    for index in seg.first_index()..seg.next_index() {
        assert_eq!(seg.entry(index).expect("entry"), entry(index, len));
    }
}

#[test]
fn zeros_run_ahead_of_the_records_but_never_past_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 5 * ZERO_AHEAD_MAX as u64 + 1234;
    let len = 1000;
    let mut seg = Segment::create(dir.path(), 1, size).expect("create");
    append_batch(&mut seg, 16, len, size);
    // A batch longer than the zeros ahead of it.
    append_batch(&mut seg, 300, len, size);
    seg.truncate_from(200).expect("truncate");
    append_batch(&mut seg, 16, len, size);
    assert_reads_back(&seg, len);
    seg.sync_file().expect("sync");
    let path = seg.path().to_path_buf();
    drop(seg);

    let mut seg = Segment::open(path, 1).expect("open");
    assert!(matches!(seg.scan(None).expect("scan"), ScanEnd::Clean));
    assert_eq!(seg.next_index(), 216);
    append_batch(&mut seg, 16, len, size);
    while seg.fits(16 * record::encoded_len(len)) {
        append_batch(&mut seg, 16, len, size);
    }
    assert_eq!(seg.written_to, size as usize);
    assert_reads_back(&seg, len);
    seg.sync_file().expect("sync");
    let (path, next) = (seg.path().to_path_buf(), seg.next_index());
    drop(seg);

    let mut seg = Segment::open(path, 1).expect("open");
    assert!(matches!(seg.scan(None).expect("scan"), ScanEnd::Clean));
    assert_eq!(seg.next_index(), next);
    assert_reads_back(&seg, len);
}

/// A sealed segment holds no descriptor, reads from its mapping, and
/// takes records again once a truncation makes it the newest.
#[test]
fn a_sealed_segment_reads_without_its_file_and_reopens_it_to_take_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 4 * ZERO_AHEAD_MAX as u64;
    let len = 1000;
    let mut seg = Segment::create(dir.path(), 1, size).expect("create");
    append_batch(&mut seg, 100, len, size);
    // Dirty: not sealed until synced.
    seg.close_file();
    assert!(seg.holds_file());
    seg.sync_file().expect("sync");
    seg.close_file();
    assert!(!seg.holds_file());
    assert!(seg.take_sync_target().is_none());
    seg.sync_file().expect("sync of a sealed segment");
    assert_reads_back(&seg, len);

    seg.truncate_from(60).expect("truncate");
    assert!(!seg.holds_file(), "a truncation needs only the mapping");
    append_batch(&mut seg, 10, len, size);
    assert!(seg.holds_file());
    assert!(seg.take_sync_target().is_some());
    seg.sync_file().expect("sync");
    assert_eq!(seg.next_index(), 70);
    assert_reads_back(&seg, len);
    let path = seg.path().to_path_buf();
    drop(seg);

    let mut seg = Segment::open(path, 1).expect("open");
    assert!(matches!(seg.scan(None).expect("scan"), ScanEnd::Clean));
    assert_eq!(seg.next_index(), 70);
    assert_reads_back(&seg, len);
}

/// Resident bytes of the mapping that starts at `start`, from
/// `/proc/self/smaps` (per mapping, so other tests' threads do not count).
fn mapping_rss_bytes(start: *const u8) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let head = format!("{:x}-", start as usize);
    let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&head));
    assert!(lines.next().is_some(), "no mapping at {head}");
    let rss = lines
        .find_map(|line| line.strip_prefix("Rss:"))
        .expect("an Rss line");
    let kib: u64 = rss
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("Rss in kB");
    kib * 1024
}

/// Recovery reads the zeros after the records through the mapping; they
/// must not stay resident, or a restarted node reports the whole segment
/// in its memory.
#[test]
fn a_recovered_segment_does_not_keep_its_scanned_zeros_resident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 16 << 20;
    let len = 1000;
    let mut seg = Segment::create(dir.path(), 1, size).expect("create");
    append_batch(&mut seg, 100, len, size);
    seg.sync_file().expect("sync");
    let path = seg.path().to_path_buf();
    drop(seg);

    let mut seg = Segment::open(path, 1).expect("open");
    assert!(matches!(seg.scan(None).expect("scan"), ScanEnd::Clean));
    let resident = mapping_rss_bytes(seg.map.as_ptr());
    assert!(
        resident < 2 << 20,
        "{resident} bytes of a {size}-byte segment resident after its scan"
    );
    assert_reads_back(&seg, len);
}
