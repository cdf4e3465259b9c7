//! Tests of the frame codec and the handshake, apart so that the codec reads
//! in one sitting.

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
