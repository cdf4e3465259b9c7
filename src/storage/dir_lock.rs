//! `data_dir/lock`: one process at a time per data directory.
//!
//! Two processes writing one log through their own mappings corrupt it, and
//! two nodes answering for one data dir can each acknowledge writes the other
//! overwrites. So [`DirLock::acquire`] takes an exclusive `flock(2)` on the
//! lock file before anything else in the directory is read or written, and
//! fails at once (no waiting) if another open file holds it. The lock lives
//! as long as the returned value; the kernel drops it when the process ends
//! however it ends (`kill -9` included), so a restart never finds a stale
//! lock. The file itself stays, holding the pid of the last process that
//! took it, which the error for the next one names; its content is a hint
//! only, never a reason to refuse or to take the lock.
//!
//! `flock` locks belong to an open file, not to a process: a second
//! `acquire` on the same directory fails also inside the process that holds it.

use super::error::StorageError;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub(crate) const FILE_NAME: &str = "lock";

/// The held lock on a data directory; released when dropped.
pub(crate) struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `data_dir` (which must exist), creating the lock file if missing. Another holder is an
    /// [`StorageErrorKind::InUse`](super::StorageErrorKind::InUse) error
    /// naming the directory and, when the file says, the holder's pid.
    pub(crate) fn acquire(data_dir: &Path) -> Result<DirLock, StorageError> {
        let path = data_dir.join(FILE_NAME);
        // No truncation on open: the file may be locked by another process,
        // whose pid it holds.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        match try_lock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse::<u32>().ok());
                return Err(StorageError::in_use(data_dir, holder));
            }
            Err(err) => return Err(StorageError::io(&path, err)),
        }
        Ok(DirLock { file, path })
    }

    /// Writes this process's pid into the lock file, for the error above in
    /// whichever process comes next. Called once the node has recovered, so
    /// that a start that fails changes nothing in the directory. Failing to
    /// write it (a full disk) does not make the lock less held.
    pub(crate) fn record_pid(&mut self) {
        let file = &mut self.file;
        let written = file
            .set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        if let Err(err) = written {
            log::warn!(
                "could not write this process's pid to {}: {}",
                self.path.display(),
                err
            );
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when another open file holds a lock.
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock(2) on a descriptor `file` keeps open for the call;
        // no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut first = DirLock::acquire(dir.path()).expect("first lock");
        first.record_pid();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read"),
            format!("{}\n", pid)
        );
        let err = DirLock::acquire(dir.path())
            .err()
            .expect("second lock must fail");
        let text = err.to_string();
        assert!(
            text.contains(&dir.path().display().to_string())
                && text.contains("in use by another process")
                && text.contains(&format!("pid {}", pid)),
            "{}",
            text
        );
        // The failed attempt left the holder's pid in place.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read"),
            format!("{}\n", pid)
        );
        drop(first);
        let _again = DirLock::acquire(dir.path()).expect("lock after release");
    }

    #[test]
    fn an_unreadable_pid_is_left_out_of_the_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _held = DirLock::acquire(dir.path()).expect("lock");
        std::fs::write(dir.path().join(FILE_NAME), "not a pid").expect("write");
        let text = DirLock::acquire(dir.path())
            .err()
            .expect("second lock must fail")
            .to_string();
        assert!(
            text.contains("in use by another process") && !text.contains("pid"),
            "{}",
            text
        );
    }
}
