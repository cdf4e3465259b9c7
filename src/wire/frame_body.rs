//! The field codec inside frame bodies (layout in the parent's doc): the
//! `put_*` writers and the bounds-checked [`Reader`], shared by the handshake
//! and by every peer message. Separate because it knows nothing of frames.

use super::FrameError;
use byteorder::{BigEndian, ByteOrder};

pub(crate) fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub(crate) fn put_u16(out: &mut Vec<u8>, value: u16) {
    let mut buf = [0; 2];
    BigEndian::write_u16(&mut buf, value);
    out.extend_from_slice(&buf);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    let mut buf = [0; 4];
    BigEndian::write_u32(&mut buf, value);
    out.extend_from_slice(&buf);
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    let mut buf = [0; 8];
    BigEndian::write_u64(&mut buf, value);
    out.extend_from_slice(&buf);
}

/// `u32 length | bytes`.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, length_u32(bytes.len()));
    out.extend_from_slice(bytes);
}

/// A count or length as the `u32` the format stores; a larger one could never
/// fit in a frame, so it is a caller's bug.
pub(crate) fn length_u32(length: usize) -> u32 {
    u32::try_from(length).unwrap_or_else(|_| panic!("length {length} does not fit a frame"))
}

/// Reads fields off the front of a frame body; every read checks what remains,
/// and errors name the field.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Reader<'a> {
        Reader { rest: body }
    }

    /// What is left to read.
    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], FrameError> {
        if n > self.rest.len() {
            return Err(FrameError::Malformed(format!(
                "{field} needs {n} bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, FrameError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn bool(&mut self, field: &str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(FrameError::Malformed(format!(
                "{field} is {other}, not a bool"
            ))),
        }
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, FrameError> {
        Ok(BigEndian::read_u16(self.take(2, field)?))
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, FrameError> {
        Ok(BigEndian::read_u32(self.take(4, field)?))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, FrameError> {
        Ok(BigEndian::read_u64(self.take(8, field)?))
    }

    /// A `u32` count of items each at least `min_item_bytes` long, checked
    /// against what remains so that a lying count cannot make anyone allocate.
    pub(crate) fn count(
        &mut self,
        min_item_bytes: usize,
        field: &str,
    ) -> Result<usize, FrameError> {
        let count = self.u32(field)? as usize;
        if count.saturating_mul(min_item_bytes) > self.rest.len() {
            return Err(FrameError::Malformed(format!(
                "{field} count {count} exceeds the {} bytes left",
                self.rest.len()
            )));
        }
        Ok(count)
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<&'a [u8], FrameError> {
        let length = self.u32(field)? as usize;
        self.take(length, field)
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, FrameError> {
        let bytes = self.bytes(field)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(_) => Err(FrameError::Malformed(format!("{field} is not UTF-8"))),
        }
    }

    /// Fails if bytes are left over after the last field.
    pub(crate) fn finish(&self, what: &str) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(format!(
                "{} bytes left over after the {what}",
                self.rest.len()
            )))
        }
    }
}
