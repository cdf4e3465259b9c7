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
//! ```

use super::frame::{
    encode_frame, length_u32, put_bytes, put_u32, put_u64, put_u8, FrameError, FrameKind, Reader,
    HEADER_BYTES,
};
use crate::kv::Reply;
use crate::raft::{
    conf_change, Entry, EntryKind, Message, MessageBody, Payload, PayloadBuffer, SnapshotMeta,
};

/// Deepest nesting of arrays and maps in a forwarded reply. Replies nest at most
/// a few levels (an EXEC array of command replies); the limit bounds the
/// decoder's recursion on hostile input.
pub const MAX_REPLY_DEPTH: usize = 16;

/// The highest term a message may carry. No cluster holds 2^62 elections, and
/// the bound leaves the core room to count terms up without wrapping: a
/// message of term `u64::MAX` from a stranger on the raft port would have
/// wrapped its next campaign to term 0.
pub const MAX_TERM: u64 = 1 << 62;

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
mod tests {
    use super::*;
    use crate::wire::frame::{decode_frame, FrameLimits};
    use proptest::prelude::*;

    fn raft(body: MessageBody) -> PeerMessage {
        PeerMessage::Raft(Message {
            from: 1,
            to: u64::MAX,
            term: 7,
            body,
        })
    }

    fn entry(index: u64, kind: EntryKind, data: &[u8]) -> Entry {
        Entry {
            index,
            term: 3,
            kind,
            data: data.to_vec().into(),
        }
    }

    fn conf_payload() -> Vec<u8> {
        conf_change::encode(&conf_change::ConfEntry {
            change: conf_change::ConfChange::AddLearner {
                id: 4,
                context: b"127.0.0.1:7004".to_vec(),
            },
            voters: vec![1, 2, 3],
            learners: vec![4],
        })
    }

    #[test]
    fn a_conf_change_entry_that_does_not_decode_is_malformed() {
        let (kind, body) = body_of(&raft(MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry(1, EntryKind::ConfChange, &[1, 9])],
            commit: 0,
        }));
        assert_eq!(
            malformed(kind, &body),
            "entry 1: bad membership change: id needs 8 bytes, 0 left"
        );
    }

    /// One of every variant, with edge values.
    fn samples() -> Vec<PeerMessage> {
        vec![
            raft(MessageBody::RequestVote {
                pre_vote: true,
                last_index: 10,
                last_term: 2,
                transfer: false,
            }),
            raft(MessageBody::RequestVote {
                pre_vote: false,
                last_index: 0,
                last_term: 0,
                transfer: true,
            }),
            raft(MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            }),
            raft(MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: false,
            }),
            raft(MessageBody::Append {
                prev_index: 9,
                prev_term: 2,
                entries: vec![
                    entry(10, EntryKind::Noop, b""),
                    entry(11, EntryKind::Normal, b"set k v"),
                    entry(12, EntryKind::ConfChange, &conf_payload()),
                ],
                commit: 9,
            }),
            raft(MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: Vec::new(),
                commit: 0,
            }),
            raft(MessageBody::AppendResponse {
                success: false,
                index: 12,
                hint_index: 4,
                hint_term: 1,
            }),
            raft(MessageBody::AppendResponse {
                success: true,
                index: u64::MAX,
                hint_index: 0,
                hint_term: 0,
            }),
            raft(MessageBody::Heartbeat {
                commit: 5,
                read_round: 99,
            }),
            raft(MessageBody::HeartbeatResponse { read_round: 99 }),
            raft(MessageBody::TimeoutNow),
            raft(MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index: 100,
                    term: 4,
                    voters: vec![1, 2, 3],
                    learners: vec![4],
                },
            }),
            raft(MessageBody::InstallSnapshot {
                meta: SnapshotMeta::default(),
            }),
            PeerMessage::Forward {
                id: 42,
                payload: b"\x00binary\xff".to_vec(),
            },
            PeerMessage::Forward {
                id: 0,
                payload: Vec::new(),
            },
            PeerMessage::ForwardReply {
                id: 43,
                reply: Reply::Array(vec![
                    Reply::Ok,
                    Reply::Status("QUEUED".to_string()),
                    Reply::Error("ERR value is not an integer or out of range".to_string()),
                    Reply::Integer(i64::MIN),
                    Reply::Integer(-1),
                    Reply::Bulk(b"\r\n\x00".to_vec()),
                    Reply::Nil,
                    Reply::Array(Vec::new()),
                    Reply::Map(vec![
                        (
                            Reply::Bulk(b"server".to_vec()),
                            Reply::Bulk(b"raftkv".to_vec()),
                        ),
                        (Reply::Bulk(b"modules".to_vec()), Reply::Array(Vec::new())),
                    ]),
                ]),
            },
            PeerMessage::ForwardReply {
                id: 44,
                reply: Reply::Nil,
            },
            PeerMessage::SnapshotChunk {
                snapshot_index: 100,
                snapshot_term: 4,
                offset: 4096,
                total: 4100,
                data: vec![9; 4],
            },
            PeerMessage::SnapshotChunk {
                snapshot_index: 1,
                snapshot_term: 1,
                offset: 0,
                total: 0,
                data: Vec::new(),
            },
        ]
    }

    fn round_trip(message: &PeerMessage) -> PeerMessage {
        let mut out = vec![0xAA]; // something already buffered
        message.encode(&mut out);
        assert_eq!(out.len(), 1 + message.encoded_len());
        let (kind, body, used) = decode_frame(&out[1..], FrameLimits::MEMBER)
            .expect("valid frame")
            .expect("whole frame");
        assert_eq!(used, out.len() - 1);
        PeerMessage::decode(kind, body).unwrap_or_else(|e| panic!("{message:?}: {e}"))
    }

    #[test]
    fn entries_of_one_message_share_one_buffer() {
        let sent = vec![
            entry(5, EntryKind::Normal, b"first"),
            entry(6, EntryKind::Noop, b""),
            entry(7, EntryKind::Normal, &[9u8; 300]),
        ];
        let message = raft(MessageBody::Append {
            prev_index: 4,
            prev_term: 3,
            commit: 4,
            entries: sent.clone(),
        });
        let PeerMessage::Raft(Message {
            body: MessageBody::Append { entries, .. },
            ..
        }) = round_trip(&message)
        else {
            panic!("not an Append");
        };
        assert_eq!(entries, sent);
        assert!(entries
            .iter()
            .all(|e| e.data.shares_buffer_with(&entries[0].data)));
        assert!(!sent[0].data.shares_buffer_with(&sent[2].data));
    }

    #[test]
    fn every_variant_round_trips() {
        for message in samples() {
            assert_eq!(round_trip(&message), message);
        }
    }

    #[test]
    fn encode_message_matches_the_wrapped_encoding() {
        for message in samples() {
            if let PeerMessage::Raft(inner) = &message {
                let (mut direct, mut wrapped) = (Vec::new(), Vec::new());
                encode_message(inner, &mut direct);
                message.encode(&mut wrapped);
                assert_eq!(direct, wrapped);
            }
        }
    }

    fn body_of(message: &PeerMessage) -> (FrameKind, Vec<u8>) {
        let mut out = Vec::new();
        message.encode(&mut out);
        let kind = FrameKind::from_u8(out[8]).expect("kind");
        (kind, out[HEADER_BYTES..].to_vec())
    }

    fn malformed(kind: FrameKind, body: &[u8]) -> String {
        match PeerMessage::decode(kind, body) {
            Err(FrameError::Malformed(why)) => why,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn every_truncated_or_extended_body_is_malformed() {
        for message in samples() {
            let (kind, body) = body_of(&message);
            for cut in 0..body.len() {
                assert!(
                    PeerMessage::decode(kind, &body[..cut]).is_err(),
                    "{message:?} cut {cut}"
                );
            }
            let mut long = body.clone();
            long.push(0);
            assert!(
                malformed(kind, &long).contains("1 bytes left over"),
                "{message:?}"
            );
        }
    }

    #[test]
    fn appends_whose_entries_no_leader_writes_are_refused() {
        let append = |prev_index, entries: Vec<(u64, u64)>| {
            let entries = entries
                .into_iter()
                .map(|(index, term)| Entry {
                    term,
                    ..entry(index, EntryKind::Normal, b"v")
                })
                .collect();
            body_of(&raft(MessageBody::Append {
                prev_index,
                prev_term: 2,
                entries,
                commit: 0,
            }))
        };
        let (kind, body) = append(4, vec![(5, 2), (6, 7)]);
        assert!(PeerMessage::decode(kind, &body).is_ok());
        for (prev, entries, why) in [
            (
                4,
                vec![(6, 3)],
                "entry 6/3 after 4/2 in an append of term 7",
            ),
            (4, vec![(5, 3), (5, 3)], "entry 5/3 after 5/3"),
            (4, vec![(5, 1)], "entry 5/1 after 4/2"),
            (
                4,
                vec![(5, 8)],
                "entry 5/8 after 4/2 in an append of term 7",
            ),
            (u64::MAX, vec![(0, 3)], "entry 0/3 after"),
        ] {
            let (kind, body) = append(prev, entries);
            assert!(malformed(kind, &body).contains(why), "{why}");
        }
    }

    /// Terms no honest peer sends: past `MAX_TERM` (the core would wrap
    /// counting up from it), or a log or snapshot of a later term than the
    /// message's own (a node then holding it would panic on becoming leader).
    #[test]
    fn terms_no_honest_peer_sends_are_refused() {
        let message = |term, body| {
            body_of(&PeerMessage::Raft(Message {
                from: 2,
                to: 1,
                term,
                body,
            }))
        };
        let snapshot = |term| MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: 2,
                term,
                voters: vec![1, 2],
                learners: Vec::new(),
            },
        };
        let vote = |last_term| MessageBody::RequestVote {
            pre_vote: false,
            last_index: 3,
            last_term,
            transfer: false,
        };
        let append = |prev_term| MessageBody::Append {
            prev_index: 3,
            prev_term,
            commit: 0,
            entries: Vec::new(),
        };
        let heartbeat = MessageBody::HeartbeatResponse { read_round: 0 };
        for (term, body) in [
            (MAX_TERM, heartbeat.clone()),
            (4, snapshot(4)),
            (4, vote(4)),
            (4, append(4)),
        ] {
            let (kind, bytes) = message(term, body);
            assert!(PeerMessage::decode(kind, &bytes).is_ok(), "{term}");
        }
        for (term, body, why) in [
            (MAX_TERM + 1, heartbeat.clone(), "above the highest term"),
            (u64::MAX, heartbeat, "above the highest term"),
            (
                3,
                snapshot(4),
                "a snapshot of term 4 in a message of term 3",
            ),
            (
                3,
                vote(4),
                "a vote request of term 3 for a log ending in term 4",
            ),
            (3, append(4), "previous entry 3/4 in an append of term 3"),
        ] {
            let (kind, bytes) = message(term, body);
            assert!(malformed(kind, &bytes).contains(why), "{why}");
        }
    }

    #[test]
    fn bad_tags_bools_and_kinds_are_named() {
        let (kind, mut body) = body_of(&raft(MessageBody::TimeoutNow));
        body[24] = 9;
        assert_eq!(malformed(kind, &body), "unknown raft message tag 9");
        let (kind, mut body) = body_of(&raft(MessageBody::RequestVoteResponse {
            pre_vote: true,
            granted: true,
        }));
        body[26] = 2;
        assert_eq!(malformed(kind, &body), "granted is 2, not a bool");
        let (kind, mut body) = body_of(&raft(MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry(1, EntryKind::Normal, b"")],
            commit: 0,
        }));
        body[25 + 24 + 4 + 16] = 3;
        assert_eq!(malformed(kind, &body), "unknown entry kind 3");
        let (kind, mut body) = body_of(&PeerMessage::ForwardReply {
            id: 1,
            reply: Reply::Ok,
        });
        body[8] = 8;
        assert_eq!(malformed(kind, &body), "unknown reply tag 8");
        let (kind, mut body) = body_of(&PeerMessage::ForwardReply {
            id: 1,
            reply: Reply::Status("é".to_string()),
        });
        body[13] = 0xff;
        assert_eq!(malformed(kind, &body), "status reply is not UTF-8");
        assert_eq!(
            malformed(FrameKind::Handshake, b""),
            "handshake after the connection was set up"
        );
    }

    #[test]
    fn lying_counts_fail_before_allocating() {
        // An Append claiming 2^32-1 entries with nothing behind the count.
        let (kind, mut body) = body_of(&raft(MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: Vec::new(),
            commit: 0,
        }));
        let count_at = body.len() - 4;
        body[count_at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            malformed(kind, &body),
            "entries count 4294967295 exceeds the 0 bytes left"
        );
        let mut body = 1u64.to_be_bytes().to_vec();
        body.push(6);
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            malformed(FrameKind::ForwardReply, &body),
            "array reply count 4294967295 exceeds the 0 bytes left"
        );
        let mut body = 1u64.to_be_bytes().to_vec();
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            malformed(FrameKind::Forward, &body),
            "forward payload needs 4294967295 bytes, 0 left"
        );
    }

    #[test]
    fn snapshot_chunk_must_lie_within_its_total() {
        let mut body = Vec::new();
        for value in [1u64, 1, 10, 12] {
            body.extend_from_slice(&value.to_be_bytes());
        }
        body.extend_from_slice(&3u32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(
            malformed(FrameKind::SnapshotChunk, &body),
            "snapshot chunk at 10 of 3 bytes passes the total of 12"
        );
    }

    fn nested(depth: usize) -> Reply {
        (0..depth).fold(Reply::Nil, |inner, _| Reply::Array(vec![inner]))
    }

    #[test]
    fn reply_depth_is_limited() {
        let deepest = PeerMessage::ForwardReply {
            id: 1,
            reply: nested(MAX_REPLY_DEPTH),
        };
        assert_eq!(round_trip(&deepest), deepest);
        // Hand-built: one level deeper than the encoder would ever write.
        let mut body = 1u64.to_be_bytes().to_vec();
        for _ in 0..=MAX_REPLY_DEPTH {
            body.push(6);
            body.extend_from_slice(&1u32.to_be_bytes());
        }
        body.push(5);
        assert_eq!(
            malformed(FrameKind::ForwardReply, &body),
            format!("reply nests deeper than {MAX_REPLY_DEPTH}")
        );
        // A very deep hostile reply is refused without deep recursion.
        let mut body = 1u64.to_be_bytes().to_vec();
        for _ in 0..100_000 {
            body.push(6);
            body.extend_from_slice(&1u32.to_be_bytes());
        }
        assert!(PeerMessage::decode(FrameKind::ForwardReply, &body).is_err());
    }

    #[test]
    #[should_panic(expected = "reply nests deeper than")]
    fn encoding_a_too_deep_reply_is_a_bug() {
        let message = PeerMessage::ForwardReply {
            id: 1,
            reply: nested(MAX_REPLY_DEPTH + 1),
        };
        message.encode(&mut Vec::new());
    }

    fn any_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            Just(Reply::Ok),
            Just(Reply::Nil),
            ".{0,8}".prop_map(Reply::Status),
            ".{0,8}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Reply::Bulk),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Reply::Array),
                proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Reply::Map),
            ]
        })
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u64>(),
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(index, term, kind, data)| {
                let kind = EntryKind::from_u8(kind).expect("kind in range");
                let data = if kind == EntryKind::ConfChange {
                    conf_payload()
                } else {
                    data
                };
                Entry {
                    index,
                    term,
                    kind,
                    data: data.into(),
                }
            })
    }

    proptest! {
        #[test]
        fn random_replies_and_entries_round_trip(
            id in any::<u64>(),
            reply in any_reply(),
            mut entries in proptest::collection::vec(any_entry(), 0..5),
            commit in any::<u64>(),
        ) {
            // In the order any leader sends them: after 1/2, up to term 7.
            for (i, e) in entries.iter_mut().enumerate() {
                (e.index, e.term) = (2 + i as u64, 2 + i as u64);
            }
            let message = PeerMessage::ForwardReply { id, reply };
            prop_assert_eq!(round_trip(&message), message);
            let message = raft(MessageBody::Append { prev_index: 1, prev_term: 2, entries, commit });
            prop_assert_eq!(round_trip(&message), message);
        }

        #[test]
        fn random_bodies_never_panic(kind in 1u8..=5, body in proptest::collection::vec(any::<u8>(), 0..96)) {
            let kind = FrameKind::from_u8(kind).expect("kind in range");
            let _ = PeerMessage::decode(kind, &body);
        }

        #[test]
        fn corrupted_valid_bodies_never_panic(
            which in 0usize..19,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let samples = samples();
            let (kind, mut body) = body_of(&samples[which % samples.len()]);
            if body.is_empty() {
                return Ok(());
            }
            for (at, byte) in edits {
                let at = at.index(body.len());
                body[at] = byte;
            }
            if let Ok(message) = PeerMessage::decode(kind, &body) {
                // Whatever decodes must encode back to the same bytes.
                let (_, again) = body_of(&message);
                prop_assert_eq!(again, body);
            }
        }
    }
}
