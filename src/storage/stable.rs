//! The stable file: the current term and vote, replaced atomically.

use super::error::StorageError;
use crate::raft::{HardState, MAX_STORED_TERM};
use byteorder::{BigEndian, ByteOrder};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

pub(crate) const FILE_NAME: &str = "stable";
const MAGIC: [u8; 4] = *b"RKHS";
const VERSION: u32 = 1;
const LEN: usize = 28;

/// Encodes the stable file, all integers big-endian:
///
/// ```text
/// offset size field
///      0    4 magic    "RKHS"
///      4    4 version  1
///      8    8 term     current term
///     16    8 vote     node voted for in that term (0 = none)
///     24    4 crc32    CRC-32 (IEEE) of bytes 0..24
/// ```
fn encode(hard_state: HardState) -> [u8; LEN] {
    let mut buf = [0u8; LEN];
    buf[0..4].copy_from_slice(&MAGIC);
    BigEndian::write_u32(&mut buf[4..8], VERSION);
    BigEndian::write_u64(&mut buf[8..16], hard_state.term);
    BigEndian::write_u64(&mut buf[16..24], hard_state.vote);
    let crc = crc32fast::hash(&buf[0..24]);
    BigEndian::write_u32(&mut buf[24..28], crc);
    debug_assert_eq!(
        decode(&buf, Path::new(FILE_NAME)).ok(),
        Some(hard_state),
        "stable file encoding does not decode to itself"
    );
    buf
}

fn decode(buf: &[u8], path: &Path) -> Result<HardState, StorageError> {
    if buf.len() != LEN {
        return Err(StorageError::corrupt(
            path,
            Some(0),
            format!("stable file is {} bytes, expected {}", buf.len(), LEN),
        ));
    }
    let stored = BigEndian::read_u32(&buf[24..28]);
    let computed = crc32fast::hash(&buf[0..24]);
    if stored != computed {
        return Err(StorageError::corrupt(
            path,
            Some(24),
            format!(
                "crc {:#010x} does not match computed {:#010x}",
                stored, computed
            ),
        ));
    }
    if buf[0..4] != MAGIC {
        return Err(StorageError::corrupt(path, Some(0), "bad magic"));
    }
    let version = BigEndian::read_u32(&buf[4..8]);
    if version != VERSION {
        return Err(StorageError::corrupt(
            path,
            Some(4),
            format!("unsupported version {}", version),
        ));
    }
    let term = BigEndian::read_u64(&buf[8..16]);
    if term > MAX_STORED_TERM {
        // Every term on disk is at most this one (`recover` checks), so this
        // bounds the snapshot's and the log's terms too.
        return Err(StorageError::corrupt(
            path,
            Some(8),
            format!("term {term} above the highest term {MAX_STORED_TERM}"),
        ));
    }
    Ok(HardState {
        term,
        vote: BigEndian::read_u64(&buf[16..24]),
    })
}

/// The stable file of a data directory and the hard state it holds.
pub(crate) struct Stable {
    dir: PathBuf,
    hard_state: HardState,
    /// Whether the file was there at open or has been written since.
    on_disk: bool,
}

impl Stable {
    /// Reads `dir/stable`; a missing file is the default hard state. Any
    /// damage is an error, never a silent fall back to term 0, which would let
    /// this node vote twice in a term. A leftover `stable.tmp` is ignored.
    pub(crate) fn open(dir: &Path) -> Result<Stable, StorageError> {
        let path = dir.join(FILE_NAME);
        let (hard_state, on_disk) = match super::open_regular(&path) {
            Ok(file) => (decode(&read_bounded(file, &path)?, &path)?, true),
            Err(err) if err.kind() == ErrorKind::NotFound => (HardState::default(), false),
            Err(err) => return Err(StorageError::io(&path, err)),
        };
        Ok(Stable {
            dir: dir.to_path_buf(),
            hard_state,
            on_disk,
        })
    }

    /// Whether a stable file exists: a hard state was ever set in this
    /// directory.
    pub(crate) fn on_disk(&self) -> bool {
        self.on_disk
    }

    pub(crate) fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Replaces the file atomically (`write_atomically`): a crash leaves
    /// either the old or the new file, whole.
    pub(crate) fn set(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        if hard_state == self.hard_state {
            return Ok(());
        }
        super::write_atomically(&self.dir.join(FILE_NAME), &encode(hard_state))?;
        self.hard_state = hard_state;
        self.on_disk = true;
        Ok(())
    }
}

/// Reads at most one byte more than a valid file holds, so a huge file is
/// rejected by its length without reading it all.
fn read_bounded(file: File, path: &Path) -> Result<Vec<u8>, StorageError> {
    let mut buf = Vec::with_capacity(LEN + 1);
    file.take(LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let hs = HardState {
            term: 0x0102_0304_0506_0708,
            vote: 3,
        };
        let buf = encode(hs);
        assert_eq!(&buf[0..4], b"RKHS");
        assert_eq!(decode(&buf, Path::new("x")).ok(), Some(hs));
    }

    #[test]
    fn every_byte_flip_is_an_error() {
        let buf = encode(HardState { term: 9, vote: 2 });
        for at in 0..LEN {
            let mut bad = buf;
            bad[at] ^= 0x40;
            let err = decode(&bad, Path::new("dir/stable")).expect_err("flip must be caught");
            assert!(err.to_string().contains("dir/stable"), "{}", err);
        }
    }

    /// A stable file as `encode` writes it, but holding any term.
    fn with_term(term: u64) -> [u8; LEN] {
        let mut buf = encode(HardState { term: 1, vote: 1 });
        BigEndian::write_u64(&mut buf[8..16], term);
        let crc = crc32fast::hash(&buf[0..24]);
        BigEndian::write_u32(&mut buf[24..28], crc);
        buf
    }

    #[test]
    fn a_term_above_the_highest_is_an_error_even_with_a_good_crc() {
        // What a node that took `MAX_TERM` from a peer writes after its
        // next campaign: it must start from it.
        let counted_up = HardState {
            term: crate::raft::MAX_TERM + 1,
            vote: 1,
        };
        assert_eq!(
            decode(&encode(counted_up), Path::new("s")).ok(),
            Some(counted_up)
        );
        assert!(decode(&with_term(MAX_STORED_TERM), Path::new("s")).is_ok());
        for term in [MAX_STORED_TERM + 1, u64::MAX] {
            let err = decode(&with_term(term), Path::new("dir/stable"))
                .expect_err("a term the core could wrap");
            let text = err.to_string();
            assert!(
                text.contains("dir/stable") && text.contains("offset 8"),
                "{text}"
            );
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        let buf = encode(HardState { term: 1, vote: 1 });
        assert!(decode(&buf[..LEN - 1], Path::new("s")).is_err());
        assert!(decode(&[], Path::new("s")).is_err());
    }
}
