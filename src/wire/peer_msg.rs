//! What travels on a peer connection after the handshake, and its frame bodies.
//!
//! Layouts (field types as in `frame`: big-endian integers, bool = 1 byte 0/1,
//! `bytes`/`str` = `u32 length | data`, `[T]` = `u32 count | T...`):
//!
//! ```text
//! Raft           from u64 | to u64 | term u64 | tag u8 | fields of the tag:
//!   1 RequestVote          pre_vote bool | last_index u64 | last_term u64 | transfer bool
//!   2 RequestVoteResponse  pre_vote bool | granted bool
//!   3 Append               prev_index u64 | prev_term u64 | commit u64 | [entry]
//!                          entry = index u64 | term u64 | kind u8 | data bytes
//!                          (a ConfChange entry's data must decode as one,
//!                          see `raft::conf_change`)
//!   4 AppendResponse       success bool | index u64 | hint_index u64 | hint_term u64
//!   5 Heartbeat            commit u64 | read_round u64
//!   6 HeartbeatResponse    read_round u64
//!   7 TimeoutNow           (nothing)
//!   8 InstallSnapshot      index u64 | term u64 | voters [u64] | learners [u64]
//! Forward        id u64 | payload bytes
//! ForwardReply   id u64 | reply
//!   reply = tag u8 | 0 Ok | 1 Status str | 2 Error str | 3 Integer i64 |
//!           4 Bulk bytes | 5 Nil | 6 Array [reply] | 7 Map [reply reply]
//! SnapshotChunk  snapshot_index u64 | snapshot_term u64 | offset u64 | total u64 | data bytes
//! Stopping       first_unread_forward u64
//! ```

use super::frame::{
    encode_frame, length_u32, put_bytes, put_u32, put_u64, put_u8, FrameError, FrameKind, Reader,
    HEADER_BYTES,
};
use crate::kv::Reply;
use crate::raft::{
    conf_change, Entry, EntryKind, Message, MessageBody, Payload, PayloadBuffer, SnapshotMeta,
    MAX_TERM,
};

/// Deepest nesting of arrays and maps in a forwarded reply. Replies nest at most
/// a few levels (an EXEC array of command replies); the limit bounds the
/// decoder's recursion on hostile input.
pub const MAX_REPLY_DEPTH: usize = 16;

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
    /// One piece of a snapshot being streamed to a follower. The decoder
    /// requires `offset + data.len() <= total`.
    SnapshotChunk {
        snapshot_index: u64,
        snapshot_term: u64,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
    /// The sender is about to exit, and never read (nor will) the receiver's
    /// Forwards from id `first_unread_forward` on: those were not applied,
    /// and may go elsewhere. Sent last, after every ForwardReply it sends.
    Stopping {
        first_unread_forward: u64,
    },
}

impl PeerMessage {
    /// Appends `self` as one whole frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let size = self.encoded_len();
        out.reserve(size);
        let written = match self {
            PeerMessage::Raft(message) => {
                encode_frame(FrameKind::Raft, out, |out| write_message(message, out))
            }
            PeerMessage::Forward { id, payload } => encode_frame(FrameKind::Forward, out, |out| {
                put_u64(out, *id);
                put_bytes(out, payload);
            }),
            PeerMessage::ForwardReply { id, reply } => {
                encode_frame(FrameKind::ForwardReply, out, |out| {
                    put_u64(out, *id);
                    write_reply(reply, 0, out);
                })
            }
            PeerMessage::SnapshotChunk {
                snapshot_index,
                snapshot_term,
                offset,
                total,
                data,
            } => {
                debug_assert!(
                    offset.saturating_add(data.len() as u64) <= *total,
                    "chunk at {offset} of {} bytes passes total {total}",
                    data.len()
                );
                encode_frame(FrameKind::SnapshotChunk, out, |out| {
                    put_u64(out, *snapshot_index);
                    put_u64(out, *snapshot_term);
                    put_u64(out, *offset);
                    put_u64(out, *total);
                    put_bytes(out, data);
                })
            }
            PeerMessage::Stopping {
                first_unread_forward,
            } => encode_frame(FrameKind::Stopping, out, |out| {
                put_u64(out, *first_unread_forward);
            }),
        };
        assert_eq!(
            written, size,
            "encoded_len disagrees with encode for {self:?}"
        );
    }

    /// The size of the whole frame [`encode`](Self::encode) appends, header
    /// included (for reserving buffers and batching by bytes).
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES
            + match self {
                PeerMessage::Raft(message) => message_len(message),
                PeerMessage::Forward { payload, .. } => 8 + 4 + payload.len(),
                PeerMessage::ForwardReply { reply, .. } => 8 + reply_len(reply),
                PeerMessage::SnapshotChunk { data, .. } => 4 * 8 + 4 + data.len(),
                PeerMessage::Stopping { .. } => 8,
            }
    }

    /// Decodes a frame body of the given kind (not a handshake).
    pub fn decode(kind: FrameKind, body: &[u8]) -> Result<PeerMessage, FrameError> {
        let mut reader = Reader::new(body);
        let message = match kind {
            FrameKind::Handshake => {
                return Err(FrameError::Malformed(
                    "handshake after the connection was set up".to_string(),
                ))
            }
            FrameKind::Refusal => {
                return Err(FrameError::Malformed(
                    "refusal on a connection that was set up".to_string(),
                ))
            }
            FrameKind::Raft => PeerMessage::Raft(read_message(&mut reader)?),
            FrameKind::Forward => PeerMessage::Forward {
                id: reader.u64("forward id")?,
                payload: reader.bytes("forward payload")?.to_vec(),
            },
            FrameKind::ForwardReply => PeerMessage::ForwardReply {
                id: reader.u64("reply id")?,
                reply: read_reply(&mut reader, 0)?,
            },
            FrameKind::SnapshotChunk => read_chunk(&mut reader)?,
            FrameKind::Stopping => PeerMessage::Stopping {
                first_unread_forward: reader.u64("first unread forward")?,
            },
        };
        reader.finish(&format!("{kind:?} frame"))?;
        Ok(message)
    }
}

/// Appends a Raft message as a whole frame without wrapping it in a
/// [`PeerMessage`] (for a caller that holds it by reference).
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    out.reserve(HEADER_BYTES + message_len(message));
    encode_frame(FrameKind::Raft, out, |out| write_message(message, out));
}

const ENTRY_FIXED_BYTES: usize = 8 + 8 + 1 + 4;

fn message_len(message: &Message) -> usize {
    let body = match &message.body {
        MessageBody::RequestVote { .. } => 1 + 8 + 8 + 1,
        MessageBody::RequestVoteResponse { .. } => 1 + 1,
        MessageBody::Append { entries, .. } => {
            8 * 3
                + 4
                + entries
                    .iter()
                    .map(|entry| ENTRY_FIXED_BYTES + entry.data.len())
                    .sum::<usize>()
        }
        MessageBody::AppendResponse { .. } => 1 + 8 * 3,
        MessageBody::Heartbeat { .. } => 8 * 2,
        MessageBody::HeartbeatResponse { .. } => 8,
        MessageBody::TimeoutNow => 0,
        MessageBody::InstallSnapshot { meta } => {
            8 * 2 + 4 + 8 * meta.voters.len() + 4 + 8 * meta.learners.len()
        }
    };
    8 * 3 + 1 + body
}

fn write_message(message: &Message, out: &mut Vec<u8>) {
    put_u64(out, message.from);
    put_u64(out, message.to);
    put_u64(out, message.term);
    match &message.body {
        MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            transfer,
        } => {
            put_u8(out, 1);
            put_u8(out, u8::from(*pre_vote));
            put_u64(out, *last_index);
            put_u64(out, *last_term);
            put_u8(out, u8::from(*transfer));
        }
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            put_u8(out, 2);
            put_u8(out, u8::from(*pre_vote));
            put_u8(out, u8::from(*granted));
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            put_u8(out, 3);
            put_u64(out, *prev_index);
            put_u64(out, *prev_term);
            put_u64(out, *commit);
            put_u32(out, length_u32(entries.len()));
            for entry in entries {
                put_u64(out, entry.index);
                put_u64(out, entry.term);
                put_u8(out, entry.kind as u8);
                put_bytes(out, &entry.data);
            }
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
        } => {
            put_u8(out, 4);
            put_u8(out, u8::from(*success));
            put_u64(out, *index);
            put_u64(out, *hint_index);
            put_u64(out, *hint_term);
        }
        MessageBody::Heartbeat { commit, read_round } => {
            put_u8(out, 5);
            put_u64(out, *commit);
            put_u64(out, *read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => {
            put_u8(out, 6);
            put_u64(out, *read_round);
        }
        MessageBody::TimeoutNow => put_u8(out, 7),
        MessageBody::InstallSnapshot { meta } => {
            put_u8(out, 8);
            put_u64(out, meta.index);
            put_u64(out, meta.term);
            write_ids(&meta.voters, out);
            write_ids(&meta.learners, out);
        }
    }
}

fn write_ids(ids: &[u64], out: &mut Vec<u8>) {
    put_u32(out, length_u32(ids.len()));
    for id in ids {
        put_u64(out, *id);
    }
}

fn read_message(reader: &mut Reader<'_>) -> Result<Message, FrameError> {
    let from = reader.u64("from")?;
    let to = reader.u64("to")?;
    let term = reader.u64("term")?;
    let body = match reader.u8("message tag")? {
        1 => MessageBody::RequestVote {
            pre_vote: reader.bool("pre_vote")?,
            last_index: reader.u64("last_index")?,
            last_term: reader.u64("last_term")?,
            transfer: reader.bool("transfer")?,
        },
        2 => MessageBody::RequestVoteResponse {
            pre_vote: reader.bool("pre_vote")?,
            granted: reader.bool("granted")?,
        },
        3 => MessageBody::Append {
            prev_index: reader.u64("prev_index")?,
            prev_term: reader.u64("prev_term")?,
            commit: reader.u64("commit")?,
            entries: read_entries(reader)?,
        },
        4 => MessageBody::AppendResponse {
            success: reader.bool("success")?,
            index: reader.u64("index")?,
            hint_index: reader.u64("hint_index")?,
            hint_term: reader.u64("hint_term")?,
        },
        5 => MessageBody::Heartbeat {
            commit: reader.u64("commit")?,
            read_round: reader.u64("read_round")?,
        },
        6 => MessageBody::HeartbeatResponse {
            read_round: reader.u64("read_round")?,
        },
        7 => MessageBody::TimeoutNow,
        8 => MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: reader.u64("snapshot index")?,
                term: reader.u64("snapshot term")?,
                voters: read_ids(reader, "voters")?,
                learners: read_ids(reader, "learners")?,
            },
        },
        tag => {
            return Err(FrameError::Malformed(format!(
                "unknown raft message tag {tag}"
            )))
        }
    };
    if term > MAX_TERM {
        return Err(FrameError::Malformed(format!(
            "term {term} above the highest term {MAX_TERM}"
        )));
    }
    match &body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } => check_entry_order(term, *prev_index, *prev_term, entries)?,
        MessageBody::RequestVote { last_term, .. } if *last_term > term => {
            return Err(FrameError::Malformed(format!(
                "a vote request of term {term} for a log ending in term {last_term}"
            )));
        }
        MessageBody::InstallSnapshot { meta } if meta.term > term => {
            return Err(FrameError::Malformed(format!(
                "a snapshot of term {} in a message of term {term}",
                meta.term
            )));
        }
        _ => {}
    }
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

/// An Append's entries continue `prev_index` one by one, with terms that never
/// fall and never pass the message's term. Any leader's entries do; the core's
/// log asserts it, so a frame that breaks it is refused here, with the frame.
fn check_entry_order(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: &[Entry],
) -> Result<(), FrameError> {
    if prev_term > term {
        return Err(FrameError::Malformed(format!(
            "previous entry {prev_index}/{prev_term} in an append of term {term}"
        )));
    }
    let (mut index, mut last_term) = (prev_index, prev_term);
    for e in entries {
        if Some(e.index) != index.checked_add(1) || e.term < last_term || e.term > term {
            return Err(FrameError::Malformed(format!(
                "entry {}/{} after {}/{} in an append of term {}",
                e.index, e.term, index, last_term, term
            )));
        }
        (index, last_term) = (e.index, e.term);
    }
    Ok(())
}

/// The entries' payloads become ranges of one copy of the rest of the frame
/// (see [`Payload`]): one allocation for the message, not one per entry.
fn read_entries(reader: &mut Reader<'_>) -> Result<Vec<Entry>, FrameError> {
    let count = reader.count(ENTRY_FIXED_BYTES, "entries")?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let bytes = reader.remaining();
    let shared = PayloadBuffer::copy_from(bytes);
    let mut inner = Reader::new(bytes);
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let index = inner.u64("entry index")?;
        let term = inner.u64("entry term")?;
        let kind_byte = inner.u8("entry kind")?;
        let kind = EntryKind::from_u8(kind_byte)
            .ok_or_else(|| FrameError::Malformed(format!("unknown entry kind {kind_byte}")))?;
        let data = inner.bytes("entry data")?;
        // The core trusts the entries in its log; a membership change that does
        // not decode is refused here, with the frame, not discovered there.
        if kind == EntryKind::ConfChange {
            conf_change::decode(data)
                .map_err(|err| FrameError::Malformed(format!("entry {index}: {err}")))?;
        }
        let end = bytes.len() - inner.remaining().len();
        entries.push(Entry {
            index,
            term,
            kind,
            data: Payload::slice(&shared, end - data.len()..end),
        });
    }
    let consumed = bytes.len() - inner.remaining().len();
    reader.take(consumed, "entries")?;
    Ok(entries)
}

fn read_ids(reader: &mut Reader<'_>, field: &str) -> Result<Vec<u64>, FrameError> {
    let count = reader.count(8, field)?;
    (0..count).map(|_| reader.u64(field)).collect()
}

fn read_chunk(reader: &mut Reader<'_>) -> Result<PeerMessage, FrameError> {
    let snapshot_index = reader.u64("snapshot_index")?;
    let snapshot_term = reader.u64("snapshot_term")?;
    let offset = reader.u64("offset")?;
    let total = reader.u64("total")?;
    let data = reader.bytes("chunk data")?;
    if offset.saturating_add(data.len() as u64) > total {
        return Err(FrameError::Malformed(format!(
            "snapshot chunk at {offset} of {} bytes passes the total of {total}",
            data.len()
        )));
    }
    Ok(PeerMessage::SnapshotChunk {
        snapshot_index,
        snapshot_term,
        offset,
        total,
        data: data.to_vec(),
    })
}

/// A reply item is 1 byte on the wire and tens in memory; beyond this many,
/// vectors grow with the items actually decoded rather than trust the count.
const PREALLOCATED_ITEMS: usize = 1024;

/// The encoded size of a reply inside a frame.
pub(crate) fn reply_len(reply: &Reply) -> usize {
    1 + match reply {
        Reply::Ok | Reply::Nil => 0,
        Reply::Status(text) | Reply::Error(text) => 4 + text.len(),
        Reply::Integer(_) => 8,
        Reply::Bulk(bytes) => 4 + bytes.len(),
        Reply::Array(items) => 4 + items.iter().map(reply_len).sum::<usize>(),
        Reply::Map(pairs) => {
            4 + pairs
                .iter()
                .map(|(key, value)| reply_len(key) + reply_len(value))
                .sum::<usize>()
        }
    }
}

fn write_reply(reply: &Reply, depth: usize, out: &mut Vec<u8>) {
    assert!(
        depth <= MAX_REPLY_DEPTH,
        "reply nests deeper than {MAX_REPLY_DEPTH}: the peer would reject it"
    );
    match reply {
        Reply::Ok => put_u8(out, 0),
        Reply::Status(text) => {
            put_u8(out, 1);
            put_bytes(out, text.as_bytes());
        }
        Reply::Error(text) => {
            put_u8(out, 2);
            put_bytes(out, text.as_bytes());
        }
        Reply::Integer(n) => {
            put_u8(out, 3);
            put_u64(out, *n as u64);
        }
        Reply::Bulk(bytes) => {
            put_u8(out, 4);
            put_bytes(out, bytes);
        }
        Reply::Nil => put_u8(out, 5),
        Reply::Array(items) => {
            put_u8(out, 6);
            put_u32(out, length_u32(items.len()));
            for item in items {
                write_reply(item, depth + 1, out);
            }
        }
        Reply::Map(pairs) => {
            put_u8(out, 7);
            put_u32(out, length_u32(pairs.len()));
            for (key, value) in pairs {
                write_reply(key, depth + 1, out);
                write_reply(value, depth + 1, out);
            }
        }
    }
}

fn read_reply(reader: &mut Reader<'_>, depth: usize) -> Result<Reply, FrameError> {
    if depth > MAX_REPLY_DEPTH {
        return Err(FrameError::Malformed(format!(
            "reply nests deeper than {MAX_REPLY_DEPTH}"
        )));
    }
    Ok(match reader.u8("reply tag")? {
        0 => Reply::Ok,
        1 => Reply::Status(reader.string("status reply")?),
        2 => Reply::Error(reader.string("error reply")?),
        3 => Reply::Integer(reader.u64("integer reply")? as i64),
        4 => Reply::Bulk(reader.bytes("bulk reply")?.to_vec()),
        5 => Reply::Nil,
        6 => {
            let count = reader.count(1, "array reply")?;
            let mut items = Vec::with_capacity(count.min(PREALLOCATED_ITEMS));
            for _ in 0..count {
                items.push(read_reply(reader, depth + 1)?);
            }
            Reply::Array(items)
        }
        7 => {
            let count = reader.count(2, "map reply")?;
            let mut pairs = Vec::with_capacity(count.min(PREALLOCATED_ITEMS));
            for _ in 0..count {
                let key = read_reply(reader, depth + 1)?;
                pairs.push((key, read_reply(reader, depth + 1)?));
            }
            Reply::Map(pairs)
        }
        tag => return Err(FrameError::Malformed(format!("unknown reply tag {tag}"))),
    })
}

#[cfg(test)]
#[path = "peer_msg_tests.rs"]
mod tests;
