//! Recovery's side of a segment: opening a file found on disk, the scan
//! that finds its records again, what decides where they end, and the
//! repairs recovery makes once the rest of the data directory is checked
//! (cutting a torn tail, extending a file cut short).
//!
//! Separate from `segment.rs` and `segment_write.rs`, which write the
//! bytes, because this is where bytes left by a crash (or by someone else)
//! are judged: the rules below, and the argument that they cover whatever a
//! crash can leave, read best without the code that appends and syncs. They
//! rely on the safety properties numbered at the top of `segment.rs`, which
//! the writing code keeps.
//!
//! # Torn writes, and files cut short
//!
//! SPEC §4 defines a torn write as the last record of the newest segment
//! being incomplete or failing its CRC with nothing but never-written (zero)
//! space after it; it is cut off on start with a warning naming the file and
//! offset. Any other damage (a bad record followed by a valid one, a bad
//! record in an older segment) is an error naming the file and offset, and
//! changes nothing. The log applies that as follows where the scan of a
//! segment ([`Segment::scan`]) stops, at the first offset where no record
//! decodes ([`ScanEnd`]):
//!
//! - Only zeros from there to the end of the file (or no bytes at all): a
//!   clean end.
//! - Otherwise, in a segment older than the newest: an error. Such a
//!   segment was synced before the next one received a record, so no crash
//!   tears it.
//! - In the newest segment: a torn tail if the damaged record reaches every
//!   non-zero byte after it, that is, if nothing but zeros follows the
//!   record (a record incomplete or failing its CRC: its length field
//!   tells how far it reaches; a header cut off by the end of the file, or a
//!   length running past the end of a file that is shorter than created: to
//!   the end of the file). Anything else is an error naming the file and
//!   offset: non-zero bytes after the damaged record, or after a zero length
//!   field that ends the records, or after a record whose length is
//!   impossible in a full-size file (below the fixed fields, or past the
//!   end, which no write makes: records are written where they fit); and a
//!   whole record (its CRC matches) of an unknown kind, which no torn write
//!   leaves but a newer build may have written; and a damaged record whose
//!   CRC matches its bytes up to a whole record of the next index inside
//!   what its length claims: only its length field was damaged (a torn
//!   record's CRC covers all of it, never a shorter prefix), and the
//!   records it hides would be lost. The torn tail is cut from the damaged
//!   offset to the last non-zero byte.
//!
//! That is SPEC §4 read as written. A crash can also leave a batch's later
//! pages on disk without an earlier one (writeback order within a write is
//! not guaranteed): zeros, then bytes of records that were never
//! acknowledged. That too stops the node, naming the file and offset, for
//! an operator to decide, rather than being cut on a guess that nothing
//! valid lies beyond.
//!
//! A file cut short (by `truncate`, a bad copy, a filesystem repair) is
//! treated the same way, since SPEC §4 judges the bytes, not how they came
//! to be: the newest segment cut inside its last record ends in an
//! incomplete record with nothing after it, a torn write; cut exactly after
//! a record it holds no damage at all (records past the cut, if there were
//! any, are gone without a trace, as after a crash that lost them). Either
//! way the log warns that the file is shorter than created and brings it
//! back to `segment_bytes` (`set_len`, `posix_fallocate` and fsync, as
//! creation does, then a new mapping). An older segment shorter than
//! `segment_bytes` is an error: no crash leaves one (below), and its last
//! records are lost whether or not its successor still seems to follow it.
//!
//! Recovery writes nothing while it decides: the open only notes the torn
//! tail and the short file (the log already ends before the torn bytes),
//! and the repairs are made, durably and with their warnings, by
//! `SegmentLog::finish_recovery` once the caller has checked the rest of
//! the data directory (the snapshot, how the log continues it), so a start
//! refused for any reason leaves every file as it was. Nothing appends
//! before that (`Storage` asserts it): until then the zeros after
//! `write_offset` (property 1 of `segment.rs`) and the full size (property
//! 4) may not hold.
//!
//! What the segment's own writes (in `segment.rs` and `segment_write.rs`)
//! leave after a crash, whatever the moment:
//!
//! - Creation ([`Segment::create`]): the file is sized (`set_len`,
//!   `posix_fallocate`) and fsynced as `.tmp`, then renamed and the directory
//!   fsynced. A crash before the rename leaves only the `.tmp`, which the
//!   next successful recovery deletes (no record was ever written to it:
//!   `create` returns after the directory fsync). After the rename the name
//!   may or may not survive the crash, but the length was durable before the
//!   rename, so a file under a segment name has its full length. The length
//!   is `segment_bytes`, or more for a record that does not fit in that.
//!   Without preallocation (a filesystem that cannot) `set_len` still sets
//!   the length; the file is sparse.
//! - Growth ([`Segment::grow`]), for an oversized record, and extension
//!   ([`Segment::extend`]) of a newest segment found short: a crash leaves
//!   the old length or the new one, and zeros after the records either way.
//!   Extension comes after the torn tail's zeros are synced, so a crash
//!   between the two reopens to the same log.
//! - Records and zeros written ahead ([`Segment::write_pending`]): `pwrite`s
//!   inside the file (`fits` was checked; the zeros stop at the end), so the
//!   length does not change. What reaches the disk is some of the new bytes,
//!   by sector or page, over zeros: the records up to some point, then the
//!   one there incomplete with zeros after it (a torn tail), or, if a later
//!   page reached the disk without an earlier one, more of the batch after
//!   zeros (an error, see above).
//! - Truncation of records and cutting a torn tail: zeros written through
//!   the mapping, no change of length, the records from the last back and
//!   each one's length field last, so a process killed meanwhile leaves a
//!   torn tail at worst (see `zero_records_back_to_front` in `segment.rs`).
//!   An OS crash before the flush may write back only some of those pages,
//!   in any order: zeros, then bytes of a record that was never
//!   acknowledged, which stops the node as above. Deletion: the whole file
//!   or nothing.
//!
//! So none of the segment's writes leaves a segment shorter than it was
//! created. The size check on older segments needs the size segments were
//! created with; the binary always uses the default, and a log opened with
//! a larger `segment_bytes` than it was written with would read as cut
//! short (an error for older segments, an extension of the newest).

use super::{map_file, zero_records_back_to_front, Segment};
use crate::storage::error::StorageError;
use crate::storage::record::{self, RecordError};
use crate::storage::PayloadCheck;
use std::fs::OpenOptions;
use std::path::PathBuf;

/// How the scan of a segment ended.
#[derive(Debug)]
pub(crate) enum ScanEnd {
    /// After the last record there is only zero space (or the end of the file).
    Clean,
    /// No record decodes at `offset` (`error` says why; `Empty` when its
    /// length field is zero), yet not everything from there on is zero:
    /// `end` is one past the last non-zero byte of the file.
    Damaged {
        offset: usize,
        error: RecordError,
        end: usize,
    },
}

impl Segment {
    /// Maps an existing segment file; [`Segment::scan`] then finds its records.
    /// Whatever its length: the log decides what a file shorter than the
    /// size segments are created with means (module docs).
    pub(crate) fn open(path: PathBuf, first_index: u64) -> Result<Segment, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let map = map_file(&file, &path)?;
        Ok(Segment::new(path, first_index, file, map))
    }

    /// The checks of a record whose CRC matched: its index runs on from the
    /// records before it, its term does not fall, and its payload decodes.
    fn check_whole_record(
        &self,
        offset: usize,
        view: &record::RecordView<'_>,
        check_payload: Option<PayloadCheck>,
    ) -> Result<(), StorageError> {
        let corrupt = |why: String| StorageError::corrupt(&self.path, Some(offset as u64), why);
        let expected = self.next_index();
        if view.index != expected {
            return Err(corrupt(format!(
                "record holds index {}, expected {}",
                view.index, expected
            )));
        }
        if let Some(&previous) = self.terms.last() {
            // A leader's terms never fall, and the Raft log the entries are
            // restored into asserts it.
            if view.term < previous {
                return Err(corrupt(format!(
                    "entry {} has term {}, below the term {} of the entry before it",
                    view.index, view.term, previous
                )));
            }
        }
        if view.index == u64::MAX {
            // `next_index` would overflow; no log gets this far.
            return Err(corrupt(
                "record holds the largest index there is, which no log reaches".to_string(),
            ));
        }
        if let Some(Err(why)) = check_payload.map(|check| check(view.kind, view.payload)) {
            return Err(corrupt(format!(
                "the {:?} payload of entry {} does not decode: {}",
                view.kind, view.index, why
            )));
        }
        Ok(())
    }

    /// Reads every record from the start, checking CRCs, that indexes run
    /// on from the file name, and payloads with `check_payload`. A valid
    /// record with the wrong index or a payload that fails the check is an
    /// error at once (its CRC shows it was written whole, so it is no torn
    /// write); where the records stop, the returned [`ScanEnd`] says what
    /// follows, and the caller decides between torn tail and corruption.
    pub(crate) fn scan(
        &mut self,
        check_payload: Option<PayloadCheck>,
    ) -> Result<ScanEnd, StorageError> {
        assert!(
            self.offsets.is_empty(),
            "{} scanned twice",
            self.path.display()
        );
        let mut offset = 0;
        loop {
            match record::decode(&self.map[offset..]) {
                Ok(view) => {
                    self.check_whole_record(offset, &view, check_payload)?;
                    self.offsets.push(offset);
                    self.terms.push(view.term);
                    offset += view.len;
                }
                Err(error) => {
                    self.write_offset = offset;
                    self.written_to = offset;
                    return Ok(self.classify_end(offset, error));
                }
            }
        }
    }

    fn classify_end(&self, offset: usize, error: RecordError) -> ScanEnd {
        match last_nonzero(&self.map[offset..]) {
            None => {
                self.release_scanned_zeros(offset);
                ScanEnd::Clean
            }
            Some(at) => ScanEnd::Damaged {
                offset,
                error,
                end: offset + at + 1,
            },
        }
    }

    /// Unmaps the pages of the zeros after the records, which the scan
    /// read through the mapping (up to the whole segment, 64 MiB by
    /// default): left mapped, they count in the node's resident size
    /// (`INFO used_memory_rss`) until the records reach them, so a node
    /// just restarted showed ~64 MiB more than its peers. The file and the
    /// page cache keep the zeros; a later access maps them again. Best
    /// effort: a refusal costs only the memory figure.
    fn release_scanned_zeros(&self, offset: usize) {
        let page = 4096;
        let start = offset.div_ceil(page) * page;
        if start >= self.map.len() {
            return;
        }
        // SAFETY: MADV_DONTNEED on a shared file mapping only drops this
        // process's page table entries; the contents stay in the page cache
        // and file, so every later read of the range sees the same bytes
        // and no reference into the mapping is invalidated.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start,
                self.map.len() - start,
            )
        };
    }

    /// Zeroes the damaged bytes at the end (see [`ScanEnd::Damaged`]) and makes
    /// the zeros durable, so the torn record cannot reappear after new ones.
    pub(crate) fn cut_torn_tail(&mut self, offset: usize, len: usize) -> Result<(), StorageError> {
        assert_eq!(
            offset,
            self.write_offset,
            "{}: torn tail must start where the records end",
            self.path.display()
        );
        let end = (offset + len).min(self.map.len());
        zero_records_back_to_front(&mut self.map, &[offset], end);
        self.mark_dirty(offset, end);
        self.flush()
    }

    /// Brings a segment file found shorter than `size` (the size segments
    /// are created with) back to it, as creation sizes it, durably; the
    /// bytes added are zeros, so everything after the records stays zero.
    pub(crate) fn extend(&mut self, size: u64) -> Result<(), StorageError> {
        assert!(
            size > self.file_bytes() && self.dirty.is_none() && self.pending.is_empty(),
            "{}: only a clean segment shorter than {} bytes is extended",
            self.path.display(),
            size
        );
        self.resize(size)
    }
}

/// Position of the first non-zero byte in `bytes`, if any.
pub(crate) fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b != 0)
}

/// Position of the last non-zero byte. Works a page at a time so the common
/// all-zero case compiles to wide ORs rather than a byte loop with early exits.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const CHUNK: usize = 4096;
    let chunks = bytes.len().div_ceil(CHUNK);
    for k in (0..chunks).rev() {
        let chunk = &bytes[k * CHUNK..((k + 1) * CHUNK).min(bytes.len())];
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            let at = chunk.iter().rposition(|&b| b != 0)?;
            return Some(k * CHUNK + at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_nonzero_finds_the_byte_across_chunks() {
        let mut bytes = vec![0u8; 10_000];
        assert_eq!(last_nonzero(&bytes), None);
        bytes[3] = 1;
        assert_eq!(last_nonzero(&bytes), Some(3));
        bytes[4_096] = 7;
        assert_eq!(last_nonzero(&bytes), Some(4_096));
        bytes[9_999] = 7;
        assert_eq!(last_nonzero(&bytes), Some(9_999));
    }
}
