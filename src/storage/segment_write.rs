//! How appended records reach the disk: the one `pwrite` per batch, the
//! zeros written ahead of the records, and the syncs that make them
//! durable. Separate from `segment.rs`, which keeps the segment's index of
//! its records; the module doc there says why records are written this way.

use super::Segment;
use crate::storage::error::StorageError;
use crate::storage::SyncTarget;
use std::sync::Arc;

/// Capacity of the pending-records buffer kept between batches; a larger
/// batch's buffer is freed once written.
const PENDING_KEEP_BYTES: usize = 1 << 20;

/// Zeros are kept written at least `ZERO_AHEAD_MIN` bytes past the last
/// record, topped up to `ZERO_AHEAD_MAX` at once, so one fdatasync in many
/// carries the metadata update for a stretch of blocks.
pub(super) const ZERO_AHEAD_MIN: usize = 64 << 10;
pub(super) const ZERO_AHEAD_MAX: usize = 256 << 10;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl Segment {
    /// Writes the records appended since the last call to the file, in one
    /// `pwrite`, then keeps zeros written ahead of them. The log calls it at
    /// the end of every append, so nothing reads, syncs or truncates a
    /// segment while records are pending.
    pub(crate) fn write_pending(&mut self) -> Result<(), StorageError> {
        self.write_records()?;
        self.write_zeros_ahead();
        Ok(())
    }

    /// [`Segment::write_pending`] without the zeros: for a full segment
    /// about to be synced and closed, which will take no more records.
    pub(crate) fn write_records(&mut self) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt;
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.write_offset - self.pending.len();
        self.open_file()?
            .write_all_at(&self.pending, at as u64)
            .map_err(|e| StorageError::io(&self.path, e).at(at as u64))?;
        if self.pending.capacity() > PENDING_KEEP_BYTES {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        self.written_to = self.written_to.max(self.write_offset);
        Ok(())
    }

    /// Writes zeros over the never-written space just past the records when
    /// less than `ZERO_AHEAD_MIN` of it has been written. The bytes were zero
    /// already, so this changes no content; it moves the filesystem's
    /// conversion of preallocated blocks off the fdatasyncs that follow.
    /// On this machine's ext4 that made 64 clients commit 13% more writes
    /// (README). Done on the loop, not a helper thread: a thread zeroing
    /// ahead could race the loop's `pwrite` of records into the same bytes.
    ///
    /// Only an optimization, so a failure (a full disk under a filesystem
    /// that could not preallocate, say) is logged and ends the zeroing for
    /// this segment; it is the records' own writes that must succeed.
    fn write_zeros_ahead(&mut self) {
        use std::os::unix::fs::FileExt;
        let len = self.map.len();
        if self.written_to >= len || self.written_to - self.write_offset >= ZERO_AHEAD_MIN {
            return;
        }
        let end = (self.write_offset + ZERO_AHEAD_MAX).min(len);
        let Some(file) = self.file.clone() else {
            // Sealed, so not taking records (they reopen it first).
            return;
        };
        while self.written_to < end {
            let n = (end - self.written_to).min(ZEROS.len());
            if let Err(err) = file.write_all_at(&ZEROS[..n], self.written_to as u64) {
                log::warn!(
                    "{}: writing zeros ahead of the records at offset {} failed ({}); not trying again in this segment",
                    self.path.display(),
                    self.written_to,
                    err
                );
                self.written_to = len;
                return;
            }
            self.written_to += n;
        }
    }

    pub(super) fn assert_written(&self) {
        debug_assert!(
            self.pending.is_empty(),
            "{}: {} bytes of records not yet written",
            self.path.display(),
            self.pending.len()
        );
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.is_some()
    }

    /// The file to fdatasync for everything written so far, and forgets the
    /// dirty range: the caller syncs it (on another thread, say). Records
    /// written with `pwrite` and zeros written through the shared mapping are
    /// all in the file's page cache, so fdatasync of the file covers both.
    pub(crate) fn take_sync_target(&mut self) -> Option<SyncTarget> {
        self.assert_written();
        // A sealed segment is clean: anything written to it since opened
        // its file again (`write_records`), and a truncation flushes itself.
        let file = Arc::clone(self.file.as_ref()?);
        self.dirty.take()?;
        Some(SyncTarget {
            file,
            path: self.path.clone(),
        })
    }

    /// fdatasync of the whole file, whatever the dirty range says: a range
    /// handed to a background syncer ([`Segment::take_sync_target`]) is no
    /// longer marked dirty but may not be on disk yet.
    pub(crate) fn sync_file(&mut self) -> Result<(), StorageError> {
        self.assert_written();
        self.dirty = None;
        #[cfg(test)]
        if self.file.is_some() {
            crate::storage::synced::note(&self.path);
        }
        match &self.file {
            Some(file) => file
                .sync_data()
                .map_err(|e| StorageError::io(&self.path, e)),
            // Sealed: it was synced whole before its file was closed, and
            // what changed it since (a truncation) flushed itself.
            None => Ok(()),
        }
    }

    /// fdatasync of the dirty range (msync of it: on Linux an fdatasync of
    /// that range of the file, whether written through the mapping or not).
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        self.assert_written();
        if let Some((start, end)) = self.dirty {
            self.map
                .flush_range(start, end - start)
                .map_err(|e| StorageError::io(&self.path, e).at(start as u64))?;
            self.dirty = None;
        }
        Ok(())
    }
}
