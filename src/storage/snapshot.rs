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

use super::chunked_file::ChunkedFile;
use super::error::StorageError;
pub use super::snapshot_dir::{
    load, load_latest, load_latest_decoded, parse_path, remove_temp_files, set_aside,
    set_aside_snapshots, LoadedSnapshot, Skipped,
};
use super::{create_dir, sync_dir};
use crate::raft::{NodeId, SnapshotMeta};
use byteorder::{BigEndian, ByteOrder, ReadBytesExt};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
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

/// Receives a snapshot file streamed raw from the leader in chunks, at
/// sequential offsets. Dropped unfinished, it removes its temporary file.
pub struct SnapshotReceiver {
    dir: PathBuf,
    tmp_path: PathBuf,
    index: u64,
    term: u64,
    out: Option<BufWriter<File>>,
    /// CRC of every byte received except the last four, which are held in
    /// `tail` because they may turn out to be the stored CRC.
    crc: crc32fast::Hasher,
    tail: [u8; 4],
    tail_len: usize,
    received: u64,
    /// A write failed part-way, so the file no longer matches `received`.
    broken: bool,
    finished: bool,
}

impl SnapshotReceiver {
    pub fn create(dir: &Path, index: u64, term: u64) -> Result<SnapshotReceiver, StorageError> {
        create_dir(dir)?;
        let tmp_path = dir.join(format!("{}.receiving.tmp", file_name(index, term)));
        let file = create_tmp(&tmp_path)?;
        Ok(SnapshotReceiver {
            dir: dir.to_path_buf(),
            tmp_path,
            index,
            term,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
            crc: crc32fast::Hasher::new(),
            tail: [0; 4],
            tail_len: 0,
            received: 0,
            broken: false,
            finished: false,
        })
    }

    /// Bytes received so far: the offset the next chunk must start at.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Writes the chunk at `offset`, which must equal [`Self::received`].
    /// After an IO error every later call fails: start a new receiver.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.check_not_broken()?;
        if offset != self.received {
            return Err(StorageError::invalid(
                &self.tmp_path,
                Some(offset),
                format!(
                    "snapshot chunk out of order: {} bytes received so far",
                    self.received
                ),
            ));
        }
        let out = match self.out.as_mut() {
            Some(out) => out,
            None => panic!(
                "snapshot receiver {} used after finish",
                self.tmp_path.display()
            ),
        };
        if let Err(err) = out.write_all(data) {
            self.broken = true;
            return Err(StorageError::io(&self.tmp_path, err).at(offset));
        }
        self.absorb(data);
        self.received += data.len() as u64;
        Ok(())
    }

    fn check_not_broken(&self) -> Result<(), StorageError> {
        if self.broken {
            return Err(StorageError::invalid(
                &self.tmp_path,
                Some(self.received),
                "an earlier write to this snapshot failed",
            ));
        }
        Ok(())
    }

    fn absorb(&mut self, data: &[u8]) {
        if data.len() >= 4 {
            self.crc.update(&self.tail[..self.tail_len]);
            let (body, tail) = data.split_at(data.len() - 4);
            self.crc.update(body);
            self.tail.copy_from_slice(tail);
            self.tail_len = 4;
        } else {
            let mut joined = [0u8; 7];
            let n = self.tail_len + data.len();
            joined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joined[self.tail_len..n].copy_from_slice(data);
            let spill = n.saturating_sub(4);
            self.crc.update(&joined[..spill]);
            self.tail[..n - spill].copy_from_slice(&joined[spill..n]);
            self.tail_len = n - spill;
        }
    }

    /// Checks that `total_len` bytes arrived, that the CRC and header are
    /// right and name the index and term given to `create`, and syncs the
    /// file, which stays under its temporary name until
    /// [`ReceivedSnapshot::publish`].
    pub fn finish(mut self, total_len: u64) -> Result<ReceivedSnapshot, StorageError> {
        self.check_not_broken()?;
        let tmp = self.tmp_path.clone();
        if total_len != self.received {
            return Err(StorageError::invalid(
                &tmp,
                Some(self.received),
                format!(
                    "snapshot is {} bytes but {} arrived",
                    total_len, self.received
                ),
            ));
        }
        let out = match self.out.take() {
            Some(out) => out,
            None => panic!("snapshot receiver {} finished twice", tmp.display()),
        };
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io(&tmp, e.into_error()))?;
        let stored = BigEndian::read_u32(&self.tail);
        let computed = self.crc.clone().finalize();
        if self.tail_len < 4 || stored != computed {
            return Err(StorageError::corrupt(
                &tmp,
                Some(total_len.saturating_sub(CRC_BYTES)),
                format!(
                    "crc {:#010x} does not match computed {:#010x}",
                    stored, computed
                ),
            ));
        }
        let meta = self.check_header(total_len)?;
        sync_file(&file, &tmp)?;
        drop(file);
        // A name of its own: a stream of the same snapshot begun meanwhile
        // writes `.receiving.tmp` afresh, and must not touch this one.
        let received = self
            .dir
            .join(format!("{}.received.tmp", file_name(self.index, self.term)));
        fs::rename(&tmp, &received).map_err(|e| StorageError::io(&received, e))?;
        // From here the file is the `ReceivedSnapshot`'s to remove.
        self.finished = true;
        Ok(ReceivedSnapshot {
            dir: self.dir.clone(),
            tmp_path: received,
            info: SnapshotInfo {
                path: self.dir.join(file_name(self.index, self.term)),
                meta,
                bytes: total_len,
            },
            published: false,
        })
    }

    fn check_header(&self, total_len: u64) -> Result<SnapshotMeta, StorageError> {
        let tmp = &self.tmp_path;
        let file = File::open(tmp).map_err(|e| StorageError::io(tmp, e))?;
        let (meta, _) = read_header(&mut BufReader::new(file), total_len - CRC_BYTES, tmp)?;
        if (meta.index, meta.term) != (self.index, self.term) {
            return Err(StorageError::corrupt(
                tmp,
                Some(12),
                format!(
                    "header says index {} term {}, expected index {} term {}",
                    meta.index, meta.term, self.index, self.term
                ),
            ));
        }
        Ok(meta)
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if !self.finished {
            self.out = None;
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// A snapshot received whole from the leader, checked and synced, still
/// under its temporary name: no start takes it as the node's state and it
/// has pruned nothing. [`Self::publish`] makes it the newest snapshot once
/// the node installs it; dropped unpublished, it removes its file.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    dir: PathBuf,
    tmp_path: PathBuf,
    /// `path` is where `publish` puts it.
    info: SnapshotInfo,
    published: bool,
}

impl ReceivedSnapshot {
    pub fn meta(&self) -> &SnapshotMeta {
        &self.info.meta
    }

    /// Length of the whole file.
    pub fn bytes(&self) -> u64 {
        self.info.bytes
    }

    /// Where the file is until it is published.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Reads the file back and checks it again, as a start would.
    pub fn load(&self) -> Result<LoadedSnapshot, StorageError> {
        let key = (self.info.meta.index, self.info.meta.term);
        let (meta, body) = super::snapshot_dir::load_file(&self.tmp_path, key)?;
        Ok(LoadedSnapshot {
            meta,
            path: self.tmp_path.clone(),
            body,
            skipped: Vec::new(),
        })
    }

    /// Renames the file to its final name, syncs the directory, and prunes
    /// (`snapshot_dir::prune`): from here a start loads it. The caller must
    /// have made the leader's term durable first, so that no snapshot under
    /// a final name has a term above the stable file's.
    pub fn publish(mut self) -> Result<SnapshotInfo, StorageError> {
        rename_into_place(&self.tmp_path, &self.info.path, &self.dir)?;
        self.published = true;
        Ok(self.info.clone())
    }
}

impl Drop for ReceivedSnapshot {
    fn drop(&mut self) {
        if !self.published {
            // No directory sync: one a crash brings back is a `.tmp` file,
            // which the next start deletes.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

fn create_tmp(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))
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
mod tests {
    use super::*;

    #[test]
    fn a_large_snapshot_written_in_pieces_of_any_size_loads_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = SnapshotMeta {
            index: 7,
            term: 2,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
        };
        let body: Vec<u8> = (0..3_000_000u32).map(|k| (k % 251) as u8).collect();
        let mut writer = SnapshotWriter::create(dir.path(), &meta).expect("create");
        let (small, large) = body.split_at(1_000_000);
        for chunk in small.chunks(10_007).chain(large.chunks(300_007)) {
            writer.write_all(chunk).expect("write");
        }
        writer.finish().expect("finish");

        let loaded = load_latest(dir.path()).expect("load").expect("a snapshot");
        assert_eq!(loaded.meta, meta);
        assert_eq!(loaded.body, body);
    }

    /// A received snapshot's bytes are synced when it is finished, before
    /// anything can install it, and its final name when it is published.
    #[test]
    fn a_received_snapshot_is_synced_when_finished_and_its_name_when_published() {
        let leader = tempfile::tempdir().expect("tempdir");
        let meta = SnapshotMeta {
            index: 7,
            term: 2,
            voters: vec![1],
            learners: Vec::new(),
        };
        let mut writer = SnapshotWriter::create(leader.path(), &meta).expect("create");
        writer.write_all(b"state").expect("write");
        let bytes = fs::read(writer.finish().expect("finish").path).expect("read");

        let dir = tempfile::tempdir().expect("tempdir");
        let mut receiver = SnapshotReceiver::create(dir.path(), 7, 2).expect("create");
        receiver.write_at(0, &bytes).expect("write");
        let receiving = receiver.tmp_path.clone();
        super::super::synced::take();
        let received = receiver.finish(bytes.len() as u64).expect("finish");
        assert_eq!(super::super::synced::take(), vec![receiving]);
        let info = received.publish().expect("publish");
        assert_eq!(super::super::synced::take(), vec![dir.path().to_path_buf()]);
        assert_eq!(fs::read(info.path).expect("read"), bytes);
    }
}
