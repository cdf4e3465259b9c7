//! Peer frames: `u32 length | u32 crc32 | u8 kind | body`, big-endian, with a
//! maximum length; and the handshake that opens every peer connection.
//!
//! ```text
//! offset 0   u32  length   bytes of body (NOT counting these 9 header bytes)
//! offset 4   u32  crc32    CRC-32 (IEEE, crc32fast) of kind and body
//! offset 8   u8   kind     FrameKind
//! offset 9   body          `length` bytes
//! ```
//!
//! A frame therefore occupies `HEADER_BYTES + length` bytes. The decoder
//! rejects a length above the caller's limits ([`FrameLimits`]) as soon as the
//! header is in, before it waits for (or anyone allocates) the body; then it
//! checks the CRC, then the kind. Any of these errors means the stream can no
//! longer be framed, so the connection is closed.
//!
//! Inside bodies, integers are big-endian, a bool is one byte 0 or 1, and bytes
//! and strings are `u32 length | bytes` (strings UTF-8). Every length and count
//! is checked against the bytes that remain before anything is allocated, and a
//! body with bytes left over after its last field is malformed.

#[path = "frame_body.rs"]
mod body;
#[path = "frame_handshake.rs"]
mod handshake;

use crate::kv::MAX_REPLY_VALUE_BYTES;
pub(crate) use body::{length_u32, put_bytes, put_u16, put_u32, put_u64, put_u8, Reader};
use byteorder::{BigEndian, ByteOrder};
pub use handshake::{
    decode_refusal, encode_refusal, Handshake, HANDSHAKE_MAGIC, MAX_REFUSAL_BYTES, PROTOCOL_VERSION,
};
use std::fmt;

/// Largest frame body accepted but for a relayed reply (a snapshot chunk, a
/// batch of entries, a forwarded request: requests are bounded by
/// `max_request_bytes`, transactions by its highest setting, below this).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Largest ForwardReply body accepted from a peer that completed the
/// handshake. A follower must relay whatever the leader would answer its own
/// client, and that is bounded only by the values a reply may carry
/// ([`MAX_REPLY_VALUE_BYTES`]) plus what surrounds them: bulk and array
/// headers, nils, integers, error texts. Those come to at most a few bytes per
/// byte of the request answered (5 per key of an inline `MGET`, which costs 2;
/// an error of under 64 bytes per command in a transaction, which counts at
/// least 32 against the transaction's limit), and a request is smaller than
/// [`MAX_FRAME_BYTES`]: 8 frames' worth leaves three times the room needed.
pub const MAX_FORWARD_REPLY_BYTES: usize = MAX_REPLY_VALUE_BYTES + 8 * MAX_FRAME_BYTES;

/// Bytes before the body: length, CRC and kind.
pub const HEADER_BYTES: usize = 9;

/// The largest body a connection accepts, by frame kind.
///
/// Why only ForwardReply gets more, and only after the handshake: the limit is
/// what a peer can make this node buffer by merely declaring a length, so a
/// connection that has not yet named this node's cluster gets no more than
/// any frame needs, and a member gets more only for the one kind that no
/// sender can keep small (a reply is as large as what the client asked
/// for). Why one large frame rather than a reply cut
/// into chunks: the follower holds the whole reply before it answers either
/// way, and chunks would add a frame kind, reassembly state for each reply
/// and a limit on that state, to end up buffering the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    pub forward_reply: usize,
    /// Every other kind, and a kind byte that names none (refused once the
    /// frame is in and its CRC checked).
    pub other: usize,
}

impl FrameLimits {
    /// Before the handshake, and on connections that receive nothing large.
    pub const UNIDENTIFIED: FrameLimits = FrameLimits::uniform(MAX_FRAME_BYTES);
    /// From a peer whose handshake was accepted.
    pub const MEMBER: FrameLimits = FrameLimits {
        forward_reply: MAX_FORWARD_REPLY_BYTES,
        other: MAX_FRAME_BYTES,
    };

    pub const fn uniform(max: usize) -> FrameLimits {
        FrameLimits {
            forward_reply: max,
            other: max,
        }
    }

    fn for_kind(&self, kind: u8) -> usize {
        if kind == FrameKind::ForwardReply as u8 {
            self.forward_reply
        } else {
            self.other
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Handshake = 1,
    Raft = 2,
    Forward = 3,
    ForwardReply = 4,
    SnapshotChunk = 5,
    /// Why an acceptor turned a handshake down, sent just before it closes
    /// the connection, so that the dialer can log it too. An older build
    /// that does not know the kind closes the connection as it would anyway.
    Refusal = 6,
    /// A node about to exit tells each peer which of its forwards it never
    /// read (`PeerMessage::Stopping`). An older build that does not know
    /// the kind closes the connection, which the sender is about to do.
    Stopping = 7,
}

impl FrameKind {
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Handshake),
            2 => Some(FrameKind::Raft),
            3 => Some(FrameKind::Forward),
            4 => Some(FrameKind::ForwardReply),
            5 => Some(FrameKind::SnapshotChunk),
            6 => Some(FrameKind::Refusal),
            7 => Some(FrameKind::Stopping),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLong {
        length: usize,
        max: usize,
    },
    BadCrc,
    UnknownKind(u8),
    /// A body that does not decode as its kind says.
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { length, max } => {
                write!(f, "frame of {} bytes exceeds the limit of {}", length, max)
            }
            FrameError::BadCrc => write!(f, "frame fails its CRC"),
            FrameError::UnknownKind(kind) => write!(f, "unknown frame kind {}", kind),
            FrameError::Malformed(what) => write!(f, "malformed frame: {}", what),
        }
    }
}

impl std::error::Error for FrameError {}

/// A whole frame found at the front of a buffer: its kind, its body (borrowed
/// from the buffer) and how many bytes of the buffer it used.
pub type DecodedFrame<'a> = (FrameKind, &'a [u8], usize);

/// Appends one frame to `out`: reserves the header, lets `write_body` append the
/// body, then fills in length and CRC. Returns the frame's total size.
///
/// The body is written in place, so encoding copies nothing twice. The length is
/// not checked against [`MAX_FRAME_BYTES`] here: the receiver's limit applies.
pub fn encode_frame(
    kind: FrameKind,
    out: &mut Vec<u8>,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out[start + 8] = kind as u8;
    write_body(out);
    let total = out.len() - start;
    let length = u32::try_from(total - HEADER_BYTES)
        .unwrap_or_else(|_| panic!("frame body of {} bytes overflows u32", total - HEADER_BYTES));
    let crc = crc32fast::hash(&out[start + 8..]);
    BigEndian::write_u32(&mut out[start..start + 4], length);
    BigEndian::write_u32(&mut out[start + 4..start + 8], crc);
    total
}

/// Decodes the frame at the front of `input`: `Ok(Some((kind, body, used)))`,
/// `Ok(None)` if incomplete, or an error (the connection is then closed).
///
/// A length is checked as soon as it is in: against the largest limit, then,
/// once the kind byte is in too, against its kind's. The kind byte is not yet
/// covered by the CRC then; it only decides how much to wait for, and a frame
/// that lied about it fails its CRC when whole.
pub fn decode_frame(
    input: &[u8],
    limits: FrameLimits,
) -> Result<Option<DecodedFrame<'_>>, FrameError> {
    if input.len() < 4 {
        return Ok(None);
    }
    let length = BigEndian::read_u32(&input[..4]) as usize;
    let max = match input.get(8) {
        Some(&kind) => limits.for_kind(kind),
        None => limits.forward_reply.max(limits.other),
    };
    if length > max {
        return Err(FrameError::TooLong { length, max });
    }
    let total = HEADER_BYTES + length;
    if input.len() < total {
        return Ok(None);
    }
    let crc = BigEndian::read_u32(&input[4..8]);
    if crc32fast::hash(&input[8..total]) != crc {
        return Err(FrameError::BadCrc);
    }
    let kind = FrameKind::from_u8(input[8]).ok_or(FrameError::UnknownKind(input[8]))?;
    Ok(Some((kind, &input[HEADER_BYTES..total], total)))
}

/// The whole size of the frame at the front of `input`, header included, once
/// its length is in. Only for input [`decode_frame`] found incomplete, so that
/// the length has passed the limits.
pub fn declared_size(input: &[u8]) -> Option<usize> {
    let length = input.get(..4).map(BigEndian::read_u32)?;
    Some(HEADER_BYTES + length as usize)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
