//! Receiving a snapshot file streamed from the leader: checked and synced
//! under a temporary name ([`SnapshotReceiver`]), published only when the
//! node installs it ([`ReceivedSnapshot`]). Separate from `snapshot.rs`,
//! which holds the format and the local writer, so that each reads in one
//! sitting.

use super::{
    create_dir, file_name, read_header, rename_into_place, sync_file, LoadedSnapshot, SnapshotInfo,
    CRC_BYTES,
};
use crate::raft::SnapshotMeta;
use crate::storage::error::StorageError;
use byteorder::{BigEndian, ByteOrder};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Receives a snapshot file streamed raw from the leader in chunks, at
/// sequential offsets. Dropped unfinished, it removes its temporary file.
pub struct SnapshotReceiver {
    dir: PathBuf,
    pub(super) tmp_path: PathBuf,
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
        let (meta, body) = crate::storage::snapshot_dir::load_file(&self.tmp_path, key)?;
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
