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

use crate::kv::MAX_REPLY_VALUE_BYTES;
use crate::raft::NodeId;
use byteorder::{BigEndian, ByteOrder};
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

/// The first bytes of a handshake body.
pub const HANDSHAKE_MAGIC: &[u8; 4] = b"RKV1";

impl Handshake {
    /// Appends the handshake as a whole frame (magic `RKV1` first in the body).
    ///
    /// Body: `magic[4] | version u16 | cluster_name str | from u64 | to u64 |
    /// raft_addr str | client_addr str`. Only magic and version are fixed for
    /// all versions; the rest is version 1's layout.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(FrameKind::Handshake, out, |out| {
            out.extend_from_slice(HANDSHAKE_MAGIC);
            put_u16(out, self.version);
            put_bytes(out, self.cluster_name.as_bytes());
            put_u64(out, self.from);
            put_u64(out, self.to);
            put_bytes(out, self.raft_addr.as_bytes());
            put_bytes(out, self.client_addr.as_bytes());
        });
    }

    /// Decodes a handshake frame body (checks the magic). A version other than
    /// [`PROTOCOL_VERSION`] is an error naming both versions, since the fields
    /// after it may be laid out differently.
    pub fn decode(body: &[u8]) -> Result<Handshake, FrameError> {
        let mut reader = Reader::new(body);
        if reader.take(4, "magic")? != HANDSHAKE_MAGIC {
            return Err(FrameError::Malformed(
                "handshake does not start with RKV1".to_string(),
            ));
        }
        let version = reader.u16("version")?;
        if version != PROTOCOL_VERSION {
            return Err(FrameError::Malformed(format!(
                "peer speaks protocol version {version}, this node {PROTOCOL_VERSION}"
            )));
        }
        let handshake = Handshake {
            version,
            cluster_name: reader.string("cluster_name")?,
            from: reader.u64("from")?,
            to: reader.u64("to")?,
            raft_addr: reader.string("raft_addr")?,
            client_addr: reader.string("client_addr")?,
        };
        reader.finish("handshake")?;
        Ok(handshake)
    }
}

/// The longest reason a refusal carries; a longer one is cut at a character
/// boundary.
pub const MAX_REFUSAL_BYTES: usize = 512;

/// Appends a refusal frame: `reason str`.
pub fn encode_refusal(reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_REFUSAL_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_frame(FrameKind::Refusal, out, |out| {
        put_bytes(out, &reason.as_bytes()[..end])
    });
}

/// The reason in a refusal frame's body.
pub fn decode_refusal(body: &[u8]) -> Result<String, FrameError> {
    let mut reader = Reader::new(body);
    let reason = reader.string("reason")?;
    reader.finish("refusal")?;
    Ok(reason)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let size = encode_frame(kind, &mut out, |out| out.extend_from_slice(body));
        assert_eq!(size, out.len());
        out
    }

    #[test]
    fn layout_is_length_crc_kind_body() {
        let out = frame(FrameKind::Forward, b"hello");
        assert_eq!(&out[0..4], &[0, 0, 0, 5], "length counts the body only");
        let crc = crc32fast::hash(&[3, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(&out[4..8], &crc.to_be_bytes());
        assert_eq!(out[8], 3);
        assert_eq!(&out[9..], b"hello");
        // Appends after what is already in the buffer.
        let mut two = out.clone();
        encode_frame(FrameKind::Raft, &mut two, |_| {});
        assert_eq!(two.len(), out.len() + HEADER_BYTES);
        assert_eq!(
            decode_frame(&two[out.len()..], FrameLimits::UNIDENTIFIED),
            Ok(Some((FrameKind::Raft, &[][..], HEADER_BYTES)))
        );
    }

    #[test]
    fn decodes_one_frame_from_the_front() {
        let mut input = frame(FrameKind::SnapshotChunk, b"abc");
        let first = input.len();
        input.extend_from_slice(&frame(FrameKind::Raft, b"xy"));
        assert_eq!(
            decode_frame(&input, FrameLimits::uniform(3)),
            Ok(Some((FrameKind::SnapshotChunk, &b"abc"[..], first)))
        );
        assert_eq!(
            decode_frame(&input[first..], FrameLimits::uniform(3)),
            Ok(Some((FrameKind::Raft, &b"xy"[..], HEADER_BYTES + 2)))
        );
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let input = frame(FrameKind::ForwardReply, b"0123456789");
        for cut in 0..input.len() {
            assert_eq!(
                decode_frame(&input[..cut], FrameLimits::UNIDENTIFIED),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn too_long_is_rejected_from_the_length_alone() {
        // Only the 4 length bytes have arrived: no waiting for a 4 GiB body.
        let input = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_frame(&input, FrameLimits::UNIDENTIFIED),
            Err(FrameError::TooLong {
                length: u32::MAX as usize,
                max: MAX_FRAME_BYTES
            })
        );
        let input = frame(FrameKind::Raft, &[7; 11]);
        assert_eq!(
            decode_frame(&input[..4], FrameLimits::uniform(10)),
            Err(FrameError::TooLong {
                length: 11,
                max: 10
            })
        );
        assert!(decode_frame(&input, FrameLimits::uniform(11))
            .unwrap()
            .is_some());
    }

    fn header(kind: u8, length: usize) -> Vec<u8> {
        let mut header = vec![0; HEADER_BYTES];
        BigEndian::write_u32(&mut header[..4], length_u32(length));
        header[8] = kind;
        header
    }

    #[test]
    fn only_a_members_forward_reply_may_pass_the_frame_limit() {
        let reply = FrameKind::ForwardReply as u8;
        let big = MAX_FRAME_BYTES + 1;
        let too_long = |length, max| Err(FrameError::TooLong { length, max });
        // Before the handshake, refused from the length alone, whatever the kind.
        for kind in [reply, FrameKind::Handshake as u8] {
            let input = header(kind, big);
            assert_eq!(
                decode_frame(&input[..4], FrameLimits::UNIDENTIFIED),
                too_long(big, MAX_FRAME_BYTES)
            );
        }
        // From a member: a relayed reply that large is waited for...
        let input = header(reply, big);
        for cut in [4, HEADER_BYTES] {
            assert_eq!(decode_frame(&input[..cut], FrameLimits::MEMBER), Ok(None));
        }
        let input = header(reply, MAX_FORWARD_REPLY_BYTES);
        assert_eq!(decode_frame(&input, FrameLimits::MEMBER), Ok(None));
        // ...but not one past its own limit, refused from the length alone.
        let input = header(reply, MAX_FORWARD_REPLY_BYTES + 1);
        assert_eq!(
            decode_frame(&input[..4], FrameLimits::MEMBER),
            too_long(MAX_FORWARD_REPLY_BYTES + 1, MAX_FORWARD_REPLY_BYTES)
        );
        // Any other kind (or none) is refused once its kind byte is in.
        for kind in [1, 2, 3, 5, 0, 99] {
            let input = header(kind, big);
            assert_eq!(decode_frame(&input[..4], FrameLimits::MEMBER), Ok(None));
            assert_eq!(
                decode_frame(&input, FrameLimits::MEMBER),
                too_long(big, MAX_FRAME_BYTES),
                "kind {kind}"
            );
        }
    }

    #[test]
    fn a_kind_byte_that_claims_the_larger_limit_still_fails_the_crc() {
        let limits = FrameLimits {
            forward_reply: 20,
            other: 10,
        };
        let input = frame(FrameKind::ForwardReply, &[1; 20]);
        assert_eq!(
            decode_frame(&input, limits),
            Ok(Some((FrameKind::ForwardReply, &[1; 20][..], input.len())))
        );
        let input = frame(FrameKind::Raft, &[1; 20]);
        assert_eq!(
            decode_frame(&input, limits),
            Err(FrameError::TooLong {
                length: 20,
                max: 10
            })
        );
        let mut forged = input.clone();
        forged[8] = FrameKind::ForwardReply as u8;
        assert_eq!(decode_frame(&forged[..15], limits), Ok(None));
        assert_eq!(decode_frame(&forged, limits), Err(FrameError::BadCrc));
    }

    #[test]
    fn declared_size_counts_the_header() {
        assert_eq!(declared_size(&[0, 0, 1]), None);
        assert_eq!(declared_size(&header(2, 300)[..4]), Some(309));
    }

    #[test]
    fn any_changed_byte_after_the_length_fails_the_crc() {
        let input = frame(FrameKind::Raft, b"some body bytes");
        for at in 4..input.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = input.clone();
                bad[at] ^= flip;
                assert_eq!(
                    decode_frame(&bad, FrameLimits::UNIDENTIFIED),
                    Err(FrameError::BadCrc),
                    "byte {at} ^ {flip:#x}"
                );
            }
        }
    }

    #[test]
    fn unknown_kind_is_checked_after_the_crc() {
        let mut input = frame(FrameKind::Raft, b"x");
        input[8] = 99;
        let crc = crc32fast::hash(&input[8..]);
        input[4..8].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            decode_frame(&input, FrameLimits::UNIDENTIFIED),
            Err(FrameError::UnknownKind(99))
        );
        assert_eq!(
            FrameError::UnknownKind(99).to_string(),
            "unknown frame kind 99"
        );
    }

    fn handshake() -> Handshake {
        Handshake {
            version: PROTOCOL_VERSION,
            cluster_name: "raftkv".to_string(),
            from: 2,
            to: 1,
            raft_addr: "127.0.0.1:7002".to_string(),
            client_addr: "[::1]:6382".to_string(),
        }
    }

    #[test]
    fn handshake_round_trips_as_a_frame() {
        let mut out = Vec::new();
        handshake().encode(&mut out);
        let (kind, body, used) = decode_frame(&out, FrameLimits::UNIDENTIFIED)
            .unwrap()
            .unwrap();
        assert_eq!((kind, used), (FrameKind::Handshake, out.len()));
        assert_eq!(&body[..4], b"RKV1");
        assert_eq!(Handshake::decode(body), Ok(handshake()));
    }

    #[test]
    fn handshake_rejects_bad_magic_version_utf8_and_trailing_bytes() {
        let mut out = Vec::new();
        handshake().encode(&mut out);
        let body = out[HEADER_BYTES..].to_vec();
        let malformed = |body: &[u8]| match Handshake::decode(body) {
            Err(FrameError::Malformed(why)) => why,
            other => panic!("expected malformed, got {other:?}"),
        };
        let mut bad = body.clone();
        bad[0] = b'X';
        assert_eq!(malformed(&bad), "handshake does not start with RKV1");
        let mut bad = body.clone();
        bad[5] = 2;
        assert_eq!(
            malformed(&bad),
            "peer speaks protocol version 2, this node 1"
        );
        let mut bad = body.clone();
        bad[10] = 0xff; // first byte of cluster_name
        assert_eq!(malformed(&bad), "cluster_name is not UTF-8");
        let mut bad = body.clone();
        bad.push(0);
        assert_eq!(malformed(&bad), "1 bytes left over after the handshake");
        for cut in 0..body.len() {
            assert!(Handshake::decode(&body[..cut]).is_err(), "cut {cut}");
        }
    }

    proptest! {
        #[test]
        fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..40) {
            if let Ok(Some((_, body, used))) = decode_frame(&input, FrameLimits::uniform(max)) {
                prop_assert!(used <= input.len());
                prop_assert_eq!(body.len() + HEADER_BYTES, used);
            }
            let _ = Handshake::decode(&input);
        }
    }
}
