//! What travels on a peer connection after the handshake, and its frame bodies.
//!
//! (Helper E: replace the stubs; keep the public API.)

use super::frame::FrameError;
use crate::kv::Reply;
use crate::raft::Message;

/// One peer frame's content after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    Raft(Message),
    /// A follower relays a client request to the leader. `payload` is an
    /// encoded [`crate::kv::Command`] (opaque here); `id` is chosen by the
    /// follower and comes back in the reply.
    Forward {
        id: u64,
        payload: Vec<u8>,
    },
    ForwardReply {
        id: u64,
        reply: Reply,
    },
    /// One piece of a snapshot being streamed to a follower.
    SnapshotChunk {
        snapshot_index: u64,
        snapshot_term: u64,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
}

impl PeerMessage {
    /// Appends `self` as one whole frame to `out`.
    pub fn encode(&self, _out: &mut Vec<u8>) {
        todo!()
    }
    /// Decodes a frame body of the given kind (not a handshake).
    pub fn decode(_kind: super::frame::FrameKind, _body: &[u8]) -> Result<PeerMessage, FrameError> {
        todo!()
    }
}
