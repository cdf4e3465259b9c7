//! Snapshot files under `data_dir/snapshot/`, one per snapshot, named
//! `<index>-<term>.snap` in fixed-width decimal so a listing sorts oldest first.
//!
//! Everything here takes the directory or file path, not a `Storage`, so a
//! helper thread can write a snapshot, or stream one to a follower, while the
//! event loop keeps the log. A snapshot appears under its final name only
//! whole and synced (written as `.tmp`, fsynced, renamed, directory fsynced);
//! after each new one, it and the one before it are kept (and any named
//! newer, see `snapshot_dir::prune`).
//!
//! Bytes arriving from a leader are the leader's file verbatim, so a follower
//! checks the same trailing CRC and header, and syncs the file, still under
//! its temporary name ([`ReceivedSnapshot`]). It is published only when the
//! node installs it, after the leader's term is in the stable file: a start
//! takes the newest snapshot under a final name as the node's state, and
//! publishing prunes the older ones, so a snapshot never installed (refused,
//! no longer needed, or a crash first) must be neither.

#[path = "snapshot_receive.rs"]
mod receive;

pub use receive::{ReceivedSnapshot, SnapshotReceiver};

use super::chunked_file::ChunkedFile;
use super::error::StorageError;
pub use super::snapshot_dir::{
    load, load_latest, load_latest_decoded, parse_path, remove_temp_files, set_aside,
    set_aside_snapshots, LoadedSnapshot, Skipped,
};
use super::{create_dir, sync_dir};
use crate::raft::{NodeId, SnapshotMeta};
use byteorder::{BigEndian, ReadBytesExt};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The snapshot directory inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshot";
/// Snapshots kept after a new one is published.
pub const KEEP: usize = 2;

const MAGIC: [u8; 8] = *b"RKVSNAP\0";
const VERSION: u32 = 1;
const SUFFIX: &str = ".snap";
/// magic, version, index, term and the voter count.
pub(super) const FIXED_HEADER_BYTES: u64 = 32;
pub(super) const CRC_BYTES: u64 = 4;

pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAPSHOT_DIR)
}

/// `<index>-<term>.snap`, both 20-digit decimal.
pub fn file_name(index: u64, term: u64) -> String {
    format!("{:020}-{:020}{}", index, term, SUFFIX)
}

pub(super) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(term) {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// A published snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub meta: SnapshotMeta,
    /// Length of the whole file: header, body and CRC.
    pub bytes: u64,
}

/// Encodes the header; the file is this, then the body, then the CRC. All
/// integers big-endian:
///
/// ```text
/// offset size field
///      0    8 magic     "RKVSNAP\0"
///      8    4 version   1
///     12    8 index     last log index the snapshot covers
///     20    8 term      term of that entry
///     28    4 n         number of voters
///     32   8n voters    node ids
///      .    4 m         number of learners
///      .   8m learners  node ids
///      .    * body      state machine bytes, opaque here
///  end-4    4 crc32     CRC-32 (IEEE) of every byte before it
/// ```
fn encode_header(meta: &SnapshotMeta) -> Vec<u8> {
    let ids = meta.voters.len() + meta.learners.len();
    let mut buf = Vec::with_capacity(FIXED_HEADER_BYTES as usize + 4 + 8 * ids);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&VERSION.to_be_bytes());
    buf.extend_from_slice(&meta.index.to_be_bytes());
    buf.extend_from_slice(&meta.term.to_be_bytes());
    for ids in [&meta.voters, &meta.learners] {
        buf.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids.iter() {
            buf.extend_from_slice(&id.to_be_bytes());
        }
    }
    buf
}

/// Reads the header from `r`, which holds `available` bytes before the CRC.
/// Every count is checked against `available` before anything is allocated.
pub(super) fn read_header(
    r: &mut impl Read,
    available: u64,
    path: &Path,
) -> Result<(SnapshotMeta, u64), StorageError> {
    let corrupt = |offset: u64, what: String| StorageError::corrupt(path, Some(offset), what);
    let io = |e: io::Error| StorageError::io(path, e);
    if available < FIXED_HEADER_BYTES + 4 {
        return Err(corrupt(0, format!("{} bytes is too short", available)));
    }
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if magic != MAGIC {
        return Err(corrupt(0, "bad magic".to_string()));
    }
    let version = r.read_u32::<BigEndian>().map_err(io)?;
    if version != VERSION {
        // Not corrupt: its CRC matched. A build that cannot read it passes
        // it over, as one it cannot open, and leaves it be.
        return Err(StorageError::invalid(
            path,
            Some(8),
            format!("unsupported version {version}: written by another build?"),
        ));
    }
    let index = r.read_u64::<BigEndian>().map_err(io)?;
    if index == u64::MAX {
        // The log after it would start at `index + 1`, which wraps; as in a
        // log record (`segment_recovery.rs`), no log gets this far.
        return Err(corrupt(
            12,
            "index is the largest there is, which no log reaches".to_string(),
        ));
    }
    let term = r.read_u64::<BigEndian>().map_err(io)?;
    let mut pos = FIXED_HEADER_BYTES - 4;
    // The learner count must still fit after the voters.
    let voters = read_ids(r, &mut pos, available, 4, path)?;
    let learners = read_ids(r, &mut pos, available, 0, path)?;
    let meta = SnapshotMeta {
        index,
        term,
        voters,
        learners,
    };
    Ok((meta, pos))
}

/// Reads a count and that many node ids at `*pos`, leaving `reserve` bytes
/// of `available` for what follows.
fn read_ids(
    r: &mut impl Read,
    pos: &mut u64,
    available: u64,
    reserve: u64,
    path: &Path,
) -> Result<Vec<NodeId>, StorageError> {
    let io = |e: io::Error| StorageError::io(path, e);
    let count = r.read_u32::<BigEndian>().map_err(io)? as u64;
    if *pos + 4 + count * 8 + reserve > available {
        return Err(StorageError::corrupt(
            path,
            Some(*pos),
            format!("node count {} overruns the file", count),
        ));
    }
    *pos += 4;
    let mut ids = Vec::with_capacity(count as usize);
    for _ in 0..count {
        ids.push(r.read_u64::<BigEndian>().map_err(io)?);
    }
    *pos += count * 8;
    Ok(ids)
}

/// Writes a snapshot from the local state machine: `create`, write the body
/// through `std::io::Write`, then `finish`. Dropped unfinished, it removes its
/// temporary file.
pub struct SnapshotWriter {
    dir: PathBuf,
    tmp_path: PathBuf,
    meta: SnapshotMeta,
    out: Option<ChunkedFile>,
    crc: crc32fast::Hasher,
    bytes: u64,
    finished: bool,
}

impl SnapshotWriter {
    pub fn create(dir: &Path, meta: &SnapshotMeta) -> Result<SnapshotWriter, StorageError> {
        create_dir(dir)?;
        let tmp_path = dir.join(format!("{}.writing.tmp", file_name(meta.index, meta.term)));
        let file = ChunkedFile::create(&tmp_path)?;
        let mut writer = SnapshotWriter {
            dir: dir.to_path_buf(),
            tmp_path,
            meta: meta.clone(),
            out: Some(file),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            finished: false,
        };
        writer
            .write_all(&encode_header(meta))
            .map_err(|e| StorageError::io(&writer.tmp_path, e))?;
        Ok(writer)
    }

    /// Appends the CRC, syncs, publishes under the final name and prunes
    /// (`snapshot_dir::prune`).
    pub fn finish(mut self) -> Result<SnapshotInfo, StorageError> {
        let tmp = self.tmp_path.clone();
        let mut out = match self.out.take() {
            Some(out) => out,
            None => panic!("snapshot writer {} finished twice", tmp.display()),
        };
        let crc = self.crc.clone().finalize();
        let file = out
            .write_all(&crc.to_be_bytes())
            .and_then(|()| out.finish())
            .map_err(|e| StorageError::io(&tmp, e))?;
        let path = self.dir.join(file_name(self.meta.index, self.meta.term));
        publish(file, &tmp, &path, &self.dir)?;
        self.finished = true;
        Ok(SnapshotInfo {
            path,
            meta: self.meta.clone(),
            bytes: self.bytes + CRC_BYTES,
        })
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        let n = out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    /// Nothing to do: the bytes are written as chunks fill, and made
    /// durable by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.out = None;
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// fsync, rename to the final name, fsync the directory, prune.
fn publish(file: File, tmp: &Path, path: &Path, dir: &Path) -> Result<(), StorageError> {
    sync_file(&file, tmp)?;
    drop(file);
    rename_into_place(tmp, path, dir)
}

fn sync_file(file: &File, path: &Path) -> Result<(), StorageError> {
    #[cfg(test)]
    super::synced::note(path);
    file.sync_all().map_err(|e| StorageError::io(path, e))
}

/// Renames a synced temporary file to its final name, fsyncs the
/// directory, prunes.
fn rename_into_place(tmp: &Path, path: &Path, dir: &Path) -> Result<(), StorageError> {
    fs::rename(tmp, path).map_err(|e| StorageError::io(path, e))?;
    sync_dir(dir)?;
    log::info!("snapshot {} published", path.display());
    super::snapshot_dir::prune(dir, path);
    Ok(())
}

/// A snapshot file opened for streaming to a follower. Holding it open keeps
/// the bytes readable even if a newer snapshot prunes the file meanwhile.
pub struct RawReader {
    path: PathBuf,
    file: File,
    len: u64,
}

impl RawReader {
    pub fn open(path: &Path) -> Result<RawReader, StorageError> {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        Ok(RawReader {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the whole file, the `total_len` a receiver's `finish` expects.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `max` bytes from `offset`; empty at the end of the file.
    pub fn read_chunk(&self, offset: u64, max: usize) -> Result<Vec<u8>, StorageError> {
        if offset > self.len {
            return Err(StorageError::invalid(
                &self.path,
                Some(offset),
                format!("chunk offset beyond the {}-byte file", self.len),
            ));
        }
        let n = (self.len - offset).min(max as u64) as usize;
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| StorageError::io(&self.path, e).at(offset))?;
        Ok(buf)
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
