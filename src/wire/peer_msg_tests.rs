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
        PeerMessage::Stopping {
            first_unread_forward: u64::MAX,
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
