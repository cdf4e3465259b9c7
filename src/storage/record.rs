//! The log record layout: encode into and decode from byte slices. Pure; the
//! segment decides where the bytes live.

use crate::raft::{Entry, EntryKind};
use byteorder::{BigEndian, ByteOrder};

/// `length` and `crc32`: the part of a record the CRC does not cover.
pub const HEADER_BYTES: usize = 8;
/// `index`, `term` and `kind`: the fixed part the CRC covers.
pub const FIXED_BYTES: usize = 17;
/// The largest payload a record can carry (`length` is a `u32`).
pub const MAX_PAYLOAD_BYTES: usize = u32::MAX as usize - FIXED_BYTES;

/// Bytes a record with `payload_len` payload bytes takes in a segment.
pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_BYTES + FIXED_BYTES + payload_len
}

/// Writes `entry` as one record at the start of `buf` and returns its length.
///
/// The layout, all integers big-endian:
///
/// ```text
/// offset size field
///      0    4 length   bytes after the crc field: 17 + payload length
///      4    4 crc32    CRC-32 (IEEE, crc32fast) of those `length` bytes
///      8    8 index    Raft log index
///     16    8 term     Raft term of the entry
///     24    1 kind     raft::EntryKind as u8
///     25    n payload  entry data, opaque here
/// ```
///
/// A `length` of zero means "no record": segments are preallocated with
/// zeros, so the first zero length marks the end of the written part. The CRC
/// covers the length implicitly: a damaged length makes it cover the wrong bytes.
///
/// # Panics
/// If `buf` is shorter than `encoded_len(entry.data.len())` or the payload is
/// larger than [`MAX_PAYLOAD_BYTES`]; callers check both first.
pub fn encode(entry: &Entry, buf: &mut [u8]) -> usize {
    let total = encoded_len(entry.data.len());
    assert!(
        entry.data.len() <= MAX_PAYLOAD_BYTES,
        "payload of entry {} is {} bytes, more than a record holds",
        entry.index,
        entry.data.len()
    );
    assert!(
        buf.len() >= total,
        "record of {} bytes does not fit in {} bytes",
        total,
        buf.len()
    );
    let body_len = total - HEADER_BYTES;
    BigEndian::write_u32(&mut buf[0..4], body_len as u32);
    BigEndian::write_u64(&mut buf[8..16], entry.index);
    BigEndian::write_u64(&mut buf[16..24], entry.term);
    buf[24] = entry.kind as u8;
    buf[25..total].copy_from_slice(&entry.data);
    let crc = crc32fast::hash(&buf[HEADER_BYTES..total]);
    BigEndian::write_u32(&mut buf[4..8], crc);
    if cfg!(debug_assertions) {
        match decode(&buf[..total]) {
            Ok(view) => assert!(
                view.index == entry.index
                    && view.term == entry.term
                    && view.kind == entry.kind
                    && view.payload == &entry.data[..]
                    && view.len == total,
                "record of entry {:?} does not decode to itself: {:?}",
                entry,
                view
            ),
            Err(err) => panic!("record of entry {:?} fails to decode: {:?}", entry, err),
        }
    }
    total
}

/// A record decoded in place: the payload borrows the segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    pub payload: &'a [u8],
    /// Bytes the whole record takes, header included.
    pub len: usize,
}

impl RecordView<'_> {
    pub fn to_entry(&self) -> Entry {
        Entry {
            index: self.index,
            term: self.term,
            kind: self.kind,
            data: self.payload.into(),
        }
    }
}

/// Why no record could be decoded at some position.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The length field is zero: nothing was written here.
    Empty,
    /// Fewer than [`HEADER_BYTES`] bytes remain.
    ShortHeader { available: usize },
    /// The length is below the fixed fields or beyond the bytes available.
    BadLength { length: u32, available: usize },
    /// The length fits but the CRC does not match.
    BadCrc {
        stored: u32,
        computed: u32,
        len: usize,
    },
    /// The CRC matches but the kind byte is unknown.
    BadKind { kind: u8, len: usize },
}

impl RecordError {
    /// Bytes the damaged record claims, as far as they can be trusted: the
    /// whole record when its length fits, the header when it does not, and
    /// nothing when no record starts here.
    pub fn claimed_len(&self) -> usize {
        match *self {
            RecordError::Empty | RecordError::ShortHeader { .. } => 0,
            RecordError::BadLength { .. } => HEADER_BYTES,
            RecordError::BadCrc { len, .. } | RecordError::BadKind { len, .. } => len,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RecordError::Empty => "no record (zero length)".to_string(),
            RecordError::ShortHeader { available } => {
                format!("{} bytes left, too few for a record header", available)
            }
            RecordError::BadLength { length, available } if (*length as usize) < FIXED_BYTES => {
                format!(
                    "record length {} is impossible (at least {} needed; {} bytes left)",
                    length, FIXED_BYTES, available
                )
            }
            RecordError::BadLength { length, available } => format!(
                "record length {} runs past the end of the file ({} bytes left)",
                length, available
            ),
            RecordError::BadCrc {
                stored, computed, ..
            } => format!(
                "record crc {:#010x} does not match computed {:#010x}",
                stored, computed
            ),
            RecordError::BadKind { kind, .. } => format!("record kind {} is unknown", kind),
        }
    }
}

/// Decodes the record at the start of `buf`. Checks the length against
/// `buf.len()` before touching the payload, and the CRC before trusting any field.
pub fn decode(buf: &[u8]) -> Result<RecordView<'_>, RecordError> {
    if buf.len() < HEADER_BYTES {
        return Err(RecordError::ShortHeader {
            available: buf.len(),
        });
    }
    let length = BigEndian::read_u32(&buf[0..4]);
    if length == 0 {
        return Err(RecordError::Empty);
    }
    let available = buf.len() - HEADER_BYTES;
    if (length as usize) < FIXED_BYTES || length as usize > available {
        return Err(RecordError::BadLength { length, available });
    }
    let len = HEADER_BYTES + length as usize;
    let stored = BigEndian::read_u32(&buf[4..8]);
    let computed = crc32fast::hash(&buf[HEADER_BYTES..len]);
    if stored != computed {
        return Err(RecordError::BadCrc {
            stored,
            computed,
            len,
        });
    }
    let kind = EntryKind::from_u8(buf[24]).ok_or(RecordError::BadKind { kind: buf[24], len })?;
    Ok(RecordView {
        index: BigEndian::read_u64(&buf[8..16]),
        term: BigEndian::read_u64(&buf[16..24]),
        kind,
        payload: &buf[25..len],
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, kind: EntryKind, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            kind,
            data: data.to_vec().into(),
        }
    }

    fn encoded(e: &Entry) -> Vec<u8> {
        let mut buf = vec![0u8; encoded_len(e.data.len())];
        let n = encode(e, &mut buf);
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn round_trip_all_kinds_and_sizes() {
        for (i, kind) in [EntryKind::Normal, EntryKind::Noop, EntryKind::ConfChange]
            .into_iter()
            .enumerate()
        {
            for len in [0usize, 1, 7, 100, 4096] {
                let data: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
                let e = entry(u64::MAX - i as u64, 7 + i as u64, kind, &data);
                let buf = encoded(&e);
                let view = decode(&buf).expect("fresh record decodes");
                assert_eq!(view.to_entry(), e);
                assert_eq!(view.len, buf.len());
            }
        }
    }

    #[test]
    fn layout_is_big_endian_as_documented() {
        let buf = encoded(&entry(0x0102, 0x0304, EntryKind::Noop, b"xy"));
        assert_eq!(&buf[0..4], &[0, 0, 0, 19]);
        assert_eq!(&buf[8..16], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&buf[16..24], &[0, 0, 0, 0, 0, 0, 3, 4]);
        assert_eq!(buf[24], 1);
        assert_eq!(&buf[25..], b"xy");
        assert_eq!(BigEndian::read_u32(&buf[4..8]), crc32fast::hash(&buf[8..]));
    }

    #[test]
    fn decodes_only_its_own_length_from_a_longer_buffer() {
        let mut buf = encoded(&entry(5, 1, EntryKind::Normal, b"abc"));
        let len = buf.len();
        buf.extend_from_slice(&[0xff; 10]);
        let view = decode(&buf).expect("record then garbage still decodes");
        assert_eq!(view.len, len);
        assert_eq!(view.payload, b"abc");
    }

    #[test]
    fn zero_bytes_are_empty_and_short_buffers_are_short() {
        assert_eq!(decode(&[0u8; 64]), Err(RecordError::Empty));
        assert_eq!(
            decode(&[0u8; 5]),
            Err(RecordError::ShortHeader { available: 5 })
        );
    }

    #[test]
    fn every_truncation_is_rejected_before_reading_past_the_end() {
        let buf = encoded(&entry(9, 2, EntryKind::Normal, &[0xab; 40]));
        for cut in 0..buf.len() {
            let err = decode(&buf[..cut]).expect_err("a cut record must not decode");
            match err {
                RecordError::ShortHeader { .. } | RecordError::BadLength { .. } => {}
                other => panic!("cut at {} gave {:?}", cut, other),
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = encoded(&entry(3, 4, EntryKind::ConfChange, b"membership"));
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of bit {} in byte {} went unnoticed",
                    bit,
                    byte
                );
            }
        }
    }

    #[test]
    fn impossible_lengths_are_bad_lengths() {
        let mut buf = vec![0u8; 40];
        BigEndian::write_u32(&mut buf[0..4], 16);
        assert_eq!(
            decode(&buf),
            Err(RecordError::BadLength {
                length: 16,
                available: 32
            })
        );
        BigEndian::write_u32(&mut buf[0..4], u32::MAX);
        assert!(matches!(decode(&buf), Err(RecordError::BadLength { .. })));
        assert_eq!(
            decode(&buf).unwrap_err().claimed_len(),
            HEADER_BYTES,
            "an untrusted length claims only the header"
        );
    }

    #[test]
    fn unknown_kind_with_valid_crc_is_bad_kind() {
        let mut buf = encoded(&entry(1, 1, EntryKind::Normal, b"z"));
        buf[24] = 9;
        let crc = crc32fast::hash(&buf[8..]);
        BigEndian::write_u32(&mut buf[4..8], crc);
        assert_eq!(
            decode(&buf),
            Err(RecordError::BadKind {
                kind: 9,
                len: buf.len()
            })
        );
    }
}
