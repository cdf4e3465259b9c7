//! Storage errors name the file and, where it matters, the byte offset.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum StorageErrorKind {
    Io(std::io::Error),
    /// A record or file that fails its checks where a torn tail is impossible.
    Corrupt(String),
    /// Input from a caller or peer that the files cannot take: an entry too
    /// large for a record, a snapshot chunk out of order, a length that does
    /// not match what was received.
    Invalid(String),
    /// Another process holds the data directory's lock (`path` is the
    /// directory); its pid when the lock file says.
    InUse {
        holder: Option<u32>,
    },
}

#[derive(Debug)]
pub struct StorageError {
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub kind: StorageErrorKind,
}

impl StorageError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> StorageError {
        StorageError {
            path: path.into(),
            offset: None,
            kind: StorageErrorKind::Io(err),
        }
    }

    pub fn corrupt(
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        what: impl Into<String>,
    ) -> StorageError {
        StorageError {
            path: path.into(),
            offset,
            kind: StorageErrorKind::Corrupt(what.into()),
        }
    }

    pub fn invalid(
        path: impl Into<PathBuf>,
        offset: Option<u64>,
        what: impl Into<String>,
    ) -> StorageError {
        StorageError {
            path: path.into(),
            offset,
            kind: StorageErrorKind::Invalid(what.into()),
        }
    }

    /// Another process holds the lock on `data_dir`.
    pub fn in_use(data_dir: impl Into<PathBuf>, holder: Option<u32>) -> StorageError {
        StorageError {
            path: data_dir.into(),
            offset: None,
            kind: StorageErrorKind::InUse { holder },
        }
    }

    /// Attaches the offset an IO error happened at.
    pub fn at(mut self, offset: u64) -> StorageError {
        self.offset = Some(offset);
        self
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let StorageErrorKind::InUse { holder } = &self.kind {
            let lock = self.path.join(super::dir_lock::FILE_NAME);
            write!(
                f,
                "data dir {} is in use by another process: ",
                self.path.display()
            )?;
            return match holder {
                Some(pid) => write!(f, "pid {} holds the lock on {}", pid, lock.display()),
                None => write!(f, "it holds the lock on {}", lock.display()),
            };
        }
        write!(f, "{}", self.path.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {}", offset)?;
        }
        match &self.kind {
            StorageErrorKind::Io(err) => write!(f, ": {}", err),
            StorageErrorKind::Corrupt(what) => write!(f, ": corrupt: {}", what),
            StorageErrorKind::Invalid(what) => write!(f, ": invalid: {}", what),
            StorageErrorKind::InUse { .. } => Ok(()),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            StorageErrorKind::Io(err) => Some(err),
            StorageErrorKind::Corrupt(_)
            | StorageErrorKind::Invalid(_)
            | StorageErrorKind::InUse { .. } => None,
        }
    }
}
