use super::tests::{bulk, cmd};
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
    // A read is never answered before a stamp already applied.
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), 0), int(10_000));
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
        &["SETNX", "k", "w"],
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
    assert!(kv.expired_keys(T0 + 9_999, &mut cursor, 8, 10).is_empty());
    let found = kv.expired_keys(T0 + 15_000, &mut cursor, 8, 10);
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
fn stamps_move_the_clock_forward_only() {
    let mut kv = KvStore::with_shards(8);
    let mut payload = Vec::new();
    cmd(&["SET", "k", "v", "PX", "100"]).encode_stamped(T0, &mut payload);
    kv.apply_encoded(&payload).unwrap();
    assert_eq!(kv.clock(), T0);
    // A stamp behind (a new leader's clock) applies at the store's clock.
    payload.clear();
    cmd(&["EXPIRE", "k", "1"]).encode_stamped(T0 - 50_000, &mut payload);
    kv.apply_encoded(&payload).unwrap();
    assert_eq!(kv.clock(), T0);
    assert_eq!(kv.read_at(&cmd(&["PTTL", "k"]), T0), int(1_000));
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
