//! The payload codec: round trips, and corrupt or hostile payloads.

use super::*;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn simple_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        bytes().prop_map(Command::Get),
        prop::collection::vec(bytes(), 0..5).prop_map(Command::MGet),
        prop::collection::vec(bytes(), 0..5).prop_map(Command::Exists),
        (bytes(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Command::Set(k, v)),
        (
            bytes(),
            bytes(),
            0..3u8,
            any::<bool>(),
            any::<bool>(),
            prop::option::of(expiry()),
            any::<bool>()
        )
            .prop_map(|(k, v, condition, get, counted, expiry, keep_ttl)| {
                let condition = [
                    SetCondition::Always,
                    SetCondition::IfAbsent,
                    SetCondition::IfPresent,
                ][condition as usize];
                let options = SetOptions {
                    condition,
                    get,
                    counted,
                    keep_ttl: keep_ttl && expiry.is_none(),
                    expiry,
                };
                Command::SetWith(k, v, options)
            }),
        (bytes(), expiry(), any::<[bool; 4]>()).prop_map(|(k, expiry, [nx, xx, gt, lt])| {
            Command::Expire(k, expiry, ExpireCondition { nx, xx, gt, lt })
        }),
        bytes().prop_map(Command::Pttl),
        (bytes(), any::<bool>()).prop_map(|(k, ms)| Command::ExpireTime(k, ms)),
        prop::collection::vec(bytes(), 0..5).prop_map(Command::Purge),
        prop::collection::vec(bytes(), 0..5).prop_map(Command::Del),
        (bytes(), any::<i64>()).prop_map(|(k, n)| Command::IncrBy(k, n)),
        prop::collection::vec((bytes(), bytes()), 0..5).prop_map(Command::MSet),
        prop::collection::vec((bytes(), bytes()), 0..5).prop_map(Command::MSetNx),
        (bytes(), bytes()).prop_map(|(k, v)| Command::Append(k, v)),
        bytes().prop_map(Command::GetDel),
        (bytes(), prop::option::of(expiry())).prop_map(|(k, expiry)| {
            Command::GetEx(k, expiry.map_or(GetExAction::Persist, GetExAction::Expire))
        }),
        (bytes(), bytes(), any::<bool>()).prop_map(|(a, b, nx)| Command::Rename(a, b, nx)),
        Just(Command::FlushAll),
        bytes().prop_map(Command::Keys),
        (
            any::<u64>(),
            1..u64::MAX,
            prop::option::of(bytes()),
            any::<bool>()
        )
            .prop_map(
                |(cursor, count, pattern, other_type)| Command::Scan(ScanOptions {
                    cursor,
                    pattern,
                    count,
                    other_type,
                })
            ),
        bytes().prop_map(Command::Type),
        bytes().prop_map(Command::Strlen),
        bytes().prop_map(Command::MemoryUsage),
        (bytes(), any::<i64>(), any::<i64>()).prop_map(|(k, s, e)| Command::GetRange(k, s, e)),
        bytes().prop_map(Command::Ttl),
        bytes().prop_map(Command::Persist),
        ".{0,20}".prop_map(Command::Invalid),
        (bytes(), ".{0,20}").prop_map(|(k, text)| Command::GetExRefused(k, text)),
        Just(Command::DbSize),
    ]
}

fn expiry() -> impl Strategy<Value = Expiry> {
    (any::<i64>(), 0..4usize).prop_map(|(time, unit)| Expiry {
        time,
        unit: [
            TimeUnit::RelativeSeconds,
            TimeUnit::RelativeMillis,
            TimeUnit::AbsoluteSeconds,
            TimeUnit::AbsoluteMillis,
        ][unit],
    })
}

fn command() -> impl Strategy<Value = Command> {
    simple_command().prop_recursive(2, 16, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Command::Multi)
    })
}

proptest! {
    #[test]
    fn round_trips(cmd in command()) {
        let mut out = vec![0xAA]; // appends, never overwrites
        cmd.encode(&mut out);
        prop_assert_eq!(out[0], 0xAA);
        prop_assert_eq!(Command::decode(&out[1..]), Ok(cmd.clone()));
    }

    #[test]
    fn stamped_round_trips(cmd in command(), stamp in any::<u64>()) {
        let mut out = Vec::new();
        cmd.encode_stamped(stamp, &mut out);
        prop_assert_eq!(Command::decode_stamped(&out), Ok((Some(stamp), cmd.clone())));
        prop_assert_eq!(Command::decode(&out), Ok(cmd));
    }

    #[test]
    fn decode_never_panics(junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Command::decode(&junk);
    }

    #[test]
    fn truncation_is_an_error(cmd in command(), cut in any::<prop::sample::Index>()) {
        let mut out = Vec::new();
        cmd.encode(&mut out);
        let cut = cut.index(out.len());
        prop_assert!(Command::decode(&out[..cut]).is_err());
    }
}

#[test]
fn set_is_compact() {
    let mut out = Vec::new();
    Command::Set(vec![b'k'; 16], vec![b'v'; 100]).encode(&mut out);
    assert_eq!(out.len(), 1 + 1 + 16 + 1 + 100);
    let mut out = Vec::new();
    Command::IncrBy(b"k".to_vec(), 1).encode(&mut out);
    assert_eq!(out, [TAG_INCRBY, 1, b'k', 2]);
}

#[test]
fn corrupt_payloads_are_errors() {
    assert!(Command::decode(&[]).is_err());
    assert!(Command::decode(&[0]).is_err());
    assert!(Command::decode(&[TAG_GET, 5, b'a']).is_err());
    assert!(Command::decode(&[TAG_GET, 1, b'a', 0]).is_err());
    // SET flags, as the log holds them: NX with XX, and an unknown bit.
    for flags in [3, 64, 16 | 32] {
        assert!(Command::decode(&[10, 1, b'k', 1, b'v', flags]).is_err());
    }
    let nx_get = SetOptions {
        condition: SetCondition::IfAbsent,
        get: true,
        ..SetOptions::default()
    };
    assert_eq!(
        Command::decode(&[10, 1, b'k', 1, b'v', 5]),
        Ok(Command::SetWith(b"k".to_vec(), b"v".to_vec(), nx_get))
    );
    // A count of 2^63 must not reach Vec::with_capacity.
    let mut huge = vec![TAG_DEL];
    put_varint(&mut huge, 1 << 63);
    assert!(Command::decode(&huge).is_err());
    // An 11-byte varint overflows.
    let overflow = [
        TAG_INCRBY, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    assert!(Command::decode(&overflow).is_err());
}

#[test]
fn deep_multi_nesting_is_rejected() {
    let mut payload = [TAG_MULTI, 1].repeat(MAX_MULTI_DEPTH + 1);
    payload.extend_from_slice(&[TAG_GET, 0]);
    assert!(Command::decode(&payload).is_err());
    let mut ok = [TAG_MULTI, 1].repeat(MAX_MULTI_DEPTH);
    ok.extend_from_slice(&[TAG_GET, 0]);
    assert!(Command::decode(&ok).is_ok());
}
