//! Where Raft state lives on disk: the segment log under `log/`, the stable
//! file, and snapshot files under `snapshot/`. Knows files and bytes only.
//!
//! ```text
//! data_dir/
//!   lock                            held while the directory is open (dir_lock.rs)
//!   stable                          term and vote (stable.rs)
//!   log/00000000000000000001.seg    records from index 1 (record.rs, segment.rs)
//!   snapshot/<index>-<term>.snap    the newest two snapshots (snapshot.rs, snapshot_dir.rs)
//! ```
//!
//! What survives what: `append` writes into the page cache (one `pwrite`
//! per batch), so it survives `kill -9` at once; `sync` makes it survive power
//! loss. `set_hard_state`, `drop_before` and `reset` are durable when they
//! return. On open, a torn tail of the newest segment (its last record incomplete
//! or failing its CRC, with only zeros after it) is found, and so is a newest segment shorter than
//! segments are created with; any other damage is an error naming the file and
//! offset. The open writes nothing: the torn tail is cut, and the short file
//! extended, with a warning each, by [`Storage::finish_recovery`], which the
//! caller runs once the rest of recovery (snapshot, log plan) has succeeded,
//! so a refused start changes nothing.
//!
//! The mappings assume this process is the only one using the data directory;
//! `Storage::open` makes sure of it by locking the directory first (`lock`),
//! and the `Storage` holds that lock until it is dropped.

mod chunked_file;
mod dir_lock;
pub mod error;
pub mod record;
mod segment;
mod segment_log;
pub mod snapshot;
mod snapshot_dir;
mod stable;

pub use error::{StorageError, StorageErrorKind};

use crate::raft::{Entry, EntryKind, HardState};
use dir_lock::DirLock;
use segment::Segment;
use segment_log::SegmentLog;
use stable::Stable;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The log directory inside a data directory.
pub const LOG_DIR: &str = "log";
/// The stable file (term and vote) inside a data directory.
pub const STABLE_FILE: &str = stable::FILE_NAME;
/// The lock file inside a data directory, which the open `Storage` holds an
/// exclusive `flock` on and which names the pid of the last process that did.
pub const LOCK_FILE: &str = dir_lock::FILE_NAME;

#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Size each new segment file is preallocated to, and so the least a
    /// segment file other than the newest may be on open (see
    /// `segment_recovery.rs`); a shorter newest segment is extended to it.
    /// Open a log with the size it was written with, or a smaller one.
    pub segment_bytes: u64,
    /// Run on every record as the log is opened; an error makes the record
    /// corrupt (file and offset named). Storage knows bytes, not what a
    /// payload means, so the caller that does supplies it: the server passes
    /// [`crate::recovery::check_payload`]. `None` checks nothing.
    pub check_payload: Option<PayloadCheck>,
    /// Files a data dir gets only after its first open has created `log/`
    /// (the server's `founders`): with one there and `log/` gone, as with
    /// `stable`, the log was removed.
    pub written_after_log: &'static [&'static str],
}

/// Whether a record's payload is one its kind can have; the error says why not.
pub type PayloadCheck = fn(EntryKind, &[u8]) -> Result<(), String>;

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_bytes: 64 << 20,
            check_payload: None,
            written_after_log: &[],
        }
    }
}

/// Segments taken out of the log whose files are still to be deleted,
/// shared between the `Storage` and its `SegmentRemover`s.
#[derive(Default)]
struct Detached {
    /// Oldest first. Locked only briefly, so `detach_before` never waits
    /// for a file deletion.
    queue: Mutex<VecDeque<Segment>>,
    /// Held while files are deleted, so that deletions never overlap and
    /// `reset` cannot create a segment while an older one is still going.
    removing: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A remover that panicked left the queue as it was: still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Deletes the files of segments taken out by [`Storage::detach_before`],
/// on whatever thread holds it.
pub struct SegmentRemover {
    detached: Arc<Detached>,
}

impl SegmentRemover {
    /// Deletes every detached segment's file, oldest first, each durably.
    /// On an error the files not yet deleted stay (the log on disk still
    /// starts earlier than in memory, which a restart accepts).
    pub fn remove(&self) -> Result<(), StorageError> {
        let _turn = lock(&self.detached.removing);
        loop {
            let next = lock(&self.detached.queue).pop_front();
            match next {
                Some(seg) => seg.remove()?,
                None => return Ok(()),
            }
        }
    }
}

/// A segment file with writes not yet synced, handed to a background syncer.
/// Holding it keeps the file open even if the segment is deleted meanwhile.
pub struct SyncTarget {
    file: std::sync::Arc<std::fs::File>,
    path: std::path::PathBuf,
}

impl SyncTarget {
    /// fdatasync of the file.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// A target for any open file (a test's: one whose sync fails, say).
    #[cfg(test)]
    pub(crate) fn for_file(file: File, path: PathBuf) -> SyncTarget {
        SyncTarget {
            file: Arc::new(file),
            path,
        }
    }

    /// Whether two targets are the same open file.
    pub fn same_file(&self, other: &SyncTarget) -> bool {
        std::sync::Arc::ptr_eq(&self.file, &other.file)
    }
}

/// The open log and stable file of one data directory.
pub struct Storage {
    data_dir: PathBuf,
    stable: Stable,
    log: SegmentLog,
    detached: Arc<Detached>,
    /// Until [`Storage::finish_recovery`]: nothing may change the data dir.
    recovering: bool,
    /// Held for as long as the storage is open (the kernel drops it if the
    /// process dies first).
    lock: DirLock,
}

impl Storage {
    /// Opens (creating if missing) `data_dir`, locks it, recovers the log
    /// and reads the stable file. A torn tail of the newest segment (SPEC
    /// §4: its last record incomplete or failing its CRC, with only zeros
    /// after it) is left out of the log, and, like a newest segment shorter
    /// than `options.segment_bytes`, repaired only by
    /// [`Storage::finish_recovery`], which must be called before anything
    /// changes the storage. Corruption anywhere else, a record whose payload
    /// `options.check_payload` rejects included, is an error naming the file
    /// and offset. The open writes nothing but the lock file (and creates the
    /// data dir itself if it is missing): `log/` is created by
    /// [`Storage::create_log_dir`] or [`Storage::finish_recovery`].
    ///
    /// The lock comes before anything in the directory is read or written:
    /// a directory another process (or another open `Storage`) holds is an
    /// [`StorageErrorKind::InUse`] error, and nothing in it is touched but
    /// the lock file's existence.
    ///
    /// A stable file without a `log/` directory is corruption too: the first
    /// open creates `log/` (and syncs the directory) before any hard state
    /// can be set, so the log was deleted, and recreating it empty would drop
    /// every entry this node acknowledged.
    ///
    /// # Panics
    /// If `options.segment_bytes` cannot hold even an empty record (25 bytes).
    pub fn open(data_dir: &Path, options: StorageOptions) -> Result<Storage, StorageError> {
        create_dir(data_dir)?;
        let lock = DirLock::acquire(data_dir)?;
        let stable = Stable::open(data_dir)?;
        let log_dir = data_dir.join(LOG_DIR);
        // Any error but a missing directory is for `SegmentLog::open` to report.
        let log_missing = matches!(fs::symlink_metadata(&log_dir),
            Err(err) if err.kind() == ErrorKind::NotFound);
        let written_after_log = std::iter::once(STABLE_FILE)
            .filter(|_| stable.on_disk())
            .chain(options.written_after_log.iter().copied())
            .map(|name| data_dir.join(name));
        if let Some(found) = written_after_log
            .filter(|_| log_missing)
            .find(|p| p.exists())
        {
            return Err(StorageError::corrupt(
                &log_dir,
                None,
                format!(
                    "missing, but {} exists (log/ is created before it): the log was removed, and starting without it would lose acknowledged writes",
                    found.display()
                ),
            ));
        }
        let log = SegmentLog::open(&log_dir, options.segment_bytes, options.check_payload)?;
        Ok(Storage {
            data_dir: data_dir.to_path_buf(),
            stable,
            log,
            detached: Arc::default(),
            recovering: true,
            lock,
        })
    }

    /// Makes the repairs the open found (cutting a torn tail, extending a
    /// short newest segment), durably and with a warning each, makes durable
    /// what the open read (the newest segment, and the names in the data,
    /// log and snapshot directories: a process killed before its syncs
    /// leaves them in the page cache only), removes leftover temporary
    /// segment files, and writes this process's pid into
    /// the lock file (which the error a second process gets names). Call it
    /// once recovery has decided to start from what the open found, and
    /// before anything else changes the storage: until then `append`,
    /// `reset`, `drop_before`, `detach_before` and `set_hard_state` panic,
    /// since the log's invariants (zeros after the records) do not hold yet.
    ///
    /// # Panics
    /// If called twice.
    pub fn finish_recovery(&mut self) -> Result<(), StorageError> {
        assert!(self.recovering, "recovery finished twice");
        self.log.finish_recovery()?;
        // SPEC's layout has it from the start, not from the first snapshot.
        let snapshot_dir = snapshot::snapshot_dir(&self.data_dir);
        create_dir(&snapshot_dir)?;
        // A process killed between a rename and its directory fsync left the
        // new stable file or snapshot visible but not durable; this start
        // acts on them (repeats the vote without a write, compacts the log
        // against the snapshot), so they must survive a power loss first.
        sync_dir(&self.data_dir)?;
        sync_dir(&snapshot_dir)?;
        self.lock.record_pid();
        self.recovering = false;
        Ok(())
    }

    /// Creates `log/` if the open found none (a new data dir), durably:
    /// a start that writes anything else first (`founders`) must call this
    /// before, since `log/` missing beside such files means the log was
    /// removed. [`Storage::finish_recovery`] does it too. The open leaves it
    /// to the caller, so that a start refused after the open creates nothing.
    pub fn create_log_dir(&mut self) -> Result<(), StorageError> {
        self.log.create_missing_dir()
    }

    fn assert_recovered(&self) {
        assert!(
            !self.recovering,
            "{}: storage changed before finish_recovery",
            self.data_dir.display()
        );
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The term and vote on disk (default when there is no stable file yet).
    pub fn hard_state(&self) -> HardState {
        self.stable.hard_state()
    }

    /// Replaces the stable file atomically; durable when this returns.
    /// Writing the hard state already on disk does no IO.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.assert_recovered();
        self.stable.set(hard_state)
    }

    /// First index in the log; `last_index() + 1` when the log is empty.
    /// A data directory that never held a log reports 1.
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    /// Last index in the log; `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The term of the entry at `index`, `None` outside `first_index()..=last_index()`.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }

    /// Entries `lo..hi` (hi exclusive), all of which must be in the log.
    /// Each record's CRC is checked again as it is read.
    ///
    /// # Panics
    /// If `lo..hi` is not within `first_index()..last_index() + 1`.
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, StorageError> {
        self.log.entries(lo, hi)
    }

    /// Appends contiguous entries. If the first one's index is already in the
    /// log, that entry and everything after it are replaced. Not durable until `sync`.
    ///
    /// The first append to an empty log may start at any index when the data
    /// directory never held a log, and must start at `first_index()` otherwise
    /// (after `reset(n)`, that is `n`). Replacing entries syncs the removal
    /// before writing, so a crash never leaves old entries after new ones.
    ///
    /// # Panics
    /// If the entries are not contiguous or the first index is outside
    /// `first_index()..=last_index() + 1`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.assert_recovered();
        self.log.append(entries)
    }

    /// Makes everything appended so far durable (fdatasync of the dirty range).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.log.sync()
    }

    /// For a sync off the caller's thread: the files to fdatasync (with
    /// [`SyncTarget::sync`]) before what was appended so far is durable.
    /// Their dirty ranges are forgotten, so a later `sync` does not cover
    /// them: the caller must sync every target it is given.
    pub fn take_sync_targets(&mut self) -> Vec<SyncTarget> {
        self.log.take_sync_targets()
    }

    /// Deletes whole segments all of whose records are below `index`. The
    /// newest segment always stays, so `first_index()` may remain below `index`.
    pub fn drop_before(&mut self, index: u64) -> Result<(), StorageError> {
        self.assert_recovered();
        self.remove_detached()?;
        self.log.drop_before(index)
    }

    /// Takes out of the log the segments `drop_before(index)` would delete,
    /// leaving their files to the returned remover: deleting a big segment
    /// takes the kernel a while (it frees the file's page cache), which an
    /// event loop may hand to another thread. Until then the files stay on
    /// disk, and a crash leaves a log that starts earlier, which is harmless.
    /// `drop_before` and `reset` first delete what is still pending (waiting
    /// for a remover at work), so files always go oldest first.
    pub fn detach_before(&mut self, index: u64) -> SegmentRemover {
        self.assert_recovered();
        let segments = self.log.detach_before(index);
        lock(&self.detached.queue).extend(segments);
        SegmentRemover {
            detached: Arc::clone(&self.detached),
        }
    }

    fn remove_detached(&mut self) -> Result<(), StorageError> {
        SegmentRemover {
            detached: Arc::clone(&self.detached),
        }
        .remove()
    }

    /// Empties the log; the next append starts at `next_index` (after installing a snapshot).
    /// Durable when it returns: a reopen reports `first_index() == next_index`.
    /// A crash part-way leaves a prefix of the old log, or no log at all, so
    /// the caller compares the log with its snapshot again on restart.
    pub fn reset(&mut self, next_index: u64) -> Result<(), StorageError> {
        self.assert_recovered();
        self.remove_detached()?;
        self.log.reset(next_index)
    }

    /// Bytes the log's segment files take on disk: their preallocated length,
    /// which sparse files may not yet occupy in full. Detached segments whose
    /// files are not deleted yet are not counted.
    pub fn log_bytes(&self) -> u64 {
        self.log.log_bytes()
    }
}

/// Opens a file of the data dir for reading, refusing anything but a
/// regular file. Opened without blocking: a FIFO put in a file's place
/// would otherwise hang the start in `open`, deaf to SIGTERM, where it must
/// stop with a line naming the file.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// The whole content of a file of the data dir ([`open_regular`]).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_regular`] for a text file.
pub fn read_regular_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|err| std::io::Error::new(ErrorKind::InvalidData, err))
}

/// Replaces the file at `path` with `bytes`, whole or not at all, durable
/// when this returns: written to `<path>.tmp`, fsynced, renamed over `path`,
/// the directory fsynced. A leftover `.tmp` is removed first rather than
/// opened, since opening a FIFO left in its place would block for good.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(err) if err.kind() != ErrorKind::NotFound => return Err(StorageError::io(&tmp, err)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| StorageError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StorageError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
    sync_dir(parent_dir(path))
}

/// The directory `path` is named in: `.` for a bare relative name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// fsync of a directory, which makes the names created or removed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(test)]
    synced::note(dir);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// The files and directories this thread synced, in order: no filesystem
/// tells a test which of its pages are still only in the page cache, so
/// tests of what a sequence of calls makes durable read this instead.
#[cfg(test)]
pub(crate) mod synced {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn note(path: &Path) {
        SYNCED.with(|synced| synced.borrow_mut().push(path.to_path_buf()));
    }

    /// Everything noted since the last call.
    pub(crate) fn take() -> Vec<PathBuf> {
        SYNCED.with(|synced| std::mem::take(&mut *synced.borrow_mut()))
    }
}

/// Whether `dir` is a directory (false: there is nothing by that name).
/// Anything else by that name is an error naming it, where `create_dir`
/// would say only "File exists": a file, or a symbolic link to nothing.
pub(crate) fn existing_dir(dir: &Path) -> Result<bool, StorageError> {
    match fs::symlink_metadata(dir) {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(StorageError::io(dir, err)),
        Ok(_) => {}
    }
    let why = match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(true),
        Ok(_) => "exists and is not a directory".to_string(),
        Err(err) if err.kind() == ErrorKind::NotFound => match fs::read_link(dir) {
            Ok(target) => format!(
                "a symbolic link to {}, which does not exist",
                target.display()
            ),
            Err(_) => "a symbolic link to something that does not exist".to_string(),
        },
        Err(err) => return Err(StorageError::io(dir, err)),
    };
    Err(StorageError::io(dir, std::io::Error::other(why)))
}

/// Creates `dir` if it is missing, and any missing parents of it, making
/// the name of each one created durable in its parent (fsync of a directory
/// makes only its own entries durable: a data dir under a new parent, or
/// a relative one, could otherwise vanish whole on a power loss).
pub(crate) fn create_dir(dir: &Path) -> Result<(), StorageError> {
    if existing_dir(dir)? {
        return Ok(());
    }
    let parent = parent_dir(dir);
    if parent != dir {
        create_dir(parent)?;
    }
    match fs::create_dir(dir) {
        // Created meanwhile by someone else: its name may not be durable yet.
        Err(err) if err.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
        result => result.map_err(|e| StorageError::io(dir, e))?,
    }
    sync_dir(parent)
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
