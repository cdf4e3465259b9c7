//! A new file written front to back in aligned chunks, past the page cache
//! (`O_DIRECT`) where the filesystem allows it.
//!
//! Why: a node writes a whole snapshot (12 MB for 100,000 keys) every
//! `snapshot_entries` writes, several times a second under load. Through the
//! page cache each one was copied into freshly allocated pages, written back,
//! and its pages invalidated again when the snapshot was pruned: that kernel
//! work was 45% of the snapshot threads' CPU time (`perf`, and `pidstat`'s
//! system time), and the copies went through the CPU caches the event loops'
//! maps live in. A direct write hands the chunk to the device as it is.
//!
//! Each chunk is also handed to writeback as soon as it is written
//! ([`pace_writeback`]): a no-op for a direct write, but where the filesystem
//! refuses `O_DIRECT` (older tmpfs) or takes it and still writes through the
//! page cache (newer tmpfs, ext4 with `data=journal`), it keeps a snapshot from
//! reaching the disk in one burst at its fsync, in front of the log's small
//! fdatasyncs. Either way nothing is durable until the caller's fsync.

use super::error::StorageError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Alignment of a direct write's buffer, offset and length. It covers the
/// common logical block sizes (512 and 4096 bytes); a device with larger ones
/// refuses the write with EINVAL, and the chunk goes through the page cache.
const ALIGN: usize = 4096;
/// Bytes gathered before each write; a multiple of `ALIGN`.
pub const CHUNK_BYTES: usize = 256 << 10;

pub struct ChunkedFile {
    file: File,
    path: PathBuf,
    direct: bool,
    /// `CHUNK_BYTES + ALIGN` bytes; the chunk is the aligned part at `start`.
    storage: Vec<u8>,
    start: usize,
    /// Bytes of the chunk gathered so far.
    filled: usize,
    /// Bytes written to the file: whole chunks.
    in_file: u64,
    /// Bytes handed to writeback.
    written_back: u64,
}

impl ChunkedFile {
    /// Creates (or truncates) `path`, direct if the filesystem allows.
    pub fn create(path: &Path) -> Result<ChunkedFile, StorageError> {
        ChunkedFile::create_with(path, true)
    }

    fn create_with(path: &Path, try_direct: bool) -> Result<ChunkedFile, StorageError> {
        let open = |flags: i32| {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(path)
        };
        let (file, direct) = match try_direct.then(|| open(libc::O_DIRECT)) {
            Some(Ok(file)) => (file, true),
            Some(Err(err)) if err.raw_os_error() != Some(libc::EINVAL) => {
                return Err(StorageError::io(path, err))
            }
            _ => (open(0).map_err(|e| StorageError::io(path, e))?, false),
        };
        let storage = vec![0u8; CHUNK_BYTES + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Ok(ChunkedFile {
            file,
            path: path.to_path_buf(),
            direct,
            storage,
            start,
            filled: 0,
            in_file: 0,
            written_back: 0,
        })
    }

    /// Bytes taken so far.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.in_file + self.filled as u64
    }

    /// Takes up to the rest of the chunk from `data`; returns how many. A
    /// full chunk is written first, so an error takes no bytes.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.filled == CHUNK_BYTES {
            self.write_chunk(CHUNK_BYTES)?;
            self.in_file += CHUNK_BYTES as u64;
            self.filled = 0;
        }
        let n = data.len().min(CHUNK_BYTES - self.filled);
        let at = self.start + self.filled;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.filled += n;
        Ok(n)
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.write(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes what is gathered and returns the file, exactly `len()` bytes
    /// long and not yet synced.
    pub fn finish(mut self) -> io::Result<File> {
        // A direct write covers whole blocks only: the bytes of a last,
        // partial block go through the page cache, and the file needs no
        // padding cut off.
        let tail = if self.direct { self.filled % ALIGN } else { 0 };
        let whole = self.filled - tail;
        if whole > 0 {
            self.write_chunk(whole)?;
        }
        if tail > 0 {
            clear_direct(&self.file)?;
            self.direct = false;
            let at = self.start + whole;
            self.file
                .write_all_at(&self.storage[at..at + tail], self.in_file + whole as u64)?;
        }
        Ok(self.file)
    }

    /// Writes the chunk's first `len` bytes at `in_file`.
    fn write_chunk(&mut self, len: usize) -> io::Result<()> {
        let chunk = &self.storage[self.start..self.start + len];
        match self.file.write_all_at(chunk, self.in_file) {
            // A filesystem may take O_DIRECT at open yet refuse the write
            // (its block size above ALIGN, say): go on through the page
            // cache, rewriting the whole chunk.
            Err(err) if self.direct && err.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!(
                    "{}: direct write refused ({}); writing through the page cache",
                    self.path.display(),
                    err
                );
                clear_direct(&self.file)?;
                self.direct = false;
                self.file.write_all_at(chunk, self.in_file)?;
            }
            result => result?,
        }
        let end = self.in_file + len as u64;
        pace_writeback(&self.file, self.written_back, end)?;
        self.written_back = end;
        Ok(())
    }
}

/// Turns `O_DIRECT` off on `file`.
fn clear_direct(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` keeps open; it touches no memory
    // of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts writeback of `from..to` and waits for the writeback of the bytes
/// before `from`, which earlier calls started. Otherwise a whole snapshot
/// sits in the page cache until the final fsync and reaches the disk in one
/// burst, in front of the log's small fdatasyncs: pacing took the pipelined
/// p99 from 15-17 ms to 8-10 ms (README). It orders no writes and makes
/// nothing durable; the final fsync still does that.
fn pace_writeback(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let offset = |at: u64| libc::off64_t::try_from(at).map_err(io::Error::other);
    let fd = file.as_raw_fd();
    // SAFETY: sync_file_range on a descriptor `file` keeps open for the
    // call; it reads and writes no memory of ours.
    let rc = unsafe {
        libc::sync_file_range(
            fd,
            offset(from)?,
            offset(to - from)?,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if from == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let rc =
        unsafe { libc::sync_file_range(fd, 0, offset(from)?, libc::SYNC_FILE_RANGE_WAIT_BEFORE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|k| (k % 251) as u8).collect()
    }

    /// Writes `data` in pieces of the given sizes, in turn.
    fn write_in_pieces(path: &Path, try_direct: bool, data: &[u8], pieces: &[usize]) -> bool {
        let mut file = ChunkedFile::create_with(path, try_direct).expect("create");
        let direct = file.direct;
        let mut rest = data;
        for &piece in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(piece.min(rest.len()));
            file.write_all(now).expect("write");
            rest = later;
            assert_eq!(
                file.written_back, file.in_file,
                "every chunk written is handed to writeback"
            );
        }
        assert_eq!(file.len(), data.len() as u64);
        file.finish().expect("finish");
        direct
    }

    #[test]
    fn bytes_come_back_exactly_at_every_length_and_piece_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lengths = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            CHUNK_BYTES,
            CHUNK_BYTES + 7,
            3_000_001,
        ];
        for try_direct in [true, false] {
            for &len in &lengths {
                let data = body(len);
                for pieces in [&[1_000_003][..], &[7, 10_007, 100_003], &[CHUNK_BYTES * 2]] {
                    let path = dir.path().join(format!("f-{}-{}", try_direct, len));
                    let direct = write_in_pieces(&path, try_direct, &data, pieces);
                    assert!(!direct || try_direct);
                    let read = std::fs::read(&path).expect("read back");
                    assert_eq!(read.len(), len, "direct {}", direct);
                    assert!(read == data, "content differs, direct {}", direct);
                }
            }
        }
    }

    /// tmpfs from Linux 6.6 takes O_DIRECT and writes through the page
    /// cache, misaligned or not.
    fn is_tmpfs(path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: all-zero bytes are a valid `statfs` (plain integers).
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: statfs reads the NUL-terminated path and fills `stat`,
        // which lives for the call.
        let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
        rc == 0 && stat.f_type == libc::TMPFS_MAGIC
    }

    #[test]
    fn a_refused_direct_write_is_done_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut file = ChunkedFile::create_with(&path, true).expect("create");
        let data = body(CHUNK_BYTES + 100);
        // A chunk that starts off the alignment makes a direct write fail
        // with EINVAL, as a filesystem with larger blocks would (unless the
        // filesystem takes O_DIRECT and ignores it, as newer tmpfs does).
        file.start += 1;
        let direct_at_open = file.direct;
        file.write_all(&data).expect("write");
        if direct_at_open && !is_tmpfs(dir.path()) {
            assert!(!file.direct, "the misaligned direct write was not refused");
        }
        file.finish().expect("finish");
        assert!(std::fs::read(&path).expect("read back") == data);
    }
}
