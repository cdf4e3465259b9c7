use super::tests::{bulk, cmd, parse_error};
use super::*;

const T0: u64 = 1_000_000;

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

/// A store with `k` = "v" expiring at T0 + 10 s, applied at T0.
fn with_timeout() -> KvStore {
    let mut kv = KvStore::with_shards(8);
    assert_eq!(
        kv.apply_at(&cmd(&["SET", "k", "v", "EX", "10"]), T0),
        Reply::Ok
    );
    kv
}

#[test]
fn a_key_lives_until_its_deadline() {
    let kv = with_timeout();
    let get = cmd(&["GET", "k"]);
    assert_eq!(kv.read_at(&get, T0 + 9_999), bulk("v"));
    assert_eq!(kv.read_at(&get, T0 + 10_000), Reply::Nil);
    assert_eq!(kv.read_at(&cmd(&["TTL", "k"]), T0), int(10));
    assert_eq!(
        kv.read_at(&cmd(&["TTL", "k"]), T0 + 9_400),
        int(1),
        "rounded"
    );
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0 + 1), int(9_999));
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0 + 10_000), int(-2));
    assert_eq!(
        kv.read_at(&cmd(&["PEXPIRETIME", "k"]), T0),
        int((T0 + 10_000) as i64)
    );
    assert_eq!(
        kv.read_at(&cmd(&["EXPIRETIME", "k"]), T0),
        int((T0 / 1000 + 10) as i64)
    );
    let later = T0 + 10_000;
    assert_eq!(kv.read_at(&cmd(&["EXISTS", "k"]), later), int(0));
    assert_eq!(
        kv.read_at(&cmd(&["MGET", "k"]), later),
        Reply::Array(vec![Reply::Nil])
    );
    assert_eq!(
        kv.read_at(&cmd(&["KEYS", "*"]), later),
        Reply::Array(vec![])
    );
    assert_eq!(
        kv.read_at(&cmd(&["TYPE", "k"]), later),
        Reply::Status("none".into())
    );
    assert_eq!(kv.read_at(&cmd(&["STRLEN", "k"]), later), int(0));
    match kv.read_at(&cmd(&["SCAN", "0"]), later) {
        Reply::Array(parts) => assert_eq!(parts[1], Reply::Array(vec![])),
        other => panic!("{other:?}"),
    }
    // EXPIRETIME rounds without overflowing at the end of time.
    let mut kv = KvStore::with_shards(8);
    kv.apply_at(&cmd(&["SET", "k", "v", "PXAT", "9223372036854775807"]), T0);
    assert_eq!(
        kv.read_at(&cmd(&["EXPIRETIME", "k"]), T0),
        int(9_223_372_036_854_776)
    );
}

#[test]
fn writes_find_an_expired_key_absent() {
    let after = T0 + 10_000;
    let cases: Vec<(&[&str], Reply, Reply)> = vec![
        (&["INCR", "k"], int(1), bulk("1")),
        (&["APPEND", "k", "x"], int(1), bulk("x")),
        (&["SETNX", "k", "n"], int(1), bulk("n")),
        (&["SET", "k", "n", "NX", "GET"], Reply::Nil, bulk("n")),
        (&["GETDEL", "k"], Reply::Nil, Reply::Nil),
        (&["DEL", "k"], int(0), Reply::Nil),
        (&["MSETNX", "k", "m"], int(1), bulk("m")),
        (&["EXPIRE", "k", "100"], int(0), Reply::Nil),
        (&["PERSIST", "k"], int(0), Reply::Nil),
    ];
    for (words, reply, then) in cases {
        let mut kv = with_timeout();
        assert_eq!(kv.apply_at(&cmd(words), after), reply, "{words:?}");
        assert_eq!(kv.read(&cmd(&["GET", "k"])), then, "{words:?}");
        assert_eq!(
            kv.read(&cmd(&["TTL", "k"])),
            int(if then == Reply::Nil { -2 } else { -1 })
        );
        kv.assert_invariants();
    }
    let mut kv = with_timeout();
    assert_eq!(
        kv.apply_at(&cmd(&["RENAME", "k", "j"]), after),
        Reply::error("ERR no such key")
    );
    assert_eq!(kv.len(), 0, "the expired key was deleted on the way");
    assert_eq!(kv.expiring_keys(), 0);
}

#[test]
fn which_writes_keep_a_timeout() {
    let ttl = |kv: &KvStore, key: &str| kv.read(&cmd(&["PTTL", key]));
    let keeps: Vec<&[&str]> = vec![
        &["INCR", "n"],
        &["APPEND", "k", "x"],
        &["SET", "k", "w", "KEEPTTL"],
        &["SET", "k", "w", "XX", "KEEPTTL"],
    ];
    for words in keeps {
        let mut kv = with_timeout();
        kv.apply_at(&cmd(&["SET", "n", "1", "PX", "10000"]), T0);
        kv.apply_at(&cmd(words), T0 + 1);
        let key = if words[1] == "n" { "n" } else { "k" };
        assert_eq!(ttl(&kv, key), int(9_999), "{words:?}");
    }
    let clears: Vec<&[&str]> = vec![
        &["SET", "k", "w"],
        &["SET", "k", "w", "GET"],
        &["GETSET", "k", "w"],
        &["MSET", "k", "w"],
    ];
    for words in clears {
        let mut kv = with_timeout();
        kv.apply_at(&cmd(words), T0 + 1);
        assert_eq!(ttl(&kv, "k"), int(-1), "{words:?}");
        assert_eq!(kv.expiring_keys(), 0, "{words:?}");
    }
    // The fast path of a plain SET, from its log payload, clears it too.
    let mut kv = with_timeout();
    let mut payload = Vec::new();
    encode_set(b"k", b"w", &mut payload);
    kv.apply_encoded(&payload).unwrap();
    assert_eq!(ttl(&kv, "k"), int(-1));
    // RENAME moves it; PERSIST removes it.
    let mut kv = with_timeout();
    kv.apply_at(&cmd(&["SET", "j", "old", "EX", "99"]), T0);
    kv.apply_at(&cmd(&["RENAME", "k", "j"]), T0 + 1);
    assert_eq!(ttl(&kv, "j"), int(9_999));
    assert_eq!(kv.expiring_keys(), 1);
    assert_eq!(kv.apply_at(&cmd(&["PERSIST", "j"]), T0 + 2), int(1));
    assert_eq!(kv.apply_at(&cmd(&["PERSIST", "j"]), T0 + 2), int(0));
    assert_eq!(ttl(&kv, "j"), int(-1));
    kv.assert_invariants();
}

#[test]
fn expire_conditions_as_redis() {
    // (options, key has a timeout of 10 s?, new time in s, sets?)
    let cases: Vec<(&[&str], bool, &str, bool)> = vec![
        (&[], false, "5", true),
        (&["NX"], false, "5", true),
        (&["NX"], true, "5", false),
        (&["XX"], false, "5", false),
        (&["XX"], true, "5", true),
        (&["GT"], false, "50", false),
        (&["GT"], true, "50", true),
        (&["GT"], true, "5", false),
        (&["LT"], false, "50", true),
        (&["LT"], true, "50", false),
        (&["LT"], true, "5", true),
        (&["XX", "LT"], false, "5", false),
        (&["XX", "GT"], true, "50", true),
    ];
    for (options, timed, time, sets) in cases {
        let mut kv = KvStore::with_shards(8);
        let set: &[&str] = if timed {
            &["SET", "k", "v", "EX", "10"]
        } else {
            &["SET", "k", "v"]
        };
        kv.apply_at(&cmd(set), T0);
        let mut words = vec!["EXPIRE", "k", time];
        words.extend_from_slice(options);
        assert_eq!(
            kv.apply_at(&cmd(&words), T0),
            int(i64::from(sets)),
            "{words:?}"
        );
        let expected = if sets {
            time.parse::<i64>().unwrap()
        } else if timed {
            10
        } else {
            -1
        };
        assert_eq!(kv.read(&cmd(&["TTL", "k"])), int(expected), "{words:?}");
    }
    let mut kv = KvStore::with_shards(8);
    assert_eq!(kv.apply_at(&cmd(&["EXPIRE", "nope", "5"]), T0), int(0));
    // A deadline already past deletes the key, as Redis does.
    kv.apply_at(&cmd(&["SET", "k", "v"]), T0);
    assert_eq!(kv.apply_at(&cmd(&["EXPIRE", "k", "0"]), T0), int(1));
    assert!(kv.is_empty());
    kv.apply_at(&cmd(&["SET", "k", "v"]), T0);
    assert_eq!(kv.apply_at(&cmd(&["PEXPIREAT", "k", "5"]), T0), int(1));
    assert!(kv.is_empty());
    kv.apply_at(&cmd(&["SET", "k", "v"]), T0);
    let at = (T0 / 1000 + 30).to_string();
    assert_eq!(kv.apply_at(&cmd(&["EXPIREAT", "k", &at]), T0), int(1));
    assert_eq!(kv.read(&cmd(&["TTL", "k"])), int(30));
    kv.assert_invariants();
}

#[test]
fn purge_deletes_only_what_has_expired_by_its_stamp() {
    let mut kv = with_timeout();
    kv.apply_at(&cmd(&["SET", "j", "v", "EX", "20"]), T0);
    kv.apply_at(&cmd(&["SET", "plain", "v"]), T0);
    let mut cursor = 0;
    assert!(kv
        .expired_keys(T0 + 9_999, &mut cursor, 8, 10, 1 << 20)
        .is_empty());
    let found = kv.expired_keys(T0 + 15_000, &mut cursor, 8, 10, 1 << 20);
    assert_eq!(found, vec![b"k".to_vec()]);
    // Meanwhile k got a new timeout: the purge, stamped after, leaves it.
    kv.apply_at(&cmd(&["EXPIRE", "k", "100"]), T0 + 5_000);
    let purge = Command::Purge(vec![b"k".to_vec(), b"j".to_vec(), b"plain".to_vec()]);
    assert_eq!(kv.apply_at(&purge, T0 + 15_000), int(0));
    assert_eq!(kv.len(), 3);
    assert_eq!(kv.apply_at(&purge, T0 + 20_000), int(1), "j only");
    assert_eq!(kv.len(), 2);
    assert_eq!(kv.expiring_keys(), 1);
    kv.assert_invariants();
}

#[test]
fn each_entry_is_applied_at_its_stamp() {
    let mut kv = KvStore::with_shards(8);
    let mut payload = Vec::new();
    cmd(&["SET", "k", "v", "PX", "100"]).encode_stamped(T0, &mut payload);
    kv.apply_encoded(&payload).unwrap();
    assert_eq!(kv.clock(), T0);
    // A stamp behind (a new leader's clock): the deadline is from it.
    payload.clear();
    cmd(&["EXPIRE", "k", "1"]).encode_stamped(T0 - 50_000, &mut payload);
    assert_eq!(kv.apply_encoded(&payload), Ok(int(1)));
    assert_eq!(kv.clock(), T0 - 50_000);
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0 - 50_000), int(1_000));
    // A plain SET carries no stamp and leaves the clock.
    payload.clear();
    encode_set(b"j", b"v", &mut payload);
    kv.apply_encoded(&payload).unwrap();
    assert_eq!(kv.clock(), T0 - 50_000);
}

#[test]
fn a_purge_names_keys_within_its_byte_limit() {
    let mut kv = KvStore::with_shards(1);
    for key in ["a", "b", "c"] {
        let key = key.repeat(600);
        kv.apply_at(&cmd(&["SET", &key, "v", "PX", "1"]), T0);
    }
    let mut cursor = 0;
    let found = kv.expired_keys(T0 + 1, &mut cursor, 1, 10, 1000);
    assert_eq!(found.len(), 1, "a second key would pass 1000 bytes");
    assert_eq!(cursor, 0, "the rest of the shard waits for the next purge");
    let found = kv.expired_keys(T0 + 1, &mut cursor, 1, 10, 100);
    assert_eq!(found.len(), 1, "the first key goes alone, however long");
    let found = kv.expired_keys(T0 + 1, &mut cursor, 1, 2, 1 << 20);
    assert_eq!(found.len(), 2);
    let found = kv.expired_keys(T0 + 1, &mut cursor, 1, 10, 1 << 20);
    assert_eq!((found.len(), cursor), (3, 1));
}

#[test]
fn timeouts_and_clock_survive_a_snapshot() {
    let mut kv = with_timeout();
    kv.apply_at(&cmd(&["SET", "plain", "v"]), T0 + 7);
    let mut bytes = Vec::new();
    kv.snapshot_view().write_to(&mut bytes).unwrap();
    let restored = KvStore::restore_from_with_shards(&mut &bytes[..], 8).unwrap();
    assert_eq!(restored.clock(), T0 + 7);
    assert_eq!(restored.expiring_keys(), 1);
    assert_eq!(restored.read(&cmd(&["PTTL", "k"])), int(9_993));
    assert_eq!(restored.digest(), kv.digest());
    restored.assert_invariants();
    // The digest tells timeouts apart.
    let mut other = with_timeout();
    other.apply_at(&cmd(&["EXPIRE", "k", "11"]), T0);
    other.apply_at(&cmd(&["SET", "plain", "v"]), T0 + 7);
    assert_ne!(other.digest(), kv.digest());
}

#[test]
fn snapshots_without_timeouts_still_restore() {
    // RKVSNAP1, as builds before timeouts wrote it: one record, k = v.
    let mut bytes = b"RKVSNAP1".to_vec();
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(b"kv");
    bytes.extend_from_slice(b"RKVSEND.");
    let restored = KvStore::restore_from_with_shards(&mut &bytes[..], 8).unwrap();
    assert_eq!(restored.read(&cmd(&["GET", "k"])), bulk("v"));
    assert_eq!((restored.clock(), restored.expiring_keys()), (0, 0));
}

#[test]
fn a_timeout_for_a_missing_key_is_a_corrupt_snapshot() {
    let kv = with_timeout();
    let mut bytes = Vec::new();
    kv.snapshot_view().write_to(&mut bytes).unwrap();
    // Rename the record's key so the timeout names a key that is not there.
    let at = bytes.windows(2).position(|w| w == b"kv").unwrap();
    bytes[at] = b'q';
    let error = KvStore::restore_from_with_shards(&mut &bytes[..], 8).unwrap_err();
    assert!(error.to_string().contains("timeout"), "{error}");
}

#[test]
fn a_view_keeps_the_timeouts_it_was_taken_with() {
    let mut kv = with_timeout();
    let view = kv.snapshot_view();
    kv.apply_at(&cmd(&["PERSIST", "k"]), T0 + 1);
    kv.apply_at(&cmd(&["SET", "j", "v", "EX", "5"]), T0 + 1);
    let mut bytes = Vec::new();
    view.write_to(&mut bytes).unwrap();
    let restored = KvStore::restore_from_with_shards(&mut &bytes[..], 8).unwrap();
    assert_eq!(restored.expiring_keys(), 1);
    assert_eq!(restored.read(&cmd(&["PTTL", "k"])), int(10_000));
    assert_eq!(kv.read(&cmd(&["PTTL", "k"])), int(-1));
}

mod replay {
    //! A store that applies a log whole against one restored from a
    //! snapshot taken part way and applying the rest: every reply, the
    //! digest, the clock and the snapshot bytes agree.
    use super::super::expiry::{ExpireCondition, Expiry, GetExAction, TimeUnit};
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(|k| k.as_bytes().to_vec())
    }

    fn expiry() -> impl Strategy<Value = Expiry> {
        (-5i64..400, 0..4usize).prop_map(|(time, unit)| {
            let unit = [
                TimeUnit::RelativeMillis,
                TimeUnit::RelativeMillis,
                TimeUnit::AbsoluteMillis,
                TimeUnit::RelativeSeconds,
            ][unit];
            let time = if unit == TimeUnit::AbsoluteMillis {
                T0 as i64 + time
            } else {
                time
            };
            Expiry { time, unit }
        })
    }

    fn command() -> impl Strategy<Value = Command> {
        let simple = prop_oneof![
            4 => (key(), prop::option::of(expiry()), any::<bool>()).prop_map(|(k, expiry, keep_ttl)| {
                let options = SetOptions {
                    expiry,
                    keep_ttl: keep_ttl && expiry.is_none(),
                    ..SetOptions::default()
                };
                Command::SetWith(k, b"v".to_vec(), options)
            }),
            4 => (key(), expiry(), any::<[bool; 2]>()).prop_map(|(k, expiry, [nx, gt])| {
                Command::Expire(k, expiry, ExpireCondition { nx, gt: gt && !nx, ..ExpireCondition::default() })
            }),
            2 => key().prop_map(|k| Command::IncrBy(k, 1)),
            2 => key().prop_map(Command::Persist),
            2 => (key(), key()).prop_map(|(a, b)| Command::Rename(a, b, false)),
            2 => key().prop_map(|k| Command::Append(k, b"x".to_vec())),
            2 => prop::collection::vec(key(), 1..3).prop_map(Command::Del),
            2 => key().prop_map(|k| Command::Set(k, b"p".to_vec())),
            1 => prop::collection::vec((key(), Just(b"m".to_vec())), 1..3).prop_map(Command::MSet),
            2 => prop::collection::vec(key(), 1..4).prop_map(Command::Purge),
            2 => (key(), prop::option::of(expiry())).prop_map(|(k, expiry)| {
                Command::GetEx(k, expiry.map_or(GetExAction::Persist, GetExAction::Expire))
            }),
            1 => Just(Command::FlushAll),
        ];
        prop_oneof![
            8 => simple.clone(),
            1 => prop::collection::vec(simple, 1..3).prop_map(Command::Multi),
        ]
    }

    /// Log payloads as a leader writes them, its clock wandering (also back).
    fn log() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec((command(), -100i64..200), 0..50).prop_map(|steps| {
            let mut clock = T0 as i64;
            steps
                .into_iter()
                .map(|(command, step)| {
                    clock += step;
                    let mut payload = Vec::new();
                    if command.is_stamped() {
                        command.encode_stamped(clock as u64, &mut payload);
                    } else {
                        command.encode(&mut payload);
                    }
                    payload
                })
                .collect()
        })
    }

    fn snapshot_bytes(kv: &KvStore) -> Vec<u8> {
        let mut bytes = Vec::new();
        kv.snapshot_view()
            .write_to(&mut bytes)
            .expect("Vec never fails");
        bytes
    }

    proptest! {
        #[test]
        fn a_restored_store_goes_on_as_the_whole_log(log in log(), cut in any::<prop::sample::Index>()) {
            let cut = cut.index(log.len() + 1);
            let mut whole = KvStore::with_shards(4);
            let mut part = KvStore::with_shards(4);
            for payload in &log[..cut] {
                let reply = whole.apply_encoded(payload);
                prop_assert_eq!(part.apply_encoded(payload), reply);
            }
            let bytes = snapshot_bytes(&part);
            let mut restored = KvStore::restore_from_with_shards(&mut &bytes[..], 4).expect("restores");
            for payload in &log[cut..] {
                let reply = whole.apply_encoded(payload);
                prop_assert_eq!(restored.apply_encoded(payload), reply);
                whole.assert_invariants();
            }
            restored.assert_invariants();
            prop_assert_eq!(restored.digest(), whole.digest());
            prop_assert_eq!(restored.clock(), whole.clock());
            prop_assert_eq!(snapshot_bytes(&restored), snapshot_bytes(&whole));
        }

        #[test]
        fn restore_never_panics_on_timeouts(junk in prop::collection::vec(any::<u8>(), 0..80)) {
            let mut input = b"RKVSNAP2".to_vec();
            input.extend_from_slice(&0u64.to_le_bytes());
            input.extend_from_slice(&junk);
            let _ = KvStore::restore_from_with_shards(&mut input.as_slice(), 4);
        }
    }
}

#[test]
fn getex_answers_the_value_and_sets_or_removes_the_timeout() {
    let mut kv = with_timeout();
    assert_eq!(
        cmd(&["GETEX", "k"]),
        Command::Get(b"k".to_vec()),
        "no option: a GET"
    );
    assert_eq!(
        kv.apply_at(&cmd(&["GETEX", "k", "PX", "500"]), T0),
        bulk("v")
    );
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0), int(500));
    assert_eq!(kv.apply_at(&cmd(&["GETEX", "k", "persist"]), T0), bulk("v"));
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0), int(-1));
    assert_eq!(
        kv.apply_at(&cmd(&["GETEX", "nope", "EX", "5"]), T0),
        Reply::Nil
    );
    assert_eq!(kv.len(), 1);
    // A deadline already past: the value, and the key gone.
    assert_eq!(
        kv.apply_at(&cmd(&["GETEX", "k", "PXAT", "1"]), T0),
        bulk("v")
    );
    assert!(kv.is_empty());
    // An expired key is absent to it.
    let mut kv = with_timeout();
    assert_eq!(
        kv.apply_at(&cmd(&["GETEX", "k", "PERSIST"]), T0 + 10_000),
        Reply::Nil
    );
    assert!(kv.is_empty());
    kv.assert_invariants();
    for syntax in [
        &["GETEX", "k", "EX", "10", "PX", "10"][..],
        &["GETEX", "k", "PERSIST", "EX", "1"],
        &["GETEX", "k", "EX"],
        &["GETEX", "k", "FOO"],
    ] {
        assert_eq!(parse_error(syntax), "ERR syntax error", "{syntax:?}");
    }
    // A time Redis refuses is checked after the key is found, as Redis
    // 7.0 does: nil without the key, the error with it, and nothing changes.
    let mut kv = with_timeout();
    for (time, error) in [
        ("0", "ERR invalid expire time in 'getex' command"),
        ("-5", "ERR invalid expire time in 'getex' command"),
        (
            "9223372036854775807",
            "ERR invalid expire time in 'getex' command",
        ),
        ("abc", "ERR value is not an integer or out of range"),
    ] {
        let on_key = cmd(&["GETEX", "k", "EX", time]);
        assert!(!on_key.is_write(), "{time}");
        assert_eq!(
            kv.read_at(&on_key, T0),
            Reply::Error(error.into()),
            "{time}"
        );
        assert_eq!(
            kv.apply_at(&on_key, T0),
            Reply::Error(error.into()),
            "{time}"
        );
        let on_none = cmd(&["GETEX", "nope", "PX", time]);
        assert_eq!(kv.read_at(&on_none, T0), Reply::Nil, "{time}");
        // Expired by then: absent too.
        assert_eq!(kv.read_at(&on_key, T0 + 10_000), Reply::Nil, "{time}");
    }
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0), int(10_000));
    kv.assert_invariants();
}
