//! One segment file: preallocated, memory-mapped, holding records with
//! contiguous indexes starting at the index in its name.
//!
//! This file creates segments and appends, truncates and reads their
//! records; writing them to the file and syncing them are in
//! `segment_write.rs`. Opening a segment found on disk, the scan that finds
//! its records again, what decides where they end (torn writes, files cut
//! short), the repairs recovery makes, and what each write leaves after a
//! crash are in `segment_recovery.rs`.
//!
//! Safety properties the segment keeps (the recovery side relies on them,
//! and its repairs, made once recovery succeeds, restore 1 and 4):
//!
//! 1. Every byte of the mapping at or after `write_offset` is zero, so the
//!    first zero `length` field is the end of the records, and recovery can
//!    tell never-written space from data (from the end of recovery on: a
//!    torn tail found on open stays until it is cut, see
//!    `segment_recovery.rs`).
//! 2. A segment file only appears under its final name with its full size
//!    already durable (created as `.tmp`, sized, fsynced, renamed, directory
//!    fsynced), so recovery never sees a half-created segment.
//! 3. Truncated records are zeroed and the zeros made durable before anything
//!    is written over them, so a crash can never leave old records after new
//!    ones (see [`Segment::truncate_from`]).
//! 4. Every segment file is at least the size segments are created with
//!    (`segment_bytes`) while records are appended to it: this module never
//!    shrinks one, and the log brings a newest segment found shorter back to
//!    that size before appending (see `segment_recovery.rs`), so `fits`, the
//!    zeros written ahead and the mapping's size all refer to the full file.
//!
//! The file is sized with `File::set_len` and its blocks reserved with
//! `posix_fallocate`, so a full disk is an error when a segment is created
//! (naming the file) rather than a SIGBUS on a write into the mapping.
//!
//! Records are encoded into a buffer and written with one `pwrite` per
//! appended batch ([`Segment::write_pending`]); the mapping serves reads,
//! recovery's scan, and the zeroing of truncated bytes. Writing records
//! through the mapping took a page fault per new 4 KiB page, 15% of a busy
//! follower's event loop; with `pwrite`, appending without sync runs 1.2x
//! faster in batches of 16 and 1.8x in batches of 256 (`log_append` bench),
//! and a pipelined cluster commits 13% more writes (README).
//!
//! Zeros are written ahead of the records ([`Segment::write_zeros_ahead`]),
//! so records land in blocks the file has already written, and an fdatasync
//! after them only flushes data: writing into preallocated (unwritten)
//! blocks instead makes each fdatasync also write the metadata that marks
//! them written (on ext4 the extent tree, or a journal commit).

#[path = "segment_recovery.rs"]
mod recovery;
#[path = "segment_write.rs"]
mod write;

use super::error::StorageError;
use super::record;
use super::sync_dir;
use crate::raft::Entry;
use memmap2::MmapMut;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use recovery::{first_nonzero, ScanEnd};

const SUFFIX: &str = ".seg";
const NAME_DIGITS: usize = 20;

/// `00000000000000000001.seg`: fixed width so a directory listing sorts in log order.
pub(crate) fn file_name(first_index: u64) -> String {
    format!("{:0width$}{}", first_index, SUFFIX, width = NAME_DIGITS)
}

/// The first index a segment file name carries, or `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) struct Segment {
    path: PathBuf,
    first_index: u64,
    /// Shared with a background syncer (see [`Segment::take_sync_target`]).
    /// `None` once the segment is sealed ([`Segment::close_file`]): a full
    /// segment, synced, needs no descriptor to be read, since the mapping
    /// keeps the file; it is opened again only if it takes records again
    /// (a truncation into it), see [`Segment::open_file`].
    file: Option<Arc<File>>,
    map: MmapMut,
    /// `offsets[k]` is where the record with index `first_index + k` starts.
    offsets: Vec<usize>,
    /// `terms[k]` is that record's term, so `term(i)` touches no page.
    terms: Vec<u64>,
    /// End of the last record; the mapping is all zeros from here on.
    write_offset: usize,
    /// Bytes before this offset have been written to the file (records or
    /// zeros); past it the file may still hold unwritten preallocated blocks.
    written_to: usize,
    /// Bytes changed since the last flush, as `start..end`.
    dirty: Option<(usize, usize)>,
    /// Records appended but not yet written to the file; they end at
    /// `write_offset` (see [`Segment::write_pending`]).
    pending: Vec<u8>,
}

impl Segment {
    /// Creates an all-zero segment of `size` bytes named by `first_index`.
    pub(crate) fn create(dir: &Path, first_index: u64, size: u64) -> Result<Segment, StorageError> {
        let path = dir.join(file_name(first_index));
        let tmp = dir.join(format!("{}.tmp", file_name(first_index)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StorageError::io(&tmp, e))?;
        file.set_len(size).map_err(|e| StorageError::io(&tmp, e))?;
        reserve_blocks(&file, size, &tmp)?;
        file.sync_all().map_err(|e| StorageError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_dir(dir)?;
        let map = map_file(&file, &path)?;
        Ok(Segment::new(path, first_index, file, map))
    }

    fn new(path: PathBuf, first_index: u64, file: File, map: MmapMut) -> Segment {
        Segment {
            path,
            first_index,
            file: Some(Arc::new(file)),
            map,
            offsets: Vec::new(),
            terms: Vec::new(),
            write_offset: 0,
            written_to: 0,
            dirty: None,
            pending: Vec::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The index the next record must carry.
    pub(crate) fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Where its records end: only zeros follow.
    pub(crate) fn records_end(&self) -> usize {
        self.write_offset
    }

    pub(crate) fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The file's bytes as mapped.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub(crate) fn fits(&self, record_len: usize) -> bool {
        self.map.len() - self.write_offset >= record_len
    }

    /// Makes an empty segment big enough for one oversized record.
    pub(crate) fn grow(&mut self, size: u64) -> Result<(), StorageError> {
        assert!(
            self.is_empty() && self.dirty.is_none(),
            "{}: only an empty, clean segment may grow",
            self.path.display()
        );
        self.resize(size)
    }

    fn resize(&mut self, size: u64) -> Result<(), StorageError> {
        let file = self.open_file()?;
        file.set_len(size)
            .map_err(|e| StorageError::io(&self.path, e))?;
        reserve_blocks(&file, size, &self.path)?;
        file.sync_all()
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.map = map_file(&file, &self.path)?;
        Ok(())
    }

    /// The open file, opened again if the segment was sealed.
    fn open_file(&mut self) -> Result<Arc<File>, StorageError> {
        if let Some(file) = &self.file {
            return Ok(Arc::clone(file));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StorageError::io(&self.path, e))?;
        let file = Arc::new(file);
        self.file = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Seals a segment that takes no more records (one older than the
    /// newest): closes its file, keeping the mapping, which reads, scans and
    /// the zeroing of truncated records use. Each log segment used to hold a
    /// descriptor for the life of the log, so a log of many segments (a
    /// node's of 5 GiB has 80) took the descriptors the node keeps for its
    /// own files, and with its clients holding the rest, creating the next
    /// segment failed with EMFILE. Only a clean segment is sealed: its
    /// records are all written and synced (the caller syncs it first).
    pub(crate) fn close_file(&mut self) {
        if self.pending.is_empty() && self.dirty.is_none() {
            self.file = None;
        }
    }

    /// Whether the segment holds its file open (tests).
    #[cfg(test)]
    pub(crate) fn holds_file(&self) -> bool {
        self.file.is_some()
    }

    /// Writes one record after the last; the caller has checked [`Segment::fits`].
    pub(crate) fn append(&mut self, entry: &Entry) {
        assert_eq!(
            entry.index,
            self.next_index(),
            "{}: appended index out of sequence",
            self.path.display()
        );
        let start = self.write_offset;
        let at = self.pending.len();
        self.pending
            .resize(at + record::encoded_len(entry.data.len()), 0);
        let len = record::encode(entry, &mut self.pending[at..]);
        self.offsets.push(start);
        self.terms.push(entry.term);
        self.write_offset = start + len;
        self.mark_dirty(start, self.write_offset);
    }

    /// Removes the records from `index` on. The freed bytes are zeroed and the
    /// zeros synced before this returns: otherwise a crash after new, shorter
    /// records reached the disk but before the zeros did could leave old
    /// records behind the new ones, valid and in sequence.
    pub(crate) fn truncate_from(&mut self, index: u64) -> Result<(), StorageError> {
        self.assert_written();
        assert!(
            index >= self.first_index && index <= self.next_index(),
            "{}: truncate at {} outside {}..={}",
            self.path.display(),
            index,
            self.first_index,
            self.next_index()
        );
        let keep = (index - self.first_index) as usize;
        if keep == self.offsets.len() {
            return Ok(());
        }
        let start = self.offsets[keep];
        let end = self.write_offset;
        zero_records_back_to_front(&mut self.map, &self.offsets[keep..], end);
        self.mark_dirty(start, end);
        self.offsets.truncate(keep);
        self.terms.truncate(keep);
        self.write_offset = start;
        self.flush()
    }

    /// Term of a record in this segment.
    pub(crate) fn term(&self, index: u64) -> u64 {
        self.terms[self.slot(index)]
    }

    /// Decodes the record for `index`, checking its CRC again: the mapping
    /// reads whatever the disk holds now.
    pub(crate) fn entry(&self, index: u64) -> Result<Entry, StorageError> {
        self.assert_written();
        let offset = self.offsets[self.slot(index)];
        match record::decode(&self.map[offset..self.write_offset]) {
            Ok(view) if view.index == index => Ok(view.to_entry()),
            Ok(view) => Err(StorageError::corrupt(
                &self.path,
                Some(offset as u64),
                format!("record holds index {}, expected {}", view.index, index),
            )),
            Err(error) => Err(StorageError::corrupt(
                &self.path,
                Some(offset as u64),
                error.describe(),
            )),
        }
    }

    fn slot(&self, index: u64) -> usize {
        assert!(
            index >= self.first_index && index < self.next_index(),
            "{}: index {} outside {}..{}",
            self.path.display(),
            index,
            self.first_index,
            self.next_index()
        );
        (index - self.first_index) as usize
    }

    fn mark_dirty(&mut self, start: usize, end: usize) {
        self.dirty = Some(match self.dirty {
            None => (start, end),
            Some((s, e)) => (s.min(start), e.max(end)),
        });
    }

    /// Unmaps and deletes the file, then makes the deletion durable.
    pub(crate) fn remove(self) -> Result<(), StorageError> {
        let Segment {
            path, file, map, ..
        } = self;
        drop(map);
        drop(file);
        fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Allocates the file's blocks up front, so a full disk is an error here,
/// naming the file, rather than a SIGBUS on a later write into the mapping.
/// A filesystem that cannot preallocate keeps the file sparse, with a warning.
fn reserve_blocks(file: &File, size: u64, path: &Path) -> Result<(), StorageError> {
    use std::os::unix::io::AsRawFd;
    let Ok(len) = libc::off_t::try_from(size) else {
        return Err(StorageError::invalid(
            path,
            None,
            format!("segment size {} too large", size),
        ));
    };
    // SAFETY: posix_fallocate on a file descriptor this `File` owns and keeps
    // open for the call; it touches no memory of ours.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => {
            log::warn!(
                "{}: the filesystem cannot preallocate; the segment stays sparse (a full disk will stop the node on a write)",
                path.display()
            );
            Ok(())
        }
        err => Err(StorageError::io(
            path,
            std::io::Error::from_raw_os_error(err),
        )),
    }
}

fn map_file(file: &File, path: &Path) -> Result<MmapMut, StorageError> {
    // SAFETY: the mapping is only sound while no one else changes or shrinks
    // the file. The data directory belongs to this process alone (SPEC §4),
    // and this process only resizes a segment through `grow` or `extend`,
    // which replace the mapping. A file shrunk from outside would SIGBUS on
    // access rather than corrupt memory silently.
    let map = unsafe { MmapMut::map_mut(file) }.map_err(|e| StorageError::io(path, e))?;
    // The log is written front to back, but a write fault on a page the file
    // does not have yet reads it in, and the kernel's readahead then fills
    // a large range of the (sparse) file at once: measured at ~19 ms of page
    // zeroing inside one event-loop iteration, on every node at the same log
    // position. Random access advice keeps each fault to the page it needs.
    map.advise(memmap2::Advice::Random)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(map)
}

/// Zeroes the records that start at `starts` (ascending) and end at `end`,
/// so that a process killed at any instant (its page cache kept) leaves at
/// worst a torn tail, which recovery cuts again: the records go from the
/// last back to the first, and in each the length field goes last. Until
/// then the record's length still reaches every byte of it not yet zeroed,
/// and every record after it is all zero. (Zeroed front to back, a kill
/// could leave a zero length field with the rest of the records after it,
/// which recovery must refuse.) Any record left whole was written by this
/// node and never acknowledged past this point, so finding it again is
/// harmless.
fn zero_records_back_to_front(map: &mut [u8], starts: &[usize], end: usize) {
    use std::sync::atomic::{compiler_fence, Ordering};
    let mut record_end = end;
    for &at in starts.iter().rev() {
        let body = (at + 4).min(record_end);
        map[body..record_end].fill(0);
        // Volatile writes after a fence: the compiler may neither merge the
        // length field into the fill above nor move it before it.
        compiler_fence(Ordering::SeqCst);
        for byte in &mut map[at..body] {
            // SAFETY: a valid, aligned, exclusive reference to a byte.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
        compiler_fence(Ordering::SeqCst);
        record_end = at;
    }
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
