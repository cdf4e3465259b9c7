//! The ordered segments of `log/`: recovery, the index → (segment, offset)
//! lookup, append with truncation and rollover, sync, and prefix deletion.
//!
//! Invariants:
//!
//! 1. Segments are sorted by first index and contiguous: each one's first
//!    index (its file name) is the previous one's last index + 1.
//! 2. Only the newest segment may be empty (after `reset`, after a truncation
//!    back to its first record, or after its only record was a torn tail).
//! 3. Only the newest segment may hold bytes that are not yet durable: an
//!    older one is flushed before the next segment receives a record, so a
//!    crash can tear only the newest segment's tail — the one place recovery
//!    accepts damage.
//! 4. Every removal of segment files deletes from one end (oldest first for
//!    `drop_before`, newest first for truncation and `reset`) and syncs the
//!    directory after each file, so after a crash the files left are still
//!    contiguous.

use super::create_dir;
use super::error::StorageError;
use super::record::{self, RecordError, MAX_PAYLOAD_BYTES};
use super::segment::{self, ScanEnd, Segment};
use super::PayloadCheck;
use crate::raft::Entry;
use std::fs;
use std::path::{Path, PathBuf};

pub(crate) struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// What [`SegmentLog::open`] found to repair, not yet done: nothing is
    /// written until [`SegmentLog::finish_recovery`], so a start refused
    /// after the open changes nothing.
    repair: Option<Repair>,
}

/// Repairs of the newest segment that recovery found and deferred.
#[derive(Default)]
struct Repair {
    /// A torn tail: `offset..end` is zeroed (the log already ends at
    /// `offset`), and `warning` logged.
    torn: Option<(usize, usize, String)>,
    /// The file is shorter than segments are created with: it is brought
    /// back to `segment_bytes`, and the warning logged.
    short: Option<String>,
    /// Leftover `.tmp` files of segment creations cut short.
    leftovers: Vec<PathBuf>,
    /// There was no directory: it is created (see `create_missing_dir`).
    missing_dir: bool,
}

impl SegmentLog {
    /// Opens `dir` (an empty log if it is missing) and recovers every segment in it, checking
    /// each record's payload with `check_payload`. Writes nothing: a torn
    /// tail or a short newest segment is only noted (the log ends before the
    /// torn bytes), and repaired by [`SegmentLog::finish_recovery`], which
    /// must come before anything changes the log.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        check_payload: Option<PayloadCheck>,
    ) -> Result<SegmentLog, StorageError> {
        assert!(
            segment_bytes >= record::encoded_len(0) as u64,
            "segment_bytes {} cannot hold a record",
            segment_bytes
        );
        // Not created here: a start refused after the open changes nothing.
        let missing_dir = !super::existing_dir(dir)?;
        let (files, leftovers) = match missing_dir {
            true => Default::default(),
            false => list_segment_files(dir)?,
        };
        let count = files.len();
        let mut segments: Vec<Segment> = Vec::with_capacity(count);
        let mut repair = Repair {
            leftovers,
            missing_dir,
            ..Repair::default()
        };
        for (k, (first_index, path)) in files.into_iter().enumerate() {
            let newest = k + 1 == count;
            if first_index == 0 {
                // Nothing writes it (indexes start at 1), and an empty log
                // named for 0 would end at index 0 - 1.
                return Err(StorageError::corrupt(
                    &path,
                    None,
                    "a segment named for index 0, but log indexes start at 1",
                ));
            }
            let mut seg = Segment::open(path, first_index)?;
            let short = seg.file_bytes() < segment_bytes;
            if short {
                if !newest {
                    // Its last records are lost: the next segment does not
                    // follow it (or, cut at a record boundary, may follow
                    // it but the file is no longer what was written).
                    return Err(StorageError::corrupt(
                        seg.path(),
                        Some(seg.file_bytes()),
                        format!(
                            "the file ends here, short of the {} bytes every segment is created with, \
                             in a segment older than the newest: it was cut short",
                            segment_bytes
                        ),
                    ));
                }
                repair.short = Some(format!(
                    "{}: the file is {} bytes, short of the {} bytes segments are created with \
                     (it was cut short: any records that were past its end are lost); extending it with zeros",
                    seg.path().display(),
                    seg.file_bytes(),
                    segment_bytes
                ));
            }
            let end = seg.scan(check_payload)?;
            if let Some(prev) = segments.last() {
                check_follows(prev, &seg)?;
            }
            repair.torn = settle_scan_end(&seg, end, newest, short)?;
            if !newest && seg.is_empty() {
                return Err(StorageError::corrupt(
                    seg.path(),
                    Some(0),
                    "a segment other than the newest holds no records",
                ));
            }
            // The one before takes no more records (see `Segment::close_file`):
            // a log of thousands of segments opens with two files open.
            if let Some(prev) = segments.last_mut() {
                prev.close_file();
            }
            segments.push(seg);
        }
        Ok(SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            repair: Some(repair),
        })
    }

    /// Applies the repairs [`SegmentLog::open`] deferred, each durable when
    /// this returns, logging a warning for each: the torn tail is zeroed
    /// (and the zeros synced) before a short file is extended, so a crash
    /// in between leaves a file that reopens to the same log. Then removes
    /// leftover `.tmp` files. Called once, after recovery succeeded.
    pub(crate) fn finish_recovery(&mut self) -> Result<(), StorageError> {
        self.create_missing_dir()?;
        let Some(repair) = self.repair.take() else {
            panic!("{}: recovery finished twice", self.dir.display());
        };
        if let Some(seg) = self.segments.last_mut() {
            if let Some((offset, end, warning)) = repair.torn {
                log::warn!("{}", warning);
                seg.cut_torn_tail(offset, end - offset)?;
            }
            if let Some(warning) = repair.short {
                log::warn!("{}", warning);
                seg.extend(self.segment_bytes)?;
            }
            // The records found may be a killed process's unsynced writes,
            // still only in the page cache: the node takes them as
            // persisted from now on. Older segments were synced before
            // the next one was created (invariant 3).
            seg.sync_file()?;
        }
        // Names a killed process created or removed before its directory
        // fsync (a new segment, the newer ones of a truncation).
        super::sync_dir(&self.dir)?;
        remove_leftovers(&repair.leftovers);
        Ok(())
    }

    /// Creates the directory [`SegmentLog::open`] did not find, once.
    pub(crate) fn create_missing_dir(&mut self) -> Result<(), StorageError> {
        if let Some(repair) = self.repair.as_mut().filter(|r| r.missing_dir) {
            create_dir(&self.dir)?;
            repair.missing_dir = false;
        }
        Ok(())
    }

    /// Panics while repairs found on open are still to be made: the log's
    /// invariants (zeros after the records, full-size files) do not hold yet.
    fn assert_recovered(&self) {
        assert!(
            self.repair.is_none(),
            "{}: the log is changed before recovery finished",
            self.dir.display()
        );
    }

    /// 1 for a log that never held a segment.
    pub(crate) fn first_index(&self) -> u64 {
        self.segments.first().map_or(1, |s| s.first_index())
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_index() - 1)
    }

    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        Some(self.segments[self.segment_of(index)].term(index))
    }

    pub(crate) fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(
            lo <= hi && lo >= self.first_index() && hi <= self.last_index() + 1,
            "entries {}..{} outside the log {}..={}",
            lo,
            hi,
            self.first_index(),
            self.last_index()
        );
        let mut out = Vec::with_capacity((hi - lo) as usize);
        if lo == hi {
            return Ok(out);
        }
        let mut k = self.segment_of(lo);
        for index in lo..hi {
            while self.segments[k].next_index() <= index {
                k += 1;
            }
            out.push(self.segments[k].entry(index)?);
        }
        Ok(out)
    }

    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.assert_recovered();
        let Some(head) = entries.first() else {
            return Ok(());
        };
        self.check_batch(entries)?;
        if self.segments.is_empty() {
            assert!(
                head.index >= 1,
                "log indexes start at 1, got {}",
                head.index
            );
            let size = self.segment_size_for(head);
            self.segments
                .push(Segment::create(&self.dir, head.index, size)?);
        } else {
            let (first, next) = (self.first_index(), self.last_index() + 1);
            assert!(
                head.index >= first && head.index <= next,
                "append at {} outside the log {}..={} (next index {})",
                head.index,
                first,
                next - 1,
                next
            );
            if head.index < next {
                self.truncate_from(head.index)?;
            }
        }
        for entry in entries {
            self.append_one(entry)?;
        }
        self.active().write_pending()?;
        Ok(())
    }

    /// Contiguity is the caller's promise (a panic if broken); a payload too
    /// large for a record is input we refuse before changing anything.
    fn check_batch(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let head = entries[0].index;
        for (k, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                head + k as u64,
                "entries to append are not contiguous at position {}",
                k
            );
            if entry.data.len() > MAX_PAYLOAD_BYTES {
                return Err(StorageError::invalid(
                    &self.dir,
                    None,
                    format!(
                        "entry {} has a {}-byte payload, more than a record holds",
                        entry.index,
                        entry.data.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn segment_size_for(&self, entry: &Entry) -> u64 {
        (record::encoded_len(entry.data.len()) as u64).max(self.segment_bytes)
    }

    fn append_one(&mut self, entry: &Entry) -> Result<(), StorageError> {
        let need = record::encoded_len(entry.data.len());
        let size = self.segment_size_for(entry);
        let active = self.active();
        if !active.fits(need) {
            if active.is_empty() {
                active.grow(size)?;
            } else {
                // Invariant 3: the full segment is durable before the next
                // one holds anything (all of it: part of it may have been
                // handed to a background sync that has not finished).
                active.write_records()?;
                active.sync_file()?;
                active.close_file();
                let seg = Segment::create(&self.dir, entry.index, size)?;
                self.segments.push(seg);
            }
        }
        self.active().append(entry);
        Ok(())
    }

    fn active(&mut self) -> &mut Segment {
        match self.segments.last_mut() {
            Some(seg) => seg,
            None => panic!("log {} has no segment to append to", self.dir.display()),
        }
    }

    /// Removes `index` and everything after it; newer segment files go first.
    fn truncate_from(&mut self, index: u64) -> Result<(), StorageError> {
        let k = self.segment_of(index);
        while self.segments.len() > k + 1 {
            if let Some(seg) = self.segments.pop() {
                seg.remove()?;
            }
        }
        self.segments[k].truncate_from(index)
    }

    /// Makes every appended record durable: msync of each dirty range (in
    /// practice only the newest segment's, see invariant 3).
    pub(crate) fn sync(&mut self) -> Result<(), StorageError> {
        for seg in self.segments.iter_mut().filter(|s| s.is_dirty()) {
            seg.flush()?;
        }
        Ok(())
    }

    /// The files to fdatasync for every appended record to be durable; their
    /// dirty ranges count as synced from now on (the caller syncs them).
    pub(crate) fn take_sync_targets(&mut self) -> Vec<super::SyncTarget> {
        self.segments
            .iter_mut()
            .filter_map(|s| s.take_sync_target())
            .collect()
    }

    /// Takes out the segments `drop_before` would delete, without deleting
    /// their files (the caller deletes them oldest first, see `Storage`).
    pub(crate) fn detach_before(&mut self, index: u64) -> Vec<Segment> {
        self.assert_recovered();
        let mut n = 0;
        while self.segments.len() - n > 1 && self.segments[n + 1].first_index() <= index {
            n += 1;
        }
        self.segments.drain(..n).collect()
    }

    /// Deletes the oldest segments while the next one starts at or below
    /// `index`; the newest segment always stays.
    pub(crate) fn drop_before(&mut self, index: u64) -> Result<(), StorageError> {
        self.assert_recovered();
        while self.segments.len() > 1 && self.segments[1].first_index() <= index {
            self.segments.remove(0).remove()?;
        }
        Ok(())
    }

    /// Deletes every segment, then creates an empty one named `next_index`
    /// so that a reopen knows where the log starts.
    ///
    /// A crash part-way leaves a prefix of the old log (or, between the last
    /// deletion and the creation, no segment at all): the caller that reset
    /// the log for a snapshot must compare the log with that snapshot again
    /// on restart.
    pub(crate) fn reset(&mut self, next_index: u64) -> Result<(), StorageError> {
        assert!(next_index >= 1, "log indexes start at 1, reset to 0");
        self.assert_recovered();
        while let Some(seg) = self.segments.pop() {
            seg.remove()?;
        }
        let seg = Segment::create(&self.dir, next_index, self.segment_bytes)?;
        self.segments.push(seg);
        Ok(())
    }

    pub(crate) fn log_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file_bytes()).sum()
    }

    /// The segment holding `index`, which must lie in the log.
    fn segment_of(&self, index: u64) -> usize {
        let after = self.segments.partition_point(|s| s.first_index() <= index);
        assert!(
            after > 0,
            "index {} is below the first segment of {}",
            index,
            self.dir.display()
        );
        after - 1
    }
}

type Listing = (Vec<(u64, PathBuf)>, Vec<PathBuf>);

/// Segment files sorted by first index, and leftover `.tmp` files of
/// segment creations. Digits and `.seg` under any other name is an error:
/// it is a segment renamed by hand, and passing over it could drop records.
/// Other files are left alone, with a warning.
fn list_segment_files(dir: &Path) -> Result<Listing, StorageError> {
    let mut files = Vec::new();
    let mut leftovers = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for item in listing {
        let item = item.map_err(|e| StorageError::io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(first_index) = segment::parse_file_name(&name) {
            files.push((first_index, item.path()));
        } else if name
            .strip_suffix(".tmp")
            .and_then(segment::parse_file_name)
            .is_some()
        {
            leftovers.push(item.path());
        } else if name
            .strip_suffix(".seg")
            .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(StorageError::corrupt(
                item.path(),
                None,
                "not a segment name: segments are named by the index of their first record \
                 in 20 digits, such as 00000000000000000001.seg, at most u64::MAX; passing \
                 over this file could drop records",
            ));
        } else {
            log::warn!(
                "{}: not a segment or a leftover of one; ignored",
                item.path().display()
            );
        }
    }
    files.sort();
    Ok((files, leftovers))
}

/// A `.tmp` file is a segment creation cut short: it never held a record.
/// Removed only once recovery succeeded, so a refused start changes nothing.
fn remove_leftovers(leftovers: &[PathBuf]) {
    for path in leftovers {
        log::info!("removing leftover {}", path.display());
        if let Err(err) = fs::remove_file(path) {
            log::warn!("could not remove {}: {}", path.display(), err);
        }
    }
}

fn check_follows(prev: &Segment, seg: &Segment) -> Result<(), StorageError> {
    if prev.next_index() == seg.first_index() {
        if prev.is_empty() || seg.is_empty() {
            return Ok(());
        }
        let (before, first) = (
            prev.term(prev.next_index() - 1),
            seg.term(seg.first_index()),
        );
        if first >= before {
            return Ok(());
        }
        return Err(StorageError::corrupt(
            seg.path(),
            Some(0),
            format!(
                "entry {} has term {}, below the term {} that {} ends with",
                seg.first_index(),
                first,
                before,
                prev.path().display()
            ),
        ));
    }
    // Either file may be the damaged one: the records of `prev` may stop
    // early (zeroed ones read as its end), so where they stop is named too.
    Err(StorageError::corrupt(
        seg.path(),
        Some(0),
        format!(
            "segment starts at index {} but {} ends at index {} (its records stop at offset {})",
            seg.first_index(),
            prev.path().display(),
            prev.next_index() - 1,
            prev.records_end()
        ),
    ))
}

/// Where the records of `seg` stop: a clean end (only zeros follow) is fine;
/// in the newest segment, a torn tail as SPEC §4 defines it (the last record
/// incomplete or failing its CRC, with nothing but zeros after it) is
/// returned as `(offset, end, warning)` for [`SegmentLog::finish_recovery`]
/// to cut; everything else is an error naming the file and offset, such as
/// non-zero bytes after the damaged record, or after zeros that end the
/// records. `short`: the file is shorter than segments are created with.
fn settle_scan_end(
    seg: &Segment,
    end: ScanEnd,
    newest: bool,
    short: bool,
) -> Result<Option<(usize, usize, String)>, StorageError> {
    let ScanEnd::Damaged { offset, error, end } = end else {
        return Ok(None);
    };
    let corrupt = |why: String| StorageError::corrupt(seg.path(), Some(offset as u64), why);
    if !newest {
        return Err(corrupt(format!(
            "{}, in a segment older than the newest: not a torn tail",
            error.describe()
        )));
    }
    if let RecordError::BadKind { .. } = error {
        // Whole and intact (its CRC matches): no torn write, rather a record
        // this build cannot read, such as one a newer build wrote.
        return Err(corrupt(format!(
            "{}, in a whole record (its crc matches): not a torn tail; was it written by a newer build?",
            error.describe()
        )));
    }
    // How far the damaged record reaches. A length that runs past the end
    // of the file is a record the file was cut inside of, if the file is
    // short; in a file of full size nothing writes such a length (records
    // are written only where they fit), so only the header is the record's.
    let reach = match error {
        RecordError::Empty => 0,
        RecordError::ShortHeader { .. } => end - offset,
        RecordError::BadLength { length, available } if short && length as usize > available => {
            end - offset
        }
        ref error => error.claimed_len().max(record::HEADER_BYTES),
    };
    if offset + reach < end {
        let what = match &error {
            RecordError::Empty => "no record starts here (its length field is zero)".to_string(),
            error => error.describe(),
        };
        let after = offset + reach;
        let first =
            segment::first_nonzero(&seg.bytes()[after..end]).map_or(end - 1, |at| after + at);
        return Err(corrupt(format!(
            "{}, and byte {} after it is not zero: not a torn tail (a torn write has only \
             never-written zero space after it), and cutting here could lose records",
            what, first
        )));
    }
    if let Some(at) = record_cut_short_by_its_length(seg.bytes(), offset, end, seg.next_index()) {
        return Err(corrupt(format!(
            "{}, yet its crc matches its bytes up to offset {}, where a whole record of entry {} \
             starts: its length field is damaged, no torn write, and cutting here would lose the \
             records after it",
            error.describe(),
            at,
            seg.next_index() + 1
        )));
    }
    let warning = format!(
        "{} at offset {}: cutting torn tail ({}; {} bytes up to offset {}); log now ends at index {}",
        seg.path().display(),
        offset,
        error.describe(),
        end - offset,
        end,
        seg.next_index() - 1
    );
    Ok(Some((offset, end, warning)))
}

/// Where the damaged record at `offset` (entry `index`) really ends, if
/// only its length field is damaged: its stored CRC matches its bytes up to
/// an offset before `end` (one past the last non-zero byte) where a whole
/// record of entry `index + 1` starts.
///
/// Why: a length damaged to claim more than the record holds hides the
/// records after it inside the claimed bytes, and cutting it as a torn tail
/// would lose them. A torn write never passes this test: its record's CRC
/// covers the whole record, never a shorter prefix of it, whatever a
/// client's value holds and wherever the tear falls. Only a value forged so
/// that the CRC of a prefix ending in an encoded record collides with the
/// whole record's, and torn after that record, is refused: the node stops
/// for an operator, with nothing lost.
///
/// Linear in the damaged bytes: one running CRC, compared where the index
/// field of the next entry appears, and at most one record decoded.
///
/// It does not look further: a second fault (the hidden records' last one
/// torn, so that no whole record of the next entry follows), and a damaged
/// length of the last record itself, which SPEC §4 calls a torn tail, are
/// cut as torn tails.
fn record_cut_short_by_its_length(
    bytes: &[u8],
    offset: usize,
    end: usize,
    index: u64,
) -> Option<usize> {
    let be_u64 = |at: usize| Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let stored = u32::from_be_bytes(bytes.get(offset + 4..offset + 8)?.try_into().ok()?);
    let body = offset + record::HEADER_BYTES;
    if be_u64(body)? != index {
        return None;
    }
    let wanted = index.checked_add(1)?;
    let index_field = record::HEADER_BYTES;
    let mut crc = crc32fast::Hasher::new();
    let mut hashed_to = body;
    for at in body + record::FIXED_BYTES..end {
        if be_u64(at + index_field) != Some(wanted) {
            continue;
        }
        crc.update(&bytes[hashed_to..at]);
        hashed_to = at;
        if crc.clone().finalize() == stored {
            // The first match decides: honest bytes match early only by a
            // 2^-32 chance, and a value forged to match at every place would
            // otherwise cost a decode (a CRC over the rest of the file) each.
            return record::decode(&bytes[at..])
                .is_ok_and(|next| next.index == wanted)
                .then_some(at);
        }
    }
    None
}
