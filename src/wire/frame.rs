//! Peer frames: `u32 length | u32 crc32 | u8 kind | body`, big-endian, with a
//! maximum length; and the handshake that opens every peer connection.
//!
//! (Helper E: replace the stubs; keep the public API.)

use crate::raft::NodeId;
use std::fmt;

/// Largest frame body accepted (a snapshot chunk or a batch of entries fits well).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Handshake = 1,
    Raft = 2,
    Forward = 3,
    ForwardReply = 4,
    SnapshotChunk = 5,
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

/// Appends one frame to `out`: reserves the header, lets `write_body` append the
/// body, then fills in length and CRC. Returns the frame's total size.
pub fn encode_frame(
    _kind: FrameKind,
    _out: &mut Vec<u8>,
    _write_body: impl FnOnce(&mut Vec<u8>),
) -> usize {
    todo!()
}

/// Decodes the frame at the front of `input`: `Ok(Some((kind, body, used)))`,
/// `Ok(None)` if incomplete, or an error (the connection is then closed).
pub fn decode_frame(
    _input: &[u8],
    _max: usize,
) -> Result<Option<(FrameKind, &[u8], usize)>, FrameError> {
    todo!()
}

/// The first frame the dialing side sends on a peer connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub version: u16,
    pub cluster_name: String,
    /// The dialer's id.
    pub from: NodeId,
    /// The id the dialer expects to reach.
    pub to: NodeId,
    /// The dialer's raft address and client address, as configured.
    pub raft_addr: String,
    pub client_addr: String,
}

pub const PROTOCOL_VERSION: u16 = 1;

impl Handshake {
    /// Appends the handshake as a whole frame (magic `RKV1` first in the body).
    pub fn encode(&self, _out: &mut Vec<u8>) {
        todo!()
    }
    /// Decodes a handshake frame body (checks the magic).
    pub fn decode(_body: &[u8]) -> Result<Handshake, FrameError> {
        todo!()
    }
}
