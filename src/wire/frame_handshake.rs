//! The handshake that opens every peer connection, and the refusal an
//! acceptor sends when it turns one down. Separate from the framing itself:
//! these are the bodies of two frame kinds, encoded like any other.

use super::{encode_frame, put_bytes, put_u16, put_u64, FrameError, FrameKind, Reader};
use crate::raft::NodeId;

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
