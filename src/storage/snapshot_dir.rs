//! The snapshot directory as a whole: which snapshot a start loads and
//! which it passes over, what pruning keeps, snapshots set aside, and the
//! temporary files a crash leaves. The file format, and writing and
//! receiving one file, are `snapshot.rs`'s (receiving in
//! `snapshot_receive.rs`).

use super::error::{StorageError, StorageErrorKind};
use super::snapshot::{
    file_name, parse_file_name, read_header, CRC_BYTES, FIXED_HEADER_BYTES, KEEP,
};
use super::sync_dir;
use crate::raft::SnapshotMeta;
use byteorder::{BigEndian, ByteOrder};
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// After `published` (a snapshot's path): keeps it and the newest
/// [`KEEP`]` - 1` snapshots older than it, and deletes the older rest.
/// Only regular files count: anything else under a snapshot's name (a
/// directory) is no snapshot to fall back on. Files named newer than
/// `published` are left alone and do not count: they are no fallback for
/// it (another build's, say), and deleting by rank alone could delete
/// `published` itself. Another thread may prune at the same time, so a file
/// already gone is not an error; one that cannot be deleted is left with a
/// warning, since the snapshot just published is good all the same.
pub(super) fn prune(dir: &Path, published: &Path) {
    let Some(newest) = parse_path(published) else {
        return;
    };
    let snapshots = match list_newest_first(dir) {
        Ok(listed) => listed,
        Err(err) => return log::warn!("cannot prune snapshots: {}", err),
    };
    let older = snapshots
        .iter()
        .filter(|(key, path)| *key < newest && fs::metadata(path).is_ok_and(|m| m.is_file()))
        .skip(KEEP - 1);
    let mut removed = false;
    for (_, path) in older {
        match fs::remove_file(path) {
            Ok(()) => {
                log::info!("snapshot {} removed", path.display());
                removed = true;
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => log::warn!("cannot remove snapshot {}: {}", path.display(), err),
        }
    }
    if removed {
        if let Err(err) = sync_dir(dir) {
            log::warn!("{}", err);
        }
    }
}

/// Snapshot files (not temporary ones), newest first. A missing directory holds none.
/// `(index, term)` as the file name says, and the path.
type Listed = ((u64, u64), PathBuf);

fn list_newest_first(dir: &Path) -> Result<Vec<Listed>, StorageError> {
    let mut found = list_named(dir, parse_file_name)?;
    found.sort_by(|a, b| b.cmp(a));
    Ok(found)
}

/// The entries of `dir` whose names `key` accepts, with what it makes of
/// them. A missing directory holds none.
fn list_named<K>(
    dir: &Path,
    key: impl Fn(&str) -> Option<K>,
) -> Result<Vec<(K, PathBuf)>, StorageError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(StorageError::io(dir, err)),
    };
    let mut found = Vec::new();
    for item in listing {
        let item = item.map_err(|e| StorageError::io(dir, e))?;
        if let Some(key) = item.file_name().to_str().and_then(&key) {
            found.push((key, item.path()));
        }
    }
    Ok(found)
}

/// A snapshot read back whole and checked.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    /// The state machine bytes.
    pub body: Vec<u8>,
    /// Newer snapshot files that could not be used and were passed over,
    /// newest first. When this is not empty, the caller must check that the
    /// log still reaches back to `meta.index + 1`.
    pub skipped: Vec<Skipped>,
}

/// A snapshot file [`load_latest`] passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    /// It failed its checks (its CRC, its header, or its body does not
    /// decode), rather than could not be read (permissions, an I/O error,
    /// not a regular file, another build's version).
    pub corrupt: bool,
}

/// What a snapshot that failed its checks is renamed to by [`set_aside`].
const BROKEN_SUFFIX: &str = ".broken";

/// Renames a snapshot that failed its checks to `<name>.broken`, kept for
/// inspection and no longer one of the [`KEEP`] that pruning counts: left
/// as it was, the next snapshot pruned the good one beside it, leaving the
/// bad one as the only fallback. Returns the new name.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let mut broken = path.as_os_str().to_owned();
    broken.push(BROKEN_SUFFIX);
    let broken = PathBuf::from(broken);
    fs::rename(path, &broken)?;
    Ok(broken)
}

/// The snapshots in `dir` set aside by [`set_aside`], with their indexes:
/// the state reached them once, so a start must still reach them.
pub fn set_aside_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let named = list_named(dir, |name| {
        name.strip_suffix(BROKEN_SUFFIX).and_then(parse_file_name)
    })?;
    Ok(named
        .into_iter()
        .map(|((index, _), path)| (index, path))
        .collect())
}

/// The newest snapshot in `dir` that passes its checks.
///
/// `Ok(None)` when there is no snapshot file at all. Newer files that fail
/// are passed over with a warning naming them and the one used, and listed in
/// [`LoadedSnapshot::skipped`]. When every file fails, the error of the newest
/// is returned (each failure is also logged): with no snapshot the log would
/// have to reach back to index 1, which compaction has made unlikely.
pub fn load_latest(dir: &Path) -> Result<Option<LoadedSnapshot>, StorageError> {
    Ok(load_latest_decoded(dir, |_, _| true, |_| Ok(()))?.map(|(loaded, ())| loaded))
}

/// [`load_latest`], where a snapshot must also `decode`: one whose CRC
/// matches but whose body does not decode (a bug of the build that wrote
/// it, memory that flipped a bit before the CRC was taken) is passed over
/// as corrupt, like one that fails its CRC. Only files whose path and
/// `(index, term)` (as named) `consider` accepts are looked at: the others
/// are left as if absent, neither read nor listed in `skipped`.
pub fn load_latest_decoded<T>(
    dir: &Path,
    mut consider: impl FnMut(&Path, (u64, u64)) -> bool,
    mut decode: impl FnMut(&[u8]) -> Result<T, String>,
) -> Result<Option<(LoadedSnapshot, T)>, StorageError> {
    let mut failures: Vec<(PathBuf, StorageError)> = Vec::new();
    let listed = list_newest_first(dir)?;
    for (key, path) in listed
        .into_iter()
        .filter(|(key, path)| consider(path, *key))
    {
        let decoded = load_file(&path, key).and_then(|(meta, body)| match decode(&body) {
            Ok(decoded) => Ok((meta, body, decoded)),
            Err(why) => Err(StorageError::corrupt(
                &path,
                None,
                format!("its CRC matches, but its body does not decode: {why}"),
            )),
        });
        match decoded {
            Ok((meta, body, decoded)) => {
                for (bad, err) in &failures {
                    log::warn!(
                        "passing over snapshot {}: {}; using {}",
                        bad.display(),
                        err,
                        path.display()
                    );
                }
                let skipped = failures
                    .into_iter()
                    .map(|(path, err)| Skipped {
                        path,
                        corrupt: matches!(err.kind, StorageErrorKind::Corrupt(_)),
                    })
                    .collect();
                let loaded = LoadedSnapshot {
                    meta,
                    path,
                    body,
                    skipped,
                };
                return Ok(Some((loaded, decoded)));
            }
            Err(err) => failures.push((path, err)),
        }
    }
    let mut failures = failures.into_iter();
    match failures.next() {
        None => Ok(None),
        Some((_, newest_err)) => {
            for (bad, err) in failures {
                log::warn!("older snapshot {} fails too: {}", bad.display(), err);
            }
            Err(newest_err)
        }
    }
}

/// Reads and checks the snapshot `<index>-<term>.snap` in `dir`.
pub fn load(dir: &Path, index: u64, term: u64) -> Result<LoadedSnapshot, StorageError> {
    let path = dir.join(file_name(index, term));
    let (meta, body) = load_file(&path, (index, term))?;
    Ok(LoadedSnapshot {
        meta,
        path,
        body,
        skipped: Vec::new(),
    })
}

/// The (index, term) a snapshot file's name gives, if it is one.
pub fn parse_path(path: &Path) -> Option<(u64, u64)> {
    parse_file_name(path.file_name()?.to_str()?)
}

/// Reads and checks one snapshot file: CRC first, then the header, which
/// must agree with the file name.
pub(super) fn load_file(
    path: &Path,
    (index, term): (u64, u64),
) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
    let mut bytes = super::read_regular(path).map_err(|e| StorageError::io(path, e))?;
    let len = bytes.len() as u64;
    if len < FIXED_HEADER_BYTES + 4 + CRC_BYTES {
        return Err(StorageError::corrupt(
            path,
            Some(0),
            format!("{} bytes is too short", len),
        ));
    }
    let crc_at = bytes.len() - CRC_BYTES as usize;
    let stored = BigEndian::read_u32(&bytes[crc_at..]);
    let computed = crc32fast::hash(&bytes[..crc_at]);
    if stored != computed {
        return Err(StorageError::corrupt(
            path,
            Some(crc_at as u64),
            format!(
                "crc {:#010x} does not match computed {:#010x}",
                stored, computed
            ),
        ));
    }
    let (meta, header_len) = read_header(&mut &bytes[..crc_at], crc_at as u64, path)?;
    if (meta.index, meta.term) != (index, term) {
        return Err(StorageError::corrupt(
            path,
            Some(12),
            format!(
                "header says index {} term {}, the name index {} term {}",
                meta.index, meta.term, index, term
            ),
        ));
    }
    bytes.truncate(crc_at);
    bytes.drain(..header_len as usize);
    Ok((meta, bytes))
}

/// Deletes temporary files left by a crash mid-write. Call only while no
/// writer or receiver is active on `dir` (at startup); returns how many.
/// One that cannot be removed is left with a warning, as `log/`'s leftovers
/// are: start has already repaired the log by now, and a start refused
/// after that would have changed files. A write or receive of the snapshot
/// with that same name then fails, until a newer snapshot is taken or sent.
pub fn remove_temp_files(dir: &Path) -> Result<usize, StorageError> {
    let mut removed = 0;
    for ((), path) in list_named(dir, |name| name.ends_with(".tmp").then_some(()))? {
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(err) => log::warn!("could not remove {}: {}", path.display(), err),
        }
    }
    Ok(removed)
}
